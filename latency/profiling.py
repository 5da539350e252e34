"""Profiling a device: sample architectures, build their deployed networks, time or simulate
them, append one row each. Every row also carries `energy_mj`, the modelled arithmetic
energy per image of the network it timed (`latency.energy`; a model, not a measurement).

Sample k of a run is a pure function of (seed, k): resuming skips the ids already in the
file, and shards (`--shard I/N`) take every N-th id of the same sequence, so several
machines of one kind can profile one space together and their files merge by id.
Strata: besides uniform draws, every fifth sample favours few and every fifth many
parameter-heavy operations, so the predictor sees the extremes of latency. Any space
with `sample(rng, heavy_share)` can be profiled (DARTS genotypes, NAS-Bench-201 cells).

Measured profiles time networks in interleaved groups (A B C D R A B C D R ...), where R
is a fixed reference network (DARTS_V2's deployed network) timed in every group: each row
records `reference_ms`, the reference's latency in the same rounds, so the state of a
shared machine during that group (frequency, a neighbour's load) can be divided out when
a predictor is trained (`latency.predictor.train.reference_normalised`). The drift check
also compares the reference at the start and at the end of the run.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from latency.hardware import HardwareProfile
from latency.samples import SampleWriter, arch_field, now_iso, shard_ids
from search_spaces.base import SearchSpace
from search_spaces.errors import InputError
from search_spaces.genotype_library import DARTS_V2

#: heavy-op share per sample id modulo 5: None = uniform over the op set.
STRATA: tuple[float | None, ...] = (None, 0.15, None, 0.85, None)


def sample_genotype(space: SearchSpace[Any], seed: int, k: int) -> Any:
    rng = np.random.default_rng([seed, k])
    return space.sample(rng, STRATA[k % len(STRATA)])


@dataclass
class ProfileSummary:
    hardware: str
    label: str
    out: str
    total: int
    already: int
    written: int = 0
    noisy: int = 0
    seconds: float = 0.0
    stability: dict[str, Any] | None = None
    latencies_ms: list[float] = field(default_factory=list)
    #: the reference network's latency in each interleaved group of this session
    references_ms: list[float] = field(default_factory=list)

    @property
    def per_minute(self) -> float:
        return 60.0 * self.written / self.seconds if self.seconds > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        lat = self.latencies_ms
        return {
            "hardware": self.hardware, "label": self.label, "out": self.out,
            "samples_in_shard": self.total, "already_present": self.already,
            "written": self.written, "noisy": self.noisy, "seconds": self.seconds,
            "samples_per_minute": self.per_minute, "stability": self.stability,
            "latency_ms_min": min(lat) if lat else None,
            "latency_ms_median": float(np.median(lat)) if lat else None,
            "latency_ms_max": max(lat) if lat else None,
            "reference": reference_drift(self.references_ms),
        }


def reference_drift(refs: list[float]) -> dict[str, float] | None:
    """How much the machine moved during a session, read off the reference network timed in
    every group: its median and the 5th-95th percentile range relative to the median."""
    if not refs:
        return None
    a = np.asarray(refs, dtype=np.float64)
    lo, med, hi = np.percentile(a, [5, 50, 95])
    return {"groups": len(refs), "median_ms": float(med), "p5_ms": float(lo),
            "p95_ms": float(hi), "range_5_95": float((hi - lo) / med)}


def _deployed(genotype: Any, profile: HardwareProfile) -> tuple[Any, tuple[int, ...]]:
    from latency.simulate import deployed_network

    return deployed_network(genotype, profile)


def _row(k: int, seed: int, space: SearchSpace[Any], genotype: Any, profile: HardwareProfile,
         latency_ms: float, extra: dict[str, Any]) -> dict[str, Any]:
    m = profile.measurement
    return {
        "id": k, "seed": seed, "space": space.name, "arch": arch_field(space, genotype),
        "latency_ms": float(latency_ms), "hardware": profile.name,
        "source": "simulated" if profile.simulated else "measured",
        "backend": m.get("backend", "roofline-model") if not profile.simulated
        else "roofline-model",
        "batch_size": profile.batch_size, "threads": profile.threads,
        "precision": profile.precision, "timestamp": now_iso(), **extra,
    }


def profile_hardware(
    profile: HardwareProfile,
    space: SearchSpace[Any],
    out: str | Path,
    samples: int,
    seed: int = 0,
    shard: tuple[int, int] = (0, 1),
    group: int = 8,
    timing: Any = None,
    log: Callable[[str], None] = print,
) -> ProfileSummary:
    """Profile `samples` architectures (this shard's part of them) into `out`."""
    if profile.source == "imported":
        raise InputError(f"profile {profile.name!r} holds imported data; it cannot be profiled")
    # a file of another profile or space is refused: ids would collide and resuming would
    # skip them, or one device's latencies would train another's predictor
    writer = SampleWriter(out, expect={"hardware": profile.name, "space": space.name})
    ids = shard_ids(samples, *shard)
    todo = [k for k in ids if (seed, k) not in writer.keys]
    summary = ProfileSummary(profile.name, profile.label, str(out), len(ids), len(ids) - len(todo))
    if summary.already:
        log(f"resuming: {summary.already} of {len(ids)} samples already in {out}")
    measure, check = None, None
    if not profile.simulated and todo:
        from latency.measure import stability_check

        ref_model, shape = reference_network(profile)
        reference = profile_runner(profile, ref_model, shape)
        measure = _measurer(profile, timing, reference)
        check = stability_check(reference, timing)
        check.start()
    started = time.perf_counter()
    bar = tqdm(total=len(todo), desc=f"profiling {profile.name} ({profile.label})",
               unit="arch", disable=None)
    try:
        for start in range(0, len(todo), group):
            chunk = todo[start : start + group]
            genotypes = [sample_genotype(space, seed, k) for k in chunk]
            results = (measure(genotypes) if measure is not None
                       else [_simulate(g, profile) for g in genotypes])
            if results and "reference_ms" in results[0][1]:
                summary.references_ms.append(float(results[0][1]["reference_ms"]))
            for k, g, (lat, extra) in zip(chunk, genotypes, results, strict=True):
                writer.append(_row(k, seed, space, g, profile, lat, extra))
                summary.written += 1
                summary.noisy += int(bool(extra.get("noisy")))
                summary.latencies_ms.append(lat)
            bar.update(len(chunk))
    finally:
        bar.close()
        summary.seconds = time.perf_counter() - started
    if check is not None:
        summary.stability = check.finish().to_dict()
    return summary


def _energy_mj(model: Any, shape: Any, profile: HardwareProfile) -> float:
    """The modelled arithmetic energy (mJ per image) of a deployed network already built
    for timing or simulation (`latency.energy`: a model, not a measurement)."""
    from latency.energy import network_energy

    return network_energy(model, shape, profile.precision).mj


def _simulate(genotype: Any, profile: HardwareProfile) -> tuple[float, dict[str, Any]]:
    from latency.simulate import simulate_latency

    model, shape = _deployed(genotype, profile)  # as `simulate_genotype`, built once
    sim = simulate_latency(model, shape, profile)
    return sim.ms, {"spread": 0.0, "noisy": False,
                    "energy_mj": _energy_mj(model, shape, profile)}


def profile_runner(profile: HardwareProfile, model: Any, shape: Any,
                   backend: str | None = None) -> Any:
    """A timing Runner with the profile's measurement settings (backend, batch, precision,
    threads); every measurement a profile's numbers come from is prepared here."""
    from latency.measure import prepare

    return prepare(backend or profile.measurement.get("backend", "torch-cpu"), model, shape,
                   batch_size=profile.batch_size, precision=profile.precision,
                   threads=profile.threads or 1)


def reference_network(profile: HardwareProfile) -> tuple[Any, tuple[int, ...]]:
    """The fixed network timed beside every profiled group (DARTS_V2's deployed network):
    its latency tells the state of the machine at that moment."""
    return _deployed(DARTS_V2, profile)


def measure_at_state(profile: HardwareProfile, model: Any, shape: Any,
                     backend: str | None = None, timing: Any = None) -> tuple[Any, Any]:
    """(the network's Measurement, the reference network's), timed interleaved, so that
    a prediction can be moved to the machine state of this measurement
    (`prediction_at_state`)."""
    from latency.measure import measure_many

    ref_model, ref_shape = reference_network(profile)
    runners = [profile_runner(profile, model, shape, backend),
               profile_runner(profile, ref_model, ref_shape, backend)]
    network, reference = measure_many(runners, config=timing)
    return network, reference


def prediction_at_state(predicted_ms: float, trained_reference_ms: float | None,
                        reference_now_ms: float) -> float | None:
    """A measured profile's predictor predicts at the machine state where the reference
    network took `trained_reference_ms` (`latency.predictor.train.reference_normalised`);
    the same prediction at the state where it takes `reference_now_ms` now. None when the
    predictor was not trained reference-normalised."""
    if not trained_reference_ms:
        return None
    return predicted_ms * reference_now_ms / trained_reference_ms


def _measurer(profile: HardwareProfile, timing: Any, reference: Any
              ) -> Callable[[list[Any]], list[tuple[float, dict[str, Any]]]]:
    """Times a group of genotypes interleaved with the `reference` runner."""
    from latency.measure import fingerprint, measure_many

    fp = fingerprint()

    def measure(genotypes: list[Any]) -> list[tuple[float, dict[str, Any]]]:
        runners, energies = [], []
        for g in genotypes:
            model, shape = _deployed(g, profile)
            energies.append(_energy_mj(model, shape, profile))  # before a runner converts it
            runners.append(profile_runner(profile, model, shape))
        *measured, ref = measure_many([*runners, reference], config=timing)
        out = []
        for m, energy in zip(measured, energies, strict=True):
            out.append((m.median_ms, {"spread": m.spread, "noisy": m.noisy, "repeats": m.runs,
                                      "reference_ms": ref.median_ms, "fingerprint": fp,
                                      "energy_mj": energy}))
        return out

    return measure
