"""Counting the kernels one forward pass of a deployed network launches, and their cost.

The roofline (`roofline.py`) only turns these counts into time; keeping the tracer apart lets
it be read, tested and reused without the model. The constants both sides read
(`BYTES_PER_ELEMENT`, `DEFAULTS`) live here, so that `roofline` imports this module and not
the reverse.

A module whose type has a `LayerSpec` (`search_spaces.layer_spec`: convs, linears, and the
layers op families register) is one kernel that owns its subtree; the spec gives its kind,
its MACs / additions, the factor on its FLOPs and the precision of its weights and input
activations. Its bytes are counted per tensor: inputs at act_bits, weights (parameters
and floating buffers) at weight_bits, outputs at the network's precision, each capped at
the network's bytes per element, so a 4-bit layer moves less than an fp32 one beside it
while a layer of default (32-bit) spec moves exactly what it did before specs had bits.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from search_spaces.layer_spec import LayerSpec, counting_pass, find_layer_spec, update_layer

BYTES_PER_ELEMENT = {"fp32": 4, "fp16": 2, "bf16": 2, "int8": 1}

#: Documented defaults for the factors a profile may leave out (all estimates):
#: dense convs / GEMMs reach about half of peak at the small sizes of DARTS cells;
#: depthwise convs a quarter (little reuse per loaded byte, poor vectorisation), which on
#: a GPU still leaves a 3x3 depthwise conv (about 2.25 FLOP per byte) memory bound;
#: streaming kernels get about 70% of the peak bandwidth (STREAM-like).
DEFAULTS: dict[str, Any] = {
    "eff_compute": 0.5,
    "eff_compute_depthwise": 0.25,
    "eff_memory": 0.7,
    "fold_batchnorm": True,
    "fuse_activation": True,
}

#: The built-in kernel kinds. `conv`, `linear`, `matmul`, `custom` use eff_compute;
#: `depthwise` uses eff_compute_depthwise; the rest are streaming kernels (they also use
#: eff_compute for their few FLOPs, which never decides their time). A `LayerSpec` may name
#: a kind of its own; it runs at eff_compute unless `RooflineParams.kind_efficiency` gives
#: it another, and a BN / activation after it fuses as after any layer with a spec.
KINDS = (
    "conv", "depthwise", "linear", "matmul", "custom",
    "elementwise", "batchnorm", "pool", "concat", "copy",
)
_FUSABLE_PRODUCERS = {"conv", "depthwise", "linear", "matmul", "custom"}
_ACTIVATIONS = {
    "relu", "relu_", "relu6", "hardtanh", "hardtanh_", "leaky_relu", "leaky_relu_",
    "gelu", "silu", "silu_", "sigmoid", "sigmoid_", "hardswish", "hardswish_",
    "hardsigmoid", "tanh", "elu", "elu_",
}
#: FLOP-equivalents per element of each activation (ESTIMATES, docs/methods.md#activation
#: costs): ReLU one comparison; Leaky-ReLU a comparison and a multiply; Hardswish an add,
#: a clamp (two comparisons), a multiply and a scale; ELU and SiLU an exponential (about
#: ten operations as the polynomial approximation vector libraries use) plus, for SiLU, an
#: add, a division (about four) and a multiply. They only decide time where the kernel is
#: compute bound: in a fused convolution epilogue, or on a device with little compute per
#: byte; a separate activation kernel is nearly always memory bound.
ACTIVATION_FLOPS: dict[str, float] = {
    "relu": 1.0, "relu6": 2.0, "hardtanh": 2.0, "leaky_relu": 2.0, "hardsigmoid": 4.0,
    "hardswish": 5.0, "elu": 12.0, "sigmoid": 14.0, "tanh": 16.0, "silu": 16.0,
    "gelu": 20.0,
}
_BATCHNORMS = {
    "batch_norm", "native_batch_norm", "_native_batch_norm_legit",
    "_native_batch_norm_legit_no_training", "cudnn_batch_norm", "miopen_batch_norm",
    "_batch_norm_impl_index",
}
_CONCATS = {"cat", "stack", "concat", "concatenate"}
_COPIES = {
    "clone", "copy_", "_to_copy", "contiguous", "constant_pad_nd", "pad", "reflection_pad2d",
    "replication_pad2d", "index", "index_select", "gather", "repeat", "roll", "flip",
    "upsample_nearest2d", "upsample_bilinear2d", "_upsample_nearest_exact2d",
}
_REDUCTIONS = {"mean", "sum", "amax", "amin", "max", "min"}
_MATMULS = {"mm", "addmm", "bmm", "baddbmm", "matmul", "linear"}
_FREE = {
    "empty", "empty_like", "empty_strided", "zeros", "zeros_like", "ones", "ones_like",
    "full", "full_like", "scalar_tensor", "lift_fresh", "lift_fresh_copy", "detach",
    "alias", "flatten", "reshape", "_reshape_alias", "view", "_unsafe_view", "t",
    "squeeze", "unsqueeze", "permute", "transpose", "expand", "as_strided", "slice",
    "select", "split", "chunk", "unbind", "narrow", "resize_", "set_", "_local_scalar_dense",
}

#: A factor on the FLOPs of a layer type's kernels (`LayerSpec.compute_scale`), e.g.
#: b_w * b_a / 64 for bit-operations against 64-bit popcount lanes
#: (docs/methods.md#roofline-model).
ComputeScale = Callable[[nn.Module], float]


def register_compute_scale(
    *module_types: type[nn.Module],
) -> Callable[[ComputeScale], ComputeScale]:
    """Decorator: `fn(module) -> factor` scales the FLOPs of that module type's kernels.

    The older single-field form of `LayerSpec.compute_scale`: the type gets its own spec,
    copied from the nearest registered one with the new scale. A type must have a layer
    spec (or a counter) first, since only such modules are kernels whose FLOPs scale.
    """
    if not module_types:
        raise TypeError("register_compute_scale needs at least one module type")

    def decorator(fn: ComputeScale) -> ComputeScale:
        for t in module_types:
            if update_layer(t, compute_scale=fn) is None:
                raise TypeError(f"{t.__name__} has no layer spec; register one (or its MAC "
                                "counter) before its compute scale")
        return fn

    return decorator


# ------------------------------------------------------------------------ data types


@dataclass(frozen=True)
class LayerCost:
    """One launched kernel (after fusion): where it is, what it is, its FLOPs and bytes."""

    name: str  # qualified name of the innermost module that ran it ("" = the model itself)
    op: str  # module type or aten op; fused ops joined with "+", e.g. "Conv2d+batch_norm"
    kind: str  # one of KINDS
    flops: float
    bytes: float
    #: precision of the owned layer's weights / input activations (32: full precision)
    weight_bits: int = 32
    act_bits: int = 32


# ------------------------------------------------------------------------- recording


@dataclass
class _Raw:
    name: str
    op: str
    kind: str
    flops: float
    bytes: float
    primary_in: int | None
    in_keys: list[int] = field(default_factory=list)
    out_keys: list[int] = field(default_factory=list)
    activation: bool = False
    owned: bool = False  # a module with a layer spec: a kernel a BN / activation can join
    weight_bits: int = 32
    act_bits: int = 32


def _float_tensors(obj: Any) -> list[torch.Tensor]:
    leaves, _ = tree_flatten(obj)
    return [t for t in leaves if isinstance(t, torch.Tensor) and t.is_floating_point()]


def _key(t: torch.Tensor) -> int:
    return t.untyped_storage().data_ptr()


def _op_name(func: Any) -> str:
    packet = getattr(func, "overloadpacket", None)
    return getattr(packet, "__name__", None) or str(func).split(".")[-2]


def _classify(op: str, args: tuple[Any, ...], ins: list[torch.Tensor],
              outs: list[torch.Tensor]) -> tuple[str, float]:
    """(kind, FLOPs) of an aten op outside any module with a MAC counter."""
    out_numel = sum(t.numel() for t in outs)
    in_numel = sum(t.numel() for t in ins)
    if op in _BATCHNORMS:
        return "batchnorm", 2.0 * (outs[0].numel() if outs else 0)
    if op in _CONCATS:
        return "concat", 0.0
    if op in _COPIES:
        return "copy", 0.0
    if "pool" in op:
        first = outs[0].numel() if outs else 0
        kernel = args[1] if len(args) > 1 and "adaptive" not in op else None
        if isinstance(kernel, (list, tuple)) and kernel:
            sizes = [int(k) for k in kernel]
            window = sizes[0] * sizes[0] if len(sizes) == 1 else math.prod(sizes)
            return "pool", float(first * window)
        return "pool", float(ins[0].numel() if ins else first)
    if op in _REDUCTIONS:
        return "pool", float(in_numel)
    if op in _MATMULS and len(ins) >= 2 and outs:
        # A functional matmul (module Linear layers go through the MAC registry instead).
        a = ins[1] if op in ("addmm", "baddbmm") and len(ins) >= 3 else ins[0]
        return "matmul", 2.0 * outs[0].numel() * a.shape[-1]
    if op in ("convolution", "conv2d", "_convolution", "conv1d", "conv3d") and len(ins) >= 2:
        # A functional conv (nn.Conv* modules are counted by complexity's MAC registry).
        weight = ins[1]
        groups = args[-1] if isinstance(args[-1], int) else 1
        kind = "depthwise" if groups > 1 else "conv"
        return kind, 2.0 * outs[0].numel() * (weight[0].numel() if weight.dim() else 1)
    return "elementwise", float(out_numel)


class _Recorder(TorchDispatchMode):
    """Records every aten op outside modules that own their cost; keeps outputs alive so
    storage addresses stay unique for the whole pass (they identify producers/consumers)."""

    def __init__(self, bytes_per_element: int) -> None:
        super().__init__()
        self.bpe = bytes_per_element
        self.raws: list[_Raw] = []
        self.names: list[str] = []
        self.owned_depth = 0
        self.keep: list[torch.Tensor] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: ANN001
        out = func(*args, **(kwargs or {}))
        if self.owned_depth:
            return out
        op = _op_name(func)
        outs = _float_tensors(out)
        self.keep.extend(outs)
        if getattr(func, "is_view", False) or op in _FREE:
            return out
        ins = _float_tensors((args, kwargs or {}))
        if not outs and not ins:
            return out
        kind, flops = _classify(op, tuple(args), ins, outs)
        moved = sum(t.numel() for t in ins) + sum(t.numel() for t in outs)
        self.raws.append(_Raw(
            name=self.names[-1] if self.names else "",
            op=op,
            kind=kind,
            flops=flops,
            bytes=float(moved * self.bpe),
            primary_in=_key(ins[0]) if ins else None,
            in_keys=[_key(t) for t in ins],
            out_keys=[_key(t) for t in outs],
            activation=op in _ACTIVATIONS,
        ))
        if op in _ACTIVATIONS:
            self.raws[-1].flops *= ACTIVATION_FLOPS.get(_activation_name(op), 1.0)
        return out


def _activation_name(op: str) -> str:
    """The activation an aten op computes ("relu_" is "relu")."""
    return op.rstrip("_")


def _fuses(raw: _Raw, fuse_activation: bool, fused: frozenset[str] | None) -> bool:
    """Whether the runtime computes this activation in its producer's epilogue."""
    return fuse_activation and raw.activation and (
        fused is None or _activation_name(raw.op) in fused)


