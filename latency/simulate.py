"""Per-layer roofline model of a deployed network, for devices that cannot be measured here.

docs/methods.md#roofline-model. Every kernel the deployed network launches costs

    time = max(FLOPs / (peak_flops * eff), bytes / (bandwidth * eff_memory)) + overhead

and the network's latency is the sum over its kernels. Peak rate, bandwidth and the
per-kernel overhead come from the hardware profile's `specs` (published figures, with their
sources); the efficiency factors are estimates there, or fitted on a measured device of the
same family with `fit_efficiency` (`calibrate_on_this_cpu` does that for this machine).

What counts as a kernel comes from ONE real forward pass (eval mode, `no_grad`, the
profile's batch size, zeros as input):

* modules with a MAC counter in `search_spaces.complexity` (Conv2d, Linear, and whatever op
  families register their own layers) are one kernel each: FLOPs = 2 x MACs from that
  registry (scaled by `register_compute_scale` for low-bit / adder layers), bytes = inputs +
  parameters + outputs. A conv with groups > 1 (depthwise) is its own kind with its own,
  lower `eff_compute_depthwise` (such convs never run near peak). A 3x3 depthwise conv
  moves about one byte per 2.25 FLOPs, left of every shipped GPU's ridge point, so it is
  memory bound there; the lower factor makes 5x5 ones cost more than 3x3 ones, as on real
  devices, and on a single phone core (cache-resident data) it may decide their time;
* every other aten op (seen through a `TorchDispatchMode`) is a kernel of its own:
  element-wise ops (ReLU, the additions inside cells), concatenations, pooling, copies and
  eval-mode BatchNorm cost their bytes (inputs + outputs), which makes them memory bound;
  views, reshapes and allocations are free.

Fusion (what a deployment runtime such as TensorRT, TFLite or ONNX Runtime does, and eager
PyTorch does not): with `fold_batchnorm` (default true) an eval-mode BatchNorm whose input
is produced by a conv / linear kernel and read by nothing else is folded into that kernel's
weights and costs nothing; with `fuse_activation` (default true) an activation (ReLU, ...)
whose input is a conv kernel's output (after a folded BN or not), read by nothing else,
runs in that kernel's epilogue and costs nothing. In DARTS cells the ReLU *before* each
conv usually reads a cell state that other edges read too, so it stays a kernel; the
ReLU inside a separable conv (after the first BN) is fused. Profiles of eager PyTorch
(`cpu.yaml`) switch both off, because that is what is measured there.

Bytes are counted at the profile's precision (fp32 = 4 bytes an element, fp16/bf16 = 2,
int8 = 1), every tensor once per kernel (inputs are assumed to stream through the cache
once). The compute peak is `peak_fp32_tflops` for fp32 and the matching
`peak_fp16_tflops` / `peak_int8_tops` when the profile gives them (else the fp32 peak).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any, cast

import numpy as np
import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from latency.hardware import HardwareError, HardwareProfile, load_profile
from search_spaces.complexity import find_mac_counter

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

#: Kernel kinds. `conv`, `linear`, `matmul`, `custom` use eff_compute; `depthwise` uses
#: eff_compute_depthwise; the rest are streaming kernels (they also use eff_compute for
#: their few FLOPs, which never decides their time).
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

#: Low-bit / binary / adder layers: a factor on the FLOPs of their kernels
#: (docs/methods.md#roofline-model: e.g. b_w * b_a / 64 for bit-operations against 64-bit
#: popcount lanes).
ComputeScale = Callable[[nn.Module], float]
COMPUTE_SCALES: dict[type[nn.Module], ComputeScale] = {}


def register_compute_scale(
    *module_types: type[nn.Module],
) -> Callable[[ComputeScale], ComputeScale]:
    """Decorator: `fn(module) -> factor` scales the FLOPs of that module type's kernels."""
    if not module_types:
        raise TypeError("register_compute_scale needs at least one module type")

    def decorator(fn: ComputeScale) -> ComputeScale:
        for t in module_types:
            COMPUTE_SCALES[t] = fn
        return fn

    return decorator


def _compute_scale(module: nn.Module) -> float:
    for cls in type(module).__mro__:
        fn = COMPUTE_SCALES.get(cls)
        if fn is not None:
            return float(fn(module))
    return 1.0


