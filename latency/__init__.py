"""Hardware profiles, latency measurement and prediction."""
