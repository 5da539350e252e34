"""Entry point of the `nas` command.

Every sub-command module exposes `add_parser(subparsers)` and `run(args) -> int`.
Errors caused by the user's input (`InputError`) become one line on stderr and exit
code 2, never a traceback; an interrupted long job tells how to resume it.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from typing import NoReturn

from nas import __version__
from nas.cli import (
    genotypes,
    hardware,
    info,
    latency,
    predictor,
    profile,
    report,
    retrain,
    search,
)
from search_spaces.errors import InputError

COMMANDS = {
    "search": search,
    "retrain": retrain,
    "info": info,
    "profile": profile,
    "predictor": predictor,
    "latency": latency,
    "report": report,
    "hardware": hardware,
    "genotypes": genotypes,
}


#: commands that train networks or models, whose thread count matters
TRAINING_COMMANDS = frozenset({"search", "retrain", "predictor"})


class OneLineErrorParser(argparse.ArgumentParser):
    """argparse prints the whole usage on a bad option; we print one line and exit 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"error: {self.prog}: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineErrorParser(
        prog="nas",
        description="Hardware-aware differentiable architecture search (DARTS, P-DARTS).",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("--threads", type=int, metavar="N",
                        help="CPU threads for training and search (default: the cores this "
                        "process may use minus those busy with other work, chosen when a run "
                        "starts and kept by --resume). Latency measurement always uses its "
                        "profile's own count.")
    sub = parser.add_subparsers(
        dest="command", metavar="COMMAND", required=True, parser_class=OneLineErrorParser
    )
    for module in COMMANDS.values():
        module.add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        if args.threads is not None:
            _set_threads(args.threads)
        elif args.command in TRAINING_COMMANDS:
            _default_threads()
        return int(args.run(args) or 0)
    except InputError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        hint = getattr(args, "resume_hint", None)
        print(f"interrupted{'; resume with ' + hint if hint else ''}", file=sys.stderr)
        return 130


def _set_threads(n: int) -> None:
    if n < 1:
        raise InputError(f"--threads must be at least 1, got {n}")
    import torch

    torch.set_num_threads(n)


def _default_threads() -> None:
    """Never more threads than there are cores free for them (nas/threads.py); a thread
    count the user gave torch through OMP_NUM_THREADS is theirs to keep."""
    if os.environ.get("OMP_NUM_THREADS"):
        return
    from nas.threads import choose_threads

    _set_threads(choose_threads().threads)


if __name__ == "__main__":
    sys.exit(main())