# ------------------------------------------------------------------------ data types


@dataclass(frozen=True)
class LayerCost:
    """One launched kernel (after fusion): where it is, what it is, its FLOPs and bytes."""

    name: str  # qualified name of the innermost module that ran it ("" = the model itself)
    op: str  # module type or aten op; fused ops joined with "+", e.g. "Conv2d+batch_norm"
    kind: str  # one of KINDS
    flops: float
    bytes: float


@dataclass(frozen=True)
class LayerTime:
    """A kernel's simulated time: the roofline terms, the overhead and which bound won."""

    name: str
    op: str
    kind: str
    flops: float
    bytes: float
    compute_ms: float
    memory_ms: float
    overhead_ms: float
    ms: float  # max(compute_ms, memory_ms) + overhead_ms
    bound: str  # "compute" or "memory"


@dataclass(frozen=True)
class SimulatedLatency:
    """A simulated latency: total, per kernel, and how many kernels each bound governs."""

    ms: float
    per_layer: tuple[LayerTime, ...]
    bound_counts: dict[str, int]
    label: str = "simulated"
    profile: str = ""
    batch_size: int = 1
    precision: str = "fp32"

    @property
    def kernels(self) -> int:
        return len(self.per_layer)

    def summary(self) -> dict[str, Any]:
        """The fields a sample row needs (the integrator adds arch, ids and timestamps)."""
        return {
            "latency_ms": self.ms,
            "source": "simulated",
            "label": self.label,
            "backend": "roofline-model",
            "hardware": self.profile,
            "batch_size": self.batch_size,
            "precision": self.precision,
            "kernels": self.kernels,
            "bound_counts": dict(self.bound_counts),
        }

    def to_dict(self) -> dict[str, Any]:
        out = self.summary()
        out["per_layer"] = [asdict(t) for t in self.per_layer]
        return out


@dataclass(frozen=True)
class RooflineParams:
    """Everything the roofline needs, in SI units (FLOP/s, B/s, s)."""

    peak_flops: float
    bandwidth: float
    overhead_s: float
    eff_compute: float = DEFAULTS["eff_compute"]
    eff_compute_depthwise: float = DEFAULTS["eff_compute_depthwise"]
    eff_memory: float = DEFAULTS["eff_memory"]
    fold_batchnorm: bool = DEFAULTS["fold_batchnorm"]
    fuse_activation: bool = DEFAULTS["fuse_activation"]
    batch_size: int = 1
    precision: str = "fp32"

    @classmethod
    def from_profile(cls, profile: HardwareProfile, **overrides: Any) -> RooflineParams:
        """Read a profile's specs; keyword overrides use the spec names
        (`eff_compute=0.3`, `kernel_overhead_us=2.0`, `batch_size=8`, ...)."""
        specs = {**DEFAULTS, **profile.specs}
        settings: dict[str, Any] = {"batch_size": profile.batch_size,
                                    "precision": profile.precision}
        for key, value in overrides.items():
            if key in settings:
                settings[key] = value
            elif key in specs or key in ("peak_fp32_tflops", "memory_bandwidth_gbs",
                                         "kernel_overhead_us"):
                specs[key] = value
            else:
                raise TypeError(f"unknown roofline setting {key!r}")
        missing = [
            k for k in ("peak_fp32_tflops", "memory_bandwidth_gbs", "kernel_overhead_us")
            if k not in specs
        ]
        if missing:
            raise HardwareError(
                f"hardware profile {profile.name!r} has no roofline specs: "
                f"missing specs.{', specs.'.join(missing)}"
            )
        precision = str(settings["precision"])
        if precision not in BYTES_PER_ELEMENT:
            raise HardwareError(f"precision {precision!r} is not one of "
                                f"{', '.join(BYTES_PER_ELEMENT)}")
        peak = float(specs["peak_fp32_tflops"]) * 1e12
        if precision in ("fp16", "bf16") and "peak_fp16_tflops" in specs:
            peak = float(specs["peak_fp16_tflops"]) * 1e12
        elif precision == "int8" and "peak_int8_tops" in specs:
            peak = float(specs["peak_int8_tops"]) * 1e12
        return cls(
            peak_flops=peak,
            bandwidth=float(specs["memory_bandwidth_gbs"]) * 1e9,
            overhead_s=float(specs["kernel_overhead_us"]) * 1e-6,
            eff_compute=float(specs["eff_compute"]),
            eff_compute_depthwise=float(specs["eff_compute_depthwise"]),
            eff_memory=float(specs["eff_memory"]),
            fold_batchnorm=bool(specs["fold_batchnorm"]),
            fuse_activation=bool(specs["fuse_activation"]),
            batch_size=int(settings["batch_size"]),
            precision=precision,
        )

    def efficiency(self, kind: str) -> float:
        return self.eff_compute_depthwise if kind == "depthwise" else self.eff_compute

    def time(self, cost: LayerCost) -> LayerTime:
        compute = cost.flops / (self.peak_flops * self.efficiency(cost.kind))
        memory = cost.bytes / (self.bandwidth * self.eff_memory)
        total = max(compute, memory) + self.overhead_s
        return LayerTime(
            name=cost.name,
            op=cost.op,
            kind=cost.kind,
            flops=cost.flops,
            bytes=cost.bytes,
            compute_ms=compute * 1e3,
            memory_ms=memory * 1e3,
            overhead_ms=self.overhead_s * 1e3,
            ms=total * 1e3,
            bound="compute" if compute >= memory else "memory",
        )


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
        return out


