"""Fitting the MLP latency predictor: the model-by-model loop (before) against the
batched fit (after), with the figures each produces.

Before is `latency/predictor/mlp.py` at commit `--before` (read with ``git show``, loaded
as a module of its own); after is the working tree. One process, old and new interleaved
(the order alternates between repeats), medians quoted, the load average recorded
beside every run, because the machine is shared:

1. `LatencyMLP.fit` on the CLI's training rows of 1,000 samples (default: the shipped
   `hardware_profiles/p100.samples.jsonl`, 800 training samples plus the cells that
   compute the same, held-out 200 as `nas predictor train` splits them): wall and CPU
   seconds, the phases (choosing the grid point, training the members), the chosen
   weight decay / Huber delta / encoding L2 and the held-out MAPE, within 10 % and
   Kendall tau. Two fits of one seed must predict identically (determinism). The
   noise band: the same fits with the training latencies perturbed by a float32
   rounding or two (1 +- j * 2**-23), to show how much float noise alone moves the
   choice and the figures.
2. The CLI, ``nas --threads N predictor train --hardware p100 --samples FILE``, in
   subprocesses; before runs on the whole `latency` package of `--before` (`git
   archive`: the model-by-model fit, the MLP shipped alone, the exact gradient boosting
   and the 300-tree forest of then), after on the working tree (batched fit, the blend
   chosen out of fold, the lighter tree baselines). Figures from each run's report.json:
   what ships (after: the `shipped` row) and the MLP alone. The baselines of the working
   tree are timed alone once. With `--also-threads 2`, one more before/after pair at two
   threads (the CLI's choice when no other job holds a core; meaningless if one does:
   see the loads).
3. Optional (`--nb201-device`): a fit on 1,000 measured NAS-Bench-201 cells of a device
   from ``../shared`` (another space, other features), for the figures.
4. The latency term of the search: forward and backward of the shipped p100 predictor
   on the soft architecture's encoding (as `bench_latency_term.py`): members one after
   another (old code) against the batched members; outputs and gradients compared.

    python bench/bench_predictor_fit.py [--fit-repeats 3 --cli-repeats 2 --threads 1]

Writes bench/predictor_fit.json. About 25 minutes on one busy core with the defaults.
"""

from __future__ import annotations

import argparse
import csv
import importlib.util
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from latency.predictor.augment import with_equivalents  # noqa: E402
from latency.predictor.baselines import BASELINES, make_baseline  # noqa: E402
from latency.predictor.features import layout_for_space  # noqa: E402
from latency.predictor.locate import default_predictor_path, load_for_space  # noqa: E402
from latency.predictor.metrics import report  # noqa: E402
from latency.predictor.mlp import LatencyMLP  # noqa: E402
from latency.predictor.train import encode_rows, reference_normalised, split  # noqa: E402
from search_spaces.space import get_space  # noqa: E402

BEFORE = "00b5de9"  # the last commit with the model-by-model fit (main before it)
OUT = Path(__file__).with_name("predictor_fit.json")
NB201_CSV = ROOT.parent / "shared/data/nb201-latency/nb201_latency.csv"
FIGURES = ("mape", "within_10", "kendall_tau")


def load_before(ref: str, tmp: Path) -> tuple[ModuleType, str]:
    """The old mlp.py as a module (`before_mlp`), and its source."""
    source = subprocess.run(["git", "show", f"{ref}:latency/predictor/mlp.py"], cwd=ROOT,
                            check=True, capture_output=True, text=True).stdout
    path = tmp / "before_mlp.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location("before_mlp", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["before_mlp"] = module
    spec.loader.exec_module(module)
    return module, source


def load() -> float:
    return round(os.getloadavg()[0], 2)


def machine(threads: int) -> dict[str, Any]:
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpus": os.cpu_count(), "cpu_model": model, "python": platform.python_version(),
            "torch": torch.__version__, "torch_threads": threads,
            "load_average_at_start": [round(v, 2) for v in os.getloadavg()]}


