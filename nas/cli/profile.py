"""`nas profile`: measure (or simulate) latencies of sampled architectures on a device."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from latency.hardware import load_profile, profile_names
from latency.predictor.locate import default_samples_path
from latency.profiling import profile_hardware
from latency.samples import merge_samples, parse_shard
from search_spaces.space import DEFAULT_SPACE, get_space


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "profile",
        help="measure or simulate the latency of sampled architectures on a device",
        description="Sample architectures, build their deployed networks, measure them on "
        "this machine (measured profiles) or with the roofline model (simulated profiles), "
        "and append one row each to a sample file. A killed run resumes where it stopped. "
        "`nas profile merge FILE... --out FILE` joins shard files.",
    )
    p.add_argument("action", nargs="?", choices=["merge", "import"],
                   help="merge shard files, or import a CSV of measurements made elsewhere")
    p.add_argument("files", nargs="*", help="shard files (merge) or one CSV file (import)")
    p.add_argument("--arch-column", default="arch", help="import: architecture column")
    p.add_argument("--latency-column", help="import: latency column (milliseconds)")
    p.add_argument("--kind", default="x86", help="import: device kind of a new profile "
                   "(cpu, x86, arm, cuda)")
    p.add_argument("--device", help="import: device description of a new profile")
    p.add_argument("--hardware", help=f"profile ({', '.join(profile_names())})")
    p.add_argument("--space", default=DEFAULT_SPACE,
                   help="darts (default) or nb201: the space sampled, or imported")
    p.add_argument("--samples", type=int, default=200, help="architectures (default 200)")
    p.add_argument("--out", help="sample file (default <name>.samples.jsonl, or "
                   "<name>.nb201.samples.jsonl for nb201, in ~/.hw-nas/hardware_profiles); "
                   "profiling appends to a sample file of the same profile and space (a "
                   "resume) and refuses any other file; merge and import write a new file")
    p.add_argument("--shard", default="1/1", help="I/N: profile every N-th sample from the I-th")
    p.add_argument("--seed", type=int, default=0,
                   help="seed of the sampled architectures; rows record it, and a resume "
                   "skips the samples of this seed already in --out (default 0)")
    p.add_argument("--json", action="store_true", help="print the summary as one JSON object")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from search_spaces.errors import InputError

    if args.action == "merge":
        if not args.files or not args.out:
            raise InputError("nas profile merge needs shard files and --out")
        n, dropped = merge_samples(args.files, args.out)
        print(json.dumps({"merged": n, "identical_rows_dropped": dropped, "out": args.out})
              if args.json else f"merged {n} samples into {args.out}"
              + (f" ({dropped} identical rows kept once)" if dropped else ""))
        return 0
    if args.action == "import":
        return _import(args)
    space = get_space(args.space)
    if not args.hardware:
        raise InputError("nas profile needs --hardware NAME")
    if args.samples < 1:
        raise InputError(f"--samples must be at least 1, got {args.samples}")
    profile = load_profile(args.hardware)
    shard = parse_shard(args.shard)
    out = (Path(args.out) if args.out
           else default_samples_path(profile.name, space.name, for_writing=True))
    out.parent.mkdir(parents=True, exist_ok=True)
    args.resume_hint = "the same command"
    summary = profile_hardware(profile, space, out, args.samples,
                               seed=args.seed, shard=shard,
                               log=lambda m: print(m, file=sys.stderr))
    d = summary.to_dict()
    if profile.source == "simulated" and space.encoding_ops != space.op_names:
        from latency.simulate.roofline import activation_fusion_note

        d["activation_costs"] = activation_fusion_note(profile)
    if args.json:
        print(json.dumps(d))
        return 0
    print(f"profiled {profile.name} ({summary.label}): {summary.written} new samples, "
          f"{summary.already} already present -> {out}")
    if "activation_costs" in d:
        print(f"  {d['activation_costs']}")
    if summary.written:
        print(f"  {summary.per_minute:.1f} samples/minute; latency "
              f"{d['latency_ms_min']:.3f} / {d['latency_ms_median']:.3f} / "
              f"{d['latency_ms_max']:.3f} ms (min / median / max, {summary.label})")
    if summary.noisy:
        print(f"  {summary.noisy} samples stayed above the noise threshold (marked noisy)")
    if summary.stability:
        s = summary.stability
        verdict = "within" if s.get("within_threshold") else "OUTSIDE"
        print(f"  drift check (DARTS_V2 at start and end): {100 * s['relative_diff']:+.1f}%, "
              f"{verdict} the noise threshold")
    if d.get("reference"):
        r = d["reference"]
        print(f"  reference network over {r['groups']} groups: median {r['median_ms']:.3f} ms, "
              f"5th-95th percentile range {100 * r['range_5_95']:.1f}% (divided out when a "
              "predictor is trained)")
    print(_next_step(profile.name, space.name, out, summary.written + summary.already))
    return 0


def _next_step(hardware: str, space: str, out: Path, total: int) -> str:
    """What to run next: with a device prior for the space, a few samples are enough
    (`nas predictor adapt`); the full MLP wants about a thousand."""
    from latency.predictor.adapt import has_prior

    space_opt = "" if space == DEFAULT_SPACE else f" --space {space}"
    train = f"nas predictor train --hardware {hardware}{space_opt}"
    if not has_prior(space):
        return f"  next: {train} (about 1,000 samples make a good predictor)"
    adapt = f"nas predictor adapt --hardware {hardware} --samples {out}"
    if total < 500:
        return (f"  next: {adapt} (the {space} device prior needs only 10-50 samples); "
                f"with 1,000 or more, {train}")
    return f"  next: {train}, or with far fewer samples {adapt}"


def _import(args: argparse.Namespace) -> int:
    from latency.importing import import_csv
    from search_spaces.errors import InputError

    if len(args.files) != 1 or not args.hardware or not args.latency_column or not args.out:
        raise InputError("nas profile import needs one CSV file, --hardware, "
                         "--latency-column and --out")
    n = import_csv(args.files[0], args.space, args.arch_column, args.latency_column,
                   args.hardware, args.out, kind=args.kind, device=args.device)
    print(json.dumps({"imported": n, "out": args.out, "hardware": args.hardware}) if args.json
          else f"imported {n} samples ({args.space}, {args.latency_column}) into {args.out}")
    return 0
