"""Parameter and multiply-accumulate (MAC) counts for any `nn.Module`.

Used by ``nas info`` and reports, and checked against the DARTS / P-DARTS tables, which
count parameters without the auxiliary head (``"auxiliary" not in name`` in DARTS's
``utils.count_parameters_in_MB``). MACs are counted from one real forward pass with hooks,
so whatever path the network's ``forward`` takes (drop-path off, auxiliary head skipped in
eval mode) is what gets counted, and nothing has to mirror the architecture by hand.

Counting is per module type through a registry, so op families with their own layers
(adder, quantized, binary) can say what one of their calls costs without this module
knowing about them::

    @register_mac_counter(AdderConv2d)
    def _adder_macs(module, inputs, output) -> int:
        ...
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

#: Counter signature: (module, forward inputs tuple, forward output) -> MACs of that call.
MacCounter = Callable[[nn.Module, tuple[Any, ...], Any], int]

#: Registry of counters by module type. Lookup walks the type's MRO, so a subclass of
#: `nn.Conv2d` is counted as a convolution unless it registers a counter of its own.
MAC_COUNTERS: dict[type[nn.Module], MacCounter] = {}


def register_mac_counter(
    *module_types: type[nn.Module],
) -> Callable[[MacCounter], MacCounter]:
    """Decorator registering `fn` as the MAC counter of one or more module types.

    A module with a counter owns its whole subtree: its children are not hooked, so a
    composite op can report its cost once without its inner convs being added again.
    Registering a type again replaces its counter.
    """
    if not module_types:
        raise TypeError("register_mac_counter needs at least one module type")
    for t in module_types:
        if not (isinstance(t, type) and issubclass(t, nn.Module)):
            raise TypeError(f"register_mac_counter expects nn.Module subclasses, got {t!r}")

    def decorator(fn: MacCounter) -> MacCounter:
        for t in module_types:
            MAC_COUNTERS[t] = fn
        return fn

    return decorator


def find_mac_counter(module: nn.Module) -> MacCounter | None:
    """The counter for `module`'s type (or the nearest registered base class), or None."""
    for cls in type(module).__mro__:
        fn = MAC_COUNTERS.get(cls)
        if fn is not None:
            return fn
    return None


@register_mac_counter(nn.Conv1d, nn.Conv2d, nn.Conv3d)
def _conv_macs(module: nn.Module, inputs: tuple[Any, ...], output: Any) -> int:
    """out elements x (in_channels / groups) x kernel volume; bias adds are not counted.

    Dilation and padding do not change this: each output element is still one dot product
    of length (in_channels / groups) x prod(kernel_size).
    """
    assert isinstance(module, nn.modules.conv._ConvNd)
    kernel = math.prod(module.kernel_size)
    return output.numel() * (module.in_channels // module.groups) * kernel


@register_mac_counter(nn.Linear)
def _linear_macs(module: nn.Module, inputs: tuple[Any, ...], output: Any) -> int:
    """in_features x out_features per row; rows are all leading dimensions of the output."""
    assert isinstance(module, nn.Linear)
    rows = output.numel() // module.out_features if module.out_features else 0
    return module.in_features * module.out_features * rows


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
    starts with an excluded prefix are not counted; types without a registered counter
    count 0. The forward's output (tensor or tuple) is ignored. A module called several
    times in one forward is counted at every call.
    """
    if isinstance(input_shape, int):
        input_shape = (input_shape,)
    shape = tuple(int(s) for s in input_shape)
    if any(s <= 0 for s in shape):
        raise ValueError(f"input_shape must be positive sizes without the batch, got {shape}")
    prefixes = _check_prefixes(exclude_prefixes)

    total = 0
    handles: list[torch.utils.hooks.RemovableHandle] = []
    owned: list[str] = []  # subtrees already covered by a registered (composite) counter

    def make_hook(fn: MacCounter) -> Callable[[nn.Module, tuple[Any, ...], Any], None]:
        def hook(module: nn.Module, inputs: tuple[Any, ...], output: Any) -> None:
            nonlocal total
            total += int(fn(module, inputs, output))

        return hook

    for name, module in model.named_modules():
        if _excluded(name, prefixes):
            continue
        if any(name.startswith(o + ".") or o == "" for o in owned):
            continue
        fn = find_mac_counter(module)
        if fn is None:
            continue
        handles.append(module.register_forward_hook(make_hook(fn)))
        owned.append(name)

    modes = [(m, m.training) for m in model.modules()]
    try:
        model.eval()
        with torch.no_grad():
            model(_example_input(model, shape))
    finally:
        for h in handles:
            h.remove()
        for m, mode in modes:
            m.training = mode
    return total
