"""What one call of a layer costs, per `nn.Module` type: the single source for counters
and for the latency simulator.

A layer type's `LayerSpec` says how many multiply-accumulates (and, for adder-type
layers, additions) one call does, at which weight / activation precision, which kernel
kind a runtime launches for it and how its FLOPs scale on a device. `complexity.count_macs`
/ `count_ops` and the roofline simulator (`latency.simulate.tracing`) both read it, so
an op family with its own layers (adder, quantized, binary) describes them once, usually
in its `OpSpec.layers`, and neither module has to know about it.

A module whose type has a spec *owns its subtree*: its children are not counted or traced
on their own, so a composite layer reports its cost once. Lookup walks the type's MRO, so
a subclass of `nn.Conv2d` is a convolution unless it registers a spec of its own.
"""

from __future__ import annotations

import contextvars
import dataclasses
import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from torch import nn

#: Set while a pass runs only to count or trace layers (`counting_pass`).
_COUNTING: contextvars.ContextVar[bool] = contextvars.ContextVar("counting", default=False)


@contextmanager
def counting_pass() -> Iterator[None]:
    """Marks a forward pass whose outputs only need their shapes (counting MACs, tracing
    kernels): a layer whose emulation is slow (an adder layer runs its arithmetic as
    tensor ops, about 30 s for a deployed DARTS network on a CPU) may then return zeros of
    the right shape (`in_counting_pass`). Its counts come from its `LayerSpec`, which
    reads shapes only, and the passes feed zeros anyway."""
    token = _COUNTING.set(True)
    try:
        yield
    finally:
        _COUNTING.reset(token)


def in_counting_pass() -> bool:
    return _COUNTING.get()


#: (module, forward inputs tuple, forward output) -> a count for that one call.
CallCounter = Callable[[nn.Module, tuple[Any, ...], Any], int]


@dataclass(frozen=True)
class LayerSpec:
    """The cost description of one layer type.

    Every field but `count` / `additions` is a value, or a function of the module for
    types whose instances differ (e.g. a quantized conv built with its bit widths).

    - `count`: multiply-accumulates of one call (bias adds not counted).
    - `kind`: the simulator's kernel kind; its compute efficiency comes from
      `RooflineParams.efficiency(kind)`, so a new kind needs no simulator change.
    - `weight_bits`, `act_bits`: storage precision of the weights and of the input
      activations. They decide bit-operations (MACs x weight_bits x act_bits) and the bytes
      the simulator moves for those tensors (never more than the network's precision).
    - `compute_scale`: factor on the layer's FLOPs on a device (e.g. b_w * b_a / 64 for
      bit-operations run on 64-bit popcount lanes).
    - `additions`: add-only work of one call (adder layers replace multiplications by
      additions / subtractions); None means none. One addition is one FLOP, one MAC two.
    """

    count: CallCounter
    kind: str | Callable[[nn.Module], str] = "custom"
    weight_bits: int | Callable[[nn.Module], int] = 32
    act_bits: int | Callable[[nn.Module], int] = 32
    compute_scale: float | Callable[[nn.Module], float] = 1.0
    additions: CallCounter | None = None

    def kind_of(self, module: nn.Module) -> str:
        return self.kind(module) if callable(self.kind) else self.kind

    def weight_bits_of(self, module: nn.Module) -> int:
        return int(self.weight_bits(module) if callable(self.weight_bits) else self.weight_bits)

    def act_bits_of(self, module: nn.Module) -> int:
        return int(self.act_bits(module) if callable(self.act_bits) else self.act_bits)

    def scale_of(self, module: nn.Module) -> float:
        scale = self.compute_scale
        return float(scale(module) if callable(scale) else scale)

    def additions_of(self, module: nn.Module, inputs: tuple[Any, ...], output: Any) -> int:
        return 0 if self.additions is None else int(self.additions(module, inputs, output))


#: Registry of layer specs by module type (exact type; lookup walks the MRO).
LAYER_SPECS: dict[type[nn.Module], LayerSpec] = {}