def _fuse(raws: list[_Raw], fold_batchnorm: bool, fuse_activation: bool,
          fused: frozenset[str] | None = None) -> list[LayerCost]:
    consumers: Counter[int] = Counter()
    for raw in raws:
        consumers.update(set(raw.in_keys))
    groups: list[dict[str, Any]] = []
    producer: dict[int, int] = {}
    for raw in raws:
        src = raw.primary_in
        g = producer.get(src) if src is not None else None
        target = groups[g] if g is not None else None
        can_fuse = (
            target is not None
            and target["fusable"]
            and consumers[cast(int, src)] == 1  # a target implies a producer of src
            and not target["act"]
        )
        if can_fuse:
            assert target is not None and g is not None  # can_fuse implies both
            if fold_batchnorm and raw.kind == "batchnorm" and not target["bn"]:
                target["op"] += f"+{raw.op}"  # folded into the weights: no FLOPs, no bytes
                target["bn"] = True
                producer.update(dict.fromkeys(raw.out_keys, g))
                continue
            if _fuses(raw, fuse_activation, fused):
                target["op"] += f"+{raw.op}"  # epilogue: computed in registers
                target["flops"] += raw.flops
                target["act"] = True
                producer.update(dict.fromkeys(raw.out_keys, g))
                continue
        groups.append({"name": raw.name, "op": raw.op, "kind": raw.kind, "flops": raw.flops,
                       "bytes": raw.bytes, "bn": False, "act": False,
                       "fusable": raw.owned or raw.kind in _FUSABLE_PRODUCERS,
                       "bits": (raw.weight_bits, raw.act_bits)})
        producer.update(dict.fromkeys(raw.out_keys, len(groups) - 1))
    return [
        LayerCost(name=g["name"], op=g["op"], kind=g["kind"], flops=g["flops"], bytes=g["bytes"],
                  weight_bits=g["bits"][0], act_bits=g["bits"][1])
        for g in groups
    ]


