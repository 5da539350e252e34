"""NNI's DARTS-cell architecture parameters, read as our DARTS encoding's soft weights.

What NNI 3.0 keeps (read from its sources, `nni/nas/oneshot/pytorch/supermodule/
differentiable.py` and `nni/nas/hub/pytorch/nasnet.py`): `nni.nas.strategy.DARTS` turns
every `nni.nas.nn.pytorch.Cell` into a `DifferentiableMixedCell`, whose `_arch_alpha` is a
ParameterDict with one 1-D logit vector per edge, keyed ``"{cell}/{node}_{input}"``
(node 2..5, input 0..node-1; cells of one label share the same Parameter objects). An
edge's vector has one column per candidate in the cell's `op_names` order plus one last
column that NNI adds itself: the path "this edge is not used", which contributes zeros.
The hub's DARTS space labels its cells ``normal`` and ``reduce`` and leaves ``none`` out
of its candidates for exactly that reason (`DARTS.DARTS_OPS`), so that last column is our
encoding's ``none``. NNI's mixture is a plain softmax over the whole vector, as ours.

Our encoding (`search_spaces/encoding.py`, what the latency predictor was trained on) is
per cell type, per edge in DARTS order ``(0,2), (1,2), (0,3), (1,3), (2,3), ...``, one
column per op of our op set (``none`` first). NNI's edge order is the same; its op order
is not, so each NNI column is scattered to its named column here. A candidate our
predictor has no column for is refused with one line (it cannot be priced); an op of ours
that NNI does not offer keeps weight 0, as a P-DARTS-pruned op does.

Nothing here imports NNI: the mapping works on plain dicts of tensors and on any module
tree shaped like NNI's (duck typing), so it is tested without NNI installed.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from search_spaces.base import SearchSpace
from search_spaces.encoding import ZERO, edge_index, encodable_name
from search_spaces.errors import InputError
from search_spaces.genotype import Genotype

#: `nni.nas.hub.pytorch.DARTS.DARTS_OPS` in NNI 3.0: the candidates of every edge, in the
#: order of an edge's alpha columns (``none`` is the extra last column, not a candidate)
NNI_DARTS_OPS: tuple[str, ...] = (
    "max_pool_3x3",
    "avg_pool_3x3",
    "skip_connect",
    "sep_conv_3x3",
    "sep_conv_5x5",
    "dil_conv_3x3",
    "dil_conv_5x5",
)

_EDGE_LABEL = re.compile(r"^(?P<cell>.+)/(?P<node>\d+)_(?P<src>\d+)(?:/in_cell)?$")


def _darts_space() -> SearchSpace[Any]:
    from search_spaces.space import get_space

    return get_space("darts")


def parse_edge_label(label: str) -> tuple[str, int, int]:
    """``"normal/3_1"`` -> ("normal", node 3, input 1); NNI's memo form ``.../in_cell`` too."""
    m = _EDGE_LABEL.match(label)
    if m is None:
        raise InputError(f"{label!r} is not an NNI DARTS cell edge label "
                         "('<cell>/<node>_<input>', e.g. 'normal/3_1')")
    return m["cell"], int(m["node"]), int(m["src"])


@dataclass(frozen=True)
class AlphaMapping:
    """Where each column of an NNI edge alpha goes in our encoding."""

    nni_ops: tuple[str, ...]       # NNI's candidates, in the order of an alpha's columns
    implicit_zero: bool            # one more column than candidates: NNI's "edge unused"
    columns: tuple[str, ...]       # our encoding's op columns, in order
    index: tuple[int, ...]         # our column of each alpha column
    cell_types: tuple[str, ...]
    steps: int

    @property
    def width(self) -> int:
        """Columns of one NNI edge alpha."""
        return len(self.index)

    def selection(self, dtype: torch.dtype, device: torch.device | None = None
                  ) -> torch.Tensor:
        """(alpha columns, our columns) 0/1 matrix: soft weights = probabilities @ it."""
        sel = torch.zeros(self.width, len(self.columns), dtype=dtype, device=device)
        sel[torch.arange(self.width), torch.tensor(self.index)] = 1.0
        return sel


