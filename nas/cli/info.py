"""`nas info`: size of the discrete network a genotype describes.

Takes whatever `nas retrain --genotype` takes (`nas.retrain.networks.resolve_arch`): a
DARTS genotype becomes the DARTS evaluation network of the dataset's layout, a
NAS-Bench-201 cell the benchmark's own network (C=16, 5 cells per stage), so the sizes
printed here are those of the network a retrain would train. `network_size` is the one
place those figures are computed (`nas genotypes list` prints them too).
"""

from __future__ import annotations

import argparse
import json
from typing import Any, cast

from nas.retrain.networks import Arch, resolve_arch
from search_spaces.complexity import count_macs, count_parameters
from search_spaces.errors import InputError
from search_spaces.genotype_library import published_names
from search_spaces.nb201 import (
    BENCHMARK_CELLS_PER_STAGE,
    BENCHMARK_CHANNELS,
    Nb201Arch,
    Nb201Space,
)
from search_spaces.space import get_space

#: dataset -> (network layout, input shape, classes, default channels, default cells)
NETWORK_SHAPES = {
    "cifar10": ("cifar", (3, 32, 32), 10, 36, 20),
    "imagenet": ("imagenet", (3, 224, 224), 1000, 48, 14),
    "digits": ("cifar", (1, 8, 8), 10, 16, 8),
}
#: NAS-Bench-201's network is defined on CIFAR-sized inputs only (the benchmark's
#: ImageNet is ImageNet16-120, 16x16 images); dataset -> (input shape, classes)
NB201_SHAPES = {
    "cifar10": ((3, 32, 32), 10),
    "digits": ((1, 8, 8), 10),
}


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "info",
        help="parameters and multiply-accumulates of a genotype's network",
        description="Print the discrete network's parameters (auxiliary head excluded) and "
        "multiply-accumulates for one input image. A NAS-Bench-201 cell is sized as the "
        "benchmark's network (C=16, 5 cells per stage).",
    )
    p.add_argument(
        "genotype",
        help=f"published name ({', '.join(published_names())}), a JSON / DARTS-literal file, "
        "a genotype.json of `nas search --space nb201`, or an NB201 arch string '|...|'",
    )
    p.add_argument("--dataset", choices=sorted(NETWORK_SHAPES), default="cifar10",
                   help="the network's input and classes (default cifar10)")
    p.add_argument("--channels", type=int, help="initial channels (default: 36 cifar10, "
                   f"48 imagenet, 16 digits; NB201: {BENCHMARK_CHANNELS})")
    p.add_argument("--layers", type=int, help="cells (default: 20 cifar10, 14 imagenet, "
                   f"8 digits); NB201: cells per stage (default {BENCHMARK_CELLS_PER_STAGE})")
    p.add_argument("--json", action="store_true", help="one JSON object on stdout")
    p.set_defaults(run=run)


def _positive(name: str, value: int | None) -> None:
    if value is not None and value < 1:
        raise InputError(f"{name} must be a positive integer, got {value}")


def network_size(arch: Arch, dataset: str = "cifar10", channels: int | None = None,
                 layers: int | None = None) -> dict[str, Any]:
    """Parameters (auxiliary head excluded) and MACs per image of `arch`'s network for
    `dataset`, with the shape it was sized at; `channels` / `layers` override the
    defaults (for NB201, `layers` is cells per stage)."""
    _positive("--channels", channels)
    _positive("--layers", layers)
    if isinstance(arch, Nb201Arch):  # space_of(arch) == "nb201"
        if dataset not in NB201_SHAPES:
            raise InputError(
                f"NAS-Bench-201's network is not defined for --dataset {dataset} (the "
                f"benchmark has CIFAR-sized inputs); use {' or '.join(sorted(NB201_SHAPES))}"
            )
        shape, classes = NB201_SHAPES[dataset]
        C = channels or BENCHMARK_CHANNELS
        N = layers or BENCHMARK_CELLS_PER_STAGE
        nb201 = cast(Nb201Space, get_space("nb201"))  # SPACES["nb201"] is the NB201 space
        cells = nb201.build_network(arch, C=C, N=N, num_classes=classes, in_channels=shape[0])
        return {"space": "nb201", "arch": str(arch), "dataset": dataset, "channels": C,
                "layers": N, "cells_per_stage": N, "input": list(shape),
                "params": count_parameters(cells), "macs": count_macs(cells, shape)}
    layout, shape, classes, C, n_cells = NETWORK_SHAPES[dataset]
    C = channels or C
    n_cells = layers or n_cells
    darts = get_space("darts")
    net = darts.build_network(arch, C, n_cells, classes, shape[0], layout=layout)
    return {"space": "darts", "dataset": dataset, "channels": C, "layers": n_cells,
            "input": list(shape), "params": count_parameters(net),
            "macs": count_macs(net, shape)}


def run(args: argparse.Namespace) -> int:
    arch = resolve_arch(args.genotype)
    result = {"genotype": args.genotype,
              **network_size(arch, args.dataset, args.channels, args.layers)}
    if args.json:
        print(json.dumps(result))
        return 0
    shape = "x".join(map(str, result["input"]))
    C, layers, params, macs = (result[k] for k in ("channels", "layers", "params", "macs"))
    if result["space"] == "nb201":
        print(f"{args.genotype} (NAS-Bench-201 cell {result['arch']}) on {args.dataset}: "
              f"the benchmark's network ({layers} cells per stage, {C} channels, "
              f"input {shape})")
    else:
        print(f"{args.genotype} on {args.dataset} ({layers} cells, {C} channels, "
              f"input {shape})")
    print(f"  parameters (auxiliary head excluded): {params:,} ({params / 1e6:.2f}M)")
    print(f"  multiply-accumulates per image:       {macs:,} ({macs / 1e6:.1f}M)")
    return 0
