"""`nas genotypes list`: the published genotypes `--genotype NAME` accepts, and their size.

`--genotype DARTS` is accepted everywhere, and without this list a user has to read the
library's source to learn that it means DARTS_V2 (the original release called V1 so) or
where a cell was transcribed from. The sizes are those of the CIFAR-10 evaluation network
(36 channels, 20 cells), computed by the very code of `nas info` (`info.network_size`), so
the two commands can never disagree.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from nas.cli.info import network_size
from search_spaces.darts_space import NETWORK_SHAPES
from search_spaces.genotype_library import get_published, published_names

DATASET = "cifar10"

#: name -> (paper, repository file it was transcribed from); see genotype_library's
#: docstring. A published name missing here is listed with unknown sources (and a test
#: fails, so that it gets one).
SOURCES: dict[str, tuple[str, str]] = {
    "DARTS_V1": ("Liu, Simonyan, Yang: DARTS, ICLR 2019 (first order)",
                 "quark0/darts cnn/genotypes.py"),
    "DARTS_V2": ("Liu, Simonyan, Yang: DARTS, ICLR 2019 (second order)",
                 "quark0/darts cnn/genotypes.py"),
    "PDARTS": ("Chen, Xie, Wu, Tian: Progressive DARTS, ICCV 2019 (CIFAR-10 search)",
               "chenxin061/pdarts genotypes.py"),
    "PC_DARTS": ("Xu et al.: PC-DARTS, ICLR 2020 (CIFAR-10 search)",
                 "yuhuixu1993/PC-DARTS genotypes.py"),
    "GDAS": ("Dong, Yang: GDAS, Searching for a Robust Neural Architecture in Four GPU "
             "Hours, CVPR 2019", "D-X-Y/AutoDL-Projects lib/nas_infer_model/DXYs/genotypes.py"),
    "SNAS_MILD": ("Xie, Zheng, Liu, Lin: SNAS, ICLR 2019 (mild constraint)",
                  "SNAS-Series/SNAS-Series SNAS/genotypes.py"),
    "DRNAS": ("Chen, Wang, Cheng, Tang, Hsieh: DrNAS, ICLR 2021 (CIFAR-10 search)",
              "xiangning-chen/DrNAS DARTS-space/genotypes.py"),
    "SDARTS_RS": ("Chen, Hsieh: SDARTS, ICML 2020 (random smoothing)",
                  "xiangning-chen/SmoothDARTS sota/cnn/genotypes.py"),
    "SDARTS_ADV": ("Chen, Hsieh: SDARTS, ICML 2020 (adversarial perturbation)",
                   "xiangning-chen/SmoothDARTS sota/cnn/genotypes.py"),
    "SGAS_CRI1": ("Li et al.: SGAS, CVPR 2020 (criterion 1, best CIFAR-10 cell)",
                  "lightaime/sgas cnn/genotypes.py"),
    "SGAS_CRI2": ("Li et al.: SGAS, CVPR 2020 (criterion 2, best CIFAR-10 cell)",
                  "lightaime/sgas cnn/genotypes.py"),
    "DARTS_MINUS": ("Chu et al.: DARTS-, ICLR 2021 (best CIFAR-10 cell)",
                    "Meituan-AutoML/DARTS- src/eval/genotypes.py"),
}
#: alias -> the name it stands for, and why
ALIASES: dict[str, tuple[str, str]] = {
    "DARTS": ("DARTS_V2", "as in quark0/darts cnn/genotypes.py today; its first release "
                          "(commit 8876e79) called the V1 cell DARTS"),
}


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "genotypes",
        help="the published genotypes --genotype accepts by name",
        description="List the published genotypes (DARTS_V1, DARTS_V2, PDARTS, PC_DARTS, "
        "GDAS and more; DARTS is an alias of DARTS_V2) with their space, paper and "
        "repository, and the parameters and multiply-accumulates of their CIFAR-10 "
        "network (36 channels, 20 cells), the figures `nas info NAME` prints.",
    )
    p.add_argument("action", choices=["list"], help="list: the published genotypes")
    p.add_argument("--json", action="store_true", help="one JSON object on stdout")
    p.set_defaults(run=run)


def published_rows() -> list[dict[str, Any]]:
    """One row per published name, aliases included and marked, sizes shared with the
    name an alias stands for (each network is built once)."""
    sizes: dict[str, dict[str, Any]] = {}
    rows = []
    for name in published_names():
        genotype = get_published(name)
        assert genotype is not None  # published_names() lists only what get_published has
        alias_of, alias_note = ALIASES.get(name, (None, None))
        canonical = alias_of or name
        if canonical not in sizes:
            sizes[canonical] = network_size(genotype, DATASET)
        size = sizes[canonical]
        paper, repo = SOURCES.get(canonical, (None, None))
        rows.append({
            "name": name, "space": size["space"], "alias_of": alias_of,
            "alias_note": alias_note, "paper": paper, "repo": repo,
            "params": size["params"], "macs": size["macs"], "literal": str(genotype),
        })
    return rows


def network_shape() -> dict[str, Any]:
    """Channels, cells, input and classes the sizes refer to (`nas info`'s defaults)."""
    _, shape, classes, channels, layers = NETWORK_SHAPES[DATASET]
    return {"channels": channels, "layers": layers, "input": list(shape),
            "num_classes": classes}


def run(args: argparse.Namespace) -> int:
    rows = published_rows()
    network = {"dataset": DATASET, **network_shape()}
    if args.json:
        print(json.dumps({"network": network, "genotypes": rows}))
        return 0
    print(f"published genotypes (sizes: {DATASET} network, {network['channels']} channels, "
          f"{network['layers']} cells, input {'x'.join(map(str, network['input']))}, "
          "auxiliary head excluded)")
    header = f"  {'name':11s} {'space':6s} {'params':>10s} {'MACs':>12s}  source"
    print(header)
    for r in rows:
        source = (f"alias of {r['alias_of']}" if r["alias_of"]
                  else f"{r['paper'] or 'unknown paper'}; {r['repo'] or 'unknown repository'}")
        print(f"  {r['name']:11s} {r['space']:6s} {r['params']:>10,} {r['macs']:>12,}  {source}")
    for r in rows:
        if r["alias_of"]:
            print(f"  {r['name']} is an alias of {r['alias_of']}: {r['alias_note']}")
    print("DARTS literals (what `--genotype FILE` accepts as a file's content):")
    for r in rows:
        if not r["alias_of"]:
            print(f"  {r['name']} = {r['literal']}")
    return 0