def med(values: list[float]) -> float:
    return round(statistics.median(values), 4)


# ----------------------------------------------------------------- 1. LatencyMLP.fit
def cli_rows(samples: Path, seed: int = 0, test_fraction: float = 0.2) -> dict[str, Any]:
    """The rows `nas predictor train` trains and scores on (`train.train_predictor`)."""
    rows = [json.loads(line) for line in samples.read_text().splitlines() if line.strip()]
    space, X, y = encode_rows(rows)
    y, _ = reference_normalised(rows, y)
    train, test = split(len(y), test_fraction, seed)
    X_fit, y_fit, groups = with_equivalents(
        space, [space.parse(rows[i]["arch"]) for i in train], X[train], y[train])
    return {"space": space, "layout": layout_for_space(space), "X_fit": X_fit,
            "y_fit": y_fit, "groups": groups, "X_test": X[test], "y_test": y[test]}


def timed_fit(cls: type, data: dict[str, Any], seed: int = 0) -> dict[str, Any]:
    marks: list[tuple[str, float]] = []

    def log(line: str) -> None:
        marks.append((line, time.perf_counter()))

    start_load, wall, cpu = load(), time.perf_counter(), time.process_time()
    model = cls(data["layout"], cls_config(cls, seed)).fit(
        data["X_fit"], data["y_fit"], data["groups"], log=log)
    finish = time.perf_counter()
    wall, cpu = finish - wall, time.process_time() - cpu
    # a phase runs from its log line to the next phase's (the last, to the end)
    starts = [(("choosing" if "choosing" in line else "members"), t) for line, t in marks
              if "choosing" in line or "members" in line]
    ends = [t for _, t in starts[1:]] + [finish]
    phases = {name: round(end - t, 2) for (name, t), end in zip(starts, ends, strict=True)}
    mean, _ = model.predict(data["X_test"])
    cfg = model.config
    return {"wall_s": round(wall, 2), "cpu_s": round(cpu, 2), "phases_s": phases,
            "load_before": start_load, "load_after": load(),
            "chosen": [cfg.chosen_weight_decay, cfg.chosen_huber_delta, cfg.chosen_encoding_l2],
            "heldout": {k: round(float(v), 6) for k, v in report(data["y_test"], mean).items()
                        if k in FIGURES},
            "_pred": mean}


STEPS: int | None = None  # --steps: shorter fits, for a smoke test of this script


def cls_config(cls: type, seed: int) -> Any:
    module = sys.modules[cls.__module__]
    return module.MLPConfig(seed=seed, **({"steps": STEPS} if STEPS else {}))


def fit_phase(before: ModuleType, data: dict[str, Any], repeats: int,
              label: str) -> dict[str, Any]:
    runs: dict[str, list[dict[str, Any]]] = {"before": [], "after": []}
    classes = {"before": before.LatencyMLP, "after": LatencyMLP}
    for r in range(repeats):
        for name in (("before", "after") if r % 2 == 0 else ("after", "before")):
            out = timed_fit(classes[name], data)
            runs[name].append(out)
            print(f"[{label} fit] {name} repeat {r}: {out['wall_s']} s wall, {out['cpu_s']} s "
                  f"CPU, load {out['load_before']}->{out['load_after']}, chosen "
                  f"{out['chosen']}, held-out {out['heldout']}", flush=True)
    result: dict[str, Any] = {}
    for name, rs in runs.items():
        preds = [r.pop("_pred") for r in rs]
        result[name] = {
            "median_wall_s": med([r["wall_s"] for r in rs]),
            "median_cpu_s": med([r["cpu_s"] for r in rs]),
            "deterministic": all(np.array_equal(preds[0], p) for p in preds[1:]),
            "runs": rs,
        }
        result[f"_{name}_pred"] = preds[0]
    a, b = result.pop("_before_pred"), result.pop("_after_pred")
    result["speedup_wall"] = round(result["before"]["median_wall_s"]
                                   / result["after"]["median_wall_s"], 2)
    result["speedup_cpu"] = round(result["before"]["median_cpu_s"]
                                  / result["after"]["median_cpu_s"], 2)
    result["same_choice"] = (result["before"]["runs"][0]["chosen"]
                             == result["after"]["runs"][0]["chosen"])
    result["heldout_prediction_max_rel_diff"] = float(np.max(np.abs(b / a - 1)))
    return result


