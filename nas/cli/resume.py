"""What `--resume` may change about a run, shared by `nas search` and `nas retrain`.

A resumed run continues with the settings it was started with (its `config.json`), so
that it ends exactly where an uninterrupted run would. A flag given beside `--resume`
that disagrees with those settings would otherwise be ignored without a word; here it is
refused in one line. The one change a user may ask for is more epochs, and only
explicitly (`--extend --epochs N`), because it changes the learning-rate schedule of the
remaining epochs (docs/robustness.md).

The thread count is recorded too: results are bit-identical only at the same count
(float sums are split differently), so a resume uses the recorded count unless
`--threads` says otherwise.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Mapping
from typing import Any

from nas.run_dir import RunDir
from nas.threads import use_default_threads
from search_spaces.errors import InputError

#: config.json key holding the thread count a run was started with
THREADS_KEY = "threads"


def add_resume_arguments(p: argparse.ArgumentParser, what: str) -> None:
    p.add_argument("--resume", metavar="DIR",
                   help=f"continue the {what} in DIR from its checkpoint, with the settings it "
                   "was started with (other flags must agree with them)")
    p.add_argument("--extend", action="store_true",
                   help="with --resume and --epochs N: train a run (finished or not) to N "
                   "epochs in total; the cosine schedule of the remaining epochs is stretched "
                   "to the new total, so the result differs from a run started with N")


def _flag(dest: str) -> str:
    return "--" + dest.replace("_", "-")


def check_resume_flags(args: argparse.Namespace, saved: Mapping[str, Any],
                       flags: Mapping[str, str]) -> int | None:
    """Refuse flags that disagree with the saved config; the new epoch total of --extend.

    `flags` maps an argparse destination to the saved config key it sets. Flags left at
    their default (None) agree with anything.
    """
    if getattr(args, "out", None):
        raise InputError(f"--out {args.out} cannot be combined with --resume: a resumed run "
                         "stays in its own directory")
    extend = bool(getattr(args, "extend", False))
    new_epochs: int | None = None
    conflicts = []
    for dest, key in flags.items():
        value = getattr(args, dest, None)
        if value is None or value == saved.get(key):
            continue
        if dest == "epochs" and extend:
            new_epochs = int(value)
            continue
        shown = "" if isinstance(value, bool) else f" {value}"
        conflicts.append((f"{_flag(dest)}{shown}", f"{key} = {saved.get(key)!r}", dest))
    if conflicts:
        hint = (" (to train longer, add --extend)"
                if any(dest == "epochs" for *_, dest in conflicts) else "")
        verb = "conflicts" if len(conflicts) == 1 else "conflict"
        raise InputError(
            f"{', '.join(c[0] for c in conflicts)} {verb} with the run's "
            f"{', '.join(c[1] for c in conflicts)}: --resume continues a run with its own "
            f"settings{hint}; start a new run with --out to change them")
    if extend:
        if new_epochs is None:
            raise InputError("--extend needs --epochs N, the new total, larger than the run's "
                             f"{saved.get('epochs')}")
        if new_epochs <= int(saved.get("epochs", 0)):
            raise InputError(f"--extend --epochs {new_epochs} must be larger than the run's "
                             f"{saved.get('epochs')} epochs")
    return new_epochs


def resume_threads(args: argparse.Namespace, saved_config: Mapping[str, Any]) -> None:
    """Use the thread count the run was started with, unless --threads overrides it; a run
    that recorded none (an older version) gets the default choice. Data-parallel ranks
    agree on one count instead (`nas.distributed.launch.start`)."""
    from nas.distributed.context import launched_ranks

    if launched_ranks() > 1:  # data parallel: every rank takes rank 0's count instead
        return
    recorded = saved_config.get(THREADS_KEY)
    if not isinstance(recorded, int) or recorded < 1:
        if getattr(args, "threads", None) is None:
            use_default_threads()
        return
    if getattr(args, "threads", None) is None:
        import torch

        torch.set_num_threads(recorded)
    elif args.threads != recorded:
        print(f"note: the run was started with {recorded} thread(s); with --threads "
              f"{args.threads} it continues correctly but not bit-identically",
              file=sys.stderr)


def record_extension(run_dir: RunDir, kind: str, config: dict[str, Any]) -> None:
    """Write an --extend's new settings into the run's config.json (`kind`: "search" or
    "retrain"), with what it was before and when, so the run says how it was trained."""
    saved = run_dir.config()
    before = saved[kind]["epochs"]
    if before == config["epochs"]:
        return
    saved[kind] = config
    saved.setdefault("extensions", []).append(
        {"epochs_from": before, "epochs_to": config["epochs"],
         "at": time.strftime("%Y-%m-%dT%H:%M:%S")})
    run_dir.write_json("config.json", saved)
