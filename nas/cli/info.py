"""`nas info`: size of the discrete network a genotype describes.

Takes whatever `nas retrain --genotype` takes (`search_spaces.space.load_architecture`): a
DARTS genotype becomes the DARTS evaluation network of the dataset's layout, a
NAS-Bench-201 cell the benchmark's own network (C=16, 5 cells per stage), so the sizes
printed here are those of the network a retrain would train. `network_size` is the one
place those figures are computed (`nas genotypes list` prints them too).
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from search_spaces.complexity import FLOAT_BOPS_PER_MAC, count_ops
from search_spaces.darts_space import NETWORK_SHAPES
from search_spaces.errors import InputError
from search_spaces.genotype_library import published_names
from search_spaces.nb201 import BENCHMARK_CELLS_PER_STAGE, BENCHMARK_CHANNELS
from search_spaces.space import load_architecture, space_of

#: every dataset some space has a network for
DATASETS = sorted(NETWORK_SHAPES)


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "info",
        help="parameters and multiply-accumulates of a genotype's network",
        description="Print the discrete network's parameters (auxiliary head excluded), "
        "multiply-accumulates, and the multiplications and additions they and any adder "
        "layers do, for one input image. A NAS-Bench-201 cell is sized as the benchmark's "
        "network (C=16, 5 cells per stage).",
    )
    p.add_argument(
        "genotype",
        help=f"published name ({', '.join(published_names())}), a JSON / DARTS-literal file, "
        "a genotype.json of `nas search --space nb201`, or an NB201 arch string '|...|'",
    )
    p.add_argument("--dataset", default="cifar10",
                   help=f"the network's input and classes: {', '.join(DATASETS)} (default "
                   "cifar10; each space says which it has a network for)")
    p.add_argument("--channels", type=int, help="initial channels (default: 36 cifar10, "
                   f"48 imagenet, 16 digits; NB201: {BENCHMARK_CHANNELS})")
    p.add_argument("--layers", type=int, help="cells (default: 20 cifar10, 14 imagenet, "
                   f"8 digits); NB201: cells per stage (default {BENCHMARK_CELLS_PER_STAGE})")
    p.add_argument("--json", action="store_true", help="one JSON object on stdout")
    p.set_defaults(run=run)


def _positive(name: str, value: int | None) -> None:
    if value is not None and value < 1:
        raise InputError(f"{name} must be a positive integer, got {value}")


def network_size(arch: Any, dataset: str = "cifar10", channels: int | None = None,
                 layers: int | None = None) -> dict[str, Any]:
    """Parameters (auxiliary head excluded), MACs, adder-layer additions, and every
    multiplication / addition per image of `arch`'s network for `dataset`, with the shape
    it was sized at; `channels` / `layers` override the space's defaults
    (`SearchSpace.sized_network`)."""
    _positive("--channels", channels)
    _positive("--layers", layers)
    space = space_of(arch)
    sized = space.sized_network(arch, dataset, channels, layers)
    counts = count_ops(sized.model, sized.input_shape)
    return {"space": space.name, **sized.extra, "dataset": dataset,
            "channels": sized.channels, "layers": sized.layers,
            "layers_meaning": sized.layers_meaning, "input": list(sized.input_shape),
            "params": counts.params, "macs": counts.macs, "additions": counts.additions,
            # every multiplication and every addition the arithmetic does: one of each per
            # MAC, and the adder layers' additions (`latency.energy` costs the same counts)
            "multiplications": counts.macs, "total_additions": counts.macs + counts.additions,
            "bit_operations": counts.bops,
            # MACs per precision, "w4a4": 4-bit weights and activations (low-bit families)
            "macs_by_precision": {f"w{w}a{a}": m for (w, a), m
                                  in sorted(counts.by_precision.items(), reverse=True)},
            "low_bit": counts.bops != FLOAT_BOPS_PER_MAC * counts.macs}


def run(args: argparse.Namespace) -> int:
    arch = load_architecture(args.genotype)
    result = {"genotype": args.genotype,
              **network_size(arch, args.dataset, args.channels, args.layers)}
    if args.json:
        print(json.dumps(result))
        return 0
    shape = "x".join(map(str, result["input"]))
    C, layers, params, macs = (result[k] for k in ("channels", "layers", "params", "macs"))
    print(f"{args.genotype} ({result['space']} space) on {args.dataset}: {layers} "
          f"{result['layers_meaning']}, {C} channels, input {shape}")
    print(f"  parameters (auxiliary head excluded): {params:,} ({params / 1e6:.2f}M)")
    print(f"  multiply-accumulates per image:       {macs:,} ({macs / 1e6:.1f}M)")
    if result["additions"]:  # adder-type layers: additions instead of multiplications
        adds = result["additions"]
        print(f"  additions (adder layers) per image:   {adds:,} ({adds / 1e6:.1f}M)")
    mults, total = result["multiplications"], result["total_additions"]
    print(f"  multiplications per image:            {mults:,} ({mults / 1e6:.1f}M)")
    print(f"  additions per image (MACs + adders):  {total:,} ({total / 1e6:.1f}M)")
    if result["low_bit"]:  # some layer below 32 bits: bit-operations tell them apart
        bops = result["bit_operations"]
        print(f"  bit-operations per image:             {bops:,} ({bops / 1e9:.2f}G)")
        for precision, m in result["macs_by_precision"].items():
            label = f"MACs at {precision}:"
            print(f"    {label:<36}{m:,} ({m / 1e6:.1f}M)")
    return 0