def alpha_mapping(nni_ops: Sequence[str] = NNI_DARTS_OPS, space: SearchSpace[Any] | None = None,
                  implicit_zero: bool = True) -> AlphaMapping:
    """The mapping for an NNI cell whose candidates are `nni_ops` onto `space`'s encoding
    (default: our DARTS space, the columns of its predictors)."""
    space = space if space is not None else _darts_space()
    columns = tuple(space.encoding_ops)
    ops = tuple(nni_ops)
    if not ops:
        raise InputError("the NNI cell has no candidate operations")
    if len(set(ops)) != len(ops):
        raise InputError(f"the NNI cell lists an operation twice: {', '.join(ops)}")
    index = []
    for op in ops:
        try:
            name = encodable_name(op)
        except InputError as exc:
            raise InputError(f"NNI operation {op!r}: {exc}") from None
        if name not in columns:
            raise InputError(
                f"NNI operation {op!r} has no column in the '{space.name}' latency encoding "
                f"(columns: {', '.join(columns)}), so the predictor cannot price it: leave it "
                "out of the NNI space's candidates, or profile and train a predictor for an "
                "op set that has it")
        index.append(columns.index(name))
    if implicit_zero:
        if ZERO not in columns:
            raise InputError(f"the '{space.name}' encoding has no '{ZERO}' column for NNI's "
                             "implicit 'edge unused' path")
        index.append(columns.index(ZERO))
    steps = int(getattr(space, "steps", 4))
    return AlphaMapping(ops, implicit_zero, columns, tuple(index), tuple(space.cell_types),
                        steps)


def soft_weights(alphas: Mapping[str, torch.Tensor], mapping: AlphaMapping | None = None,
                 *, softmax: bool = True) -> dict[str, torch.Tensor]:
    """Per cell type, the (edges, our ops) soft weights of NNI edge alphas (differentiable).

    `alphas`: ``{"normal/2_0": logits, ...}`` as in a `DifferentiableMixedCell`'s
    `_arch_alpha`; every edge of both cell types is required. With `softmax` (NNI's
    DARTS: `nn.Softmax(-1)`) the logits become probabilities first; without, the
    values are taken as probabilities already."""
    mapping = mapping if mapping is not None else alpha_mapping()
    rows = edge_index(mapping.steps)
    by_cell: dict[str, dict[int, torch.Tensor]] = {}
    for label, alpha in alphas.items():
        cell, node, src = parse_edge_label(label)
        if cell not in mapping.cell_types:
            raise InputError(f"NNI alpha {label!r}: unknown cell {cell!r}; the DARTS space's "
                             f"cells are labelled {' and '.join(mapping.cell_types)}")
        if (src, node) not in rows:
            raise InputError(f"NNI alpha {label!r}: no edge from node {src} into node {node} "
                             f"in a DARTS cell of {mapping.steps} nodes")
        if alpha.dim() != 1 or alpha.shape[0] != mapping.width:
            zero = " plus NNI's 'unused' column" if mapping.implicit_zero else ""
            raise InputError(f"NNI alpha {label!r} has shape {tuple(alpha.shape)}; expected "
                             f"({mapping.width},): {len(mapping.nni_ops)} candidates{zero}")
        by_cell.setdefault(cell, {})[rows[(src, node)]] = alpha
    out: dict[str, torch.Tensor] = {}
    for cell in mapping.cell_types:
        have = by_cell.get(cell, {})
        missing = [f"{cell}/{node}_{src}" for (src, node), r in sorted(rows.items(),
                                                                        key=lambda kv: kv[1])
                   if r not in have]
        if missing:
            raise InputError(f"NNI alphas are missing {len(missing)} edge(s) of the {cell} "
                             f"cell: {', '.join(missing[:4])}{' ...' if len(missing) > 4 else ''}")
        a = torch.stack([have[r] for r in range(len(rows))])
        p = torch.softmax(a, dim=-1) if softmax else a
        out[cell] = p @ mapping.selection(p.dtype, p.device)
    return out


@dataclass(frozen=True)
class CellAlphas:
    """The DARTS-cell architecture parameters found in an NNI module tree."""

    alphas: dict[str, torch.Tensor]
    op_names: tuple[str, ...]
    other: tuple[str, ...]   # labels of architecture choices outside the cells' edges