def _input_shape(input_shape: Sequence[int] | int) -> tuple[int, ...]:
    if isinstance(input_shape, int):
        input_shape = (input_shape,)
    shape = tuple(int(s) for s in input_shape)
    if not shape or any(s <= 0 for s in shape):
        raise ValueError(f"input_shape must be positive sizes without the batch, got {shape}")
    return shape


def layer_costs(
    model: nn.Module,
    input_shape: Sequence[int] | int,
    batch_size: int = 1,
    precision: str = "fp32",
    fold_batchnorm: bool = DEFAULTS["fold_batchnorm"],
    fuse_activation: bool = DEFAULTS["fuse_activation"],
    fused_activations: frozenset[str] | None = None,
) -> list[LayerCost]:
    """The kernels one forward pass of `model` launches, in order, after fusion.

    With `fuse_activation`, an activation joins the kernel that produced its input when
    it is that output's only reader and, if `fused_activations` is given, one of the
    activations the runtime can fuse (by name: "relu", "silu", ...); else it is a kernel
    of its own.

    `input_shape` is one sample's shape (no batch), e.g. ``(3, 32, 32)``; the pass runs a
    batch of `batch_size` zeros in eval mode under `no_grad`, and every module's training
    flag is restored afterwards.
    """
    shape = _input_shape(input_shape)
    if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    if precision not in BYTES_PER_ELEMENT:
        raise ValueError(f"precision must be one of {', '.join(BYTES_PER_ELEMENT)}")
    bpe = BYTES_PER_ELEMENT[precision]
    recorder = _Recorder(bpe)
    handles: list[Any] = []

    def push(name: str, owned: bool) -> Callable[..., None]:
        def pre(module: nn.Module, inputs: tuple[Any, ...]) -> None:
            recorder.names.append(name)
            if owned:
                recorder.owned_depth += 1

        return pre

    def pop(name: str, spec: LayerSpec | None) -> Callable[..., None]:
        def post(module: nn.Module, inputs: tuple[Any, ...], output: Any) -> None:
            recorder.names.pop()
            if spec is None:
                return
            recorder.owned_depth -= 1
            if recorder.owned_depth:
                return  # an owned module inside another: the outer one reports the cost
            ins = _float_tensors(inputs)
            outs = _float_tensors(output)
            weights = sum(p.numel() for p in module.parameters()) + sum(
                b.numel() for b in module.buffers() if b.is_floating_point()
            )
            in_bytes = min(spec.act_bits_of(module) / 8, bpe)
            weight_bytes = min(spec.weight_bits_of(module) / 8, bpe)
            moved = (sum(t.numel() for t in ins) * in_bytes + weights * weight_bytes
                     + sum(t.numel() for t in outs) * bpe)
            macs = int(spec.count(module, inputs, output))
            adds = spec.additions_of(module, inputs, output)
            recorder.keep.extend(outs)
            recorder.raws.append(_Raw(
                name=name,
                op=type(module).__name__,
                kind=spec.kind_of(module),
                flops=(2.0 * macs + adds) * spec.scale_of(module),
                bytes=float(moved),
                primary_in=_key(ins[0]) if ins else None,
                in_keys=[_key(t) for t in ins],
                out_keys=[_key(t) for t in outs],
                owned=True,
                weight_bits=spec.weight_bits_of(module),
                act_bits=spec.act_bits_of(module),
            ))

        return post

    for name, module in model.named_modules():
        spec = find_layer_spec(module)
        handles.append(module.register_forward_pre_hook(push(name, spec is not None)))
        handles.append(module.register_forward_hook(pop(name, spec), always_call=True))

    device, dtype = torch.device("cpu"), torch.float32
    for t in list(model.parameters()) + list(model.buffers()):
        device = t.device
        if t.is_floating_point():
            dtype = t.dtype
            break
    modes = [(m, m.training) for m in model.modules()]
    threads = torch.get_num_threads()
    try:
        model.eval()
        torch.set_num_threads(1)  # sizes do not depend on it; avoids contention on busy hosts
        x = torch.zeros((batch_size, *shape), device=device, dtype=dtype)
        with torch.no_grad(), recorder, counting_pass():
            model(x)
    finally:
        torch.set_num_threads(threads)
        for h in handles:
            h.remove()
        for m, mode in modes:
            m.training = mode
    raws = recorder.raws
    recorder.keep.clear()
    return _fuse(raws, fold_batchnorm, fuse_activation, fused_activations)