def _owned_kind(module: nn.Module) -> str:
    if isinstance(module, nn.modules.conv._ConvNd):
        return "depthwise" if module.groups > 1 else "conv"
    if isinstance(module, nn.Linear):
        return "linear"
    return "custom"


def _fuse(raws: list[_Raw], fold_batchnorm: bool, fuse_activation: bool) -> list[LayerCost]:
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
            and target["kind"] in _FUSABLE_PRODUCERS
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
            if fuse_activation and raw.activation:
                target["op"] += f"+{raw.op}"  # epilogue: computed in registers
                target["flops"] += raw.flops
                target["act"] = True
                producer.update(dict.fromkeys(raw.out_keys, g))
                continue
        groups.append({"name": raw.name, "op": raw.op, "kind": raw.kind, "flops": raw.flops,
                       "bytes": raw.bytes, "bn": False, "act": False})
        producer.update(dict.fromkeys(raw.out_keys, len(groups) - 1))
    return [
        LayerCost(name=g["name"], op=g["op"], kind=g["kind"], flops=g["flops"], bytes=g["bytes"])
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
) -> list[LayerCost]:
    """The kernels one forward pass of `model` launches, in order, after fusion.

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

    def pop(name: str, counter: Any) -> Callable[..., None]:
        def post(module: nn.Module, inputs: tuple[Any, ...], output: Any) -> None:
            recorder.names.pop()
            if counter is None:
                return
            recorder.owned_depth -= 1
            if recorder.owned_depth:
                return  # an owned module inside another: the outer one reports the cost
            ins = _float_tensors(inputs)
            outs = _float_tensors(output)
            weights = sum(p.numel() for p in module.parameters()) + sum(
                b.numel() for b in module.buffers() if b.is_floating_point()
            )
            moved = sum(t.numel() for t in ins) + weights + sum(t.numel() for t in outs)
            macs = int(counter(module, inputs, output))
            recorder.keep.extend(outs)
            recorder.raws.append(_Raw(
                name=name,
                op=type(module).__name__,
                kind=_owned_kind(module),
                flops=2.0 * macs * _compute_scale(module),
                bytes=float(moved * bpe),
                primary_in=_key(ins[0]) if ins else None,
                in_keys=[_key(t) for t in ins],
                out_keys=[_key(t) for t in outs],
            ))

        return post

    for name, module in model.named_modules():
        counter = find_mac_counter(module)
        handles.append(module.register_forward_pre_hook(push(name, counter is not None)))
        handles.append(module.register_forward_hook(pop(name, counter), always_call=True))

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
        with torch.no_grad(), recorder:
            model(x)
    finally:
        torch.set_num_threads(threads)
        for h in handles:
            h.remove()
        for m, mode in modes:
            m.training = mode
    raws = recorder.raws
    recorder.keep.clear()
    return _fuse(raws, fold_batchnorm, fuse_activation)


# ------------------------------------------------------------------------ simulation


def simulate_costs(costs: Iterable[LayerCost], params: RooflineParams,
                   profile_name: str = "") -> SimulatedLatency:
    """Roofline time of kernels already counted (lets a caller reuse `layer_costs`)."""
    per_layer = tuple(params.time(c) for c in costs)
    bounds = Counter(t.bound for t in per_layer)
    return SimulatedLatency(
        ms=float(sum(t.ms for t in per_layer)),
        per_layer=per_layer,
        bound_counts={"compute": bounds.get("compute", 0), "memory": bounds.get("memory", 0)},
        profile=profile_name,
        batch_size=params.batch_size,
        precision=params.precision,
    )


def simulate_latency(
    model: nn.Module,
    input_shape: Sequence[int] | int | None,
    profile: HardwareProfile | str,
    **overrides: Any,
) -> SimulatedLatency:
    """Simulated latency (ms) of `model` on `profile`'s device, per kernel and in total.

    `input_shape` is one sample's shape; None takes the profile's deployed network input.
    Keyword overrides replace profile specs / settings by name (see
    `RooflineParams.from_profile`). The result is labelled "simulated" whatever the
    profile's own source is.
    """
    if isinstance(profile, str):
        profile = load_profile(profile)
    params = RooflineParams.from_profile(profile, **overrides)
    shape = profile.input_shape if input_shape is None else input_shape
    costs = layer_costs(model, shape, params.batch_size, params.precision,
                        params.fold_batchnorm, params.fuse_activation)
    return simulate_costs(costs, params, profile.name)


def deployed_network(genotype: Any, profile: HardwareProfile | str) -> tuple[nn.Module, tuple]:
    """The discrete network a profile's latency refers to, built from `genotype` (a DARTS
    genotype or an NB201 cell), and its input shape (no auxiliary head: it is not
    deployed)."""
    from search_spaces.nb201 import Nb201Arch
    from search_spaces.networks import NetworkCIFAR, NetworkImageNet

    if isinstance(profile, str):
        profile = load_profile(profile)
    if isinstance(genotype, Nb201Arch):
        return nb201_deployed_network(genotype, profile)
    net = profile.network
    shape = profile.input_shape
    cls = NetworkImageNet if net.get("layout", "cifar") == "imagenet" else NetworkCIFAR
    model = cls(genotype, C=net["channels"], layers=net["layers"],
                num_classes=net["num_classes"], auxiliary=False, in_channels=shape[0])
    return model.eval(), shape


def nb201_deployed_network(arch: Any, profile: HardwareProfile) -> tuple[nn.Module, tuple]:
    """An NB201 cell's deployed network: the benchmark's CIFAR network (C=16, N=5) with the
    profile's input shape and classes.

    A profile's `network.layers` / `channels` describe the DARTS deployed network (cells
    including the reductions, DARTS' initial channels: 20/36, 14/48, 8/16 in the shipped
    profiles), and have no NB201 reading that is not a guess; NB201's latencies (the
    benchmark's and the imported ones) all refer to its fixed C=16, N=5 network, so that
    is what is built, whatever those two fields say. (Profiles that `nas profile import`
    creates for nb201 record exactly that network: 15 cells, 16 channels.)
    """
    from search_spaces.nb201 import BENCHMARK_CELLS_PER_STAGE, BENCHMARK_CHANNELS, Nb201Network

    net = profile.network
    shape = profile.input_shape
    model = Nb201Network(arch, C=BENCHMARK_CHANNELS, N=BENCHMARK_CELLS_PER_STAGE,
                         num_classes=net["num_classes"], in_channels=shape[0])
    return model.eval(), shape


def simulate_genotype(genotype: Any, profile: HardwareProfile | str,
                      **overrides: Any) -> SimulatedLatency:
    """Simulated latency of `genotype`'s deployed network on `profile`."""
    if isinstance(profile, str):
        profile = load_profile(profile)
    model, shape = deployed_network(genotype, profile)
    return simulate_latency(model, shape, profile, **overrides)


