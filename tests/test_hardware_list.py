"""`nas hardware list`: every profile, where it is read from, its samples and predictors per
space, and a broken profile shown as such instead of ending the listing."""

from __future__ import annotations

import argparse
import json
import shutil

import pytest

from latency.hardware import profiles_dir
from latency.predictor.artifact import read_metadata
from nas.cli import hardware


def listing(capsys, *extra: str) -> tuple[int, str]:
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="command")
    hardware.add_parser(sub)
    args = p.parse_args(["hardware", "list", *extra])
    code = hardware.run(args)
    out, err = capsys.readouterr()
    assert err == ""
    return code, out


def rows_by_name(capsys) -> dict[str, dict]:
    code, out = listing(capsys, "--json")
    assert code == 0
    data = json.loads(out)  # exactly one JSON object on stdout
    return {r["name"]: r for r in data["profiles"]}


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("HW_NAS_HOME", str(tmp_path))
    d = tmp_path / "hardware_profiles"
    d.mkdir()
    return d


def test_shipped_profiles_with_their_samples_and_predictors(home, capsys) -> None:
    rows = rows_by_name(capsys)
    assert {"cpu", "p100", "h100", "raspi4"} <= set(rows)
    p100 = rows["p100"]
    assert p100["valid"] and p100["directory"] == "shipped" and p100["kind"] == "cuda"
    assert p100["source"] == "simulated" and "P100" in p100["device"]
    darts = p100["spaces"]["darts"]
    meta = read_metadata(profiles_dir() / "p100.predictor")
    assert darts["samples"] == 1000 and darts["predictor"].endswith("p100.predictor")
    assert darts["n_train"] == meta["extra"]["n_train"] == 800
    assert darts["mape"] == meta["heldout_metrics"]["mape"] and darts["caution"] is None
    assert p100["spaces"]["nb201"]["samples"] == 0
    assert p100["spaces"]["nb201"]["predictor"] is None
    cpu = rows["cpu"]
    assert cpu["source"] == "measured" and cpu["spaces"]["darts"]["predictor"] is None


def test_user_profiles_samples_predictors_and_a_broken_profile(home, capsys) -> None:
    text = (profiles_dir() / "p100.yaml").read_text()
    (home / "mygpu.yaml").write_text(text.replace("name: p100", "name: mygpu", 1))
    (home / "p100.yaml").write_text(text)  # shadows the shipped p100
    (home / "broken.yaml").write_text(text.replace("name: p100", "name: broken", 1)
                                      .replace("kind: cuda", "kind: quantum", 1))
    (home / "renamed.yaml").write_text(text)  # says name: p100
    # three complete DARTS sample lines and one torn by a killed run
    lines = (profiles_dir() / "p100.samples.jsonl").read_text().splitlines()[:3]
    (home / "mygpu.samples.jsonl").write_text("\n".join(lines) + "\n" + lines[0][:20])
    (home / "broken.samples.jsonl").write_text("{not json\n" + lines[0] + "\n")
    # a predictor trained on few samples: copied, with its metadata saying so
    pred = home / "mygpu.predictor"
    shutil.copytree(profiles_dir() / "p100.predictor", pred)
    meta = json.loads((pred / "predictor.json").read_text())
    meta["extra"]["n_train"], meta["hardware"] = 40, "mygpu"
    (pred / "predictor.json").write_text(json.dumps(meta))

    rows = rows_by_name(capsys)
    mine = rows["mygpu"]
    assert mine["valid"] and mine["directory"] == "user" and not mine["shadows_shipped"]
    darts = mine["spaces"]["darts"]
    assert darts["samples"] == 3 and darts["n_train"] == 40
    assert "only 40 samples" in darts["caution"]
    assert "nas profile --hardware mygpu --samples 1000" in darts["caution"]
    p100 = rows["p100"]
    assert p100["directory"] == "user" and p100["shadows_shipped"]
    assert p100["spaces"]["darts"]["predictor"] == str(profiles_dir() / "p100.predictor")
    broken = rows["broken"]
    assert not broken["valid"] and broken["directory"] == "user"
    assert "kind must be one of" in broken["error"] and "\n" not in broken["error"]
    assert "broken.samples.jsonl:1" in broken["spaces"]["darts"]["samples_error"]
    renamed = rows["renamed"]
    assert not renamed["valid"] and "does not match the file name" in renamed["error"]
    assert rows["cpu"]["valid"]  # the rest is still listed

    code, out = listing(capsys)
    assert code == 0
    header, *table = out.splitlines()
    assert header.split()[:4] == ["name", "dir", "kind", "source"]
    line = next(x for x in table if x.startswith("broken "))
    assert "INVALID" in line and "error" in line
    assert any(x.startswith("mygpu ") and "40 / 0.5% !" in x for x in table)
    assert "  broken: invalid profile: " in out and "kind must be one of" in out
    assert "  mygpu darts caution: predictor trained on only 40 samples" in out
    assert "  p100: your profile shadows the shipped one" in out
    assert f"user dir: {home}" in out


def test_an_unreadable_predictor_is_a_note_not_a_crash(home, capsys) -> None:
    (home / "p100.predictor").mkdir()
    (home / "p100.predictor" / "predictor.json").write_text("{torn")
    p100 = rows_by_name(capsys)["p100"]["spaces"]["darts"]
    assert "corrupt" in p100["predictor_error"] and p100["n_train"] is None
    code, out = listing(capsys)
    assert code == 0 and "unreadable" in out


def test_op_set_variants_are_listed_from_the_files_on_disk(home, capsys) -> None:
    """raspi4 ships samples and a predictor for two op-set variants; no fixed column can
    name them, so the listing finds them on disk (and ignores what is not a space)."""
    (home / "raspi4.not-a-space.samples.jsonl").write_text("")
    rows = rows_by_name(capsys)
    spaces = rows["raspi4"]["spaces"]
    for variant in ("darts.darts+adder", "darts.darts+dsq4+binary"):
        assert spaces[variant]["samples"] == 1000
        assert spaces[variant]["n_train"] == 800
    assert "not-a-space" not in spaces
    assert not any("." in s for s in rows["p100"]["spaces"])
    code, text = listing(capsys)
    assert code == 0 and "raspi4 darts.darts+dsq4+binary: samples 1000, predictor 800" in text
