"""What training loops do for layers with state of their own: per-epoch schedules and
parameters kept out of weight decay.

Op families bring layers that need more than SGD on their weights: IR-Net's binary
layers anneal the error-decay estimator's t and k every epoch; DSQ's quantizers have
clipping values and a characteristic variable that weight decay would drag towards zero.
The search and the retrain loop both call these two functions, so a layer declares what
it needs once, by duck typing, and neither loop knows the families:

* a module with ``set_epoch(epoch, epochs)`` is told the epoch before it runs
  (`advance_schedules`); its state must be a function of the epoch (or a buffer), so a
  run resumed after a kill continues exactly;
* a module class with ``no_weight_decay = True`` has its parameters in a group of their
  own without weight decay (`weight_decay_groups`).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from torch import nn


def advance_schedules(model: nn.Module, epoch: int, epochs: int) -> int:
    """Tell every scheduled layer of `model` that `epoch` (0-based) of `epochs` starts;
    returns how many layers heard it."""
    told = 0
    for module in model.modules():
        set_epoch = getattr(module, "set_epoch", None)
        if callable(set_epoch) and module is not model:
            set_epoch(epoch, epochs)
            told += 1
    return told


def weight_decay_groups(model: nn.Module, params: Iterable[nn.Parameter],
                        weight_decay: float) -> list[dict[str, Any]]:
    """`params` as optimizer groups: those owned by modules marked ``no_weight_decay``
    without weight decay, the rest with `weight_decay`; an empty group is left out."""
    exempt = {id(p) for m in model.modules() if getattr(m, "no_weight_decay", False)
              for p in m.parameters(recurse=False)}
    chosen = list(params)
    decayed = [p for p in chosen if id(p) not in exempt]
    free = [p for p in chosen if id(p) in exempt]
    groups: list[dict[str, Any]] = []
    if decayed:
        groups.append({"params": decayed, "weight_decay": weight_decay})
    if free:
        groups.append({"params": free, "weight_decay": 0.0})
    return groups


__all__ = ["advance_schedules", "weight_decay_groups"]
