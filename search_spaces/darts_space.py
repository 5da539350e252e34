"""The DARTS cell space (and P-DARTS', which searches the same cells).

Two cell types (normal, reduce), 4 intermediate nodes with two inputs each, 14 edges per
cell, the 8 DARTS primitives. Architectures are `Genotype`s; published ones paste in
unchanged. This is the space the papers' tables refer to, so its networks follow the
DARTS reference layer for layer (docs/methods.md#darts).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from search_spaces.base import (
    CellGraph,
    EdgeOps,
    SearchSpace,
    SizedNetwork,
    as_numpy,
    check_dataset,
)
from search_spaces.derive import (
    ActivationChoice,
    derive_genotype,
    restrict_skip_connects,
    skip_count,
)
from search_spaces.encoding import edge_index, encode_genotype, encode_weights
from search_spaces.errors import GenotypeError, InputError
from search_spaces.genotype import Genotype, parse_darts_literal
from search_spaces.networks import NetworkCIFAR, NetworkImageNet
from search_spaces.op_spec import op_spec
from search_spaces.ops import DARTS_PRIMITIVES
from search_spaces.supernet import SuperNet, activation_key, cell_edges

if TYPE_CHECKING:
    from latency.hardware import HardwareProfile

CELL_TYPES = ("normal", "reduce")

#: Network layouts a discrete network can be built in; keyed by dataset family.
NETWORK_BUILDERS = {"cifar": NetworkCIFAR, "imagenet": NetworkImageNet}

#: dataset -> (network layout, input shape, classes, default channels, default cells):
#: the evaluation networks of the papers (CIFAR-10: 36 channels, 20 cells; ImageNet
#: mobile setting: 48, 14) and a small one for the embedded digits
NETWORK_SHAPES: dict[str, tuple[str, tuple[int, int, int], int, int, int]] = {
    "cifar10": ("cifar", (3, 32, 32), 10, 36, 20),
    "imagenet": ("imagenet", (3, 224, 224), 1000, 48, 14),
    "digits": ("cifar", (1, 8, 8), 10, 16, 8),
}

#: retrain presets differ from the DARTS paper recipe (`nas.retrain.config.PRESETS`)
#: only in `small`, which is defined there; DARTS changes nothing
_NO_OVERRIDES: dict[str, Any] = {}


def _activation_choices(probs: Mapping[str, np.ndarray], activations: Sequence[str],
                        cell_types: Sequence[str]) -> dict[str, ActivationChoice] | None:
    """Per cell type, (activation probabilities, names) of a factorised search."""
    if not activations:
        return None
    missing = [activation_key(c) for c in cell_types if activation_key(c) not in probs]
    if missing:
        raise InputError(f"activation weights {', '.join(missing)} are missing: was the "
                         "supernet built with these activations?")
    return {c: (probs[activation_key(c)], tuple(activations)) for c in cell_types}


def darts_node_name(index: int, steps: int = 4) -> str:
    """DARTS state names: 0 and 1 are the previous cells' outputs, then nodes 0..steps-1,
    and the cell output c_{k}."""
    if index == 0:
        return "c_{k-2}"
    if index == 1:
        return "c_{k-1}"
    if index >= steps + 2:
        return "c_{k}"
    return str(index - 2)


def darts_cell_graph(edges: Sequence[tuple[str, int]], concat: Sequence[int],
                     cell_type: str = "normal") -> CellGraph:
    """One DARTS cell as a report draws it: edge pairs ``2i, 2i+1`` feed node ``2 + i``,
    the concatenated nodes feed the output."""
    if len(edges) % 2:
        raise GenotypeError(f"a DARTS cell needs two edges per node, got {len(edges)} edges")
    steps = len(edges) // 2
    out = steps + 2
    ids = range(steps + 3)
    links: list[tuple[int, int, str | None]] = []
    for k, (op, src) in enumerate(edges):
        dst = 2 + k // 2
        if not 0 <= src < dst:
            raise GenotypeError(f"edge {k} ({op!r}, {src}) feeds node {dst} but node {dst} "
                                f"can only take inputs 0..{dst - 1}")
        links.append((src, dst, op))
    for c in concat:
        if not 0 <= c < out:
            raise GenotypeError(f"concat index {c} is outside the cell's nodes 0..{out - 1}")
        links.append((c, out, None))
    return CellGraph(
        cell_type=cell_type,
        title=f"{cell_type} cell",
        node_names={i: darts_node_name(i, steps) for i in ids},
        roles={i: "input" if i < 2 else "output" if i == out else "intermediate" for i in ids},
        edges=tuple(links),
    )


class DartsSpace(SearchSpace[Genotype]):
    """The DARTS cell space: 4 intermediate nodes, 14 edges, normal and reduce cells."""

    name = "darts"
    op_names: tuple[str, ...] = DARTS_PRIMITIVES
    cell_types = CELL_TYPES
    strategies = frozenset({"darts", "pdarts"})
    description = "DARTS cells (normal and reduction, 14 edges, 8 operations)"
    layout_name = "cifar"
    supports_auxiliary = True
    supports_drop_path = True
    searches_activations = True
    searches_op_sets = True
    steps = 4
    multiplier = 4
    num_edges = len(cell_edges(steps))

    # -- architectures ---------------------------------------------------------------

    def owns(self, arch: object) -> bool:
        return isinstance(arch, Genotype)

    def claims(self, stored: Any) -> bool:
        if isinstance(stored, str):
            return "Genotype" in stored
        return isinstance(stored, Mapping) and "normal" in stored and "space" not in stored

    def parse(self, stored: Any, *, source: str = "genotype") -> Genotype:
        """A JSON object (`Genotype.to_dict`), the DARTS literal text, or a `Genotype`;
        checked against the op set (pairs ``op/act`` included) and with each pair under
        its one name ("sep_conv_3x3/relu" is "sep_conv_3x3")."""
        if isinstance(stored, Genotype):
            genotype = stored
        elif isinstance(stored, str):
            genotype = parse_darts_literal(stored, source=source)
        else:
            genotype = Genotype.from_dict(stored, source=source)
        genotype.validate(self.accepted_ops, source=source, namespace=self.op_namespace)
        return genotype.canonical()

    def to_json(self, arch: Genotype) -> dict[str, list]:
        return arch.to_dict()

    def equivalents(self, arch: Genotype, limit: int | None = None) -> tuple[Genotype, ...]:
        """Genotypes whose deployed network is the same computation (`darts_symmetry`)."""
        from search_spaces.darts_symmetry import equivalent_genotypes

        return equivalent_genotypes(arch, limit)

    # -- networks --------------------------------------------------------------------

    def build_supernet(self, C: int, layers: int, num_classes: int, in_channels: int = 3,
                       edge_ops: EdgeOps | None = None,
                       activations: Sequence[str] = ()) -> SuperNet:
        return SuperNet(
            C, num_classes, layers,
            edge_ops if edge_ops is not None else self.full_edge_ops(),
            steps=self.steps, multiplier=self.multiplier, in_channels=in_channels,
            activations=activations,
        )

    def build_network(self, arch: Genotype, C: int, layers: int, num_classes: int,
                      in_channels: int = 3, **options: Any) -> nn.Module:
        """The evaluation network; options `layout` (cifar | imagenet, default cifar) and
        `auxiliary` (default True, the papers' networks)."""
        layout = options.pop("layout", "cifar")
        auxiliary = options.pop("auxiliary", True)
        if options:
            raise TypeError(f"unknown network options {sorted(options)}")
        arch.validate(self.accepted_ops, namespace=self.op_namespace)
        if layout not in NETWORK_BUILDERS:
            raise InputError(
                f"unknown network layout {layout!r}; known: {', '.join(NETWORK_BUILDERS)}"
            )
        return NETWORK_BUILDERS[layout](arch, C=C, layers=layers, num_classes=num_classes,
                                        auxiliary=auxiliary, in_channels=in_channels)

    def training_network(self, arch: Genotype, C: int, layers: int, num_classes: int,
                         in_channels: int = 3, *, auxiliary: bool = False,
                         **options: Any) -> nn.Module:
        # the DARTS networks already return (logits, auxiliary logits or None)
        return self.build_network(arch, C, layers, num_classes, in_channels,
                                  auxiliary=auxiliary, **options)

    def sized_network(self, arch: Genotype, dataset: str, channels: int | None = None,
                      layers: int | None = None) -> SizedNetwork:
        check_dataset(self.name, dataset, NETWORK_SHAPES)
        layout, shape, classes, C, n_cells = NETWORK_SHAPES[dataset]
        C, n_cells = channels or C, layers or n_cells
        net = self.build_network(arch, C, n_cells, classes, shape[0], layout=layout)
        return SizedNetwork(net, shape, C, n_cells)

    def deployed_network(self, arch: Genotype, profile: HardwareProfile
                         ) -> tuple[nn.Module, tuple[int, ...]]:
        """The profile's `network` section: layout, channels, cells, classes (no
        auxiliary head: it is not deployed)."""
        net = profile.network
        shape = tuple(profile.input_shape)
        model = self.build_network(arch, net["channels"], net["layers"], net["num_classes"],
                                   shape[0], layout=net.get("layout", "cifar"),
                                   auxiliary=False)
        return model.eval(), shape

    def cell_inputs(self, profile: HardwareProfile
                    ) -> list[tuple[str, int, int, int, bool]]:
        """Read off the deployed network of DARTS_V2 (the shapes do not depend on the
        genotype): each cell's edges read its preprocessed inputs, C channels at the
        size of the previous cell's output."""
        from search_spaces.genotype_library import DARTS_V2
        from search_spaces.networks import Cell

        model, shape = self.deployed_network(DARTS_V2, profile)
        found: list[tuple[str, int, int, int, bool]] = []

        def hook(cell: Cell) -> Any:
            def record(module: nn.Module, inputs: Any, output: torch.Tensor) -> None:
                _, C, H, W = output.shape
                found.append(("reduce" if cell.reduction else "normal", int(C), int(H),
                              int(W), bool(cell.reduction)))
            return record

        handles = [m.preprocess1.register_forward_hook(hook(m))
                   for m in model.modules() if isinstance(m, Cell)]
        try:
            with torch.no_grad():
                model(torch.zeros(1, *shape))
        finally:
            for h in handles:
                h.remove()
        return found

    def describe_deployed(self, profile: HardwareProfile) -> str:
        net = profile.network
        shape = "x".join(str(s) for s in profile.input_shape)
        return (f"{profile.name}'s deployed network: {net.get('layout', 'cifar')} layout, "
                f"input {shape}, {net['layers']} cells, {net['channels']} channels, batch "
                f"{profile.batch_size}, {profile.precision}")

    def min_layers(self) -> int:
        return 3  # two reduction cells, at 1/3 and 2/3 of the depth

    min_layers_why = " (two reduction cells)"

    # -- search ----------------------------------------------------------------------

    def derive(self, weights: Mapping[str, torch.Tensor | np.ndarray],
               edge_ops: EdgeOps | None = None,
               activations: Sequence[str] = ()) -> Genotype:
        """DARTS' genotype from per-edge op probabilities (softmax already applied); with
        `activations`, also from the activation probabilities of a factorised search
        (`derive.py`: the argmax of the joint weight p_op * q_act)."""
        probs = {k: as_numpy(v) for k, v in weights.items()}
        return derive_genotype(probs, edge_ops if edge_ops is not None
                               else self.full_edge_ops(), self.steps, self.multiplier,
                               _activation_choices(probs, activations, self.cell_types))

    def derive_limiting_skips(self, weights: Mapping[str, torch.Tensor | np.ndarray],
                              edge_ops: EdgeOps, max_skips: int,
                              activations: Sequence[str] = ()
                              ) -> tuple[Genotype, dict[str, Any]]:
        """P-DARTS' last pruning to one op per edge, then at most `max_skips`
        skip-connects in the normal cell (the reduction cell is not limited)."""
        steps = self.steps
        probs = {k: as_numpy(v) for k, v in weights.items()}
        acts = _activation_choices(probs, activations, self.cell_types) or {}
        unlimited = self.num_edges
        reduce = restrict_skip_connects(probs["reduce"], edge_ops["reduce"], steps, unlimited,
                                        act=acts.get("reduce"))
        normal_all = restrict_skip_connects(probs["normal"], edge_ops["normal"], steps,
                                            unlimited, act=acts.get("normal"))
        concat = tuple(range(2 + steps - self.multiplier, steps + 2))
        by_skips: dict[str, Any] = {}
        chosen = None
        for m in range(skip_count(normal_all), -1, -1):
            normal = restrict_skip_connects(probs["normal"], edge_ops["normal"], steps, m,
                                            act=acts.get("normal"))
            g = Genotype(tuple(normal), concat, tuple(reduce), concat)
            by_skips[str(m)] = g.to_dict()
            if m == min(max_skips, skip_count(normal_all)):
                chosen = g
        assert chosen is not None
        return chosen, by_skips

    # -- encoding --------------------------------------------------------------------

    def encode(self, arch: Genotype) -> np.ndarray:
        """One-hot per edge; edges the genotype does not use are coded as `none`. There is
        no column for an activation choice yet: a pair other than ``op/relu`` is a
        one-line InputError."""
        arch.validate(self.op_names, namespace=self.op_namespace)
        return encode_genotype(arch, self.op_names, self.steps)

    def encode_weights(self, weights: Mapping[str, torch.Tensor],
                       edge_ops: EdgeOps | None = None) -> torch.Tensor:
        return encode_weights(dict(weights), self.op_names, edge_ops)

    def encoding_rows(self, arch: Genotype) -> dict[str, list[str]]:
        arch.validate(self.accepted_ops, namespace=self.op_namespace)
        index = edge_index(self.steps)
        rows: dict[str, list[str]] = {}
        for cell, edges in (("normal", arch.normal), ("reduce", arch.reduce)):
            names = ["none"] * len(index)
            for k, (name, i) in enumerate(edges):
                j = k // 2 + 2
                if (i, j) not in index:
                    raise GenotypeError(f"edge from node {i} into node {j} is not in the "
                                        "space")
                names[index[(i, j)]] = name
            rows[cell] = names
        return rows

    def rename_ops(self, arch: Genotype, rename: Callable[[str], str]) -> Genotype:
        return Genotype(tuple((rename(op), i) for op, i in arch.normal), arch.normal_concat,
                        tuple((rename(op), i) for op, i in arch.reduce), arch.reduce_concat)

    def encoding_edge_groups(self) -> tuple[tuple[int, ...], ...]:
        """Every edge of a normal cell; the edges of a reduction cell from the two cell
        inputs (stride 2); its other edges (stride 1): the shapes their ops run at."""
        rows = sorted(edge_index(self.steps).items(), key=lambda kv: kv[1])
        n = len(rows)
        groups: list[tuple[int, ...]] = []
        for c, cell in enumerate(self.cell_types):
            base = c * n
            if cell == "reduce":
                groups.append(tuple(base + r for (i, _), r in rows if i < 2))
                groups.append(tuple(base + r for (i, _), r in rows if i >= 2))
            else:
                groups.append(tuple(base + r for _, r in rows))
        return tuple(groups)

    def sample(self, rng: np.random.Generator, heavy_share: float | None = None) -> Genotype:
        """Two distinct inputs per node, a non-`none` op per edge; `heavy_share` is the
        probability of a heavy op (separable / dilated convolution)."""
        ops = [o for o in self.op_names if o != "none"]
        heavy = [o for o in ops if op_spec(o, self.op_namespace).heavy]
        light = [o for o in ops if o not in heavy]

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

    # -- reports ---------------------------------------------------------------------

    def cell_graphs(self, arch: Genotype) -> tuple[CellGraph, ...]:
        return (darts_cell_graph(arch.normal, arch.normal_concat, "normal"),
                darts_cell_graph(arch.reduce, arch.reduce_concat, "reduce"))

    def edge_ends(self, cell_type: str) -> tuple[tuple[int, int], ...]:
        return tuple(cell_edges(self.steps))

    def node_name(self, index: int) -> str:
        return darts_node_name(index, self.steps)


DARTS_SPACE = DartsSpace()
