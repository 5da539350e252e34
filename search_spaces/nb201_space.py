"""The NAS-Bench-201 space object: what the rest of the product needs of NB201 cells.

One cell type ("normal") shared by every cell, 6 edges, 5 operations; architectures are
`Nb201Arch`s, stored as the benchmark's string (sample rows, as published data write it)
or as ``{"space": "nb201", "arch": ...}`` (`genotype.json`, logs). The cells, networks
and encoding themselves are in `search_spaces.nb201`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from search_spaces.activations import pair_name
from search_spaces.base import (
    CellGraph,
    EdgeOps,
    SearchSpace,
    SizedNetwork,
    as_numpy,
    check_dataset,
)
from search_spaces.errors import GenotypeError, InputError
from search_spaces.nb201 import (
    BENCHMARK_CELLS_PER_STAGE,
    BENCHMARK_CHANNELS,
    ENCODING_LAYOUT,
    ENCODING_SIZE,
    NB201_EDGES,
    NB201_OPS,
    NUM_EDGES,
    Nb201Arch,
    Nb201Network,
    _as_arch,
    arch_from_dict,
    encode,
    encode_weights,
    equivalent_archs,
    format_arch,
    parse_arch,
)
from search_spaces.op_spec import op_spec

if TYPE_CHECKING:
    from latency.hardware import HardwareProfile

#: NAS-Bench-201's network is defined on CIFAR-sized inputs only (the benchmark's
#: ImageNet is ImageNet16-120, 16x16 images); dataset -> (input shape, classes)
NB201_SHAPES: dict[str, tuple[tuple[int, int, int], int]] = {
    "cifar10": ((3, 32, 32), 10),
    "digits": ((1, 8, 8), 10),
}

#: NAS-Bench-201 searched with DARTS: `layers` is N, the cells per stage (3N in all).
#: paper: the benchmark's search network (C=16, N=5) with DARTS' optimiser settings, as
#: its DARTS baseline uses [R]. small: one cell per stage; an epoch costs ~0.3 s on
#: digits, so more epochs than DARTS' small preset give alpha room to move.
SEARCH_OVERRIDES: dict[str, dict[str, Any]] = {
    "paper": dict(layers=5),
    "small": dict(layers=1, epochs=30),
}

#: The benchmark's training recipe (200 epochs, SGD 0.1 Nesterov, weight decay 5e-4,
#: batch 256, no cutout, drop-path or auxiliary head); small: 30 epochs at batch 96.
_NB201_RECIPE: dict[str, Any] = dict(
    init_channels=16, layers=5, auxiliary_weight=0.0, epochs=200, batch_size=256, lr=0.1,
    nesterov=True, weight_decay=5e-4, grad_clip=0.0, cutout=0, drop_path=0.0,
)
RETRAIN_OVERRIDES: dict[str, dict[str, Any]] = {
    "paper": _NB201_RECIPE,
    "small": {**_NB201_RECIPE, "epochs": 30, "batch_size": 96},
}

#: node positions (a chain) and arc curvatures chosen so that no two arcs cross and
#: their labels stay apart
_ARCS = {(0, 2): -0.3, (0, 3): -0.36, (1, 3): 0.3}


class Nb201Space(SearchSpace[Nb201Arch]):
    """The NAS-Bench-201 space (one cell type, "normal", shared by every cell)."""

    name = "nb201"
    op_names: tuple[str, ...] = NB201_OPS
    cell_types = ("normal",)
    num_edges = NUM_EDGES
    edges: tuple[tuple[int, int], ...] = NB201_EDGES
    op_namespace = "nb201"
    layout_name = "nb201"
    searches_activations = True
    layers_meaning = "NB201 cells per stage (3 stages)"
    description = "NAS-Bench-201 cells (6 edges, 5 operations, 15,625 cells)"

    # -- architectures ---------------------------------------------------------------

    def owns(self, arch: object) -> bool:
        return isinstance(arch, Nb201Arch)

    def claims(self, stored: Any) -> bool:
        if isinstance(stored, str):
            return stored.strip().startswith("|")
        return isinstance(stored, Mapping) and stored.get("space") == self.name

    def parse(self, stored: Any, *, source: str = "NB201 arch") -> Nb201Arch:
        """The benchmark string, or `Nb201Arch.to_dict()`."""
        if isinstance(stored, Nb201Arch):
            return stored
        if isinstance(stored, Mapping):
            return arch_from_dict(stored)
        if not isinstance(stored, str):
            raise GenotypeError(f"{source}: an NB201 arch is a string or an object, "
                                f"got {type(stored).__name__}")
        return parse_arch(stored)

    def to_json(self, arch: Nb201Arch) -> dict[str, str]:
        return arch.to_dict()

    def row_form(self, arch: Nb201Arch) -> str:
        return format_arch(arch)  # the benchmark's string, as published data store it

    def format(self, arch: Nb201Arch | Sequence[str]) -> str:
        return format_arch(arch)

    def equivalents(self, arch: Nb201Arch, limit: int | None = None
                    ) -> tuple[Nb201Arch, ...]:
        """Other cells computing the same thing (`equivalent_archs`; at most 7 exist)."""
        found = equivalent_archs(arch)
        return found if limit is None else found[:limit]

    # -- networks --------------------------------------------------------------------

    def build_supernet(self, C: int, layers: int, num_classes: int, in_channels: int = 3,
                       edge_ops: EdgeOps | None = None,
                       activations: Sequence[str] = ()) -> nn.Module:
        """The search network; `layers` is N, the cells per stage (3N cells in all)."""
        from search_spaces.nb201_supernet import Nb201SuperNet

        return Nb201SuperNet(C, layers, num_classes,
                             edge_ops if edge_ops is not None else self.full_edge_ops(),
                             in_channels=in_channels, activations=activations)

    def build_network(self, arch: Nb201Arch | str | Sequence[str],
                      C: int = BENCHMARK_CHANNELS, layers: int = BENCHMARK_CELLS_PER_STAGE,
                      num_classes: int = 10, in_channels: int = 3,
                      **options: Any) -> Nb201Network:
        """The benchmark's network (defaults: C=16, N=5 cells per stage); no options."""
        if options:
            raise InputError(f"NAS-Bench-201 networks take no options {sorted(options)} "
                             "(no auxiliary head, no layout)")
        return Nb201Network(_as_arch(arch), C=C, N=layers, num_classes=num_classes,
                            in_channels=in_channels)

    def sized_network(self, arch: Nb201Arch, dataset: str, channels: int | None = None,
                      layers: int | None = None) -> SizedNetwork:
        check_dataset(self.name, dataset, NB201_SHAPES)
        shape, classes = NB201_SHAPES[dataset]
        C, N = channels or BENCHMARK_CHANNELS, layers or BENCHMARK_CELLS_PER_STAGE
        net = self.build_network(arch, C, N, classes, shape[0])
        return SizedNetwork(net, shape, C, N, layers_meaning="cells per stage",
                            extra={"arch": str(arch), "cells_per_stage": N})

    def deployed_network(self, arch: Nb201Arch, profile: HardwareProfile
                         ) -> tuple[nn.Module, tuple[int, ...]]:
        """The benchmark's CIFAR network (C=16, N=5) with the profile's input and classes.

        A profile's `network.layers` / `channels` describe the DARTS deployed network and
        have no NB201 reading that is not a guess; NB201's latencies (the benchmark's and
        the imported ones) all refer to its fixed C=16, N=5 network, so that is built.
        """
        shape = tuple(profile.input_shape)
        model = self.build_network(arch, BENCHMARK_CHANNELS, BENCHMARK_CELLS_PER_STAGE,
                                   profile.network["num_classes"], shape[0])
        return model.eval(), shape

    def profile_network(self) -> dict[str, Any]:
        """The benchmark's network: 15 cells (3 stages of 5), 16 channels."""
        return {"dataset": "cifar10", "input": [3, 32, 32],
                "layers": 3 * BENCHMARK_CELLS_PER_STAGE, "channels": BENCHMARK_CHANNELS,
                "num_classes": 10}

    def describe_deployed(self, profile: HardwareProfile) -> str:
        shape = "x".join(str(s) for s in profile.input_shape)
        return (f"{profile.name}'s deployed NAS-Bench-201 network: C={BENCHMARK_CHANNELS}, "
                f"{BENCHMARK_CELLS_PER_STAGE} cells per stage, "
                f"input {shape}, batch {profile.batch_size}, {profile.precision}")

    def search_overrides(self, preset: str) -> dict[str, Any]:
        return dict(SEARCH_OVERRIDES.get(preset, {}))

    def retrain_overrides(self, preset: str) -> dict[str, Any]:
        return dict(RETRAIN_OVERRIDES.get(preset, {}))

    # -- search ----------------------------------------------------------------------

    def derive(self, weights: Any, edge_ops: EdgeOps | None = None,
               activations: Sequence[str] = ()) -> Nb201Arch:
        """The strongest op per edge, `none` included (NB201 keeps every edge; this is
        the benchmark's DARTS baseline). `weights` is (6, k), or {"normal": (6, k)} as
        the search driver passes it; `edge_ops` names the k columns of each edge. With
        `activations` (a factorised search) the weights also hold the activation
        probabilities under `activation_key("normal")`, and an op that carries an
        activation is named with its edge's strongest one (the argmax of p_op * q_act)."""
        from search_spaces.supernet import activation_key

        act_key = activation_key("normal")
        q = None
        if isinstance(weights, Mapping):
            expected = {"normal", act_key} if activations else {"normal"}
            if set(weights) != expected:
                raise InputError(f"NB201 weights have keys {sorted(expected)}, got "
                                 f"{sorted(weights)}")
            if activations:
                q = as_numpy(weights[act_key])
            weights = weights["normal"]
        elif activations:
            raise InputError("NB201 derivation with activations needs the weights by key")
        w = as_numpy(weights)
        names = (list(edge_ops["normal"]) if edge_ops is not None
                 else [NB201_OPS] * NUM_EDGES)
        width = len(names[0]) if len(names) == NUM_EDGES else -1
        if w.shape != (NUM_EDGES, width):
            raise InputError(
                f"NB201 weights must have shape ({NUM_EDGES}, {width}), got {w.shape}"
            )
        ops = [names[e][k] for e, k in enumerate(w.argmax(axis=1))]
        if q is not None:
            ops = [pair_name(op, activations[int(np.argmax(q[e]))])
                   if op_spec(op, self.op_namespace).takes_activation else op
                   for e, op in enumerate(ops)]
        return Nb201Arch(tuple(ops))

    # -- encoding --------------------------------------------------------------------

    @property
    def encoding_size(self) -> int:
        return ENCODING_SIZE

    @property
    def encoding_layout(self) -> dict[str, tuple[int, int]]:
        return dict(ENCODING_LAYOUT)

    def encode(self, arch: Nb201Arch | str | Sequence[str]) -> np.ndarray:
        return encode(arch)

    def encode_weights(self, weights: torch.Tensor | Mapping[str, torch.Tensor],
                       edge_ops: EdgeOps | None = None) -> torch.Tensor:
        return encode_weights(weights, edge_ops)

    def encoding_rows(self, arch: Nb201Arch) -> dict[str, list[str]]:
        return {"normal": list(self.parse(arch).ops)}

    def rename_ops(self, arch: Nb201Arch, rename: Callable[[str], str]) -> Nb201Arch:
        return Nb201Arch(tuple(rename(op) for op in arch.ops))

    def sample(self, rng: np.random.Generator, heavy_share: float | None = None
               ) -> Nb201Arch:
        """Uniform over all 15,625 cells when `heavy_share` is None; else a heavy op
        (a convolution) with that probability per edge."""
        if heavy_share is None:
            return Nb201Arch(
                tuple(NB201_OPS[k] for k in rng.integers(len(NB201_OPS), size=NUM_EDGES))
            )
        heavy = [o for o in NB201_OPS if op_spec(o, self.op_namespace).heavy]
        light = [o for o in NB201_OPS if o not in heavy]
        ops = []
        for _ in range(NUM_EDGES):
            pool = heavy if rng.random() < heavy_share else light
            ops.append(pool[rng.integers(len(pool))])
        return Nb201Arch(tuple(ops))

    # -- reports ---------------------------------------------------------------------

    def cell_graphs(self, arch: Nb201Arch | Sequence[str]) -> tuple[CellGraph, ...]:
        """Node 0 in, node 3 out, in a row; `none` edges are left out."""
        ops = arch.ops if isinstance(arch, Nb201Arch) else tuple(arch)
        roles = {0: "input", 1: "intermediate", 2: "intermediate", 3: "output"}
        kept = tuple((s, d, op) for (s, d), op in zip(NB201_EDGES, ops, strict=True)
                     if op != "none")
        return (CellGraph(cell_type="normal", title="NB201 cell",
                          node_names={i: str(i) for i in roles}, roles=roles, edges=kept,
                          positions={i: (float(i), 0.0) for i in roles}, arcs=dict(_ARCS),
                          caption=format_arch(ops)),)

    def edge_ends(self, cell_type: str) -> tuple[tuple[int, int], ...]:
        return NB201_EDGES


NB201_SPACE = Nb201Space()
