"""Activation functions by name, for operations that share a pre-activation.

In the supernet every edge leaving a node reads the same activated input, so the
activation is computed once per node and cached under its name (`SourceCache`). Naming
activations (instead of hard-coding ReLU) lets an operation use another one, and a later
activation search swap them, without the cache knowing any of them. A name must always
mean the same function: the cache shares one result among every op that asks for it.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from search_spaces.errors import UnknownOperationError

#: (N, C, H, W) -> same shape; must not modify its input (other edges read it too).
Activation = Callable[[torch.Tensor], torch.Tensor]

ACTIVATIONS: dict[str, Activation] = {
    "relu": F.relu,
    "silu": F.silu,
    "leaky_relu": F.leaky_relu,  # slope 0.01, PyTorch's default
    "elu": F.elu,
    "hardswish": F.hardswish,
}


def register_activation(name: str, fn: Activation) -> Activation:
    """Register `fn` under `name`. A name is registered once: cached results are shared
    by name, so two meanings of one name would silently mix."""
    if name in ACTIVATIONS and ACTIVATIONS[name] is not fn:
        raise ValueError(f"activation {name!r} is already registered")
    ACTIVATIONS[name] = fn
    return fn


def activation(name: str) -> Activation:
    """The function registered under `name`; an unknown name is a one-line error."""
    fn = ACTIVATIONS.get(name)
    if fn is None:
        raise UnknownOperationError(
            f"unknown activation {name!r}; known activations: {', '.join(ACTIVATIONS)}"
        )
    return fn


__all__ = ["ACTIVATIONS", "Activation", "activation", "register_activation"]
