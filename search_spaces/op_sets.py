"""Named operation sets, so a search names its candidates in a word: "darts+adder".

Spelling out a dozen op names on a command line or in a config is error-prone, and a
mixed space (float and adder convolutions side by side) is just the union of two known
sets. A set is registered once under its name and checked against the op registry then,
so a misspelt op fails at registration, not in the middle of a search. `resolve_op_sets`
joins sets by ``+`` in the order they are named: the first set's ops come first, which
keeps the DARTS primitives in their published order (genotype encodings index by it).

Importing this module registers the built-in sets and the adder ops they use.
"""

from __future__ import annotations

from collections.abc import Iterable

import search_spaces.adder_ops  # noqa: F401  (registers the adder ops the "adder" set names)
from search_spaces.binary_ops import BINARY_SET
from search_spaces.dsq_ops import DSQ_SETS
from search_spaces.errors import InputError, UnknownOperationError
from search_spaces.op_spec import find_op_spec
from search_spaces.ops import DARTS_PRIMITIVES

#: Joins set names in one expression: "darts+adder".
SET_SEPARATOR = "+"

#: name -> its ops, in registration order.
_OP_SETS: dict[str, tuple[str, ...]] = {}


def register_op_set(name: str, ops: Iterable[str]) -> tuple[str, ...]:
    """Register `ops` (registered op names, pairs ``op/act`` included, each once) as the
    set `name`; a name is registered once, and may not contain the separator."""
    if not name or SET_SEPARATOR in name or name != name.strip():
        raise ValueError(f"op set name {name!r} must be non-empty, with no surrounding "
                         f"spaces and no {SET_SEPARATOR!r} (it joins set names)")
    if name in _OP_SETS:
        raise ValueError(f"op set {name!r} is already registered")
    if isinstance(ops, str):
        raise TypeError("ops must be a collection of op names, not a single string")
    members = tuple(ops)
    if not members:
        raise ValueError(f"op set {name!r} has no operations")
    for op in members:
        if find_op_spec(op) is None:
            raise UnknownOperationError(f"op set {name!r}: unknown operation {op!r}")
    repeated = sorted({op for op in members if members.count(op) > 1})
    if repeated:
        raise ValueError(f"op set {name!r} lists {', '.join(repeated)} more than once")
    _OP_SETS[name] = members
    return members


def op_set_names() -> list[str]:
    """The registered set names, in registration order."""
    return list(_OP_SETS)


def all_set_ops() -> tuple[str, ...]:
    """Every op of every registered set, in order of first appearance."""
    ops: dict[str, None] = {}
    for members in _OP_SETS.values():
        ops.update(dict.fromkeys(members))
    return tuple(ops)


def resolve_op_sets(expr: str) -> tuple[str, ...]:
    """The ops of the sets named in `expr` (names joined by ``+``, e.g. "darts+adder"):
    their union in order of first appearance. An unknown, empty or repeated set name is
    a one-line InputError listing the known sets."""
    parts = [part.strip() for part in expr.split(SET_SEPARATOR)]
    seen: list[str] = []
    for part in parts:
        if not part:
            raise _error(f"empty op set name in {expr!r}; join set names with "
                         f"{SET_SEPARATOR!r}, e.g. 'darts{SET_SEPARATOR}adder'")
        if part not in _OP_SETS:
            raise _error(f"unknown op set {part!r} in {expr!r}")
        if part in seen:
            raise _error(f"op set {part!r} is named more than once in {expr!r}")
        seen.append(part)
    ops: dict[str, None] = {}
    for part in seen:
        ops.update(dict.fromkeys(_OP_SETS[part]))
    return tuple(ops)


def _error(message: str) -> InputError:
    return InputError(f"{message}; known op sets: {', '.join(_OP_SETS)}")


#: The AdderNet set: DARTS's parameter-free ops and the four adder convolutions.
ADDER_SET: tuple[str, ...] = (
    "none",
    "max_pool_3x3",
    "avg_pool_3x3",
    "skip_connect",
    "adder_sep_conv_3x3",
    "adder_sep_conv_5x5",
    "adder_dil_conv_3x3",
    "adder_dil_conv_5x5",
)

register_op_set("darts", DARTS_PRIMITIVES)
register_op_set("adder", ADDER_SET)
# quantized candidates (issue 18): the DARTS convolutions in DSQ k-bit form, and IR-Net's
# dense binary convolutions (no binarised depthwise conv); each set holds only those
# convolutions, so it is joined with another one ("darts+dsq4+binary")
for _name, _ops in DSQ_SETS.items():
    register_op_set(_name, _ops)
register_op_set("binary", BINARY_SET)


__all__ = [
    "ADDER_SET",
    "SET_SEPARATOR",
    "all_set_ops",
    "op_set_names",
    "register_op_set",
    "resolve_op_sets",
]