def noise_band(before: ModuleType, data: dict[str, Any], k: int) -> dict[str, Any]:
    """The figures of each implementation when the training latencies are scaled by
    1 +- j * 2**-23 (the sign alternating by row, so the change does not cancel in the
    normalisation by their mean; j = 1..k, about j float32 roundings): how far float
    noise alone moves the choice and the held-out metrics, before and after."""
    out: dict[str, Any] = {"before": [], "after": []}
    sign = np.where(np.arange(len(data["y_fit"])) % 2 == 0, 1.0, -1.0)
    for j in range(1, k + 1):
        scaled = dict(data, y_fit=data["y_fit"] * (1 + sign * j * 2.0**-23))
        for name, cls in (("before", before.LatencyMLP), ("after", LatencyMLP)):
            run = timed_fit(cls, scaled)
            run.pop("_pred")
            out[name].append({"scale": f"1 +- {j} * 2**-23", "chosen": run["chosen"],
                              "heldout": run["heldout"]})
            print(f"[noise band] {name} scale 1 +- {j} * 2**-23: chosen {run['chosen']}, "
                  f"held-out {run['heldout']}", flush=True)
    return out


# ----------------------------------------------------------------- 2. the CLI
def before_tree(ref: str, tmp: Path) -> Path:
    """The `latency` package as it was at `ref` (`git archive`), so that the CLI before
    is the whole pipeline of then: the model-by-model fit, one MLP shipped, the baselines
    of then."""
    root = tmp / "before_pkg"
    root.mkdir(parents=True)
    archive = subprocess.run(["git", "archive", ref, "latency"], cwd=ROOT, check=True,
                             capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(root)], input=archive, check=True)
    return root


# Runs the CLI with the `latency` package of TREE (argv[1]; '' for the working tree's).
# The package is loaded from its path before anything imports it, because the project's
# editable install would otherwise find the working tree's first, whatever PYTHONPATH says.
CLI = """
import importlib.util, sys
tree = sys.argv.pop(1)
if tree:
    spec = importlib.util.spec_from_file_location(
        "latency", tree + "/latency/__init__.py", submodule_search_locations=[tree + "/latency"])
    module = importlib.util.module_from_spec(spec)
    sys.modules["latency"] = module
    spec.loader.exec_module(module)
import latency.predictor.mlp
print(latency.predictor.mlp.__file__, file=sys.stderr)
from nas.cli.main import main
sys.exit(main(sys.argv[1:]))
"""


def run_cli(samples: Path, out: Path, threads: int, tree: Path | None) -> dict[str, Any]:
    cmd = [sys.executable, "-c", CLI, str(tree or ""),
           "--threads", str(threads), "predictor", "train", "--hardware", "p100",
           "--samples", str(samples), "--out", str(out), "--json"]
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    start_load, wall = load(), time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    wall = time.perf_counter() - wall
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode:
        raise RuntimeError(f"CLI failed ({proc.returncode}): {proc.stderr[-2000:]}")
    used = proc.stderr.splitlines()[0]
    rep = json.loads((out / "report.json").read_text())
    cfg = json.loads((out / "predictor.json").read_text())["model"]["config"]
    return {"wall_s": round(wall, 2),
            "cpu_s": round(after.ru_utime + after.ru_stime - usage.ru_utime - usage.ru_stime, 2),
            "load_before": start_load, "load_after": load(), "mlp_py": used,
            "chosen": [cfg["chosen_weight_decay"], cfg["chosen_huber_delta"],
                       cfg.get("chosen_encoding_l2")],
            # what ships: the blend where the report has one, else the MLP
            "shipped_model": rep.get("shipped_model", {"mlp": 1.0}),
            "heldout": {k: round(float(rep["metrics"].get("shipped", rep["metrics"]["mlp"])[k]),
                                 6) for k in FIGURES},
            "heldout_mlp": {k: round(float(rep["metrics"]["mlp"][k]), 6) for k in FIGURES}}


