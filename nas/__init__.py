"""Hardware-aware differentiable architecture search: search, retrain, CLI."""

__version__ = "0.1.0"
