"""A modelled estimate of the arithmetic energy of one forward pass (one image).

Latency is what a hardware profile measures or simulates; energy is what adder layers
(AdderNet, METHODS.md section 4) are meant to save, and no shipped profile measures it.
This module *models* it from the operation counts (`search_spaces.complexity.count_ops`)
and a published per-operation energy table:

    M. Horowitz, "Computing's energy problem (and what we can do about it)", IEEE
    International Solid-State Circuits Conference (ISSCC) 2014, pp. 10-14; energy per
    operation in a 45 nm process at 0.9 V, in pJ:

    ======  =====  ========
    format  add    multiply
    ======  =====  ========
    int8    0.03   0.2
    int32   0.1    3.1
    fp16    0.4    1.1
    fp32    0.9    3.7
    ======  =====  ========

The model:

* a multiply-accumulate costs one multiply and one add; an addition of an adder-type
  layer (`LayerSpec.additions`: the absolute difference and the accumulation of every
  filter tap, two per tap) costs one add; both at the profile's precision
  (`PRECISION_ROWS`: fp32 -> fp32, fp16 -> fp16, bf16 -> fp16 (bf16 is approximated by
  the fp16 row, which the table has no bf16 figures for), int8 -> int8; accumulators
  are taken at the operands' format, so an int8 network's sums are int8 additions);
* a layer below 32 bits (DSQ's k-bit, IR-Net's binary convolutions) has no row of its
  own: its multiply-accumulate is costed as an int8 one scaled by its bit-operations,
  (b_w x b_a) / 64 of the int8 multiply + add (`LOWBIT_ROW`), a model beside the table;
* only the layers with a cost spec count (convolutions, linear layers, adder layers);
  batch-norm, activations, pooling and the cell sums are left out, as is every memory
  access, which in the same paper costs far more than the arithmetic (a 64-bit cache
  read of 8 KB SRAM is 10 pJ, a DRAM access 1.3-2.6 nJ).

So the figure compares architectures by what their arithmetic costs (multiplications
against additions), not a device's energy per image: it is labelled "modelled".
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from torch import nn

from latency.hardware import HardwareProfile
from search_spaces.complexity import OpCounts, count_ops
from search_spaces.errors import InputError

#: Energy per operation in pJ, Horowitz ISSCC 2014 (45 nm, 0.9 V): format -> op -> pJ.
HOROWITZ_45NM_PJ: dict[str, dict[str, float]] = {
    "int8": {"add": 0.03, "mult": 0.2},
    "int32": {"add": 0.1, "mult": 3.1},
    "fp16": {"add": 0.4, "mult": 1.1},
    "fp32": {"add": 0.9, "mult": 3.7},
}

#: A hardware profile's precision -> the row of the table its arithmetic is costed at
#: (bf16 is approximated by fp16: the table has no bf16 row).
PRECISION_ROWS: dict[str, str] = {
    "fp32": "fp32",
    "fp16": "fp16",
    "bf16": "fp16",
    "int8": "int8",
}

#: What the figure is: the wording every output that shows it carries.
ENERGY_LABEL = (
    "modelled: arithmetic energy of the layers with a cost spec (convolutions, linear, "
    "adder layers; low-bit MACs as int8 scaled by bit-operations), Horowitz ISSCC 2014 "
    "45 nm table, memory traffic not included"
)


@dataclass(frozen=True)
class EnergyEstimate:
    """The modelled arithmetic energy of one forward pass of a single sample.

    - `pj`: energy in picojoules (`mj` in millijoules);
    - `multiplications`: the multiplications of the multiply-accumulates (= MACs);
    - `additions`: every addition the arithmetic does: one per multiply-accumulate plus
      the adder layers' additions;
    - `precision`: the profile precision it was costed at (`row`: the table row used);
    - `label`: says the figure is modelled, and what it leaves out.
    """

    pj: float
    multiplications: int
    additions: int
    precision: str
    row: str
    label: str = ENERGY_LABEL

    @property
    def mj(self) -> float:
        return self.pj * 1e-9

    def to_dict(self) -> dict[str, Any]:
        """The fields an output row shows beside a latency."""
        return {"energy_mj": self.mj, "multiplications": self.multiplications,
                "additions": self.additions, "energy_label": self.label}


def energy_row(precision: str) -> dict[str, float]:
    """The table row (pJ per add / mult) a profile precision is costed at."""
    row = PRECISION_ROWS.get(precision)
    if row is None:
        raise InputError(f"no energy figures for precision {precision!r} (known: "
                         f"{', '.join(PRECISION_ROWS)})")
    return HOROWITZ_45NM_PJ[row]


#: A low-bit multiply-accumulate (weights or activations below 32 bits) is costed as an
#: int8 one scaled by its bit-operations: (b_w x b_a) / 64 of the int8 multiply + add
#: (a binary XNOR-popcount MAC is 1/64 of an int8 one). A model, not a table entry.
LOWBIT_ROW = "int8"


def arithmetic_energy(counts: OpCounts, precision: str) -> EnergyEstimate:
    """The modelled energy of `counts` at `precision`: a multiply-accumulate is one
    multiply and one add, an adder-layer addition one add; a low-bit layer's MAC costs
    the int8 MAC scaled by its bit-operations (`LOWBIT_ROW`)."""
    pj = energy_row(precision)
    multiplications = int(counts.macs)
    additions = int(counts.macs) + int(counts.additions)
    lowbit = counts.lowbit_macs
    int8 = HOROWITZ_45NM_PJ[LOWBIT_ROW]
    lowbit_pj = sum(m * w * a / 64.0 for (w, a), m in counts.by_precision.items()
                    if min(w, a) < 32) * (int8["mult"] + int8["add"])
    return EnergyEstimate(
        pj=(multiplications - lowbit) * pj["mult"] + (additions - lowbit) * pj["add"]
        + lowbit_pj,
        multiplications=multiplications,
        additions=additions,
        precision=precision,
        row=PRECISION_ROWS[precision],
    )


def network_energy(model: nn.Module, input_shape: Sequence[int],
                   precision: str) -> EnergyEstimate:
    """The modelled energy of one forward pass of `model` on one sample of `input_shape`
    (no batch dimension; counted by `count_ops` at batch 1, auxiliary head excluded)."""
    energy_row(precision)  # an unknown precision fails before the forward pass
    return arithmetic_energy(count_ops(model, input_shape), precision)


def architecture_energy(arch: Any, profile: HardwareProfile) -> EnergyEstimate:
    """The modelled energy of the network `profile`'s latencies refer to
    (`SearchSpace.deployed_network`), per image, at the profile's precision."""
    from search_spaces.space import space_of

    model, shape = space_of(arch).deployed_network(arch, profile)
    return network_energy(model, shape, profile.precision)


__all__ = [
    "ENERGY_LABEL",
    "HOROWITZ_45NM_PJ",
    "PRECISION_ROWS",
    "EnergyEstimate",
    "architecture_energy",
    "arithmetic_energy",
    "energy_row",
    "network_energy",
]
