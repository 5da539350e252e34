"""The one interface every search space implements (`SearchSpace`).

Everything outside `search_spaces/` (the search driver, profiling, the predictor, the
latency loss, retraining, `nas info` / `nas latency`, reports) talks to a space only
through these methods, so a new space is one subclass and one `register_space` call and
no caller branches on a space's name (docs/architecture.md#search-spaces).

An architecture is whatever object the space uses for one discrete choice (a DARTS
`Genotype`, an NB201 `Nb201Arch`); it is immutable and hashable, and it names its space
in its stored forms, so one loader (`search_spaces.space.load_architecture`) can read a
name, a file or a run directory and hand it to the right space.
"""

from __future__ import annotations

import json
import os
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Generic, TypeVar

import numpy as np
import torch
from torch import nn

from search_spaces.errors import GenotypeError, InputError
from search_spaces.fileio import atomic_write_bytes

if TYPE_CHECKING:
    from latency.hardware import HardwareProfile

A = TypeVar("A")

#: per cell type, the candidate op names of each edge (P-DARTS prunes these)
EdgeOps = Mapping[str, Sequence[Sequence[str]]]


@dataclass(frozen=True)
class SizedNetwork:
    """The network `nas info` sizes: the module, one sample's input shape, and the
    channels / layers it was built with (the defaults differ per space and dataset)."""

    model: nn.Module
    input_shape: tuple[int, ...]
    channels: int
    layers: int
    #: how the layers are read, for the one-line summary ("cells", "cells per stage")
    layers_meaning: str = "cells"
    #: anything else worth printing or returning in --json (e.g. the arch string)
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class CellGraph:
    """One cell of an architecture as reports draw it: numbered nodes with a name and a
    role (input / intermediate / output), and edges (source, target, op); an op of None
    is an unlabelled edge into the output (a concatenation).

    `positions` (node -> (column, row)) and `arcs` ((source, target) -> curvature) are
    optional hints; without them the report lays the nodes out by depth."""

    cell_type: str
    title: str
    node_names: dict[int, str]
    roles: dict[int, str]
    edges: tuple[tuple[int, int, str | None], ...]
    positions: dict[int, tuple[float, float]] | None = None
    arcs: dict[tuple[int, int], float] | None = None
    #: a second title line (NB201: the arch string)
    caption: str = ""


class WithoutAuxiliary(nn.Module):
    """Gives a network that returns logits the `(logits, None)` form training expects
    (the DARTS networks return `(logits, auxiliary logits or None)`)."""

    def __init__(self, network: nn.Module) -> None:
        super().__init__()
        self.network = network
        self.drop_path_prob = 0.0  # set by the loop every epoch; nothing here uses it

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, None]:
        return self.network(x), None


