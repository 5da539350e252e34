"""`python -m nas.sweep.child PARENT_PID NAS_ARGS...`: run `nas NAS_ARGS` in this process,
and die with the sweep that started it.

Why: a sweep killed outright (SIGKILL, the out-of-memory killer) cannot stop its
children. An orphaned search would go on writing its trial's run directory while the
resumed sweep continues the same directory from its checkpoint, and the two would
corrupt each other's logs. On Linux the kernel sends this process SIGTERM when its parent
dies (prctl PR_SET_PDEATHSIG, kept across the import of the CLI); elsewhere the child
runs as a plain `nas` process. Everything a run writes is atomic or append-and-cut
(nas/run_dir.py), so dying at any moment leaves a directory that `--resume` continues.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys

#: <linux/prctl.h>
PR_SET_PDEATHSIG = 1


def die_with_parent(parent: int) -> None:
    """Ask for SIGTERM when the parent dies; exit now if it already has."""
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0)
        except (OSError, AttributeError):
            pass
    if os.getppid() != parent:  # died before the request took effect
        sys.exit(f"error: the sweep that started this run (pid {parent}) has gone")


def main(argv: list[str]) -> int:
    if not argv or not argv[0].isdigit():
        sys.exit("usage: python -m nas.sweep.child PARENT_PID NAS_ARGS...")
    die_with_parent(int(argv[0]))
    sys.argv = ["nas", *argv[1:]]  # what config.json records as the run's command
    from nas.cli.main import main as nas_main

    return nas_main(argv[1:])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