# ------------------------------------------------------------------------ calibration

#: Factors `fit_efficiency` can fit, with their bounds.
FIT_BOUNDS = {
    "eff_compute": (1e-4, 1.0),
    "eff_compute_depthwise": (1e-4, 1.0),
    "eff_memory": (1e-4, 100.0),  # above 1: data that stays in cache
    "kernel_overhead_us": (1e-3, 1e5),
}


@dataclass(frozen=True)
class FitResult:
    """Fitted factors and how well the model then reproduces each measured sample."""

    params: dict[str, float]  # fitted spec values (eff_*, kernel_overhead_us)
    measured_ms: tuple[float, ...]
    predicted_ms: tuple[float, ...]
    names: tuple[str, ...]
    effective: dict[str, float]  # peak * eff_compute (GFLOP/s), bandwidth * eff_memory (GB/s)

    @property
    def rel_errors(self) -> tuple[float, ...]:
        return tuple((p - m) / m for p, m in zip(self.predicted_ms, self.measured_ms, strict=True))

    @property
    def mape(self) -> float:
        """Mean absolute percentage error over the samples, in percent."""
        return 100.0 * float(np.mean(np.abs(self.rel_errors))) if self.rel_errors else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "params": dict(self.params),
            "effective": dict(self.effective),
            "mape_percent": self.mape,
            "samples": [
                {"name": n, "measured_ms": m, "predicted_ms": p, "rel_error": e}
                for n, m, p, e in zip(self.names, self.measured_ms, self.predicted_ms,
                                      self.rel_errors, strict=True)
            ],
        }


