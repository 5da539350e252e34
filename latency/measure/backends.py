"""Backends that run a deployed network once, and the `Runner` that times those runs.

A backend turns (network, input shape, batch size, precision, threads) into a `Runner`:
calling it runs one forward pass, and `timed_runs(n)` returns n durations measured the
way docs/methods.md#measuring-latency asks for that device (a host clock around a
synchronous CPU run, CUDA events around a GPU run). The timing logic (`timing.py`) only
ever talks to a Runner, which is why a fake Runner with an injected timer can test it
without a real network.

Backends are a registry, so a new device (an ARM board's runtime, TensorRT) is one entry.
Anything that changes the number (threads, cuDNN autotuning, autograd) is set inside the
Runner's scope and restored when the scope ends, so measuring leaves the process as it was.
"""

from __future__ import annotations

import copy
import gc
import os
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, ExitStack, contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any

import torch
from torch import nn

from latency.measure.onnx_export import (
    INSTALL_HINT,
    check_input_shape,
    export_onnx,
    has_module,
)
from search_spaces.errors import InputError, first_line

Timer = Callable[[Callable[[], None]], float]
"""Runs the given function once and returns how long it took, in milliseconds."""

PRECISIONS: Mapping[str, torch.dtype] = MappingProxyType(
    {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
)


class BackendError(InputError):
    """An unknown backend, one this machine cannot run, or settings it does not support."""


def host_timer(run: Callable[[], None]) -> float:
    """Wall time of one synchronous run (CPU work finishes before `run` returns)."""
    start = time.perf_counter_ns()
    run()
    return (time.perf_counter_ns() - start) / 1e6


class Runner:
    """One prepared network on one backend: `runner()` runs it once.

    `timer` measures one run (the backend decides how); `scope` is entered around each
    block of timed runs and holds the settings that must be in force while timing
    (thread count, inference mode). The metadata is what a measurement records with it.
    """

    def __init__(
        self,
        run: Callable[[], None],
        *,
        timer: Timer = host_timer,
        scope: Callable[[], AbstractContextManager[Any]] = nullcontext,
        backend: str = "custom",
        threads: int = 1,
        batch_size: int = 1,
        precision: str = "fp32",
        input_shape: Sequence[int] = (),
        label: str = "",
    ) -> None:
        self._run = run
        self._timer = timer
        self._scope = scope
        self.backend = backend
        self.threads = threads
        self.batch_size = batch_size
        self.precision = precision
        self.input_shape = tuple(input_shape)
        self.label = label

    def __call__(self) -> None:
        with self._scope():
            self._run()

    def timed_runs(self, n: int) -> list[float]:
        """Durations (ms) of `n` back-to-back runs, with the scope entered once.

        The garbage collector is paused for the block, as `timeit` does: a collection
        landing in one run is noise about Python, not about the network.
        """
        if n <= 0:
            return []
        with self._scope():
            was_enabled = gc.isenabled()
            gc.disable()
            try:
                return [self._timer(self._run) for _ in range(n)]
            finally:
                if was_enabled:
                    gc.enable()

    def __repr__(self) -> str:
        name = f" {self.label!r}" if self.label else ""
        return (
            f"<Runner{name} {self.backend} threads={self.threads} batch={self.batch_size} "
            f"{self.precision}>"
        )


Model = nn.Module | str | os.PathLike[str]


@dataclass(frozen=True)
class Backend:
    """A way to run a network. `unavailable()` says why this machine cannot, or None."""

    name: str
    description: str
    precisions: tuple[str, ...]
    unavailable: Callable[[], str | None]
    build: Callable[..., Runner]

    def prepare(
        self,
        model: Model,
        input_shape: Sequence[int],
        batch_size: int = 1,
        precision: str = "fp32",
        threads: int = 1,
        label: str = "",
        **options: Any,
    ) -> Runner:
        """A Runner for `model` (or an .onnx file where the backend takes one)."""
        reason = self.unavailable()
        if reason:
            raise BackendError(f"backend {self.name!r} is not available on this machine: {reason}")
        shape = check_input_shape(input_shape)
        if int(batch_size) < 1:
            raise BackendError(f"batch size must be at least 1, got {batch_size}")
        if int(threads) < 1:
            raise BackendError(f"threads must be at least 1, got {threads}")
        if precision not in self.precisions:
            raise BackendError(
                f"backend {self.name!r} does not run precision {precision!r}; "
                f"it runs {', '.join(self.precisions)}"
            )
        return self.build(
            model, shape, int(batch_size), precision, int(threads), label=label, **options
        )


# --- torch (CPU and CUDA) ---------------------------------------------------------------


def _torch_module(model: Model, backend: str) -> nn.Module:
    if not isinstance(model, nn.Module):
        raise BackendError(f"backend {backend!r} times a PyTorch network, not a file: {model}")
    return model


@contextmanager
def _torch_threads(threads: int) -> Iterator[None]:
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def _deployed_copy(model: nn.Module, dtype: torch.dtype, device: str) -> nn.Module:
    """The network as deployed: a copy in eval mode, so the caller's network is untouched."""
    deployed = copy.deepcopy(model).eval()
    return deployed.to(device=device, dtype=dtype)


def _example(batch_size: int, shape: tuple[int, ...]) -> torch.Tensor:
    return torch.randn(batch_size, *shape, generator=torch.Generator().manual_seed(0))


def _build_torch_cpu(
    model: Model,
    shape: tuple[int, ...],
    batch_size: int,
    precision: str,
    threads: int,
    label: str = "",
) -> Runner:
    dtype = PRECISIONS[precision]
    net = _deployed_copy(_torch_module(model, "torch-cpu"), dtype, "cpu")
    x = _example(batch_size, shape).to(dtype)

    def run() -> None:
        net(x)

    def scope() -> AbstractContextManager[Any]:
        stack = ExitStack()
        stack.enter_context(_torch_threads(threads))
        stack.enter_context(torch.inference_mode())
        return stack

    return Runner(
        run,
        scope=scope,
        backend="torch-cpu",
        threads=threads,
        batch_size=batch_size,
        precision=precision,
        input_shape=shape,
        label=label,
    )


def _cuda_unavailable() -> str | None:
    if torch.version.cuda is None:
        return f"torch {torch.__version__} is built without CUDA"
    if not torch.cuda.is_available():
        return "no CUDA device is visible (torch.cuda.is_available() is False)"
    return None


class CudaEventTimer:
    """GPU time of one run between two CUDA events on the current stream.

    A host clock around an asynchronous launch measures the launch, not the work; the
    events are stamped by the GPU itself, and `end.synchronize()` waits for the run to
    finish before the pair is read.
    """

    def __init__(self) -> None:
        self.start = torch.cuda.Event(enable_timing=True)
        self.end = torch.cuda.Event(enable_timing=True)

    def __call__(self, run: Callable[[], None]) -> float:
        self.start.record()
        run()
        self.end.record()
        self.end.synchronize()
        return float(self.start.elapsed_time(self.end))


@contextmanager
def _cudnn_benchmark(enabled: bool) -> Iterator[None]:
    previous = torch.backends.cudnn.benchmark
    torch.backends.cudnn.benchmark = enabled
    try:
        yield
    finally:
        torch.backends.cudnn.benchmark = previous


def _build_torch_cuda(
    model: Model,
    shape: tuple[int, ...],
    batch_size: int,
    precision: str,
    threads: int,
    label: str = "",
    device: str | int = "cuda",
    cudnn_benchmark: bool = False,
) -> Runner:
    """cuDNN autotuning is off by default: it picks kernels by racing them, so the same
    network can time differently from one process to the next."""
    dev = torch.device(device if not isinstance(device, int) else f"cuda:{device}")
    if dev.type != "cuda":
        raise BackendError(f"backend 'torch-cuda' needs a CUDA device, got {device!r}")
    if dev.index is not None and dev.index >= torch.cuda.device_count():
        raise BackendError(
            f"no CUDA device {dev.index}; this machine has {torch.cuda.device_count()}"
        )
    dtype = PRECISIONS[precision]
    net = _deployed_copy(_torch_module(model, "torch-cuda"), dtype, str(dev))
    x = _example(batch_size, shape).to(device=dev, dtype=dtype)
    with torch.cuda.device(dev):
        timer = CudaEventTimer()

    def run() -> None:
        net(x)

    def scope() -> AbstractContextManager[Any]:
        stack = ExitStack()
        stack.enter_context(torch.cuda.device(dev))
        stack.enter_context(_torch_threads(threads))
        stack.enter_context(_cudnn_benchmark(cudnn_benchmark))
        stack.enter_context(torch.inference_mode())
        torch.cuda.synchronize(dev)  # nothing queued earlier runs inside the first timing
        return stack

    return Runner(
        run,
        timer=timer,
        scope=scope,
        backend="torch-cuda",
        threads=threads,
        batch_size=batch_size,
        precision=precision,
        input_shape=shape,
        label=label,
    )


# --- ONNX Runtime ------------------------------------------------------------------------


def _onnxruntime_unavailable() -> str | None:
    if not has_module("onnxruntime"):
        return f"onnxruntime is not installed ({INSTALL_HINT})"
    return None


def _build_onnxruntime_cpu(
    model: Model,
    shape: tuple[int, ...],
    batch_size: int,
    precision: str,
    threads: int,
    label: str = "",
    inter_threads: int = 1,
) -> Runner:
    """An existing .onnx file is timed as it is; a network is first exported with its
    batch fixed to `batch_size` (a fixed shape is what a deployed session plans for).
    The session reads the whole file when it is created, so the export can go at once."""
    import numpy as np
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = int(inter_threads)
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    providers = ["CPUExecutionProvider"]
    if isinstance(model, nn.Module):
        with tempfile.TemporaryDirectory(prefix="hw-nas-onnx-") as tmp:
            path = export_onnx(
                model, shape, Path(tmp) / "model.onnx", batch_size=batch_size, dynamic_batch=False
            )
            session = ort.InferenceSession(str(path), options, providers=providers)
    else:
        path = Path(model)
        if path.suffix != ".onnx" or not path.is_file():
            raise BackendError(
                f"backend 'onnxruntime-cpu' needs a network or an .onnx file: {path}"
            )
        try:
            session = ort.InferenceSession(str(path), options, providers=providers)
        except Exception as e:  # a corrupt or foreign file
            first = first_line(e)
            raise BackendError(f"cannot load {path}: {first}") from None
    inputs = session.get_inputs()
    if len(inputs) != 1:
        raise BackendError(f"the ONNX model has {len(inputs)} inputs; only one is supported")
    wanted = (batch_size, *shape)
    declared = inputs[0].shape
    if len(declared) != len(wanted) or any(
        isinstance(d, int) and d != w for d, w in zip(declared, wanted, strict=True)
    ):
        raise BackendError(f"the ONNX model takes input {declared}, not {list(wanted)}")
    feed = {inputs[0].name: _example(batch_size, shape).numpy().astype(np.float32)}

    def run() -> None:
        session.run(None, feed)

    return Runner(
        run,
        backend="onnxruntime-cpu",
        threads=threads,
        batch_size=batch_size,
        precision=precision,
        input_shape=shape,
        label=label,
    )


def _always_available() -> str | None:
    return None


BACKENDS: Mapping[str, Backend] = MappingProxyType(
    {
        b.name: b
        for b in (
            Backend(
                "torch-cpu",
                "PyTorch on the CPU, eval mode, inference_mode, fixed threads",
                ("fp32", "bf16"),
                _always_available,
                _build_torch_cpu,
            ),
            Backend(
                "torch-cuda",
                "PyTorch on a CUDA GPU, timed with CUDA events",
                ("fp32", "fp16", "bf16"),
                _cuda_unavailable,
                _build_torch_cuda,
            ),
            Backend(
                "onnxruntime-cpu",
                "ONNX Runtime, CPUExecutionProvider, fixed intra/inter-op threads",
                ("fp32",),
                _onnxruntime_unavailable,
                _build_onnxruntime_cpu,
            ),
        )
    }
)


def backend_names() -> list[str]:
    return sorted(BACKENDS)


def available_backends() -> list[str]:
    """The backends this machine can run now."""
    return [name for name in backend_names() if BACKENDS[name].unavailable() is None]


def get_backend(name: str) -> Backend:
    try:
        return BACKENDS[name]
    except KeyError:
        raise BackendError(
            f"unknown backend {name!r}; valid backends: {', '.join(backend_names())}"
        ) from None


def prepare(
    backend: str,
    model: Model,
    input_shape: Sequence[int],
    batch_size: int = 1,
    precision: str = "fp32",
    threads: int = 1,
    label: str = "",
    **options: Any,
) -> Runner:
    """A Runner for `model` on the named backend (see `Backend.prepare`)."""
    return get_backend(backend).prepare(
        model, input_shape, batch_size, precision, threads, label=label, **options
    )
