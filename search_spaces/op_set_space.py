"""A space searched over another named op set (`nas search --ops darts+adder`).

A search over float and adder convolutions is the DARTS space with a wider op set: the
same cells, supernet, derivation and networks, only `op_names` differs, and with it the
supernet's edges, the samples profiling draws and the latency encoding's columns. So the
variant is a copy of the space with the set's ops, named ``<space>.<sets>``
("darts.darts+adder"), under which its samples and predictors are kept
(`latency.predictor.locate`); it composes with the activation variant
("darts.darts+adder-act", `activation_encoding`). Like that one it is never registered:
a genotype with adder ops is a genotype of the plain DARTS space, which accepts the ops
of every registered op set (`SearchSpace.accepted_ops`), so `nas info`, `nas retrain` and
the loaders need nothing new.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from search_spaces.base import SearchSpace
from search_spaces.errors import InputError

#: between a space's name and its op-set expression: "darts.darts+adder"
OPS_SEPARATOR = "."

_VARIANTS: dict[tuple[int, str], SearchSpace[Any]] = {}


def ops_space(plain: SearchSpace[Any], expr: str) -> SearchSpace[Any]:
    """`plain` over the op sets `expr` names (`op_sets.resolve_op_sets`); `plain` itself
    when `expr` is empty or names exactly its own op set."""
    from search_spaces.op_sets import SET_SEPARATOR, resolve_op_sets

    if not expr:
        return plain
    ops = resolve_op_sets(expr)
    if ops == tuple(plain.op_names):
        return plain
    if not plain.searches_op_sets:
        raise InputError(f"the {plain.name} space has a fixed op set; --ops needs DARTS "
                         "cells (--space darts or pdarts)")
    canonical = SET_SEPARATOR.join(part.strip() for part in expr.split(SET_SEPARATOR))
    key = (id(plain), canonical)
    if key not in _VARIANTS:
        variant: Any = object.__new__(type(plain))
        variant.__dict__.update(plain.__dict__)
        variant.name = f"{plain.name}{OPS_SEPARATOR}{canonical}"
        variant.op_names = ops
        variant.op_set = canonical
        variant.description = f"{plain.description}, over the op set {canonical}"
        _VARIANTS[key] = variant
    return _VARIANTS[key]


def covering_ops_space(plain: SearchSpace[Any], op_names: set[str]) -> SearchSpace[Any]:
    """The smallest op-set variant of `plain` holding every name in `op_names` (plain
    names, no pairs): `plain` itself, one registered set, the default set joined with one
    other, or all sets; a one-line InputError when none does."""
    from search_spaces.op_sets import SET_SEPARATOR, op_set_names

    if op_names <= set(plain.op_names) or not plain.searches_op_sets:
        return plain
    names = op_set_names()
    default = names[0]
    candidates = [*names, *(f"{default}{SET_SEPARATOR}{n}" for n in names[1:]),
                  SET_SEPARATOR.join(names)]
    for expr in candidates:
        space = ops_space(plain, expr)
        if op_names <= set(space.op_names):
            return space
    raise InputError(f"no op set of the {plain.name} space holds "
                     f"{', '.join(sorted(op_names - set(plain.op_names)))}")


def variant_of(name: str, spaces: Mapping[str, SearchSpace[Any]]) -> SearchSpace[Any] | None:
    """The variant a name such as "darts-act", "darts.adder" or "darts.darts+adder-act"
    means, or None when it names no registered space."""
    from search_spaces.activation_encoding import VARIANT_SUFFIX, activation_space

    with_activations = name.endswith(VARIANT_SUFFIX)
    base = name[: -len(VARIANT_SUFFIX)] if with_activations else name
    plain_name, dot, expr = base.partition(OPS_SEPARATOR)
    plain = spaces.get(plain_name)
    if plain is None or (dot and not expr):
        return None
    space = ops_space(plain, expr) if dot else plain
    if with_activations:
        return activation_space(space) if space.searches_activations else None
    return space if dot else None


__all__ = ["OPS_SEPARATOR", "covering_ops_space", "ops_space", "variant_of"]
