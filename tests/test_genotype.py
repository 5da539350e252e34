"""Genotype I/O: JSON, the DARTS literal (parsed without executing), validation, library."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from search_spaces.errors import GenotypeError, InputError, UnknownOperationError
from search_spaces.genotype import (
    Genotype,
    load_genotype,
    parse_darts_literal,
    save_genotype,
)
from search_spaces.genotype_library import (
    PUBLISHED,
    published_names,
    resolve_genotype,
)
from search_spaces.ops import DARTS_PRIMITIVES

# Pasted verbatim from quark0/darts cnn/genotypes.py (published data).
DARTS_V2_TEXT = (
    "DARTS_V2 = Genotype(normal=[('sep_conv_3x3', 0), ('sep_conv_3x3', 1), "
    "('sep_conv_3x3', 0), ('sep_conv_3x3', 1), ('sep_conv_3x3', 1), ('skip_connect', 0), "
    "('skip_connect', 0), ('dil_conv_3x3', 2)], normal_concat=[2, 3, 4, 5], "
    "reduce=[('max_pool_3x3', 0), ('max_pool_3x3', 1), ('skip_connect', 2), "
    "('max_pool_3x3', 1), ('max_pool_3x3', 0), ('skip_connect', 2), ('skip_connect', 2), "
    "('max_pool_3x3', 1)], reduce_concat=[2, 3, 4, 5])"
)

# Pasted verbatim from chenxin061/pdarts genotypes.py (note the range() concat).
PDARTS_TEXT = (
    "PDARTS = Genotype(normal=[('skip_connect', 0), ('dil_conv_3x3', 1), ('skip_connect', 0),"
    "('sep_conv_3x3', 1), ('sep_conv_3x3', 1), ('sep_conv_3x3', 3), ('sep_conv_3x3',0), "
    "('dil_conv_5x5', 4)], normal_concat=range(2, 6), reduce=[('avg_pool_3x3', 0), "
    "('sep_conv_5x5', 1), ('sep_conv_3x3', 0), ('dil_conv_5x5', 2), ('max_pool_3x3', 0), "
    "('dil_conv_3x3', 1), ('dil_conv_3x3', 1), ('dil_conv_5x5', 3)], "
    "reduce_concat=range(2, 6))"
)

SMALL = Genotype(
    normal=(("sep_conv_3x3", 0), ("skip_connect", 1)),
    normal_concat=(2,),
    reduce=(("max_pool_3x3", 0), ("max_pool_3x3", 1)),
    reduce_concat=(2,),
)


def one_line(exc: pytest.ExceptionInfo) -> str:
    msg = str(exc.value)
    assert "\n" not in msg, msg
    return msg


# ------------------------------------------------------------------ construction / JSON
def test_constructor_normalises_containers() -> None:
    g = Genotype(
        normal=[["sep_conv_3x3", 0], ["skip_connect", 1]],
        normal_concat=range(2, 3),
        reduce=[("max_pool_3x3", 0), ("max_pool_3x3", 1)],
        reduce_concat=[2],
    )
    assert g == SMALL
    assert hash(g) == hash(SMALL)
    assert g.steps == 1


def test_json_round_trip() -> None:
    for g in PUBLISHED.values():
        d = g.to_dict()
        assert d["normal"][0] == list(g.normal[0])
        assert Genotype.from_dict(json.loads(json.dumps(d))) == g


def test_to_dict_shape() -> None:
    assert SMALL.to_dict() == {
        "normal": [["sep_conv_3x3", 0], ["skip_connect", 1]],
        "normal_concat": [2],
        "reduce": [["max_pool_3x3", 0], ["max_pool_3x3", 1]],
        "reduce_concat": [2],
    }


@pytest.mark.parametrize(
    "mutate, needle",
    [
        (lambda d: d.pop("reduce"), "missing key(s) reduce"),
        (lambda d: d.update(extra=1), "unknown key(s) extra"),
        (lambda d: d.update(normal="sep_conv_3x3"), "'normal' must be a list"),
        (lambda d: d.update(normal=[]), "'normal' has no edges"),
        (lambda d: d.update(normal=[["sep_conv_3x3", 0]]), "expected an even number"),
        (lambda d: d.update(normal=[["sep_conv_3x3", 0], ["x", 1, 2]]), "edge 1 must be a pair"),
        (lambda d: d.update(normal=[[3, 0], ["x", 1]]), "op name must be a non-empty string"),
        (lambda d: d.update(normal=[["a", 0.0], ["b", 1]]), "input index must be an integer"),
        (lambda d: d.update(normal=[["a", True], ["b", 1]]), "input index must be an integer"),
        (lambda d: d.update(reduce_concat=[]), "'reduce_concat' is empty"),
        (lambda d: d.update(reduce_concat=["2"]), "integer node indices"),
        (lambda d: d.update(reduce_concat=2), "'reduce_concat' must be a list"),
    ],
)
def test_from_dict_rejects_bad_structure(mutate, needle: str) -> None:
    d = SMALL.to_dict()
    mutate(d)
    with pytest.raises(GenotypeError) as exc:
        Genotype.from_dict(d, source="cfg.json")
    msg = one_line(exc)
    assert needle in msg
    assert msg.startswith("cfg.json:")


def test_from_dict_rejects_non_object() -> None:
    with pytest.raises(GenotypeError, match="must be an object"):
        Genotype.from_dict([1, 2])


# ------------------------------------------------------------------ literal
def test_parse_published_darts_v2_text() -> None:
    g = parse_darts_literal(DARTS_V2_TEXT)
    assert g == PUBLISHED["DARTS_V2"]
    assert g.normal[-1] == ("dil_conv_3x3", 2)
    assert g.reduce_concat == (2, 3, 4, 5)


def test_parse_published_pdarts_text_with_range() -> None:
    assert parse_darts_literal(PDARTS_TEXT) == PUBLISHED["PDARTS"]


def test_literal_round_trip() -> None:
    for g in list(PUBLISHED.values()) + [SMALL]:
        assert parse_darts_literal(str(g)) == g


def test_str_is_published_form() -> None:
    assert str(PUBLISHED["DARTS_V2"]) == DARTS_V2_TEXT.split(" = ", 1)[1]


@pytest.mark.parametrize(
    "concat, expected",
    [
        ("range(2, 6)", (2, 3, 4, 5)),
        ("range(4)", (0, 1, 2, 3)),
        ("range(2, 6, 2)", (2, 4)),
        ("[2, 3, 4, 5]", (2, 3, 4, 5)),
        ("(2, 3)", (2, 3)),
    ],
)
def test_concat_forms(concat: str, expected: tuple[int, ...]) -> None:
    text = f"Genotype([('a', 0), ('b', 1)], {concat}, reduce=[('c', 0), ('d', 1)], " \
        f"reduce_concat={concat})"
    g = parse_darts_literal(text)
    assert g.normal_concat == expected
    assert g.reduce_concat == expected


def test_positional_and_qualified_name_and_multiline() -> None:
    text = """
    genotypes.Genotype(
        [('sep_conv_3x3', 0), ('skip_connect', 1)],   # normal
        [2],
        [('max_pool_3x3', 0), ('max_pool_3x3', 1)],
        [2],
    )
    """
    assert parse_darts_literal(text) == SMALL


def test_literal_refuses_code_without_executing(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    payload = f"__import__('os').system('touch {marker}')"
    texts = [
        f"Genotype(normal=[('a', 0), ('b', 1)], normal_concat={payload}, "
        "reduce=[('a', 0), ('b', 1)], reduce_concat=[2])",
        f"Genotype(normal=[({payload}, 0), ('b', 1)], normal_concat=[2], "
        "reduce=[('a', 0), ('b', 1)], reduce_concat=[2])",
        payload,
        f"{payload}\nGenotype(normal=[('a', 0), ('b', 1)], normal_concat=[2], "
        "reduce=[('a', 0), ('b', 1)], reduce_concat=[2])",
    ]
    for text in texts:
        with pytest.raises(GenotypeError) as exc:
            parse_darts_literal(text)
        one_line(exc)
    assert not marker.exists()
    with pytest.raises(GenotypeError, match=r"call to \.system\(\)"):
        parse_darts_literal(texts[0])


@pytest.mark.parametrize(
    "text, needle",
    [
        ("Genotype(normal=[('a', 0), ('b', 1)]", "not a valid genotype literal"),
        ("", "expected exactly one"),
        ("[1, 2]", "expected a call to Genotype"),
        ("Foo(normal=[], normal_concat=[], reduce=[], reduce_concat=[])", "call to Foo()"),
        ("Genotype(normal=[('a', 0)], normal_concat=[2], reduce=[('a', 0)], "
         "reduce_concat=[2])", "expected an even number"),
        ("Genotype(normal=[('a', x), ('b', 1)], normal_concat=[2], reduce=[('a', 0), "
         "('b', 1)], reduce_concat=[2])", "input index must be a non-negative integer"),
        ("Genotype(normal=[('a', 0), ('b', 1)], normal_concat=[2], reduce=[('a', 0), "
         "('b', 1)])", "missing reduce_concat"),
        ("Genotype(normal=[('a', 0), ('b', 1)], normal_concat=[2], reduce=[('a', 0), "
         "('b', 1)], reduce_concat=[2], extra=1)", "unknown Genotype field 'extra'"),
        ("Genotype([('a', 0), ('b', 1)], [2], [('a', 0), ('b', 1)], [2], "
         "normal=[])", "given twice"),
        ("Genotype(normal=[(1, 0), ('b', 1)], normal_concat=[2], reduce=[('a', 0), "
         "('b', 1)], reduce_concat=[2])", "op name must be a string literal"),
        ("Genotype(normal=[('a', 0), ('b', 1)], normal_concat={2}, reduce=[('a', 0), "
         "('b', 1)], reduce_concat=[2])", "list, tuple or range"),
        ("Genotype(normal=[('a', 0), ('b', 1)], normal_concat=range(stop=3), "
         "reduce=[('a', 0), ('b', 1)], reduce_concat=[2])", "list, tuple or range"),
        ("Genotype(**kw)", "**arguments are not allowed"),
        ("import os", "expected 'Genotype(...)'"),
    ],
)
def test_literal_malformed(text: str, needle: str) -> None:
    with pytest.raises(GenotypeError) as exc:
        parse_darts_literal(text, source="x.txt")
    msg = one_line(exc)
    assert needle in msg
    assert msg.startswith("x.txt:")


# ------------------------------------------------------------------ validate
def test_published_genotypes_validate() -> None:
    for g in PUBLISHED.values():
        g.validate(DARTS_PRIMITIVES)
        assert g.steps == 4


def test_validate_unknown_op() -> None:
    g = Genotype(
        normal=(("sep_conv_7x7", 0), ("skip_connect", 1)),
        normal_concat=(2,),
        reduce=(("max_pool_3x3", 0), ("max_pool_3x3", 1)),
        reduce_concat=(2,),
    )
    with pytest.raises(UnknownOperationError) as exc:
        g.validate(DARTS_PRIMITIVES)
    msg = one_line(exc)
    assert "'sep_conv_7x7'" in msg and "sep_conv_3x3" in msg
    assert isinstance(exc.value, InputError)


def test_validate_lists_many_names_briefly() -> None:
    names = [f"op{i}" for i in range(40)]
    with pytest.raises(UnknownOperationError) as exc:
        SMALL.validate(names)
    assert "(28 more)" in one_line(exc)


def test_validate_input_from_the_future() -> None:
    g = Genotype(
        normal=(("sep_conv_3x3", 0), ("skip_connect", 1), ("sep_conv_3x3", 3),
                ("skip_connect", 0)),
        normal_concat=(2, 3),
        reduce=(("max_pool_3x3", 0), ("max_pool_3x3", 1), ("max_pool_3x3", 2),
                ("max_pool_3x3", 1)),
        reduce_concat=(2, 3),
    )
    with pytest.raises(GenotypeError) as exc:
        g.validate(DARTS_PRIMITIVES)
    msg = one_line(exc)
    assert "feeds node 3 but takes input 3" in msg and "0..2" in msg


@pytest.mark.parametrize(
    "kwargs, needle",
    [
        (dict(reduce=(("max_pool_3x3", 0),) * 4), "same number of nodes"),
        (dict(normal_concat=(2, 3)), "outside the cell's nodes 0..2"),
        (dict(reduce_concat=(2, 2)), "lists a node twice"),
        (dict(normal=(("sep_conv_3x3", -1), ("skip_connect", 1))), "takes input -1"),
    ],
)
def test_validate_structure(kwargs: dict, needle: str) -> None:
    fields = {**SMALL.to_dict(), **kwargs}
    with pytest.raises(GenotypeError) as exc:
        Genotype(**fields).validate(DARTS_PRIMITIVES)
    assert needle in one_line(exc)


def test_validate_refuses_single_string() -> None:
    with pytest.raises(TypeError):
        SMALL.validate("sep_conv_3x3")


# ------------------------------------------------------------------ files
def test_save_load_json(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "genotype.json"
    save_genotype(PUBLISHED["PDARTS"], path)
    text = path.read_text()
    assert json.loads(text) == PUBLISHED["PDARTS"].to_dict()
    assert text.startswith('{\n  "normal"')  # indent 2
    assert load_genotype(path) == PUBLISHED["PDARTS"]
    assert [p.name for p in path.parent.iterdir()] == ["genotype.json"]  # no temp left


def test_save_is_atomic(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "genotype.json"
    save_genotype(SMALL, path)
    before = path.read_text()

    def boom(src, dst):  # the rename fails: the old file must survive intact
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(GenotypeError) as exc:
        save_genotype(PUBLISHED["DARTS"], path)
    assert "No space left" in one_line(exc) and str(path) in str(exc.value)
    assert path.read_text() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["genotype.json"]


def test_load_wrapped_json_and_literal_files(tmp_path: Path) -> None:
    wrapped = tmp_path / "summary.json"
    wrapped.write_text(json.dumps({"genotype": SMALL.to_dict(), "latency_ms": 3.2}))
    assert load_genotype(wrapped) == SMALL

    wrapped_literal = tmp_path / "summary2.json"
    wrapped_literal.write_text(json.dumps({"genotype": DARTS_V2_TEXT}))
    assert load_genotype(wrapped_literal) == PUBLISHED["DARTS_V2"]

    literal = tmp_path / "cell.txt"
    literal.write_text(PDARTS_TEXT + "\n")
    assert load_genotype(literal) == PUBLISHED["PDARTS"]

    literal_json_name = tmp_path / "cell.json"
    literal_json_name.write_text(DARTS_V2_TEXT)
    assert load_genotype(literal_json_name) == PUBLISHED["DARTS_V2"]


@pytest.mark.parametrize(
    "name, content, needle",
    [
        ("bad.json", '{"normal": [["a", 0], ', "malformed JSON"),
        ("bad.txt", "Genotype(", "not a valid genotype literal"),
        ("empty.json", "  \n", "is empty"),
        ("num.json", "3", "must be an object"),
        ("odd.json", json.dumps({**SMALL.to_dict(), "normal": [["a", 0]]}), "even number"),
    ],
)
def test_load_malformed_names_path(tmp_path: Path, name: str, content: str, needle: str) -> None:
    path = tmp_path / name
    path.write_text(content)
    with pytest.raises(GenotypeError) as exc:
        load_genotype(path)
    msg = one_line(exc)
    assert needle in msg and str(path) in msg


def test_load_missing_binary_and_directory(tmp_path: Path) -> None:
    with pytest.raises(GenotypeError, match="does not exist") as exc:
        load_genotype(tmp_path / "nope.json")
    assert "nope.json" in str(exc.value)
    binary = tmp_path / "weights.pt"
    binary.write_bytes(b"\x80\x02\xff\xfe\x00")
    with pytest.raises(GenotypeError, match="not UTF-8"):
        load_genotype(binary)
    with pytest.raises(GenotypeError, match="is a directory"):
        load_genotype(tmp_path)


# ------------------------------------------------------------------ library
def test_library_names() -> None:
    assert published_names() == ["DARTS", "DARTS_MINUS", "DARTS_V1", "DARTS_V2", "DRNAS",
                                 "GDAS", "PC_DARTS", "PDARTS", "SDARTS_ADV", "SDARTS_RS",
                                 "SGAS_CRI1", "SGAS_CRI2", "SNAS_MILD"]
    assert PUBLISHED["DARTS"] is PUBLISHED["DARTS_V2"]
    assert PUBLISHED["DARTS_V1"] != PUBLISHED["DARTS_V2"]
    with pytest.raises(TypeError):
        PUBLISHED["X"] = SMALL  # type: ignore[index]


def test_library_uses_only_darts_primitives() -> None:
    for g in PUBLISHED.values():
        assert {op for op, _ in g.normal + g.reduce} <= set(DARTS_PRIMITIVES)


def test_resolve_by_name_case_insensitive() -> None:
    assert resolve_genotype("pdarts") == PUBLISHED["PDARTS"]
    assert resolve_genotype("Darts_V1") == PUBLISHED["DARTS_V1"]
    assert resolve_genotype("darts-v2") == PUBLISHED["DARTS_V2"]
    assert resolve_genotype("DARTS") == PUBLISHED["DARTS_V2"]


def test_resolve_by_path_and_run_dir(tmp_path: Path) -> None:
    path = tmp_path / "genotype.json"
    save_genotype(SMALL, path)
    assert resolve_genotype(str(path)) == SMALL
    assert resolve_genotype(path) == SMALL
    assert resolve_genotype(tmp_path) == SMALL  # a run directory


def test_resolve_unknown_lists_names(tmp_path: Path) -> None:
    with pytest.raises(GenotypeError) as exc:
        resolve_genotype("FOO")
    assert one_line(exc) == (
        "unknown genotype 'FOO': not a file and not a published name "
        f"({', '.join(published_names())})"
    )
    with pytest.raises(GenotypeError, match="not a file and not a published name"):
        resolve_genotype(tmp_path / "missing.json")
    with pytest.raises(GenotypeError, match="empty genotype"):
        resolve_genotype("  ")
