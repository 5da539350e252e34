"""Our latency predictor as a differentiable penalty inside NNI's one-shot DARTS
(docs/nni.md). Optional: NNI 3.0 and pytorch-lightning come with ``pip install
'hw-nas[nni]'``; this package imports without them and only the NNI-facing functions
(`latency_darts`, `nni_penalty`, the example) need them.

- `mapping`: NNI's DARTS-cell edge alphas (names, op order, NNI's implicit "unused"
  column) as our DARTS encoding's soft weights; NNI's export as our `Genotype`.
- `penalty`: `LatencyPenalty` / `latency_penalty`, the term `nas search
  --latency-weight` adds, computed from NNI's alphas.
- `strategy`: `latency_darts`, NNI's DARTS strategy with that term in its architecture
  loss (through NNI's own `penalty=` argument).
"""

from __future__ import annotations

from nas.nni_bridge._nni import INSTALL_HINT, require_nni
from nas.nni_bridge.mapping import (
    NNI_DARTS_OPS,
    AlphaMapping,
    CellAlphas,
    alpha_mapping,
    find_cell_alphas,
    genotype_from_export,
    parse_edge_label,
    soft_weights,
)
from nas.nni_bridge.penalty import LatencyPenalty, latency_penalty, load_latency_model
from nas.nni_bridge.strategy import latency_darts, nni_penalty

__all__ = [
    "INSTALL_HINT",
    "NNI_DARTS_OPS",
    "AlphaMapping",
    "CellAlphas",
    "LatencyPenalty",
    "alpha_mapping",
    "find_cell_alphas",
    "genotype_from_export",
    "latency_darts",
    "latency_penalty",
    "load_latency_model",
    "nni_penalty",
    "parse_edge_label",
    "require_nni",
    "soft_weights",
]
