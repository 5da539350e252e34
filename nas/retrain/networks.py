"""Which discrete network a retrain trains, per search space.

A DARTS genotype becomes the DARTS evaluation network (CIFAR layout, auxiliary head); a
NAS-Bench-201 cell becomes the benchmark's network (three stages of N cells, residual
reductions), which has neither an auxiliary head nor drop-path. Both are trained by the
same loop, which expects `(logits, aux_logits or None)`.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

import torch
from torch import nn

from nas.retrain.config import RetrainConfig
from search_spaces.errors import InputError
from search_spaces.genotype import Genotype, load_genotype
from search_spaces.genotype_library import resolve_genotype
from search_spaces.nb201 import Nb201Arch, Nb201Space, parse_arch
from search_spaces.space import get_space

#: a cell description of any space: a DARTS genotype or an NB201 cell
Arch = Genotype | Nb201Arch


def space_of(arch: Arch) -> str:
    return "nb201" if isinstance(arch, Nb201Arch) else "darts"


def resolve_arch(name_or_path: str) -> Arch:
    """A published DARTS name, a genotype file (DARTS JSON or literal, or an NB201
    `{"space": "nb201", "arch": ...}` file from `nas search --space nb201`), or an NB201
    arch string; unknown op names fail here with one line."""
    if name_or_path.startswith("|"):
        return parse_arch(name_or_path)
    nb201 = _nb201_file(Path(name_or_path))
    if nb201 is not None:
        return nb201
    genotype = resolve_genotype(name_or_path)
    genotype.validate(get_space("darts").op_names)
    return genotype


def load_arch(path: Path) -> Arch:
    """The genotype a retrain run directory holds."""
    nb201 = _nb201_file(path)
    return nb201 if nb201 is not None else load_genotype(path)


def save_arch(arch: Arch, path: Path) -> None:
    # get_space is typed by DartsSpace; space_of(arch) picks the space whose own cell type
    # `arch` is, so that space's `save` (DartsSpace's or Nb201Space's) takes it
    save = cast("Callable[[Arch, Path], Path]", get_space(space_of(arch)).save)
    save(arch, path)


def _nb201_file(path: Path) -> Nb201Arch | None:
    if path.is_dir():  # a run directory stands for its genotype.json, as for DARTS runs
        path = path / "genotype.json"
    if path.suffix != ".json" or not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None  # not ours to judge: the DARTS loader gives the one-line error
    if isinstance(data, dict) and data.get("space") == "nb201":
        return cast(Nb201Space, get_space("nb201")).parse(data)
    return None


class WithoutAuxiliary(nn.Module):
    """Gives a network that returns logits the `(logits, None)` form of the DARTS ones."""

    def __init__(self, network: nn.Module) -> None:
        super().__init__()
        self.network = network
        self.drop_path_prob = 0.0  # set by the loop every epoch; nothing here uses it

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, None]:
        return self.network(x), None


def _darts(arch: Any, cfg: RetrainConfig, in_channels: int, num_classes: int) -> nn.Module:
    return get_space("darts").build_network(
        arch, cfg.init_channels, cfg.layers, num_classes, in_channels,
        layout="cifar", auxiliary=cfg.auxiliary,
    )


def _nb201(arch: Any, cfg: RetrainConfig, in_channels: int, num_classes: int) -> nn.Module:
    space = cast(Nb201Space, get_space("nb201"))  # SPACES["nb201"] is the NB201 space
    net = space.build_network(arch, C=cfg.init_channels, N=cfg.layers,
                              num_classes=num_classes, in_channels=in_channels)
    return WithoutAuxiliary(net)


BUILDERS: dict[str, Callable[[Any, RetrainConfig, int, int], nn.Module]] = {
    "darts": _darts,
    "nb201": _nb201,
}


def build_network(arch: Arch, cfg: RetrainConfig, in_channels: int,
                  num_classes: int) -> nn.Module:
    space = space_of(arch)
    if space not in BUILDERS:
        raise InputError(f"cannot retrain cells of space {space!r}")
    return BUILDERS[space](arch, cfg, in_channels, num_classes)
