"""Which discrete network a retrain trains: the one its architecture's space builds.

Every space returns the `(logits, auxiliary logits or None)` form the training loop
expects (`SearchSpace.training_network`); the DARTS evaluation network has an auxiliary
head, an NB201 network has none.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import nn

from nas.retrain.config import RetrainConfig
from search_spaces.space import load_architecture, space_of

#: an architecture of any space (a DARTS Genotype, an Nb201Arch, ...)
Arch = Any


def resolve_arch(name_or_path: str) -> Arch:
    """What `--genotype` takes: a published name, a space's text form, a file or a run
    directory; unknown op names fail here with one line."""
    return load_architecture(name_or_path)


def load_arch(path: Path) -> Arch:
    """The architecture a run directory's `genotype.json` holds."""
    return load_architecture(Path(path))


def save_arch(arch: Arch, path: Path) -> None:
    space_of(arch).save(arch, path)


def build_network(arch: Arch, cfg: RetrainConfig, in_channels: int,
                  num_classes: int) -> nn.Module:
    return space_of(arch).training_network(
        arch, cfg.init_channels, cfg.layers, num_classes, in_channels,
        auxiliary=cfg.auxiliary)
