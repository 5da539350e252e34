"""`nas info`: size of the discrete network a genotype describes."""

from __future__ import annotations

import argparse
import json

from search_spaces.complexity import count_macs, count_parameters
from search_spaces.genotype_library import published_names, resolve_genotype
from search_spaces.space import get_space

#: dataset -> (network layout, input shape, classes, default channels, default cells)
NETWORK_SHAPES = {
    "cifar10": ("cifar", (3, 32, 32), 10, 36, 20),
    "imagenet": ("imagenet", (3, 224, 224), 1000, 48, 14),
    "digits": ("cifar", (1, 8, 8), 10, 16, 8),
}


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "info",
        help="parameters and multiply-accumulates of a genotype's network",
        description="Print the discrete network's parameters (auxiliary head excluded) and "
        "multiply-accumulates for one input image.",
    )
    p.add_argument(
        "genotype",
        help=f"published name ({', '.join(published_names())}) or a JSON / DARTS-literal file",
    )
    p.add_argument("--dataset", choices=sorted(NETWORK_SHAPES), default="cifar10")
    p.add_argument("--channels", type=int, help="initial channels (default: 36 cifar10, "
                   "48 imagenet, 16 digits)")
    p.add_argument("--layers", type=int, help="cells (default: 20 cifar10, 14 imagenet, 8 digits)")
    p.add_argument("--json", action="store_true", help="one JSON object on stdout")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    genotype = resolve_genotype(args.genotype)
    layout, shape, classes, C, layers = NETWORK_SHAPES[args.dataset]
    C = args.channels or C
    layers = args.layers or layers
    space = get_space("darts")
    net = space.build_network(genotype, C, layers, classes, shape[0], layout=layout)
    params = count_parameters(net)
    macs = count_macs(net, shape)
    result = {
        "genotype": args.genotype,
        "dataset": args.dataset,
        "channels": C,
        "layers": layers,
        "input": list(shape),
        "params": params,
        "macs": macs,
    }
    if args.json:
        print(json.dumps(result))
    else:
        print(f"{args.genotype} on {args.dataset} ({layers} cells, {C} channels, "
              f"input {'x'.join(map(str, shape))})")
        print(f"  parameters (auxiliary head excluded): {params:,} ({params / 1e6:.2f}M)")
        print(f"  multiply-accumulates per image:       {macs:,} ({macs / 1e6:.1f}M)")
    return 0