class SearchSpace(ABC, Generic[A]):
    """A cell search space: its architectures, networks, encoding and presets.

    Subclasses set the class attributes and implement the abstract methods; the other
    methods have defaults that suit a space with one-hot edges and nothing more.
    """

    #: registry key; stored in run configs and sample rows
    name: str
    #: candidate operations in encoding order
    op_names: tuple[str, ...]
    #: cell types with their own architecture weights (DARTS: normal, reduce)
    cell_types: tuple[str, ...]
    #: edges per cell type
    num_edges: int
    #: where its op specs are looked up first (`search_spaces.op_spec`), "" = shared
    op_namespace: str = ""
    #: search strategies that can run on it (`nas search --strategy`)
    strategies: frozenset[str] = frozenset({"darts"})
    #: a sentence for --help and errors
    description: str = ""
    #: what reports call its networks' layout (`report.json` of a retrain)
    layout_name: str = ""
    #: what `layers` counts in its networks, for messages
    layers_meaning: str = "cells"
    #: whether its training network has an auxiliary head / takes drop-path
    supports_auxiliary: bool = False
    supports_drop_path: bool = False
    #: whether its supernet and derivation take `activations` (a factorised search of
    #: operations x activations, `nas search --activations`)
    searches_activations: bool = False
    #: whether it can search another named op set (`nas search --ops`, `op_set_space`),
    #: and the set expression a variant was made with ("" = the space's own ops)
    searches_op_sets: bool = False
    op_set: str = ""

    @property
    def accepted_ops(self) -> tuple[str, ...]:
        """The op names an architecture of this space may use: its op set, and for a
        space that searches op sets, the ops of every registered set (a genotype found
        with `--ops darts+adder` is read, built and retrained by the plain space)."""
        if not self.searches_op_sets or self.op_set:
            return tuple(self.op_names)
        from search_spaces.op_sets import all_set_ops

        return tuple(dict.fromkeys([*self.op_names, *all_set_ops()]))

    # -- architectures ---------------------------------------------------------------

    @abstractmethod
    def owns(self, arch: object) -> bool:
        """Whether `arch` is an architecture of this space."""

    @abstractmethod
    def parse(self, stored: Any, *, source: str = "architecture") -> A:
        """An architecture from any form this space stores or accepts (JSON object, text);
        a `GenotypeError` naming `source` when it is not one."""

    def claims(self, stored: Any) -> bool:
        """Whether a stored form (a JSON value, or text) is meant for this space; the
        loader asks every space, so this must not accept another space's forms."""
        return isinstance(stored, Mapping) and stored.get("space") == self.name

    @abstractmethod
    def to_json(self, arch: A) -> Any:
        """The JSON form of `genotype.json` and logs; `parse` reads it back."""

    def row_form(self, arch: A) -> Any:
        """How a latency sample row stores `arch`; `parse` reads it back."""
        return self.to_json(arch)

    def format(self, arch: A) -> str:
        """One line for people (and for `parse`, where the space has a text form)."""
        return str(arch)

    def save(self, arch: A, path: str | os.PathLike[str]) -> Path:
        """Write `to_json(arch)` atomically: a crash never leaves half a file."""
        target = Path(path)
        text = json.dumps(self.to_json(arch), indent=2) + "\n"
        try:
            return atomic_write_bytes(target, text.encode("utf-8"))
        except OSError as exc:
            raise GenotypeError(
                f"cannot write architecture to '{target}': {exc.strerror or exc}"
            ) from None

    def equivalents(self, arch: A, limit: int | None = None) -> tuple[A, ...]:
        """Other architectures whose deployed network costs the same (used to augment
        predictor training); none known by default."""
        return ()

    # -- networks --------------------------------------------------------------------

    def full_edge_ops(self) -> dict[str, list[list[str]]]:
        """Every op on every edge (the unpruned space)."""
        return {t: [list(self.op_names) for _ in range(self.num_edges)]
                for t in self.cell_types}

    @abstractmethod
    def build_supernet(self, C: int, layers: int, num_classes: int, in_channels: int = 3,
                       edge_ops: EdgeOps | None = None) -> nn.Module:
        """The search network, in the form the bilevel loop drives: `forward(x,
        arch_weights=None)` (weights per cell type; None: its own softmax), and
        `arch_parameters()`, `weight_parameters()`, `arch_weights()`,
        `set_skip_dropout(p)` (`supernet.ArchParameters` provides them). A space with
        `searches_activations` also takes `activations=(names...)`: its supernet then
        holds per-edge activation parameters beside the op ones (`arch_weights()` keys
        `supernet.activation_key(cell_type)`), and `derive` takes the same keyword."""

    @abstractmethod
    def build_network(self, arch: A, C: int, layers: int, num_classes: int,
                      in_channels: int = 3, **options: Any) -> nn.Module:
        """The discrete network of `arch` in the space's own form."""

    def training_network(self, arch: A, C: int, layers: int, num_classes: int,
                         in_channels: int = 3, *, auxiliary: bool = False,
                         **options: Any) -> nn.Module:
        """The network retraining trains: returns `(logits, auxiliary logits or None)`.
        A space without an auxiliary head wraps its network (`WithoutAuxiliary`)."""
        return WithoutAuxiliary(self.build_network(arch, C, layers, num_classes,
                                                   in_channels, **options))

    @abstractmethod
    def sized_network(self, arch: A, dataset: str, channels: int | None = None,
                      layers: int | None = None) -> SizedNetwork:
        """The network `nas info` sizes for `dataset` (its defaults, or the overrides);
        an `InputError` when the space has no network for that dataset."""

    @abstractmethod
    def deployed_network(self, arch: A, profile: HardwareProfile
                         ) -> tuple[nn.Module, tuple[int, ...]]:
        """(model in eval mode, one sample's input shape) of the network a hardware
        profile's latencies refer to."""

    def profile_network(self) -> dict[str, Any]:
        """The `network` section of a profile created for measurements of this space
        made elsewhere (`nas profile import`): the DARTS CIFAR-10 evaluation network."""
        return {"dataset": "cifar10", "input": [3, 32, 32], "layers": 20, "channels": 36,
                "num_classes": 10}

    def cell_inputs(self, profile: HardwareProfile
                    ) -> list[tuple[str, int, int, int, bool]]:
        """(cell type, channels, height, width, reduction) of the tensors every cell of
        `profile`'s deployed network feeds its edges, in network order: what the energy
        model (`latency.energy_model`) costs each edge's op at."""
        raise InputError(f"the {self.name} space does not report its cells' input shapes")

    @abstractmethod
    def describe_deployed(self, profile: HardwareProfile) -> str:
        """Says in words which network `deployed_network` builds for `profile`."""

    # -- search ----------------------------------------------------------------------

    @abstractmethod
    def derive(self, weights: Mapping[str, torch.Tensor | np.ndarray],
               edge_ops: EdgeOps | None = None) -> A:
        """The discrete architecture from per-edge op probabilities."""

    def derive_limiting_skips(self, weights: Mapping[str, torch.Tensor | np.ndarray],
                              edge_ops: EdgeOps, max_skips: int
                              ) -> tuple[A, dict[str, Any]]:
        """P-DARTS' final step: derive with at most `max_skips` skip-connects (in the cells
        the space limits), and the architecture at every limit (JSON forms, keyed by the
        limit). Only spaces listing "pdarts" in `strategies` implement it."""
        raise InputError(f"the {self.name} space cannot limit skip-connects (P-DARTS)")

    def search_overrides(self, preset: str) -> dict[str, Any]:
        """Search-config fields this space sets differently in a preset."""
        return {}

    def retrain_overrides(self, preset: str) -> dict[str, Any]:
        """Retrain-config fields this space sets differently in a preset."""
        return {}

    def min_layers(self) -> int:
        """The fewest `layers` a network of this space can be built with."""
        return 1

    #: why `min_layers` is what it is, for the error message (" (two reduction cells)")
    min_layers_why: str = ""

    def layers_error(self, layers: int) -> str | None:
        """The one-line error for a network of `layers` too few, or None: search and
        retrain configs share it."""
        fewest = self.min_layers()
        if layers >= fewest:
            return None
        return f"--layers must be at least {fewest}{self.min_layers_why}, got {layers}"

    # -- encoding (profiling, the predictor and the latency loss) ----------------------

    @property
    def encoding_ops(self) -> tuple[str, ...]:
        """The names of one edge's one-hot columns: the op set, or for an activation
        variant (`activation_encoding`) the (op, activation) pairs. Predictor artifacts
        store these, so a predictor is refused by an encoding it was not trained on."""
        return tuple(self.op_names)

    @property
    def encoding_size(self) -> int:
        return len(self.cell_types) * self.num_edges * len(self.op_names)

    @property
    def encoding_layout(self) -> dict[str, tuple[int, int]]:
        """Name -> (start, stop) of each block of the encoding; "onehot" is required."""
        return {"onehot": (0, self.encoding_size)}

    def encoding_edge_groups(self) -> tuple[tuple[int, ...], ...] | None:
        """Rows of the one-hot block whose ops run on tensors of the same shape, for
        predictor features; None when the space does not say."""
        return None

    @abstractmethod
    def encode(self, arch: A) -> np.ndarray:
        """The encoding of a discrete architecture (float32, `encoding_size`)."""

    @abstractmethod
    def encode_weights(self, weights: Mapping[str, torch.Tensor],
                       edge_ops: EdgeOps | None = None) -> torch.Tensor:
        """The same encoding from soft architecture weights, differentiably; equals
        `encode` on one-hot weights."""

    def encoding_rows(self, arch: A) -> dict[str, list[str]]:
        """Per cell type, the op name (pairs as they are) each one-hot row of the
        encoding holds, `none` where the architecture has no edge: what the
        activation-aware encoding reads a discrete architecture from."""
        raise InputError(f"the {self.name} space has no activation-aware encoding")

    def rename_ops(self, arch: A, rename: Callable[[str], str]) -> A:
        """`arch` with every edge's op name passed through `rename` (e.g. to give a
        convolution another activation); nothing else changes."""
        raise InputError(f"the {self.name} space cannot rename the ops of an architecture")

    @abstractmethod
    def sample(self, rng: np.random.Generator, heavy_share: float | None = None) -> A:
        """A random architecture; `heavy_share` is the probability of drawing a heavy
        op (its spec's `heavy` flag) per edge, so profiling strata cover the extremes."""

    # -- reports ---------------------------------------------------------------------

    @abstractmethod
    def cell_graphs(self, arch: A) -> tuple[CellGraph, ...]:
        """Every cell of `arch` as a report draws it."""

    @abstractmethod
    def edge_ends(self, cell_type: str) -> tuple[tuple[int, int], ...]:
        """(source node, target node) of each edge, in architecture-weight row order."""

    def node_name(self, index: int) -> str:
        """The name reports give node `index` (the names `cell_graphs` use)."""
        return str(index)


def as_numpy(value: Any) -> np.ndarray:
    """Architecture weights as a numpy array, whether a (possibly grad-tracking) tensor
    or array-like: what `derive` works on."""
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().numpy()
    return np.asarray(value)


def check_dataset(space: str, dataset: str, known: Mapping[str, Any]) -> None:
    """One line naming what a space's networks are defined for."""
    if dataset not in known:
        raise InputError(f"space {space} has no network for dataset {dataset!r}; "
                         f"use {' or '.join(sorted(known))}")