def _as_module(source: Any) -> nn.Module:
    if isinstance(source, nn.Module):
        return source
    if hasattr(source, "oneshot_module"):          # an NNI one-shot strategy
        try:
            return source.oneshot_module
        except RuntimeError as exc:
            raise InputError(f"the NNI strategy has no supernet yet ({exc})") from None
    raise InputError(f"cannot read NNI architecture parameters from a {type(source).__name__}: "
                     "pass a dict of edge alphas, the mutated model space, the one-shot "
                     "Lightning module or the strategy after it started")


def find_cell_alphas(source: Any) -> CellAlphas:
    """Every DARTS-cell edge alpha in an NNI supernet (the model space after NNI's DARTS
    strategy mutated it, its one-shot Lightning module, or the strategy once run).

    Cells of one label share their Parameters in NNI; a label seen twice with different
    tensors is refused, since one encoding row cannot hold two."""
    module = _as_module(source)
    alphas: dict[str, torch.Tensor] = {}
    op_names: tuple[str, ...] | None = None
    other: list[str] = []
    for m in module.modules():
        arch = getattr(m, "_arch_alpha", None)
        if arch is None:
            continue
        if isinstance(arch, nn.ParameterDict):
            if not len(arch):
                continue
            names = getattr(m, "op_names", None)
            keys = list(arch.keys())
            if names is None or not all(_EDGE_LABEL.match(k) for k in keys):
                other.extend(k for k in keys if k not in other)
                continue
            names = tuple(names)
            if op_names is not None and names != op_names:
                raise InputError(f"NNI cells disagree on their candidates: {', '.join(op_names)}"
                                 f" vs {', '.join(names)}")
            op_names = names
            for k in keys:
                p = arch[k]
                if k in alphas and alphas[k] is not p:
                    raise InputError(f"two NNI cells labelled {k.split('/')[0]!r} hold "
                                     f"different parameters for edge {k!r}; one latency "
                                     "encoding row cannot describe both")
                alphas[k] = p
        elif isinstance(arch, torch.Tensor):
            label = str(getattr(m, "label", type(m).__name__))
            if label not in other:
                other.append(label)
    if not alphas or op_names is None:
        raise InputError(f"no DARTS cell architecture parameters in {type(module).__name__}: "
                         "pass the supernet after NNI's DARTS strategy mutated it "
                         "(strategy.mutate_model, or a running experiment's model space)")
    return CellAlphas(alphas, op_names, tuple(other))


def genotype_from_export(sample: Mapping[str, Any], steps: int = 4,
                         cell_types: Sequence[str] = ("normal", "reduce")) -> Genotype:
    """Our `Genotype` from NNI's exported architecture (`strategy.export()` /
    `export_top_models(formatter='dict')`): ``{cell}/op_{node}_{k}`` is the op of the
    k-th input of node ``node`` and ``{cell}/input_{node}_{k}`` its input (a one-element
    list). Concatenation is over all intermediate nodes, as in NNI's DARTS space."""
    cells: dict[str, list[tuple[str, int]]] = {}
    for cell in cell_types:
        edges = []
        for node in range(2, steps + 2):
            for k in range(2):
                op_key, in_key = f"{cell}/op_{node}_{k}", f"{cell}/input_{node}_{k}"
                if op_key not in sample or in_key not in sample:
                    raise InputError(f"NNI export has no {op_key!r} / {in_key!r}; is it an "
                                     "export of NNI's DARTS space (4 nodes, 2 inputs each)?")
                src = sample[in_key]
                if isinstance(src, (list, tuple)):
                    if len(src) != 1:
                        raise InputError(f"NNI export {in_key!r} = {src!r}: a DARTS edge "
                                         "takes exactly one input")
                    src = src[0]
                edges.append((str(sample[op_key]), int(src)))
        cells[cell] = edges
    concat = tuple(range(2, steps + 2))
    g = Genotype(tuple(cells[cell_types[0]]), concat, tuple(cells[cell_types[1]]), concat)
    space = _darts_space()
    g.validate(space.op_names, namespace=getattr(space, "op_namespace", ""))
    return g


__all__ = [
    "NNI_DARTS_OPS",
    "AlphaMapping",
    "CellAlphas",
    "alpha_mapping",
    "find_cell_alphas",
    "genotype_from_export",
    "parse_edge_label",
    "soft_weights",
]
