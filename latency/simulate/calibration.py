"""Fitting the roofline's efficiency factors and per-kernel overhead to measured latencies.

Apart from the model because it measures (on this CPU) and optimises (scipy); simulating a
latency needs neither.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch
from torch import nn

from latency.hardware import HardwareProfile, load_profile
from latency.simulate.roofline import RooflineParams
from latency.simulate.tracing import LayerCost, layer_costs

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
                            base.fold_batchnorm, base.fuse_activation,
                            base.fused_activations)
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