def _sample_parts(sample: Any, default_shape: tuple[int, ...]) -> tuple[str, Any, Any, float]:
    if isinstance(sample, dict):
        return (str(sample.get("name", "")), sample["model"],
                sample.get("input_shape", default_shape), float(sample["latency_ms"]))
    if len(sample) == 2:
        return "", sample[0], default_shape, float(sample[1])
    if len(sample) == 3:
        return "", sample[0], sample[1], float(sample[2])
    raise ValueError("a sample is (model, latency_ms), (model, input_shape, latency_ms) "
                     "or a dict with model, latency_ms and optional input_shape, name")


def _arrays(costs: list[LayerCost]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    flops = np.array([c.flops for c in costs], dtype=float)
    moved = np.array([c.bytes for c in costs], dtype=float)
    dw = np.array([c.kind == "depthwise" for c in costs], dtype=bool)
    return flops, moved, dw


def fit_efficiency(
    samples: Iterable[Any],
    profile: HardwareProfile | str,
    fit: Sequence[str] = ("eff_compute", "eff_memory", "kernel_overhead_us"),
    **overrides: Any,
) -> FitResult:
    """Fit efficiency factors and per-kernel overhead to measured latencies.

    `samples`: (model, latency_ms), (model, input_shape, latency_ms), or dicts with
    `model`, `latency_ms` and optional `input_shape`, `name`; input shape defaults to the
    profile's. Least squares on log latency (scipy `least_squares`, parameters in log
    space, a few starting points). Factors not in `fit` stay at the profile's values;
    when `eff_compute` is fitted and `eff_compute_depthwise` is not, their ratio is kept.
    """
    if isinstance(profile, str):
        profile = load_profile(profile)
    base = RooflineParams.from_profile(profile, **overrides)
    rows = _cost_rows(samples, profile, base)
    return _fit_rows(rows, base, fit)


_Row = tuple[str, tuple[np.ndarray, np.ndarray, np.ndarray], float]


def _cost_rows(samples: Iterable[Any], profile: HardwareProfile,
               base: RooflineParams) -> list[_Row]:
    rows: list[_Row] = []
    for sample in samples:
        name, model, shape, latency = _sample_parts(sample, profile.input_shape)
        if not (latency > 0 and math.isfinite(latency)):
            raise ValueError(f"measured latency must be positive, got {latency!r}")
        costs = layer_costs(model, shape, base.batch_size, base.precision,
                            base.fold_batchnorm, base.fuse_activation)
        rows.append((name or f"sample{len(rows)}", _arrays(costs), latency))
    return rows


def _predict_rows(rows: Sequence[_Row], base: RooflineParams, v: dict[str, float]) -> np.ndarray:
    out = []
    for _, (flops, moved, dw), _ in rows:
        eff = np.where(dw, v["eff_compute_depthwise"], v["eff_compute"])
        compute = flops / (base.peak_flops * eff)
        memory = moved / (base.bandwidth * v["eff_memory"])
        total = np.maximum(compute, memory).sum() + len(flops) * v["kernel_overhead_us"] * 1e-6
        out.append(total * 1e3)
    return np.array(out)


def _fit_rows(rows: Sequence[_Row], base: RooflineParams, fit: Sequence[str]) -> FitResult:
    from scipy.optimize import least_squares

    unknown = [k for k in fit if k not in FIT_BOUNDS]
    if unknown or not fit or len(set(fit)) != len(fit):
        raise ValueError(f"can fit only {', '.join(FIT_BOUNDS)} (each once); got {list(fit)}")
    if len(rows) < len(fit):
        raise ValueError(f"need at least {len(fit)} samples to fit {len(fit)} factors")
    measured = np.array([r[2] for r in rows])
    start = {
        "eff_compute": base.eff_compute,
        "eff_compute_depthwise": base.eff_compute_depthwise,
        "eff_memory": base.eff_memory,
        "kernel_overhead_us": base.overhead_s * 1e6,
    }
    dw_ratio = base.eff_compute_depthwise / base.eff_compute

    def values(theta: np.ndarray) -> dict[str, float]:
        v = dict(start)
        v.update({k: float(np.exp(t)) for k, t in zip(fit, theta, strict=True)})
        if "eff_compute" in fit and "eff_compute_depthwise" not in fit:
            v["eff_compute_depthwise"] = min(1.0, v["eff_compute"] * dw_ratio)
        return v

    def residuals(theta: np.ndarray) -> np.ndarray:
        return np.log(_predict_rows(rows, base, values(theta))) - np.log(measured)

    lower = np.log([FIT_BOUNDS[k][0] for k in fit])
    upper = np.log([FIT_BOUNDS[k][1] for k in fit])
    grids = {
        "eff_compute": (0.05, 0.3, 0.9),
        "eff_compute_depthwise": (0.02, 0.2),
        "eff_memory": (0.1, 0.7, 3.0),
        "kernel_overhead_us": (1.0, 10.0, 100.0),
    }
    starts = [np.log([max(start[k], 1e-3) for k in fit])]
    for combo in np.array(np.meshgrid(*[grids[k] for k in fit])).T.reshape(-1, len(fit)):
        starts.append(np.log(combo))
    best = None
    for theta0 in starts:
        theta0 = np.clip(theta0, lower + 1e-9, upper - 1e-9)
        result = least_squares(residuals, theta0, bounds=(lower, upper), diff_step=1e-6,
                               xtol=1e-12, ftol=1e-12, gtol=1e-12)
        if best is None or result.cost < best.cost:
            best = result
    assert best is not None
    fitted = values(best.x)
    params = {k: fitted[k] for k in fit}
    if "eff_compute" in fit and "eff_compute_depthwise" not in fit:
        params["eff_compute_depthwise"] = fitted["eff_compute_depthwise"]
    return FitResult(
        params=params,
        measured_ms=tuple(float(m) for m in measured),
        predicted_ms=tuple(float(p) for p in _predict_rows(rows, base, fitted)),
        names=tuple(r[0] for r in rows),
        effective={
            "compute_gflops": base.peak_flops * fitted["eff_compute"] / 1e9,
            "memory_gbs": base.bandwidth * fitted["eff_memory"] / 1e9,
        },
    )


def median_latency_ms(
    models: Sequence[nn.Module],
    input_shapes: Sequence[Sequence[int]],
    batch_size: int = 1,
    threads: int = 1,
    warmup: int = 10,
    warmup_s: float = 0.2,
    repeats: int = 30,
    min_time_s: float = 0.5,
) -> list[tuple[float, float]]:
    """(median ms, IQR / median) of each model on this CPU, timed by `latency.measure`
    (docs/methods.md#measuring-latency: warm-up, repeats, interleaved rounds, fixed threads)."""
    from latency.measure import TimingConfig, measure_many, prepare

    if len(models) != len(input_shapes):
        raise ValueError("one input shape per model")
    config = TimingConfig(warmup_runs=warmup, warmup_s=warmup_s, runs=repeats,
                          min_time_s=min_time_s)
    runners = [prepare("torch-cpu", m, tuple(s), batch_size=batch_size, threads=threads)
               for m, s in zip(models, input_shapes, strict=True)]
    return [(m.median_ms, m.spread) for m in measure_many(runners, config=config)]


#: (genotype, channels, cells, input shape): the deployed digits network and CIFAR-shaped
#: networks at small sizes, so kernels range from overhead- to compute-dominated.
CALIBRATION_NETWORKS = (
    ("DARTS_V2", 16, 8, (1, 8, 8)),
    ("PDARTS", 16, 8, (1, 8, 8)),
    ("DARTS_V1", 8, 5, (1, 8, 8)),
    ("DARTS_V2", 8, 5, (3, 32, 32)),
    ("PDARTS", 16, 5, (3, 32, 32)),
    ("DARTS_V1", 16, 8, (3, 32, 32)),
    ("DARTS_V2", 24, 8, (3, 32, 32)),
    ("PDARTS", 32, 8, (3, 32, 32)),
)


def calibrate_on_this_cpu(
    profile: HardwareProfile | str = "cpu",
    networks: Sequence[tuple[str, int, int, tuple[int, ...]]] = CALIBRATION_NETWORKS,
    fit: Sequence[str] = ("eff_compute", "eff_memory", "kernel_overhead_us"),
    threads: int | None = None,
    leave_one_out: bool = True,
    **timing: Any,
) -> dict[str, Any]:
    """Measure a few DARTS networks on this CPU and fit the roofline factors to them.

    The profile (default `cpu`: eager PyTorch, batch 1, 1 thread, fp32, no fusion) gives
    peak rate and bandwidth estimates; the fit says which fractions of them eager PyTorch
    reaches and what a kernel costs on top. Returns the fit (`FitResult.to_dict()`), the
    measured spreads, and, with `leave_one_out`, the MAPE of predicting each network from
    a fit on the others (the honest figure: in-sample MAPE flatters a 3-factor model).
    """
    from search_spaces.genotype_library import resolve_genotype
    from search_spaces.networks import NetworkCIFAR

    if isinstance(profile, str):
        profile = load_profile(profile)
    torch.manual_seed(0)
    models, shapes, names = [], [], []
    for genotype_name, channels, cells, shape in networks:
        genotype = resolve_genotype(genotype_name)
        models.append(NetworkCIFAR(genotype, C=channels, layers=cells, num_classes=10,
                                   auxiliary=False, in_channels=shape[0]).eval())
        shapes.append(tuple(shape))
        names.append(f"{genotype_name}-C{channels}-L{cells}-{'x'.join(map(str, shape))}")
    n_threads = threads if threads is not None else (profile.threads or 1)
    measured = median_latency_ms(models, shapes, batch_size=profile.batch_size,
                                 threads=n_threads, **timing)
    samples = [
        {"name": n, "model": m, "input_shape": s, "latency_ms": med}
        for n, m, s, (med, _) in zip(names, models, shapes, measured, strict=True)
    ]
    base = RooflineParams.from_profile(profile)
    rows = _cost_rows(samples, profile, base)
    result = _fit_rows(rows, base, fit)
    report: dict[str, Any] = {
        "profile": profile.name,
        "threads": n_threads,
        "fit": result.to_dict(),
        "spread_iqr_over_median": {n: s for n, (_, s) in zip(names, measured, strict=True)},
    }
    if leave_one_out and len(rows) > len(fit) + 1:
        errors = []
        for i, row in enumerate(rows):
            held = _fit_rows(rows[:i] + rows[i + 1:], base, fit)
            values = {
                "eff_compute": base.eff_compute,
                "eff_compute_depthwise": base.eff_compute_depthwise,
                "eff_memory": base.eff_memory,
                "kernel_overhead_us": base.overhead_s * 1e6,
                **held.params,
            }
            pred = float(_predict_rows([row], base, values)[0])
            errors.append(abs(pred - row[2]) / row[2])
        report["leave_one_out_mape_percent"] = 100.0 * float(np.mean(errors))
    return report


def with_specs(profile: HardwareProfile, **specs: Any) -> HardwareProfile:
    """A copy of `profile` with some specs replaced (e.g. a fit's `params`)."""
    return replace(profile, specs={**profile.specs, **specs})
