"""A fingerprint of the machine and software a latency number was measured on.

Latency samples are only comparable when they come from the same CPU/GPU and the same
software stack, so every profiling run records this dict and its `hash`. The hash covers
only the fields that change latency (processor, core count, torch build, runtimes,
Python); it leaves out the hostname (two identical machines give comparable numbers; only
a hash of it is kept, for bookkeeping, never the name itself), the kernel release, and the
thread settings, which each measurement records for itself.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import socket
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from latency.measure.onnx_export import has_module

HASHED_FIELDS = (
    "cpu_model",
    "cpu_count",
    "machine",
    "os",
    "python",
    "torch",
    "torch_build",
    "onnxruntime",
    "gpus",
)


def _cpu_model() -> str:
    """The CPU's marketing name from /proc/cpuinfo (x86 and most ARM kernels), else platform."""
    try:
        text = Path("/proc/cpuinfo").read_text(errors="replace")
    except OSError:
        text = ""
    for key in ("model name", "Model", "Hardware", "Processor", "cpu model"):
        for line in text.splitlines():
            name, _, value = line.partition(":")
            if name.strip() == key and value.strip():
                return value.strip()
    return platform.processor() or platform.machine() or "unknown"


def _usable_cores() -> int | None:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count()


def _torch_build() -> str:
    if torch.version.cuda:
        return f"cuda {torch.version.cuda}"
    if getattr(torch.version, "hip", None):
        return f"rocm {torch.version.hip}"
    return "cpu"


def _gpus() -> list[str]:
    if not torch.cuda.is_available():
        return []
    return [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]


def _onnxruntime_version() -> str | None:
    if not has_module("onnxruntime"):
        return None
    import onnxruntime

    return str(onnxruntime.__version__)


def fingerprint_hash(fields: Mapping[str, Any]) -> str:
    """12 hex digits over the latency-relevant fields (stable across runs and processes)."""
    relevant = {key: fields.get(key) for key in HASHED_FIELDS}
    blob = json.dumps(relevant, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:12]


def fingerprint() -> dict[str, Any]:
    """Machine + software description; `hash` identifies the latency-relevant part."""
    fields: dict[str, Any] = {
        "cpu_model": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "usable_cores": _usable_cores(),
        "machine": platform.machine(),
        "os": platform.system(),
        "os_release": platform.release(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_build": _torch_build(),
        "cudnn": torch.backends.cudnn.version() if torch.cuda.is_available() else None,
        "onnxruntime": _onnxruntime_version(),
        "gpus": _gpus(),
        "hostname_hash": hashlib.sha256(socket.gethostname().encode()).hexdigest()[:12],
        "torch_threads": torch.get_num_threads(),
        "torch_interop_threads": torch.get_num_interop_threads(),
        "env_threads": {
            key: os.environ[key]
            for key in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")
            if key in os.environ
        },
    }
    fields["hash"] = fingerprint_hash(fields)
    return fields
