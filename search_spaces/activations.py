"""Activation functions by name, for operations that share a pre-activation.

In the supernet every edge leaving a node reads the same activated input, so the
activation is computed once per node and cached under its name (`SourceCache`). Naming
activations (instead of hard-coding ReLU) lets an operation use another one, and a later
activation search swap them, without the cache knowing any of them. A name must always
mean the same function: the cache shares one result among every op that asks for it.

Discrete networks use `activation_module(name)`, the same function as a module. An
operation built with another activation is named as a pair, ``op/act``
(`split_pair`, `pair_name`); ReLU is the default, so ``op/relu`` is just ``op``.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

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


# ------------------------------------------------------------- modules of activations

#: What every shipped operation uses; a pair naming it is the plain operation.
DEFAULT_ACTIVATION = "relu"

#: The built-in activations as the module types PyTorch (and ONNX export) know; ReLU is
#: the very module the operations always held, so their networks stay unchanged.
_BUILTIN_MODULES: dict[str, Callable[[], nn.Module]] = {
    "relu": lambda: nn.ReLU(inplace=False),
    "silu": nn.SiLU,
    "leaky_relu": lambda: nn.LeakyReLU(0.01),
    "elu": nn.ELU,
    "hardswish": nn.Hardswish,
}


class NamedActivation(nn.Module):
    """A registered activation without a module type of its own, applied by name."""

    def __init__(self, name: str) -> None:
        super().__init__()
        self.name = name
        self.fn = activation(name)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fn(x)

    def extra_repr(self) -> str:
        return self.name


def activation_module(name: str) -> nn.Module:
    """An nn.Module applying the activation registered as `name` (the same function the
    supernet applies by name); an unknown name is a one-line error."""
    fn = activation(name)
    builtin = _BUILTIN_MODULES.get(name)
    if builtin is not None and ACTIVATIONS[name] is fn:
        return builtin()
    return NamedActivation(name)


# ------------------------------------------------------------ (operation, activation)

#: Joins an operation and its activation in one name: "sep_conv_3x3/silu".
PAIR_SEPARATOR = "/"


def split_pair(name: str) -> tuple[str, str | None]:
    """("sep_conv_3x3", "silu") for "sep_conv_3x3/silu", (name, None) for a plain name;
    more than one separator or an empty part is a one-line UnknownOperationError."""
    if PAIR_SEPARATOR not in name:
        return name, None
    parts = name.split(PAIR_SEPARATOR)
    if len(parts) != 2 or not all(parts):
        raise UnknownOperationError(
            f"malformed operation name {name!r}; an (operation, activation) pair is "
            f"written 'operation{PAIR_SEPARATOR}activation', e.g. "
            f"'sep_conv_3x3{PAIR_SEPARATOR}silu'"
        )
    return parts[0], parts[1]


def pair_name(op: str, act: str | None) -> str:
    """The one name of `op` with activation `act`: plain `op` for the default (ReLU, what
    every shipped operation uses, so published genotypes keep their names) or None,
    else "op/act"."""
    if PAIR_SEPARATOR in op:
        raise UnknownOperationError(
            f"operation {op!r} already names an activation; pair a plain operation"
        )
    if act is None or act == DEFAULT_ACTIVATION:
        return op
    return f"{op}{PAIR_SEPARATOR}{act}"


__all__ = [
    "ACTIVATIONS",
    "DEFAULT_ACTIVATION",
    "PAIR_SEPARATOR",
    "Activation",
    "NamedActivation",
    "activation",
    "activation_module",
    "pair_name",
    "register_activation",
    "split_pair",
]
