"""Features a latency regressor sees, computed from a space's encoding (differentiably).

The space's encoding stays the single source of truth for what an architecture is; this
module only derives from it what a small training set cannot teach a regressor cheaply:

* `gated`: the one-hot block multiplied per edge by ``edge_in * edge_out``, i.e. the op
  weights of edges that carry the cell input to the cell output. A compiler that prunes
  dead code or folds constants runs exactly these ops.
* `counts`: per op, the number of edges holding it (sum of the one-hot over edges), and
  the same for `gated`. Latency is close to a sum of per-op costs, and totals are what
  such a sum depends on, whatever edge an op sits on.
* `group counts` (optional `edge_groups`): the same count within each group of edges
  whose ops run on tensors of one shape. In a DARTS network an op costs the same on
  every edge of a normal cell, but in a reduction cell it runs at stride 2 on the edges
  from the two cell inputs and at stride 1 on the others; all cells of a type share the
  genotype. So latency is, up to noise, additive in (group, op) counts: 3 x 8 numbers
  a regressor learns from far fewer samples than 2 x 14 x 8 per-edge weights.

Everything is a product or a sum of encoding entries, so gradients flow from a latency
estimate back to soft architecture weights. Which slices of the encoding are which is
described by a `FeatureLayout`, stored in the predictor artifact as JSON, so a predictor
never needs the space's Python code to be rebuilt.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from search_spaces.base import SearchSpace
from search_spaces.errors import InputError

Span = tuple[int, int]


@dataclass(frozen=True)
class FeatureLayout:
    """Where the blocks of an encoding sit; `edge_in` / `edge_out` are optional."""

    encoding_size: int
    num_edges: int
    num_ops: int
    onehot: Span
    edge_in: Span | None = None
    edge_out: Span | None = None
    edge_groups: tuple[tuple[int, ...], ...] | None = None

    def __post_init__(self) -> None:
        a, b = self.onehot
        if b - a != self.num_edges * self.num_ops or a < 0 or b > self.encoding_size:
            raise InputError(
                f"feature layout: one-hot block {self.onehot} does not hold "
                f"{self.num_edges} edges x {self.num_ops} ops inside {self.encoding_size}"
            )
        if (self.edge_in is None) != (self.edge_out is None):
            raise InputError("feature layout: give both edge_in and edge_out, or neither")
        for span in (self.edge_in, self.edge_out):
            if span is not None and (
                span[1] - span[0] != self.num_edges or span[0] < 0
                or span[1] > self.encoding_size
            ):
                raise InputError(
                    f"feature layout: edge block {span} must hold {self.num_edges} entries"
                )
        if self.edge_groups is not None:
            if not self.edge_groups or any(not g for g in self.edge_groups):
                raise InputError("feature layout: edge groups must be non-empty lists")
            for g in self.edge_groups:
                if any(not 0 <= e < self.num_edges for e in g):
                    raise InputError(
                        f"feature layout: edge group {list(g)} names an edge outside "
                        f"0..{self.num_edges - 1}"
                    )

    @property
    def has_edge_flags(self) -> bool:
        return self.edge_in is not None

    @property
    def num_features(self) -> int:
        extra = self.num_ops
        if self.has_edge_flags:
            extra += self.num_edges * self.num_ops + self.num_ops
        if self.edge_groups is not None:
            extra += len(self.edge_groups) * self.num_ops
        return self.encoding_size + extra

    def to_dict(self) -> dict[str, Any]:
        return {
            "encoding_size": self.encoding_size,
            "num_edges": self.num_edges,
            "num_ops": self.num_ops,
            "onehot": list(self.onehot),
            "edge_in": list(self.edge_in) if self.edge_in else None,
            "edge_out": list(self.edge_out) if self.edge_out else None,
            "edge_groups": [list(g) for g in self.edge_groups] if self.edge_groups else None,
        }

    @classmethod
    def from_dict(cls, data: Any) -> FeatureLayout:
        if not isinstance(data, Mapping):
            raise InputError("feature layout must be a JSON object")
        try:
            def span(key: str) -> Span | None:
                v = data.get(key)
                return None if v is None else (int(v[0]), int(v[1]))

            onehot = span("onehot")
            if onehot is None:
                raise InputError("feature layout has no one-hot block")
            groups = data.get("edge_groups")  # absent in artifacts older than groups
            return cls(
                encoding_size=int(data["encoding_size"]),
                num_edges=int(data["num_edges"]),
                num_ops=int(data["num_ops"]),
                onehot=onehot,
                edge_in=span("edge_in"),
                edge_out=span("edge_out"),
                edge_groups=None if groups is None
                else tuple(tuple(int(e) for e in g) for g in groups),
            )
        except (KeyError, TypeError, ValueError, IndexError) as exc:
            if isinstance(exc, InputError):
                raise
            raise InputError(f"feature layout is malformed: {exc!r}") from None


def _span(blocks: Mapping[str, tuple[int, int]], name: str) -> tuple[int, int] | None:
    return (int(blocks[name][0]), int(blocks[name][1])) if name in blocks else None


def layout_for_space(space: SearchSpace[Any]) -> FeatureLayout:
    """The layout of a space's encoding: its blocks (`SearchSpace.encoding_layout`; NB201
    has structural ones beside the one-hot) and its edge groups
    (`SearchSpace.encoding_edge_groups`; DARTS groups edges by the shape their ops run at).
    """
    size = int(space.encoding_size)
    num_ops = len(space.encoding_ops)
    blocks = space.encoding_layout
    onehot = tuple(blocks["onehot"])
    if (onehot[1] - onehot[0]) % num_ops:
        raise InputError(f"one-hot block of {onehot[1] - onehot[0]} entries is not a "
                         f"multiple of {num_ops} ops")
    num_edges = (onehot[1] - onehot[0]) // num_ops
    groups = space.encoding_edge_groups()
    if groups is not None and sum(len(g) for g in groups) != num_edges:
        groups = None  # not a partition of the one-hot rows: no grouping
    return FeatureLayout(
        encoding_size=size,
        num_edges=num_edges,
        num_ops=num_ops,
        onehot=(int(onehot[0]), int(onehot[1])),
        edge_in=_span(blocks, "edge_in"),
        edge_out=_span(blocks, "edge_out"),
        edge_groups=groups,
    )


class FeatureMap(nn.Module):
    """encoding (..., D) -> features (..., `layout.num_features`); no parameters."""

    def __init__(self, layout: FeatureLayout) -> None:
        super().__init__()
        self.layout = layout

    def forward(self, enc: torch.Tensor) -> torch.Tensor:
        lay = self.layout
        if enc.shape[-1] != lay.encoding_size:
            raise InputError(
                f"encoding has {enc.shape[-1]} entries; this predictor expects "
                f"{lay.encoding_size}"
            )
        lead = enc.shape[:-1]
        onehot = enc[..., lay.onehot[0]:lay.onehot[1]].reshape(*lead, lay.num_edges, lay.num_ops)
        parts = [enc, onehot.sum(dim=-2)]
        if lay.edge_in is not None and lay.edge_out is not None:
            edge_in = enc[..., lay.edge_in[0]:lay.edge_in[1]]
            live = edge_in * enc[..., lay.edge_out[0]:lay.edge_out[1]]
            gated = onehot * live.unsqueeze(-1)
            parts += [gated.reshape(*lead, -1), gated.sum(dim=-2)]
        if lay.edge_groups is not None:
            parts += [onehot[..., list(g), :].sum(dim=-2) for g in lay.edge_groups]
        return torch.cat(parts, dim=-1)


def onehot_block(enc: torch.Tensor, layout: FeatureLayout) -> torch.Tensor:
    """Only the one-hot block (what an additive per-edge model sees)."""
    return enc[..., layout.onehot[0]:layout.onehot[1]]
