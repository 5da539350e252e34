"""Parameter, multiply-accumulate (MAC), addition and bit-operation counts for any
`nn.Module`.

Used by ``nas info`` and reports, and checked against the DARTS / P-DARTS tables, which
count parameters without the auxiliary head (``"auxiliary" not in name`` in DARTS's
``utils.count_parameters_in_MB``). MACs are counted from one real forward pass with hooks,
so whatever path the network's ``forward`` takes (drop-path off, auxiliary head skipped in
eval mode) is what gets counted, and nothing has to mirror the architecture by hand.

What one call of a layer costs is its `LayerSpec` (`layer_spec.py`), the registry the
latency simulator reads too, so op families with their own layers (adder, quantized,
binary) describe them once, usually in their `OpSpec.layers`. `register_mac_counter` is
the older single-field form, kept for code that only counts MACs::

    @register_mac_counter(AdderConv2d)
    def _adder_macs(module, inputs, output) -> int:
        ...
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from search_spaces.layer_spec import (
    LAYER_SPECS,
    CallCounter,
    LayerSpec,
    check_module_types,
    counting_pass,
    find_layer_spec,
    register_layer,
    update_layer,
)

#: Counter signature: (module, forward inputs tuple, forward output) -> MACs of that call.
MacCounter = CallCounter

#: The layer-spec registry under its old name (module type -> `LayerSpec`, no longer a
#: bare counter); code that saves and restores it around a test keeps working.
MAC_COUNTERS = LAYER_SPECS
#: bit-operations of one fp32 multiply-accumulate (32-bit weights x 32-bit inputs)
FLOAT_BOPS_PER_MAC = 32 * 32


def register_mac_counter(
    *module_types: type[nn.Module],
) -> Callable[[MacCounter], MacCounter]:
    """Decorator registering `fn` as the MAC counter of one or more module types.

    Sets `count` of the type's own `LayerSpec`, created from the nearest registered base
    class's spec (so a Conv2d subclass stays a conv for the simulator), or a new spec
    with defaults (kind "custom", 32-bit) when there is none. A module with a spec owns
    its whole subtree: its children are not hooked, so a composite op can report its cost
    once without its inner convs being added again. Registering a type again replaces
    its counter.
    """
    check_module_types(module_types, "register_mac_counter")

    def decorator(fn: MacCounter) -> MacCounter:
        for t in module_types:
            if update_layer(t, count=fn) is None:
                register_layer(LayerSpec(count=fn), t)
        return fn

    return decorator


def find_mac_counter(module: nn.Module) -> MacCounter | None:
    """The counter for `module`'s type (or the nearest registered base class), or None."""
    spec = find_layer_spec(module)
    return None if spec is None else spec.count


@dataclass(frozen=True)
class OpCounts:
    """The work of one forward pass of a single sample.

    - `macs`: multiply-accumulates (as `count_macs`).
    - `additions`: add-only work of adder-type layers (`LayerSpec.additions`); the
      additions inside multiply-accumulates, cell sums and BN are not in it, so a plain
      conv network has 0.
    - `bops`: bit-operations, sum over layers of MACs x weight_bits x act_bits: the BOPs
      low-bit papers compare (an fp32 MAC is 1024 of them, a 1-bit x 1-bit one 1).
      Additions are not included.
    - `params`: parameter elements (as `count_parameters`).
    - `by_precision`: MACs per (weight bits, activation bits), e.g. {(32, 32): ...,
      (4, 4): ..., (1, 1): ...}: what low-bit costing and `nas info` break down.
    """

    macs: int
    additions: int
    bops: int
    params: int
    by_precision: dict[tuple[int, int], int] = field(default_factory=dict)

    @property
    def lowbit_macs(self) -> int:
        """MACs of layers below 32 bits (weights or activations)."""
        return sum(m for (w, a), m in self.by_precision.items() if min(w, a) < 32)


def _excluded(name: str, prefixes: Sequence[str]) -> bool:
    return any(name.startswith(p) for p in prefixes)


def _check_prefixes(exclude_prefixes: Sequence[str]) -> tuple[str, ...]:
    if isinstance(exclude_prefixes, str):
        # A bare string would otherwise exclude every name starting with any of its letters.
        return (exclude_prefixes,)
    return tuple(exclude_prefixes)


def count_parameters(
    model: nn.Module, exclude_prefixes: Sequence[str] = ("auxiliary",)
) -> int:
    """Number of parameter elements, leaving out those whose name starts with a prefix.

    Excluding ``auxiliary`` by default matches how the DARTS / P-DARTS papers report model
    size (the auxiliary head only helps training and is not deployed). Shared (tied)
    parameters are counted once.
    """
    prefixes = _check_prefixes(exclude_prefixes)
    return sum(
        p.numel() for name, p in model.named_parameters() if not _excluded(name, prefixes)
    )


