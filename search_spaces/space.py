"""Search-space objects: what a space is made of and what can be built from it.

A space names its op set, its edges per cell and its cell types; builds a supernet and
a discrete network; derives a genotype from architecture weights. Spaces are looked up
by name in `SPACES`, so a new space is one registration, not a new branch in callers.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from search_spaces.derive import derive_genotype
from search_spaces.encoding import encode_genotype, encode_weights
from search_spaces.errors import InputError
from search_spaces.genotype import Genotype, parse_darts_literal, save_genotype
from search_spaces.networks import NetworkCIFAR, NetworkImageNet
from search_spaces.ops import DARTS_PRIMITIVES
from search_spaces.supernet import SuperNet, cell_edges

CELL_TYPES = ("normal", "reduce")

#: Operations with parameters and most of the compute; sampling strata vary their share.
HEAVY_OPS = frozenset({"sep_conv_3x3", "sep_conv_5x5", "dil_conv_3x3", "dil_conv_5x5"})

#: Network layouts a discrete network can be built in; keyed by dataset family.
NETWORK_BUILDERS = {"cifar": NetworkCIFAR, "imagenet": NetworkImageNet}


@dataclass(frozen=True)
class DartsSpace:
    """The DARTS cell space: 4 intermediate nodes, 14 edges, normal and reduce cells."""

    name: str = "darts"
    op_names: tuple[str, ...] = DARTS_PRIMITIVES
    steps: int = 4
    multiplier: int = 4

    @property
    def num_edges(self) -> int:
        return len(cell_edges(self.steps))

    @property
    def cell_types(self) -> tuple[str, ...]:
        return CELL_TYPES

    def full_edge_ops(self) -> dict[str, list[list[str]]]:
        """Every op on every edge (the unpruned space)."""
        return {t: [list(self.op_names) for _ in range(self.num_edges)] for t in CELL_TYPES}

    def build_supernet(
        self,
        C: int,
        layers: int,
        num_classes: int,
        in_channels: int = 3,
        edge_ops: Mapping[str, Sequence[Sequence[str]]] | None = None,
    ) -> SuperNet:
        return SuperNet(
            C,
            num_classes,
            layers,
            edge_ops if edge_ops is not None else self.full_edge_ops(),
            steps=self.steps,
            multiplier=self.multiplier,
            in_channels=in_channels,
        )

    def build_network(
        self,
        genotype: Genotype,
        C: int,
        layers: int,
        num_classes: int,
        in_channels: int = 3,
        layout: str = "cifar",
        auxiliary: bool = True,
    ) -> nn.Module:
        genotype.validate(self.op_names)
        if layout not in NETWORK_BUILDERS:
            raise InputError(
                f"unknown network layout {layout!r}; known: {', '.join(NETWORK_BUILDERS)}"
            )
        return NETWORK_BUILDERS[layout](
            genotype,
            C=C,
            layers=layers,
            num_classes=num_classes,
            auxiliary=auxiliary,
            in_channels=in_channels,
        )

    def derive(
        self,
        weights: Mapping[str, torch.Tensor | np.ndarray],
        edge_ops: Mapping[str, Sequence[Sequence[str]]] | None = None,
    ) -> Genotype:
        """DARTS' genotype from per-edge op probabilities (softmax already applied)."""
        probs = {
            k: (v.detach().cpu().numpy() if isinstance(v, torch.Tensor) else np.asarray(v))
            for k, v in weights.items()
        }
        return derive_genotype(
            probs,
            edge_ops if edge_ops is not None else self.full_edge_ops(),
            self.steps,
            self.multiplier,
        )


    def parse(self, arch: object) -> Genotype:
        """A genotype from its stored form: a JSON object, or the DARTS literal text."""
        if isinstance(arch, str):
            return parse_darts_literal(arch)
        return Genotype.from_dict(arch)

    def save(self, genotype: Genotype, path: str | os.PathLike[str]) -> Path:
        """Write the search result (`genotype.json`); each space stores its own form."""
        return save_genotype(genotype, path)

    # -- encoding (profiling, predictor and latency loss all go through these) ------------

    @property
    def encoding_size(self) -> int:
        return len(CELL_TYPES) * self.num_edges * len(self.op_names)

    def encode(self, genotype: Genotype) -> np.ndarray:
        """One-hot per edge; edges the genotype does not use are coded as `none`."""
        genotype.validate(self.op_names)
        return encode_genotype(genotype, self.op_names, self.steps)

    def equivalents(self, genotype: Genotype, limit: int | None = None
                    ) -> tuple[Genotype, ...]:
        """Other genotypes whose deployed network costs the same (`darts_symmetry`)."""
        from search_spaces.darts_symmetry import equivalent_genotypes

        return equivalent_genotypes(genotype, limit)

    def encode_weights(
        self,
        weights: dict[str, torch.Tensor],
        edge_ops: Mapping[str, Sequence[Sequence[str]]] | None = None,
    ) -> torch.Tensor:
        """The same encoding from soft architecture weights (differentiable)."""
        return encode_weights(weights, self.op_names, edge_ops)

    # -- sampling (profiling) ------------------------------------------------------------

    def sample(self, rng: np.random.Generator, heavy_share: float | None = None) -> Genotype:
        """A random genotype: two distinct inputs per node, a non-`none` op per edge.

        `heavy_share=None` draws ops uniformly; a number draws a parameter-heavy op
        (separable / dilated convolution) with that probability, so profiling can cover
        cells with few and with many heavy operations, the extremes of latency.
        """
        ops = [o for o in self.op_names if o != "none"]
        heavy = [o for o in ops if o in HEAVY_OPS]
        light = [o for o in ops if o not in HEAVY_OPS]

        def pick() -> str:
            if heavy_share is None or not heavy or not light:
                return ops[rng.integers(len(ops))]
            pool = heavy if rng.random() < heavy_share else light
            return pool[rng.integers(len(pool))]

        def cell() -> tuple[tuple[str, int], ...]:
            edges: list[tuple[str, int]] = []
            for j in range(self.steps):
                inputs = sorted(rng.choice(j + 2, size=2, replace=False).tolist())
                edges.extend((pick(), int(i)) for i in inputs)
            return tuple(edges)

        concat = tuple(range(2 + self.steps - self.multiplier, self.steps + 2))
        return Genotype(cell(), concat, cell(), concat)


SPACES: dict[str, DartsSpace] = {"darts": DartsSpace()}


def _register_nb201() -> None:
    # NAS-Bench-201: search, profiling, imported measurements and predictors; imported
    # late because nb201 registers its ops in the registry.
    from search_spaces.nb201 import NB201_SPACE

    SPACES["nb201"] = NB201_SPACE  # type: ignore[assignment]


_register_nb201()


def get_space(name: str) -> DartsSpace:
    if name not in SPACES:
        raise InputError(f"unknown search space {name!r}; known: {', '.join(SPACES)}")
    return SPACES[name]
