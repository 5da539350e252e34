"""`nas genotypes list`: the published names, the alias, their sources, and the sizes
`nas info NAME` prints."""

from __future__ import annotations

import argparse
import json

import pytest

from nas.cli import genotypes
from nas.cli.main import main
from search_spaces.genotype import parse_darts_literal
from search_spaces.genotype_library import PUBLISHED, published_names


def listing(capsys, *extra: str) -> tuple[int, str]:
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="command")
    genotypes.add_parser(sub)
    code = genotypes.run(p.parse_args(["genotypes", "list", *extra]))
    out, err = capsys.readouterr()
    assert err == ""
    return code, out


@pytest.fixture(scope="module")
def rows() -> dict[str, dict]:
    return {r["name"]: r for r in genotypes.published_rows()}


def test_every_published_name_with_its_space_source_and_literal(rows) -> None:
    assert sorted(rows) == published_names()
    for name, r in rows.items():
        assert r["space"] == "darts"
        assert parse_darts_literal(r["literal"]) == PUBLISHED[name]
        if r["alias_of"] is None:
            assert r["paper"] and r["repo"], name  # a new published cell needs its source
    assert rows["DARTS"]["alias_of"] == "DARTS_V2" and "8876e79" in rows["DARTS"]["alias_note"]
    assert "quark0/darts" in rows["DARTS_V1"]["repo"] and "pdarts" in rows["PDARTS"]["repo"]


def test_aliases_are_exactly_the_names_sharing_a_cell(rows) -> None:
    for name, r in rows.items():
        same = {other for other in rows if other != name
                and PUBLISHED[other] == PUBLISHED[name]}
        if r["alias_of"]:
            assert r["alias_of"] in same and rows[r["alias_of"]]["alias_of"] is None
        else:  # a name sharing a cell with it is declared an alias of it
            assert all(rows[o]["alias_of"] == name for o in same), (name, same)


@pytest.mark.parametrize("name", ["PDARTS", "DARTS_V1"])
def test_sizes_are_those_nas_info_prints(rows, name, capsys) -> None:
    assert main(["info", name, "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert (rows[name]["params"], rows[name]["macs"]) == (info["params"], info["macs"])
    assert (info["channels"], info["layers"]) == (36, 20)


def test_published_figures_and_the_alias_shares_them(rows) -> None:
    assert (rows["PDARTS"]["params"], rows["PDARTS"]["macs"]) == (3_433_798, 532_174_464)
    assert rows["DARTS"]["params"] == rows["DARTS_V2"]["params"]
    assert rows["DARTS"]["macs"] == rows["DARTS_V2"]["macs"]


def test_json_and_text_output(capsys) -> None:
    code, out = listing(capsys, "--json")
    data = json.loads(out)
    assert code == 0 and [g["name"] for g in data["genotypes"]] == published_names()
    assert data["network"] == {"dataset": "cifar10", "channels": 36, "layers": 20,
                               "input": [3, 32, 32], "num_classes": 10}
    code, out = listing(capsys)
    assert code == 0
    assert "DARTS is an alias of DARTS_V2" in out
    assert "3,433,798" in out and "532,174,464" in out
    assert "PDARTS = Genotype(normal=[('skip_connect', 0)" in out
    literals = [line.split()[0] for line in out.splitlines() if " = Genotype(" in line]
    assert literals == [n for n in published_names() if n != "DARTS"]  # the alias's: once
