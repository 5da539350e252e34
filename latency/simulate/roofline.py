"""The roofline model: the time of each counted kernel, and a network's simulated latency.

Kept apart from the tracer (`tracing.py`) because it is the part with free numbers: peak
rate, bandwidth, overhead and efficiencies come from a hardware profile or a fit. The
compute efficiency of a kernel is looked up by its kind (`RooflineParams.efficiency`), so
a layer family that brings a kind of its own (a binary conv) needs an entry in
`kind_efficiency` at most, not a change here.

One kind has a default of its own: an adder layer (kind "adder", AdderNet) is costed like
a deployed adder kernel. Its traced FLOPs are its additions (two per filter tap: the
absolute difference and the accumulation, `search_spaces.adder_ops.adder_additions`).
Such a kernel issues one addition (or absolute difference) per SIMD lane per cycle,
whereas the profile's peak counts a fused multiply-add as two FLOPs per lane per cycle,
so its additions run at half the peak FLOP rate: its default compute efficiency is
eff_compute / 2 (`ADDER_KIND`; a `kind_efficiency` entry for "adder" still overrides it).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from torch import nn

from latency.hardware import HardwareError, HardwareProfile, load_profile
from latency.simulate.tracing import BYTES_PER_ELEMENT, DEFAULTS, LayerCost, layer_costs

#: The kernel kind of AdderNet layers (`search_spaces.adder_ops.ADDER_LAYER`).
ADDER_KIND = "adder"
#: Additions per lane per cycle of a deployed adder kernel, against the peak's FLOPs per
#: lane per cycle (a fused multiply-add counts two): its default share of eff_compute.
ADDER_THROUGHPUT = 0.5


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
    #: the activations the runtime fuses into a conv epilogue (None: every one)
    fused_activations: frozenset[str] | None = None
    batch_size: int = 1
    precision: str = "fp32"
    #: the device's deployed low-bit kernels: precision class ("binary", "int8", "int4",
    #: "int2") -> speed-up of their compute over fp32 (`lowbit_class`; the profile's
    #: `specs.lowbit_speedups`, published figures); a class without one runs at fp32 speed
    lowbit_speedups: Mapping[str, float] = field(default_factory=dict, hash=False)
    #: compute efficiency of kernel kinds other than `depthwise` (default eff_compute;
    #: "adder" eff_compute / 2)
    kind_efficiency: Mapping[str, float] = field(default_factory=dict, hash=False)

    @classmethod
    def from_profile(cls, profile: HardwareProfile, **overrides: Any) -> RooflineParams:
        """Read a profile's specs; keyword overrides use the spec names
        (`eff_compute=0.3`, `kernel_overhead_us=2.0`, `batch_size=8`, ...), plus
        `kind_efficiency={"adder": 0.3}` for kinds profiles have no spec for."""
        specs = {**DEFAULTS, **profile.specs}
        settings: dict[str, Any] = {"batch_size": profile.batch_size,
                                    "precision": profile.precision,
                                    "kind_efficiency": {}}
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
            fused_activations=(None if specs.get("fused_activations") is None
                               else frozenset(specs["fused_activations"])),
            lowbit_speedups={k: float(v) for k, v in
                             (specs.get("lowbit_speedups") or {}).items()},
            batch_size=int(settings["batch_size"]),
            precision=precision,
            kind_efficiency={k: float(v) for k, v in settings["kind_efficiency"].items()},
        )

    @property
    def efficiencies(self) -> dict[str, float]:
        """Kind -> compute efficiency for every kind that does not run at eff_compute
        (`depthwise` is always the profile's eff_compute_depthwise, which fits adjust;
        "adder" defaults to eff_compute x `ADDER_THROUGHPUT`, its additions issuing at
        half the peak FLOP rate, unless `kind_efficiency` names it)."""
        return {ADDER_KIND: self.eff_compute * ADDER_THROUGHPUT, **self.kind_efficiency,
                "depthwise": self.eff_compute_depthwise}

    def efficiency(self, kind: str) -> float:
        """Compute efficiency of a kernel kind; kinds without an entry (conv, linear, the
        streaming kinds, and new ones) run at eff_compute, "adder" at eff_compute / 2."""
        return self.efficiencies.get(kind, self.eff_compute)

    def time(self, cost: LayerCost) -> LayerTime:
        compute = cost.flops / (self.peak_flops * self.efficiency(cost.kind))
        speedup = self.lowbit_speedups.get(lowbit_class(cost.weight_bits, cost.act_bits)
                                           or "", 1.0)
        compute /= speedup
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


def lowbit_class(weight_bits: int, act_bits: int) -> str | None:
    """The deployed kernel a layer of these precisions runs on: "binary" (XNOR-popcount,
    1-bit weights and activations), "int2" / "int4" / "int8" (integer kernels of the
    wider operand), or None for a full-precision layer."""
    widest = max(weight_bits, act_bits)
    if widest >= 32:
        return None
    if widest == 1:
        return "binary"
    for bits in (2, 4, 8):
        if widest <= bits:
            return f"int{bits}"
    return None


def activation_fusion_note(profile: HardwareProfile) -> str:
    """One sentence on how the simulated profile costs activations (what `nas profile`
    prints for an activation-aware space): which ones its runtime fuses into the
    producing convolution, and that the rest are kernels of their own."""
    from search_spaces.activations import ACTIVATIONS

    params = RooflineParams.from_profile(profile)
    known = list(ACTIVATIONS)
    if not params.fuse_activation:
        fused: list[str] = []
    elif params.fused_activations is None:
        fused = known
    else:
        fused = [a for a in known if a in params.fused_activations]
    alone = [a for a in known if a not in fused]
    where = "specs.fused_activations" if params.fused_activations is not None else \
        "specs.fuse_activation"
    parts = []
    if fused:
        parts.append(f"{', '.join(fused)} fused into the producing convolution")
    if alone:
        parts.append(f"{', '.join(alone)} as kernels of their own")
    return (f"activations on {profile.name} (modelled, {where}): {'; '.join(parts)}; "
            "an activation reading a tensor other kernels also read is always a kernel")


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
                        params.fold_batchnorm, params.fuse_activation,
                        params.fused_activations)
    return simulate_costs(costs, params, profile.name)