def cli_phase(ref: str, samples: Path, tmp: Path, repeats: int,
              threads: int) -> dict[str, Any]:
    tree = before_tree(ref, tmp)
    runs: dict[str, list[dict[str, Any]]] = {"before": [], "after": []}
    for r in range(repeats):
        for name in (("before", "after") if r % 2 == 0 else ("after", "before")):
            out = run_cli(samples, tmp / f"cli_{name}_{r}", threads,
                          tree if name == "before" else None)
            runs[name].append(out)
            print(f"[cli] {name} repeat {r}: {out['wall_s']} s wall, load "
                  f"{out['load_before']}->{out['load_after']}, chosen {out['chosen']}, "
                  f"held-out {out['heldout']} ({out['mlp_py']})", flush=True)
    result: dict[str, Any] = {n: {"median_wall_s": med([r["wall_s"] for r in rs]),
                                  "median_cpu_s": med([r["cpu_s"] for r in rs]), "runs": rs}
                              for n, rs in runs.items()}
    result["speedup_wall"] = round(result["before"]["median_wall_s"]
                                   / result["after"]["median_wall_s"], 2)
    return result


def baselines_seconds(data: dict[str, Any]) -> dict[str, float]:
    out = {}
    for name in BASELINES:
        t = time.perf_counter()
        make_baseline(name, data["layout"], 0).fit(data["X_fit"], data["y_fit"])
        out[name] = round(time.perf_counter() - t, 2)
    return out


# ----------------------------------------------------------------- 3. NB201 figures
def nb201_rows(device: str, n_train: int = 1000, seed: int = 0) -> dict[str, Any]:
    from search_spaces.nb201_space import NB201_SPACE

    with NB201_CSV.open() as fh:
        rows = list(csv.DictReader(fh))
    archs = [r["arch"] for r in rows]
    X = np.stack([NB201_SPACE.encode(a) for a in archs]).astype(np.float32)
    y = np.array([float(r[device]) for r in rows])
    keep = np.flatnonzero(y >= 1.0) if "raspi" in device else np.arange(len(y))
    order = np.random.default_rng(seed).permutation(keep)
    tr, te = np.sort(order[:n_train]), np.sort(order[n_train:])
    X_fit, y_fit, groups = with_equivalents(NB201_SPACE, [archs[i] for i in tr], X[tr], y[tr])
    return {"layout": layout_for_space(NB201_SPACE), "X_fit": X_fit, "y_fit": y_fit,
            "groups": groups, "X_test": X[te], "y_test": y[te]}


