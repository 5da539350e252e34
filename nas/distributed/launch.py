"""Starting data-parallel runs: `--nproc N` on one machine, and what every rank agrees on.

`nas search --nproc N ...` is a convenience for `torchrun --standalone --nproc_per_node N
-m nas search ...`: it runs exactly that (PyTorch's own launcher, with its rendezvous
and its supervision: a rank that fails takes the others down), pinned to the loopback
address (`pin_to_loopback`), and returns its exit status. On several machines, run
torchrun yourself, one command per node (docs/distributed.md).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import torch

from nas.distributed.context import SINGLE, DataParallel, from_environment, launched_ranks
from nas.threads import usable_cores
from search_spaces.errors import InputError


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--nproc", type=int, metavar="N",
                   help="run as N data-parallel processes on this machine (torchrun "
                   "--standalone --nproc_per_node N; gloo backend): each takes 1/N of every "
                   "batch; for several machines start torchrun on each (docs/distributed.md)")


def without_nproc(argv: Sequence[str]) -> list[str]:
    """`argv` with its --nproc option (either spelling) removed."""
    out: list[str] = []
    skip = False
    for a in argv:
        if skip:
            skip = False
        elif a == "--nproc":
            skip = True
        elif not a.startswith("--nproc="):
            out.append(a)
    return out


#: every rank of a `--nproc` run is on this machine, so they meet on the loopback address
LOOPBACK = "127.0.0.1"


def torchrun_argv(nproc: int) -> list[str]:
    """The one-machine torchrun launch of `nproc` ranks, up to the command they run
    (`pin_to_loopback` is its environment's half)."""
    return [sys.executable, "-m", "torch.distributed.run", "--standalone",
            f"--local-addr={LOOPBACK}", f"--nproc_per_node={nproc}"]


def pin_to_loopback(env: dict[str, str]) -> None:
    """Keep a one-machine launch off name resolution: torchrun would otherwise publish
    this machine's fully qualified name (a reverse DNS lookup) as the rendezvous address,
    and gloo would pick its interface from the host name. `--local-addr` (in
    `torchrun_argv`) fixes the first; GLOO_SOCKET_IFNAME the second, unless the user chose
    an interface already."""
    if "GLOO_SOCKET_IFNAME" not in env and Path("/sys/class/net/lo").exists():
        env["GLOO_SOCKET_IFNAME"] = "lo"


def relaunch(args: argparse.Namespace) -> int | None:
    """With --nproc N > 1, run this same command under torchrun and return its exit
    status; None when this process should do the work itself."""
    nproc = getattr(args, "nproc", None)
    if nproc is None or nproc == 1:
        return None
    if nproc < 1:
        raise InputError(f"--nproc must be at least 1, got {nproc}")
    if launched_ranks() > 1:
        raise InputError("--nproc given to a process torchrun already started; use one or "
                         "the other")
    argv = without_nproc(getattr(args, "argv", sys.argv[1:]))
    env = dict(os.environ)
    # torchrun would set 1 thread per process; share this machine's cores instead
    if args.threads is None and "OMP_NUM_THREADS" not in env:
        env["OMP_NUM_THREADS"] = str(max(1, usable_cores() // nproc))
    pin_to_loopback(env)
    cmd = [*torchrun_argv(nproc), "-m", "nas", *argv]
    print(f"starting {nproc} data-parallel processes: torchrun {' '.join(cmd[3:])}",
          file=sys.stderr, flush=True)
    status = subprocess.call(cmd, env=env)
    if status != 0:
        print(f"error: the data-parallel run failed (torchrun exited with {status}); each "
              "rank's own error is above", file=sys.stderr, flush=True)
    return status



def run_command(args: argparse.Namespace,
                body: Callable[[argparse.Namespace, DataParallel], int]) -> int:
    """A training command (`nas search`, `nas retrain`): with --nproc N, this command
    again under torchrun; otherwise `body` as this process's rank (or alone), leaving
    the process group when it returns."""
    status = relaunch(args)
    if status is not None:
        return status
    dp = start(args)
    try:
        return body(args, dp)
    finally:
        dp.close()


def quiet(msg: str) -> None:
    """The log of ranks other than 0: rank 0 says it once."""


def start(args: argparse.Namespace) -> DataParallel:
    """This process's place among the ranks (`SINGLE` when it runs alone), with the
    thread count every rank uses: rank 0's. Ranks must compute the replicated updates
    (gradient norms for clipping, optimiser steps) identically, and a float reduction
    split over a different number of threads can differ in its last bit."""
    if launched_ranks() <= 1:
        return SINGLE
    dp = from_environment()
    torch.set_num_threads(dp.broadcast(torch.get_num_threads()))
    return dp


__all__ = ["LOOPBACK", "add_arguments", "pin_to_loopback", "quiet", "relaunch", "run_command",
           "start", "torchrun_argv", "without_nproc"]