def _example_input(model: nn.Module, input_shape: Sequence[int]) -> torch.Tensor:
    device = torch.device("cpu")
    dtype = torch.float32
    for t in list(model.parameters()) + list(model.buffers()):
        device = t.device
        if t.is_floating_point():
            dtype = t.dtype
            break
    return torch.zeros((1, *input_shape), device=device, dtype=dtype)


#: Called once per call of a module that owns its cost.
_OnCall = Callable[[LayerSpec, nn.Module, tuple[Any, ...], Any], None]


def _visit_owned_calls(
    model: nn.Module,
    input_shape: Sequence[int],
    exclude_prefixes: Sequence[str],
    on_call: _OnCall,
) -> None:
    """Run one forward pass and report every call of a module that has a layer spec
    (outermost only: a spec owns its subtree). See `count_macs` for the pass."""
    if isinstance(input_shape, int):
        input_shape = (input_shape,)
    shape = tuple(int(s) for s in input_shape)
    if any(s <= 0 for s in shape):
        raise ValueError(f"input_shape must be positive sizes without the batch, got {shape}")
    prefixes = _check_prefixes(exclude_prefixes)

    handles: list[torch.utils.hooks.RemovableHandle] = []
    owned: list[str] = []  # subtrees already covered by a registered (composite) layer

    def make_hook(spec: LayerSpec) -> Callable[[nn.Module, tuple[Any, ...], Any], None]:
        def hook(module: nn.Module, inputs: tuple[Any, ...], output: Any) -> None:
            on_call(spec, module, inputs, output)

        return hook

    for name, module in model.named_modules():
        if _excluded(name, prefixes):
            continue
        if any(name.startswith(o + ".") or o == "" for o in owned):
            continue
        spec = find_layer_spec(module)
        if spec is None:
            continue
        handles.append(module.register_forward_hook(make_hook(spec)))
        owned.append(name)

    modes = [(m, m.training) for m in model.modules()]
    try:
        model.eval()
        with torch.no_grad(), counting_pass():
            model(_example_input(model, shape))
    finally:
        for h in handles:
            h.remove()
        for m, mode in modes:
            m.training = mode


def count_macs(
    model: nn.Module,
    input_shape: Sequence[int],
    exclude_prefixes: Sequence[str] = ("auxiliary",),
) -> int:
    """Multiply-accumulates of one forward pass of a single sample.

    `input_shape` is the shape of ONE sample without the batch dimension, e.g.
    ``(3, 32, 32)``; the pass uses a batch of 1 (zeros) in eval mode under `no_grad`, so
    BN statistics are untouched and drop-path / auxiliary heads behave as in deployment.
    Every module's training flag is restored afterwards. Modules whose qualified name
    starts with an excluded prefix are not counted; types without a layer spec count 0.
    The forward's output (tensor or tuple) is ignored. A module called several times in
    one forward is counted at every call.
    """
    total = 0

    def add(spec: LayerSpec, module: nn.Module, inputs: tuple[Any, ...], output: Any) -> None:
        nonlocal total
        total += int(spec.count(module, inputs, output))

    _visit_owned_calls(model, input_shape, exclude_prefixes, add)
    return total


def count_ops(
    model: nn.Module,
    input_shape: Sequence[int],
    exclude_prefixes: Sequence[str] = ("auxiliary",),
) -> OpCounts:
    """MACs, additions, bit-operations and parameters of one forward pass of a single
    sample (see `OpCounts`); the pass and the exclusions are those of `count_macs`, whose
    result equals `macs` here."""
    macs = additions = bops = 0
    by_precision: dict[tuple[int, int], int] = {}

    def add(spec: LayerSpec, module: nn.Module, inputs: tuple[Any, ...], output: Any) -> None:
        nonlocal macs, additions, bops
        m = int(spec.count(module, inputs, output))
        w, a = spec.weight_bits_of(module), spec.act_bits_of(module)
        macs += m
        additions += spec.additions_of(module, inputs, output)
        bops += m * w * a
        if m:
            by_precision[(w, a)] = by_precision.get((w, a), 0) + m

    _visit_owned_calls(model, input_shape, exclude_prefixes, add)
    return OpCounts(macs=macs, additions=additions, bops=bops,
                    params=count_parameters(model, exclude_prefixes),
                    by_precision=by_precision)


__all__ = [
    "MAC_COUNTERS",
    "MacCounter",
    "OpCounts",
    "count_macs",
    "count_ops",
    "count_parameters",
    "find_mac_counter",
    "register_mac_counter",
]
