"""Export a discrete network to ONNX: the file that ONNX Runtime times and a user deploys.

The networks return ``(logits, aux)``; a deployed model has one output, so the export
wraps the network and keeps the logits. The network is exported in eval mode (BatchNorm
folded to its running statistics, no drop-path, no auxiliary head) and its own train/eval
state is restored afterwards, so exporting in the middle of training changes nothing.

torch 2.13 exports through ``torch.export`` (the "dynamo" exporter), which needs
``onnxscript``; the older TorchScript exporter still works without it but is deprecated,
so it is only a fallback. The file is written self-contained (no external ``.data`` file)
and moved into place only once it is complete, so a failed export leaves an existing file
at ``path`` untouched.
"""

from __future__ import annotations

import copy
import importlib.util
import logging
import os
import re
import tempfile
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from torch import nn

from search_spaces.errors import InputError

INSTALL_HINT = "pip install 'hw-nas[onnx]'"
INPUT_NAME = "input"
OUTPUT_NAME = "logits"
_ANSI = re.compile(r"\x1b\[[0-9;]*m")  # the exporter colours its error messages


class OnnxExportError(InputError):
    """A network that cannot be exported, or ONNX support that is not installed."""


def has_module(name: str) -> bool:
    return importlib.util.find_spec(name) is not None


def require_onnx(*modules: str) -> None:
    """Raise a one-line error naming the install command when ONNX support is missing."""
    missing = [m for m in (modules or ("onnx", "onnxruntime")) if not has_module(m)]
    if missing:
        raise OnnxExportError(f"ONNX support needs {', '.join(missing)}: {INSTALL_HINT}")


class LogitsOnly(nn.Module):
    """The deployed view of a network: one input, one output (the logits)."""

    def __init__(self, network: nn.Module) -> None:
        super().__init__()
        self.network = network

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.network(x)
        return out[0] if isinstance(out, tuple | list) else out


def check_input_shape(input_shape: Sequence[int]) -> tuple[int, ...]:
    """One sample's shape without the batch axis, e.g. (3, 32, 32)."""
    try:
        shape = tuple(int(d) for d in input_shape)
    except (TypeError, ValueError):
        raise InputError(f"input shape must be a list of integers, got {input_shape!r}") from None
    if not shape or any(d < 1 for d in shape):
        raise InputError(f"input shape must be positive sizes without the batch axis, got {shape}")
    return shape


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Put every submodule in eval mode, then restore each one's own flag."""
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield model
    finally:
        for m, training in modes:
            m.training = training


@contextmanager
def _quiet_exporter() -> Iterator[None]:
    """Silence the exporters' chatter (deprecations, tracer notes, 'torchvision missing')."""
    logger = logging.getLogger("torch.onnx")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        logger.setLevel(level)


def export_onnx(
    model: nn.Module,
    input_shape: Sequence[int],
    path: str | os.PathLike[str],
    *,
    batch_size: int = 1,
    dynamic_batch: bool = True,
    opset: int | None = None,
    dynamo: bool | None = None,
) -> Path:
    """Write `model`'s logits path to an ONNX file and return its path.

    `input_shape` is one sample's shape (no batch axis). With `dynamic_batch` the batch
    axis is symbolic (``batch``), so one file serves every batch size; without it the file
    is fixed to `batch_size`, which lets a runtime plan for exactly that shape. `dynamo`
    picks the exporter: None uses ``torch.export`` when onnxscript is installed and the
    deprecated TorchScript exporter otherwise.
    """
    require_onnx("onnx")
    shape = check_input_shape(input_shape)
    if batch_size < 1:
        raise InputError(f"batch size must be at least 1, got {batch_size}")
    if dynamo is None:
        dynamo = has_module("onnxscript")
    elif dynamo:
        require_onnx("onnx", "onnxscript")
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    example = torch.randn(batch_size, *shape, generator=torch.Generator().manual_seed(0))
    # A channels-last network (as trained here) makes torch.export specialise the batch
    # axis; the file is the same either way, so export a contiguous copy.
    # torch's stubs for Module.to omit the memory_format keyword it accepts at runtime
    wrapper = LogitsOnly(copy.deepcopy(model).to(memory_format=torch.contiguous_format))  # type: ignore[call-overload]
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=".onnx-export-") as tmp:
        partial = Path(tmp) / target.name
        try:
            with eval_mode(wrapper), torch.no_grad(), _quiet_exporter():
                _export(wrapper, example, partial, dynamic_batch, opset, dynamo)
        except InputError:
            raise
        except Exception as e:  # an op the exporter does not know, a graph it cannot trace
            first = (_ANSI.sub("", str(e)).strip().splitlines() or [type(e).__name__])[0]
            raise OnnxExportError(f"cannot export {type(model).__name__} to ONNX: {first}") from e
        os.replace(partial, target)
    return target


def _export(
    wrapper: nn.Module,
    example: torch.Tensor,
    path: Path,
    dynamic_batch: bool,
    opset: int | None,
    dynamo: bool,
) -> None:
    names: dict[str, Any] = {
        "input_names": [INPUT_NAME], "output_names": [OUTPUT_NAME], "opset_version": opset
    }
    if dynamo:
        shapes = ({0: torch.export.Dim("batch")},) if dynamic_batch else None
        torch.onnx.export(
            wrapper,
            (example,),
            str(path),
            dynamo=True,
            dynamic_shapes=shapes,
            external_data=False,
            verbose=False,
            **names,
        )
    else:
        axes = {INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}} if dynamic_batch else None
        torch.onnx.export(wrapper, (example,), str(path), dynamo=False, dynamic_axes=axes, **names)