# ----------------------------------------------------------------- 4. latency term
def term_phase(before: ModuleType, rounds: int, calls: int) -> dict[str, Any]:
    space = get_space("darts")
    new, _ = load_for_space(default_predictor_path("p100"), space)
    old = before.LatencyMLP(new.layout, before.MLPConfig.from_dict(new.config.to_dict()))
    old.load_state_dict(new.state_dict())
    new.freeze()
    old.freeze()
    torch.manual_seed(0)
    net = space.build_supernet(8, 5, 10, 1)
    alphas = list(net.arch_parameters())
    edge_ops = space.full_edge_ops()

    def term(model: torch.nn.Module | None) -> Callable[[], Any]:
        def call() -> Any:
            enc = space.encode_weights(net.arch_weights(), edge_ops)
            out = model(enc) if model is not None else enc.sum()
            return out, torch.autograd.grad(out, alphas)
        return call

    fns = {"before": term(old), "after": term(new), "encoding_only": term(None)}
    times: dict[str, list[float]] = {k: [] for k in fns}
    for fn in fns.values():
        fn()
    for _ in range(rounds):
        for name, fn in fns.items():
            t = time.perf_counter()
            for _ in range(calls):
                fn()
            times[name].append((time.perf_counter() - t) / calls * 1e3)
    (out_a, grads_a), (out_b, grads_b) = fns["before"](), fns["after"]()
    rel = float(((out_b - out_a).abs() / out_a.abs()).max().detach())
    grad_rel = max(float((gb - ga).abs().max() / ga.abs().max()) for ga, gb in
                   zip(grads_a, grads_b, strict=True))
    med_ms = {k: med(v) for k, v in times.items()}
    return {"fwd_bwd_ms": med_ms,
            "predictor_share_ms": {k: round(med_ms[k] - med_ms["encoding_only"], 4)
                                   for k in ("before", "after")},
            "speedup": round(med_ms["before"] / med_ms["after"], 2),
            "output_max_rel_diff": rel, "grad_max_rel_diff": grad_rel,
            "rounds": rounds, "calls_per_round": calls}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--before", default=BEFORE, help="git ref of the old mlp.py")
    p.add_argument("--samples", type=Path, default=ROOT / "hardware_profiles/p100.samples.jsonl")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--fit-repeats", type=int, default=3)
    p.add_argument("--cli-repeats", type=int, default=2)
    p.add_argument("--nb201-device", default="gold_6226_bs1_ms",
                   help="column of ../shared's NB201 CSV for the figures check ('' to skip)")
    p.add_argument("--noise-band", type=int, default=2,
                   help="fits with the training latencies perturbed by j float32 roundings, "
                        "j = 1..N (0: none)")
    p.add_argument("--also-threads", type=int, default=2,
                   help="time the fit once more at this many threads (what the CLI takes "
                        "on an idle machine; 0: skip)")
    p.add_argument("--term-rounds", type=int, default=30)
    p.add_argument("--steps", type=int, default=None,
                   help="override the fits' steps (a smoke test; figures not comparable)")
    p.add_argument("--out", type=Path, default=OUT)
    a = p.parse_args(argv)
    global STEPS
    STEPS = a.steps
    torch.set_num_threads(a.threads)
    result: dict[str, Any] = {"machine": machine(a.threads), "before_ref": a.before,
                              "samples": str(a.samples.relative_to(ROOT)
                                             if a.samples.is_relative_to(ROOT) else a.samples)}
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        before, source = load_before(a.before, tmp)
        result["latency_term"] = term_phase(before, a.term_rounds, 50)
        print(json.dumps(result["latency_term"]), flush=True)
        data = cli_rows(a.samples)
        result["fit"] = {"rows": int(len(data["y_fit"])), "heldout_rows": int(len(data["y_test"])),
                         **fit_phase(before, data, a.fit_repeats, "p100")}
        if a.noise_band:
            result["fit"]["noise_band"] = noise_band(before, data, a.noise_band)
        if a.also_threads:
            torch.set_num_threads(a.also_threads)
            result[f"fit_{a.also_threads}_threads"] = fit_phase(
                before, data, 1, f"p100, {a.also_threads} threads")
            torch.set_num_threads(a.threads)
        if a.nb201_device and NB201_CSV.is_file():
            nb = nb201_rows(a.nb201_device)
            result["nb201_fit"] = {"device": a.nb201_device, "rows": int(len(nb["y_fit"])),
                                   **fit_phase(before, nb, 1, "nb201")}
        if a.cli_repeats:
            result["baselines_fit_s"] = baselines_seconds(data)
            result["cli"] = cli_phase(a.before, a.samples, tmp, a.cli_repeats, a.threads)
            if a.also_threads:
                result[f"cli_{a.also_threads}_threads"] = cli_phase(
                    a.before, a.samples, tmp / "t", 1, a.also_threads)
    result["machine"]["load_average_at_end"] = [round(v, 2) for v in os.getloadavg()]
    a.out.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps({k: result[k].get("speedup_wall", result[k].get("speedup"))
                      for k in ("fit", "cli", "latency_term") if k in result}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
