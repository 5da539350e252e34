"""The latency encoding of a factorised search: one column per (operation, activation).

A factorised search (`nas search --activations`) chooses per edge an operation (alpha,
probabilities p) and, separately, an activation (beta, probabilities q); the weight of
the pair is p_op * q_act (docs/methods.md#factorised-operator-sets). Latency depends on
the pair (a SiLU costs more than a ReLU where the runtime cannot fuse it), so the
encoding the predictor learns has a column for every pair: an op that takes an
activation gets one column per registered activation, in registry order; none, skip and
pooling keep their single column. Its entry is p_op * q_act (p_op alone for ops without
an activation), so the latency loss sends gradients into alpha AND beta through the same
product the supernet uses.

The variant of a space is a copy of it that differs only in its encoding, named
``<space>-act`` (`activation_space`); its samples, predictors and profile files are kept
apart from the plain space's under that name (`latency.predictor.locate`). The columns
always cover every registered activation, whichever subset a search or a profile uses,
so one predictor serves every `--activations` list. The rest of the plain encoding
(NB201's structural blocks) is kept as it is: they depend on `none` only.

Both entry points go through one function (`_joint`): `encode_weights` on soft weights,
`encode` on the one-hot weights of a discrete architecture, so they agree exactly on a
genotype (tests check it), as the plain encodings do.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from functools import cache
from typing import Any

import numpy as np
import torch

from search_spaces.activations import ACTIVATIONS, DEFAULT_ACTIVATION, pair_name, split_pair
from search_spaces.base import EdgeOps, SearchSpace
from search_spaces.errors import GenotypeError, InputError
from search_spaces.op_spec import op_spec
from search_spaces.supernet import activation_key

#: appended to a space's name for its activation-aware variant ("darts-act")
VARIANT_SUFFIX = "-act"


class ActivationEncoded:
    """Mixed in before a space's class: the same space with the joint encoding.

    Never registered (it owns no architecture of its own: a genotype with pairs is a
    genotype of the plain space), only looked up by name (`space.get_space`)."""

    name: str
    #: the activations the columns cover (every registered one, at creation)
    column_activations: tuple[str, ...]
    #: the activations a search's beta columns / a profile's samples range over
    searched: tuple[str, ...]
    plain: SearchSpace[Any]

    # -- columns -----------------------------------------------------------------------

    @property
    def encoding_ops(self) -> tuple[str, ...]:
        """The column names of one edge: ops, or ``op/act`` pairs (ReLU's is plain)."""
        return _columns(self.plain.op_names, self.plain.op_namespace, self.column_activations)

    @property
    def encoding_size(self) -> int:
        return self.plain.encoding_size + self._extra_columns

    @property
    def encoding_layout(self) -> dict[str, tuple[int, int]]:
        extra = self._extra_columns
        blocks = dict(self.plain.encoding_layout)
        start, stop = blocks.pop("onehot")
        if start != 0:
            raise InputError(f"the {self.plain.name} encoding does not start with its "
                             "one-hot block; no activation columns can be added")
        out = {"onehot": (0, stop + extra)}
        out.update({k: (a + extra, b + extra) for k, (a, b) in blocks.items()})
        return out

    @property
    def _extra_columns(self) -> int:
        plain = self.plain
        rows = len(plain.cell_types) * plain.num_edges
        return rows * (len(self.encoding_ops) - len(plain.op_names))

    # -- the two entry points ----------------------------------------------------------

    def encode_weights(self, weights: Mapping[str, torch.Tensor],
                       edge_ops: EdgeOps | None = None) -> torch.Tensor:
        """Soft weights with, per cell type, q under `activation_key(cell)` (edges,
        len(searched)); a cell without q is taken as all-ReLU (a plain search)."""
        plain = self.plain
        op_weights = {c: weights[c] for c in plain.cell_types}
        base = plain.encode_weights(op_weights, edge_ops)
        q = {c: weights.get(activation_key(c)) for c in plain.cell_types}
        return self._joint(base, q)

    def encode(self, arch: Any) -> np.ndarray:
        """Each edge's pair one-hot (dropped DARTS edges are `none`)."""
        plain = self.plain
        rows = plain.encoding_rows(arch)
        ops = list(plain.op_names)
        acts = list(self.column_activations)
        p: dict[str, torch.Tensor] = {}
        q: dict[str, torch.Tensor | None] = {}
        for cell in plain.cell_types:
            names = rows[cell]
            p[cell] = torch.zeros(len(names), len(ops))
            qc = torch.zeros(len(names), len(acts))
            for e, name in enumerate(names):
                base, act = split_pair(name)
                if base not in ops:
                    raise GenotypeError(f"operation {name!r} is not in the op set of the "
                                        f"{plain.name} space")
                act = act or DEFAULT_ACTIVATION
                if act not in acts:
                    raise InputError(f"activation {act!r} of {name!r} has no column in the "
                                     f"{self.name} encoding ({', '.join(acts)})")
                p[cell][e, ops.index(base)] = 1.0
                qc[e, acts.index(act)] = 1.0
            q[cell] = qc
        with torch.no_grad():
            base_enc = plain.encode_weights(p)
            return self._joint(base_enc, q, over=acts).numpy().astype(np.float32)

    def _joint(self, base: torch.Tensor, q: Mapping[str, torch.Tensor | None],
               over: Sequence[str] | None = None) -> torch.Tensor:
        """The plain encoding `base` with its one-hot block widened to the pair columns:
        column (op, act) = p_op * q_act, (op) = p_op. `q[cell]` is (edges, len(over)),
        `over` defaulting to the searched activations; None means ReLU everywhere."""
        plain = self.plain
        over = tuple(self.searched if over is None else over)
        k = len(plain.op_names)
        n_cells, n_edges = len(plain.cell_types), plain.num_edges
        size = n_cells * n_edges * k
        p = base[:size].reshape(n_cells, n_edges, k)
        col_op, col_act = _column_index(plain.op_names, plain.op_namespace,
                                        self.column_activations)
        takes = torch.tensor([a >= 0 for a in col_act], dtype=torch.bool)
        act_index = torch.tensor([max(a, 0) for a in col_act])
        blocks = []
        for c, cell in enumerate(plain.cell_types):
            qc = _full_q(q.get(cell), over, self.column_activations, n_edges, p)
            factor = torch.where(takes, qc[:, act_index], torch.ones_like(qc[:, act_index]))
            blocks.append(p[c][:, list(col_op)] * factor)
        return torch.cat([torch.stack(blocks).reshape(-1), base[size:]])

    # -- architectures -------------------------------------------------------------------

    def sample(self, rng: np.random.Generator, heavy_share: float | None = None) -> Any:
        """The plain space's sample, then a uniform activation from `searched` for each
        op that takes one (a second draw from the same generator: reproducible)."""
        plain = self.plain
        arch = plain.sample(rng, heavy_share)
        acts = self.searched

        def pick(name: str) -> str:
            if not op_spec(name, plain.op_namespace).takes_activation:
                return name
            return pair_name(name, acts[int(rng.integers(len(acts)))])

        return plain.rename_ops(arch, pick)

    def owns(self, arch: object) -> bool:
        return False

    def claims(self, stored: Any) -> bool:
        return False


def _full_q(q: torch.Tensor | None, over: Sequence[str], columns: Sequence[str],
            n_edges: int, like: torch.Tensor) -> torch.Tensor:
    """(edges, len(columns)): q's columns scattered to the activations they name; ReLU
    one-hot when q is None."""
    if q is None:
        out = torch.zeros(n_edges, len(columns), dtype=like.dtype, device=like.device)
        out[:, list(columns).index(DEFAULT_ACTIVATION)] = 1.0
        return out
    if q.dim() != 2 or q.shape != (n_edges, len(over)):
        raise InputError(f"activation weights must have shape ({n_edges}, {len(over)}), "
                         f"got {tuple(q.shape)}")
    unknown = [a for a in over if a not in columns]
    if unknown:
        raise InputError(f"activations {', '.join(unknown)} have no column in this "
                         f"encoding ({', '.join(columns)})")
    select = torch.zeros(len(over), len(columns), dtype=q.dtype, device=q.device)
    for i, a in enumerate(over):
        select[i, list(columns).index(a)] = 1.0
    return q @ select


@cache
def _column_index(op_names: tuple[str, ...], namespace: str, activations: tuple[str, ...]
                  ) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """For each pair column: the index of its op and of its activation (-1: none)."""
    ops: list[int] = []
    acts: list[int] = []
    for i, op in enumerate(op_names):
        if op_spec(op, namespace).takes_activation:
            ops += [i] * len(activations)
            acts += list(range(len(activations)))
        else:
            ops.append(i)
            acts.append(-1)
    return tuple(ops), tuple(acts)


def _columns(op_names: tuple[str, ...], namespace: str, activations: tuple[str, ...]
             ) -> tuple[str, ...]:
    cols_op, cols_act = _column_index(op_names, namespace, activations)
    return tuple(op_names[o] if a < 0 else pair_name(op_names[o], activations[a])
                 for o, a in zip(cols_op, cols_act, strict=True))


_VARIANTS: dict[tuple[int, tuple[str, ...], tuple[str, ...]], SearchSpace[Any]] = {}


def activation_space(plain: SearchSpace[Any], searched: Sequence[str] = ()
                     ) -> SearchSpace[Any]:
    """`plain` with the joint encoding; `searched` (default: every registered
    activation) is what the search's beta columns mean and what profiling samples."""
    if not plain.searches_activations:
        raise InputError(f"the {plain.name} space cannot search activations")
    columns = tuple(ACTIVATIONS)
    chosen = tuple(searched) or columns
    unknown = [a for a in chosen if a not in columns]
    if unknown:
        raise InputError(f"unknown activation {unknown[0]!r}; known: {', '.join(columns)}")
    key = (id(plain), columns, chosen)
    if key not in _VARIANTS:
        # a subclass of the plain space's own class, so every other method is the plain
        # space's, on a copy of its instance state
        cls: type[Any] = type(f"{type(plain).__name__}WithActivations",
                              (ActivationEncoded, type(plain)), {})
        variant: Any = object.__new__(cls)
        variant.__dict__.update(plain.__dict__)
        variant.name = plain.name + VARIANT_SUFFIX
        variant.plain = plain
        variant.column_activations = columns
        variant.searched = chosen
        variant.description = (f"{plain.description}, encoded with one column per "
                               "(operation, activation)")
        _VARIANTS[key] = variant
    return _VARIANTS[key]


def encoding_space(plain: SearchSpace[Any], activations: Sequence[str] = ()
                   ) -> SearchSpace[Any]:
    """The space whose encoding (and so whose predictor) covers a search over
    `activations`: the plain space for a plain search, else its activation variant."""
    return activation_space(plain, activations) if activations else plain


def arch_encoding_space(arch: Any) -> SearchSpace[Any]:
    """The space whose encoding describes `arch`: its own; the op-set variant holding its
    ops (`op_set_space.covering_ops_space`); and the activation variant of that when
    some edge names an activation other than ReLU (a factorised search's result)."""
    from search_spaces.op_set_space import covering_ops_space
    from search_spaces.space import space_of

    plain = space_of(arch)
    if not plain.searches_activations and not plain.searches_op_sets:
        return plain
    names = [n for rows in plain.encoding_rows(arch).values() for n in rows]
    space = covering_ops_space(plain, {split_pair(n)[0] for n in names})
    if any(split_pair(n)[1] not in (None, DEFAULT_ACTIVATION) for n in names):
        return activation_space(space)
    return space


__all__ = ["VARIANT_SUFFIX", "ActivationEncoded", "activation_space", "arch_encoding_space",
           "encoding_space"]
