"""Named operation sets (search_spaces/op_sets.py): the built-in "darts" and "adder"
sets, unions written "a+b" in order of first appearance, registration checks, and the
one-line errors a user sees for a bad expression.

Sets registered here start with "testopsets_" so they cannot collide with others.
"""

from __future__ import annotations

import pytest

from search_spaces.errors import InputError, UnknownOperationError
from search_spaces.genotype import Genotype
from search_spaces.op_sets import op_set_names, register_op_set, resolve_op_sets
from search_spaces.op_spec import op_spec
from search_spaces.ops import DARTS_PRIMITIVES, build_op

ADDER = ("none", "max_pool_3x3", "avg_pool_3x3", "skip_connect", "adder_sep_conv_3x3",
         "adder_sep_conv_5x5", "adder_dil_conv_3x3", "adder_dil_conv_5x5")


def test_builtin_sets() -> None:
    assert op_set_names()[:2] == ["darts", "adder"]
    assert resolve_op_sets("darts") == DARTS_PRIMITIVES
    assert resolve_op_sets("adder") == ADDER


@pytest.mark.parametrize("name", ["darts", "adder"])
def test_builtin_sets_build(name: str) -> None:
    for op in resolve_op_sets(name):
        assert op_spec(op).name == op
        build_op(op, 4, 2)


def test_union_keeps_first_appearance_without_duplicates() -> None:
    both = resolve_op_sets("darts+adder")
    assert both == DARTS_PRIMITIVES + ADDER[4:]
    assert len(both) == 12
    assert resolve_op_sets("adder+darts") == ADDER + DARTS_PRIMITIVES[4:]
    assert resolve_op_sets(" darts + adder ") == both


def test_resolved_set_validates_an_adder_genotype() -> None:
    g = Genotype(normal=[("adder_sep_conv_3x3", 0), ("sep_conv_3x3", 1)] * 4,
                 normal_concat=[2, 3, 4, 5],
                 reduce=[("max_pool_3x3", 0), ("adder_dil_conv_5x5/silu", 1)] * 4,
                 reduce_concat=[2, 3, 4, 5])
    g.validate(resolve_op_sets("darts+adder"))
    with pytest.raises(UnknownOperationError, match="adder_sep_conv_3x3"):
        g.validate(resolve_op_sets("darts"))
    with pytest.raises(UnknownOperationError, match="'sep_conv_3x3'"):
        g.validate(resolve_op_sets("adder"))


@pytest.mark.parametrize(("expr", "needle"), [
    ("darts+foo", "unknown op set 'foo'"),
    ("Darts", "unknown op set 'Darts'"),
    ("darts+", "empty op set name"),
    ("+adder", "empty op set name"),
    ("darts++adder", "empty op set name"),
    ("", "empty op set name"),
    ("darts+darts", "op set 'darts' is named more than once"),
    ("darts+adder+darts", "op set 'darts' is named more than once"),
])
def test_bad_expressions_are_one_line_input_errors(expr: str, needle: str) -> None:
    with pytest.raises(InputError) as info:
        resolve_op_sets(expr)
    message = str(info.value)
    assert needle in message
    assert "\n" not in message
    assert "known op sets: darts, adder" in message


def test_register_a_set() -> None:
    ops = register_op_set("testopsets_mixed", ["skip_connect", "sep_conv_3x3/silu",
                                               "adder_sep_conv_3x3"])
    assert ops == ("skip_connect", "sep_conv_3x3/silu", "adder_sep_conv_3x3")
    assert "testopsets_mixed" in op_set_names()
    assert resolve_op_sets("darts+testopsets_mixed") == DARTS_PRIMITIVES + (
        "sep_conv_3x3/silu", "adder_sep_conv_3x3")
    with pytest.raises(ValueError, match="already registered"):
        register_op_set("testopsets_mixed", ["skip_connect"])
    with pytest.raises(ValueError, match="already registered"):
        register_op_set("darts", DARTS_PRIMITIVES)
    assert resolve_op_sets("testopsets_mixed") == ops


@pytest.mark.parametrize(("name", "ops", "error", "needle"), [
    ("testopsets_unknown", ("skip_connect", "not_an_op"), UnknownOperationError,
     "unknown operation 'not_an_op'"),
    ("testopsets_badpair", ("max_pool_3x3/silu",), UnknownOperationError, "max_pool_3x3"),
    ("testopsets_empty", (), ValueError, "no operations"),
    ("testopsets_twice", ("none", "skip_connect", "none"), ValueError, "none more than once"),
    ("testopsets_a+b", ("none",), ValueError, r"no '\+'"),
    (" testopsets_padded", ("none",), ValueError, "no surrounding spaces"),
    ("", ("none",), ValueError, "non-empty"),
    ("testopsets_string", "skip_connect", TypeError, "single string"),
])
def test_bad_registrations_register_nothing(name: str, ops: tuple[str, ...],
                                            error: type[Exception], needle: str) -> None:
    before = op_set_names()
    with pytest.raises(error, match=needle):
        register_op_set(name, ops)
    assert op_set_names() == before
