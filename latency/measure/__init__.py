"""Measuring latency on the device at hand: backends, timing, fingerprint
(docs/methods.md#measuring-latency).

Typical use: ``runner = prepare("torch-cpu", network, (3, 32, 32), threads=1)``, then
``measure(runner)`` (warm-up, repeats, median, spread, noise flag), or
``measure_many([a, b, c])`` to time several networks interleaved (A B C A B C ...).
"""

from latency.measure.backends import (
    BACKENDS,
    Backend,
    BackendError,
    Runner,
    available_backends,
    backend_names,
    get_backend,
    host_timer,
    prepare,
)
from latency.measure.fingerprint import fingerprint, fingerprint_hash
from latency.measure.onnx_export import OnnxExportError, export_onnx, require_onnx
from latency.measure.timing import (
    Measurement,
    StabilityCheck,
    StabilityReport,
    TimingConfig,
    measure,
    measure_many,
    stability_check,
    summarize,
    warm_up,
)

__all__ = [
    "BACKENDS",
    "Backend",
    "BackendError",
    "Measurement",
    "OnnxExportError",
    "Runner",
    "StabilityCheck",
    "StabilityReport",
    "TimingConfig",
    "available_backends",
    "backend_names",
    "export_onnx",
    "fingerprint",
    "fingerprint_hash",
    "get_backend",
    "host_timer",
    "measure",
    "measure_many",
    "prepare",
    "require_onnx",
    "stability_check",
    "summarize",
    "warm_up",
]
