"""`nas predictor train|adapt|eval`: fit the latency regressor on samples (many, or a
handful with the space's device prior) and score it."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from latency.hardware import load_profile, profile_names
from latency.predictor.adapt import adapt_predictor
from latency.predictor.baselines import BASELINES
from latency.predictor.locate import (
    PREDICTOR_FILE,
    default_predictor_path,
    default_samples_path,
)
from latency.predictor.train import evaluate_predictor, train_predictor
from latency.samples import load_samples
from search_spaces.errors import InputError
from search_spaces.space import DEFAULT_SPACE, get_space


def _space_name(name: str) -> str:
    """A space or one of its variants ("darts", "nb201", "darts-act", "darts.adder"):
    whatever `get_space` resolves; anything else is a one-line error."""
    return get_space(name).name


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("predictor", help="train, adapt or evaluate a latency predictor",
                       description="Train the MLP latency predictor (and baselines, for "
                       "comparison) on profiled samples; adapt the space's device prior to a "
                       "handful of a new device's samples (10-50); or score a predictor.")
    p.add_argument("action", choices=["train", "adapt", "eval"],
                   help="train: fit on samples and report; adapt: a predictor from a few "
                   "samples and the device prior; eval: score a predictor")
    p.add_argument("--prior", help="adapt: the device prior (default: the one shipped for "
                   "the samples' space)")
    p.add_argument("--hardware", help=f"profile ({', '.join(profile_names())})")
    p.add_argument("--samples", nargs="+", help="sample files (default: the profile's own "
                   "for --space)")
    p.add_argument("--space", type=_space_name, metavar="SPACE",
                   help="train: the space whose default sample file is read (default darts; "
                   "nb201, or a variant: darts-act, darts.darts+adder, ...; with --samples, "
                   "the files' rows must be of it)")
    p.add_argument("--out", help="predictor directory (default <name>.predictor, or "
                   "<name>.nb201.predictor for nb201 samples, in ~/.hw-nas/hardware_profiles); "
                   "must not exist or be empty")
    p.add_argument("--force", action="store_true",
                   help="train: replace the predictor already at --out (or the default place)")
    p.add_argument("--predictor", help="predictor directory (eval)")
    p.add_argument("--test-fraction", type=float, default=0.2,
                   help="share of samples held out for the report (default 0.2)")
    p.add_argument("--train-size", type=int,
                   help="train on this many random samples, hold out all the others")
    p.add_argument("--min-latency", type=float, metavar="MS",
                   help="drop samples below MS from training and evaluation (counted)")
    p.add_argument("--seed", type=int, default=0,
                   help="seed of the held-out split and of the models (default 0)")
    p.add_argument("--baselines", default="all", metavar="LIST",
                   help="train: the scikit-learn models fitted beside the predictor for the "
                        f"report: 'all' ({', '.join(BASELINES)}), 'none', or a comma-separated "
                        "list; the trees take most of the time after the MLP")
    p.add_argument("--json", action="store_true", help="one JSON object on stdout")
    p.set_defaults(run=run)


def check_out(out: Path, force: bool) -> None:
    """Refuse to write a predictor over anything the user has, unless --force names a
    predictor to replace; runs before any training."""
    if out.exists() and not out.is_dir():
        raise InputError(f"--out {out} is a file, not a predictor directory; choose another "
                         "--out")
    if not out.is_dir() or not any(out.iterdir()):
        return
    if not (out / PREDICTOR_FILE).is_file():
        raise InputError(f"--out {out} is a directory that holds other files; choose another "
                         "--out")
    if not force:
        raise InputError(f"{out} already holds a predictor; add --force to replace it, or "
                         "choose another --out")


def _rows(files: list[str]) -> list[dict]:
    rows = []
    for f in files:
        rows.extend(load_samples(f))
    return rows


def parse_baselines(text: str) -> tuple[str, ...]:
    """--baselines: 'all', 'none' or names from `BASELINES` (one-line error otherwise)."""
    text = text.strip()
    if text == "all":
        return tuple(BASELINES)
    if text == "none":
        return ()
    names = tuple(n.strip() for n in text.split(",") if n.strip())
    unknown = [n for n in names if n not in BASELINES]
    if unknown or not names:
        raise InputError(f"--baselines: unknown {', '.join(unknown) or repr(text)}; known: "
                         f"all, none, {', '.join(BASELINES)}")
    return names


def run(args: argparse.Namespace) -> int:
    if args.action == "eval":
        if not args.predictor or not args.samples:
            raise InputError("nas predictor eval needs --predictor DIR and --samples FILE")
        result = evaluate_predictor(args.predictor, _rows(args.samples))
        if args.json:
            print(json.dumps(result))
        else:
            print(f"{result['n']} samples: MAPE {100 * result['mape']:.2f}%, within 5% "
                  f"{100 * result['within_5']:.1f}%, within 10% {100 * result['within_10']:.1f}%,"
                  f" Kendall tau {result['kendall_tau']:.3f}, Spearman {result['spearman']:.3f}")
        return 0
    if not args.hardware:
        raise InputError(f"nas predictor {args.action} needs --hardware NAME")
    if args.action == "adapt":
        return _adapt(args)
    profile = load_profile(args.hardware)
    baselines = parse_baselines(args.baselines)

    files = args.samples or [str(default_samples_path(profile.name, args.space or DEFAULT_SPACE))]
    if not 0.0 < args.test_fraction < 1.0:
        raise InputError(f"--test-fraction must be in (0, 1), got {args.test_fraction}")
    if args.out:
        check_out(Path(args.out), args.force)  # before the samples are even read
    rows = _rows(files)
    foreign = sorted({str(r["hardware"]) for r in rows} - {profile.name})
    if foreign:
        raise InputError(f"{', '.join(files)} hold(s) samples of {', '.join(foreign)}; "
                         f"--hardware {profile.name} trains on {profile.name} samples only")
    space = rows[0]["space"] if rows else DEFAULT_SPACE
    if args.space and {r["space"] for r in rows} != {args.space}:
        found = ", ".join(sorted({str(r["space"]) for r in rows}))
        raise InputError(f"{', '.join(files)} hold(s) {found} samples, not --space {args.space}")
    out = Path(args.out) if args.out else default_predictor_path(profile.name, space,
                                                                 for_writing=True)
    check_out(out, args.force)
    summary = train_predictor(rows, out, profile.name, ", ".join(files),
                              baselines=baselines,
                              test_fraction=args.test_fraction, seed=args.seed,
                              train_size=args.train_size, min_latency_ms=args.min_latency,
                              log=lambda m: print(m, file=sys.stderr, flush=True))
    if args.json:
        print(json.dumps(summary))
        return 0
    print(f"predictor for {profile.name} ({', '.join(summary['sources'])} samples): "
          f"{summary['n_train']} train / {summary['n_test']} held out -> {out}")
    if summary["n_equivalents_added"]:
        print(f"  + {summary['n_equivalents_added']} cells that compute the same as a training "
              "sample, trained on with its latency")
    print(f"  {'model':24s} {'MAPE':>7s} {'<=5%':>6s} {'<=10%':>6s} {'tau':>6s}")
    for name, m in summary["metrics"].items():
        print(f"  {name:24s} {100 * m['mape']:6.2f}% {100 * m['within_5']:5.1f}% "
              f"{100 * m['within_10']:5.1f}% {m['kendall_tau']:6.3f}")
    if summary["excluded_below_min_latency"]:
        print(f"  {summary['excluded_below_min_latency']} samples below "
              f"{summary['min_latency_ms']} ms excluded from training and evaluation")
    if summary.get("reference_normalised"):
        print(f"  labels normalised to the reference network at {summary['reference_ms']:.3f} ms "
              "(timed in the same interleaved rounds as each sample)")
    print(f"  report.json and calibration.png in {out}")
    return 0


def _adapt(args: argparse.Namespace) -> int:
    profile = load_profile(args.hardware)
    if not args.samples:
        raise InputError("nas predictor adapt needs --samples FILE (a few samples of the "
                         f"device, e.g. from `nas profile --hardware {profile.name} "
                         "--samples 20 --out FEW.jsonl`)")
    if args.out:
        check_out(Path(args.out), args.force)  # before the samples are even read
    rows = _rows(args.samples)
    foreign = sorted({str(r["hardware"]) for r in rows} - {profile.name})
    if foreign:
        raise InputError(f"{', '.join(args.samples)} hold(s) samples of {', '.join(foreign)}; "
                         f"--hardware {profile.name} adapts to {profile.name} samples only")
    if args.space and {r["space"] for r in rows} != {args.space}:
        found = ", ".join(sorted({str(r["space"]) for r in rows}))
        raise InputError(f"{', '.join(args.samples)} hold(s) {found} samples, not --space "
                         f"{args.space}")
    space = str(rows[0]["space"]) if rows else DEFAULT_SPACE
    out = Path(args.out) if args.out else default_predictor_path(profile.name, space,
                                                                 for_writing=True)
    check_out(out, args.force)
    summary = adapt_predictor(rows, out, profile.name, ", ".join(args.samples), args.prior,
                              log=lambda m: print(m, file=sys.stderr, flush=True))
    if args.json:
        print(json.dumps(summary))
        return 0
    print(f"predictor for {profile.name} adapted from {summary['n_train']} "
          f"{', '.join(summary['sources'])} samples and the {summary['space']} device prior "
          f"-> {out}")
    loo = summary["leave_one_out"]
    if loo:
        print(f"  leave-one-out over those samples: MAPE {100 * loo['mape']:.1f}%, within 10% "
              f"{100 * loo['within_10']:.0f}%, Kendall tau {loo['kendall_tau']:.3f}, "
              f"Spearman {loo['spearman']:.3f}")
    print(f"  score it on more samples: nas predictor eval --predictor {out} --samples FILE")
    return 0
