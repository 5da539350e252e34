"""Log-normal against softmax (plain DARTS) search on real images, judged by clean and PGD
robust accuracy of the retrained networks: the CIFAR-10 subset in
``../shared/data/cifar10-subset``, same budget and seeds for both.

Per seed (``--seeds``, default 0, 1, 2) and arm, exactly what a user runs:

1. ``nas --threads 1 search --space darts --preset small --epochs E --limit N --seed S
   [--sampler lognormal [--lipschitz-budget B]]`` (5 cells, C=8);
2. ``nas --threads 1 retrain --genotype RUN --preset small --epochs R --limit N --seed S
   --no-measure [--adv-train pgd]`` (8 cells, C=16; PGD-7 adversarial training at 8/255
   unless ``--adv-train none``);
3. ``nas --threads 1 attack RETRAIN --attack pgd --eps 8/255 --steps K --step-size 2/255
   --limit M --json`` on the first M of the subset's 1,017 test images (default 500; and
   FGSM at the same eps).

    python bench/bench_robust_evidence.py [--seeds 0,1,2 --epochs 2 --retrain-epochs 5
        --limit 1000 --attack-steps 10 --attack-limit 500 --adv-train pgd --jobs 2 --resume]

Writes bench/results_robust_evidence.json; each run is also appended to
bench/results_robust_evidence.runs.jsonl as it finishes (``--resume`` continues).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from evidence_runs import (  # noqa: E402
    Run,
    add_common_arguments,
    data_arguments,
    nas,
    nas_run,
    parse_jobs,
    run_jobs,
    write_results,
)

OUT = Path(__file__).with_name("results_robust_evidence.json")
ARMS = ("softmax", "lognormal")
EPS = 8 / 255
STEP = 2 / 255
KEYS = ("test_acc", "clean_acc", "pgd_robust_acc", "fgsm_robust_acc", "params",
        "search_val_acc")


def one(arm: str, seed: int, a: argparse.Namespace, folder: Path) -> Run:
    common = data_arguments(a, seed)
    source, target = folder / f"search-{arm}-{seed}", folder / f"retrain-{arm}-{seed}"
    sampler = [] if arm == "softmax" else ["--sampler", "lognormal"]
    if arm == "lognormal" and a.lipschitz_budget is not None:
        sampler += ["--lipschitz-budget", str(a.lipschitz_budget)]
    adv = [] if a.adv_train == "none" else ["--adv-train", a.adv_train]
    t0 = time.perf_counter()
    search = nas_run("search", source, ["--space", "darts", "--preset", "small", "--epochs",
                                        str(a.epochs), *common, *sampler])
    t1 = time.perf_counter()
    retrain = nas_run("retrain", target, ["--genotype", str(source), "--preset", "small",
                                          "--epochs", str(a.retrain_epochs), "--no-measure",
                                          *common, *adv], ["--no-measure"])
    t2 = time.perf_counter()
    attacks: dict[str, Any] = {}
    for name, extra in (("pgd", ["--steps", str(a.attack_steps), "--step-size", str(STEP)]),
                        ("fgsm", [])):
        attacks[name] = nas(["attack", str(target), "--attack", name, "--eps", str(EPS),
                             "--seed", str(seed), "--limit", str(a.attack_limit), *extra])
    t3 = time.perf_counter()
    pgd = attacks["pgd"]
    print(f"{arm:9s} seed {seed}: test {retrain['test_acc']:.3f}, PGD-{a.attack_steps} "
          f"{pgd['robust_acc']:.3f}, FGSM {attacks['fgsm']['robust_acc']:.3f} (search "
          f"{t1 - t0:.0f} s, retrain {t2 - t1:.0f} s, attacks {t3 - t2:.0f} s)",
          file=sys.stderr, flush=True)
    return {"arm": arm, "seed": seed, "source": str(source), "genotype": search["genotype"],
            "search_val_acc": search.get("final_val_acc"), "search_seconds": t1 - t0,
            "test_acc": retrain["test_acc"], "params": retrain["params"],
            "retrain_seconds": t2 - t1, "adversarial_training": retrain.get(
                "adversarial_training"),
            "clean_acc": pgd["clean_acc"], "pgd_robust_acc": pgd["robust_acc"],
            "fgsm_robust_acc": attacks["fgsm"]["robust_acc"],
            "attack": {k: pgd[k] for k in ("eps", "steps", "step_size", "random_start",
                                           "images")},
            "attack_seconds": t3 - t2}


def main() -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    add_common_arguments(ap, ARMS, epochs=2, retrain_epochs=5, limit=1000, out=OUT)
    ap.add_argument("--adv-train", default="pgd", choices=("pgd", "fgsm", "none"),
                    help="adversarial training of the retrains (default pgd: PGD-7, 8/255)")
    ap.add_argument("--attack-steps", type=int, default=10, help="PGD steps of the attack")
    ap.add_argument("--attack-limit", type=int, default=500,
                    help="attack the first N test images (PGD on a CPU is the slow part)")
    ap.add_argument("--lipschitz-budget", type=float, default=None,
                    help="the lognormal arm's --lipschitz-budget (default: none)")
    a = ap.parse_args()
    if not a.data.is_dir():
        raise SystemExit(f"no CIFAR-10 batches at {a.data}")
    folder = a.runs_dir or Path(tempfile.gettempdir()) / "nas-evidence" / a.out.stem
    folder.mkdir(parents=True, exist_ok=True)
    start, load_start = time.perf_counter(), os.getloadavg()
    run_jobs(parse_jobs(a, ARMS), lambda arm, seed: one(arm, seed, a, folder),
             lambda run: None, a)
    result = write_results(
        a, "bench_robust_evidence.py", ARMS, KEYS,
        {"attack": {"name": "pgd", "eps": EPS, "steps": a.attack_steps, "step_size": STEP,
                    "also": "fgsm at the same eps"},
         "adv_train": a.adv_train, "lipschitz_budget": a.lipschitz_budget},
        load_start, start)
    for arm, row in result["summary"].items():
        pgd = row["pgd_robust_acc"]
        sd = f" (sd {pgd['sd']:.3f})" if pgd["sd"] is not None else ""
        print(f"{arm:9s} seeds {row['seeds']}: clean {row['clean_acc']['mean']:.3f}, "
              f"PGD {pgd['mean']:.3f}{sd}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