def check_module_types(module_types: tuple[type[nn.Module], ...], what: str) -> None:
    """Registration by type must name at least one nn.Module subclass: an instance or a
    non-module would register nothing that a lookup ever finds."""
    if not module_types:
        raise TypeError(f"{what} needs at least one module type")
    for t in module_types:
        if not (isinstance(t, type) and issubclass(t, nn.Module)):
            raise TypeError(f"{what} expects nn.Module subclasses, got {t!r}")


def register_layer(spec: LayerSpec, *module_types: type[nn.Module],
                   replace: bool = True) -> LayerSpec:
    """Register `spec` for each module type.

    With `replace` (the default, as for the old counter registries) a type's spec is
    overwritten; without it, a type that already has a *different* spec is an error,
    which is how op registration keeps two op families from silently redefining one
    layer (registering an equal spec again is fine, so ops can share a layer type).
    """
    check_module_types(module_types, "register_layer")
    if not replace:
        for t in module_types:
            old = LAYER_SPECS.get(t)
            if old is not None and old != spec:
                raise ValueError(f"layer type {t.__name__} already has a different LayerSpec")
    for t in module_types:
        LAYER_SPECS[t] = spec
    return spec


def layer_spec_for_type(cls: type[nn.Module]) -> LayerSpec | None:
    """The spec of `cls` or of its nearest registered base class, or None."""
    for base in cls.__mro__:
        spec = LAYER_SPECS.get(base)
        if spec is not None:
            return spec
    return None


def find_layer_spec(module: nn.Module) -> LayerSpec | None:
    """The spec that decides `module`'s cost; None when the module owns no cost itself."""
    return layer_spec_for_type(type(module))


def update_layer(module_type: type[nn.Module], **changes: Any) -> LayerSpec | None:
    """Give `module_type` its own spec: its inherited one (via the MRO) with `changes`.

    None when nothing is inherited. Backs the single-purpose registration helpers
    (`register_mac_counter`, `register_compute_scale`), which change one field.
    """
    base = layer_spec_for_type(module_type)
    if base is None:
        return None
    spec = dataclasses.replace(base, **changes)
    LAYER_SPECS[module_type] = spec
    return spec


# ------------------------------------------------------------------- built-in layers


def conv_macs(module: nn.Module, inputs: tuple[Any, ...], output: Any) -> int:
    """out elements x (in_channels / groups) x kernel volume; bias adds are not counted.

    Dilation and padding do not change this: each output element is still one dot product
    of length (in_channels / groups) x prod(kernel_size).
    """
    assert isinstance(module, nn.modules.conv._ConvNd)
    kernel = math.prod(module.kernel_size)
    return output.numel() * (module.in_channels // module.groups) * kernel


def conv_kind(module: nn.Module) -> str:
    """Grouped (depthwise) convs are a kind of their own: they never run near peak."""
    assert isinstance(module, nn.modules.conv._ConvNd)
    return "depthwise" if module.groups > 1 else "conv"


def linear_macs(module: nn.Module, inputs: tuple[Any, ...], output: Any) -> int:
    """in_features x out_features per row; rows are all leading dimensions of the output."""
    assert isinstance(module, nn.Linear)
    rows = output.numel() // module.out_features if module.out_features else 0
    return module.in_features * module.out_features * rows


CONV_LAYER = LayerSpec(count=conv_macs, kind=conv_kind)
LINEAR_LAYER = LayerSpec(count=linear_macs, kind="linear")
register_layer(CONV_LAYER, nn.Conv1d, nn.Conv2d, nn.Conv3d)
register_layer(LINEAR_LAYER, nn.Linear)


__all__ = [
    "CONV_LAYER",
    "LAYER_SPECS",
    "LINEAR_LAYER",
    "CallCounter",
    "LayerSpec",
    "check_module_types",
    "conv_kind",
    "conv_macs",
    "find_layer_spec",
    "layer_spec_for_type",
    "linear_macs",
    "register_layer",
    "update_layer",
]
