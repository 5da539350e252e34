"""Entry point of the `nas` command.

Every sub-command module exposes `add_parser(subparsers)` and `run(args) -> int`.
Errors caused by the user's input (`InputError`) become one line on stderr and exit
code 2, never a traceback; an interrupted long job tells how to resume it.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import NoReturn

from nas import __version__
from nas.cli import (
    attack,
    genotypes,
    hardware,
    info,
    latency,
    predictor,
    profile,
    report,
    retrain,
    search,
    sweep,
)
from nas.threads import use_default_threads
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
    "attack": attack,
    "sweep": sweep,
}


def _starts_training(args: argparse.Namespace) -> bool:
    """A command that trains and has no thread count yet: a resumed run takes the count
    it was started with (`nas.cli.resume.resume_threads`), and `predictor eval` trains
    nothing, so neither pays for sampling the machine's load."""
    if args.command == "predictor":
        return args.action == "train"
    return args.command in ("search", "retrain") and not args.resume


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
    args.argv = list(sys.argv[1:] if argv is None else argv)  # --nproc relaunches it
    try:
        if args.threads is not None:
            _set_threads(args.threads)
        elif _starts_training(args):
            use_default_threads()
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


if __name__ == "__main__":
    sys.exit(main())
