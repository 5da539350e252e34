"""`nas report`: pictures of a search or retrain run (cells, architecture weights, curves)."""

from __future__ import annotations

import argparse
import json
import sys


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "report",
        help="draw a search or retrain run: cells, architecture weights, curves",
        description="Write PNG pictures of a run directory: the derived cells as graphs, "
        "the architecture weights of every edge over the epochs and at the end, loss and "
        "accuracy curves, and the predicted latency when the search logged it. The run's "
        "own files are only read; re-running replaces only the report's pictures.",
    )
    p.add_argument("run_dir", metavar="RUN_DIR", help="a directory written by nas search "
                   "or nas retrain")
    p.add_argument("--out", metavar="DIR", help="where to write the PNGs "
                   "(default: RUN_DIR/report)")
    p.add_argument("--json", action="store_true", help="one JSON object on stdout "
                   "(run_dir, kind, files)")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    # imported here so that `nas --help` and other commands do not load matplotlib
    from nas.report.build import build_report

    def note(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    def written(path: str) -> None:
        if not args.json:
            print(path, flush=True)

    report = build_report(args.run_dir, args.out, note=note, written=written)
    if args.json:
        print(json.dumps({"run_dir": str(report.run_dir), "kind": report.kind,
                          "files": [str(f) for f in report.files]}))
    return 0
