"""The evidence benches' shared plumbing (bench/evidence_runs.py): per-arm summaries, and
runs on file that a resumed invocation skips and the final JSON is built from."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
import evidence_runs  # noqa: E402

ARMS = ("float", "adder")


def args(tmp_path: Path, *extra: str) -> argparse.Namespace:
    ap = argparse.ArgumentParser()
    evidence_runs.add_common_arguments(ap, ARMS, epochs=1, retrain_epochs=1, limit=10,
                                       out=tmp_path / "results.json")
    return ap.parse_args(["--seeds", "0,1", "--jobs", "1", *extra])


def test_summary_mean_and_sample_sd_per_arm() -> None:
    runs = [{"arm": "float", "seed": 0, "test_acc": 0.3},
            {"arm": "float", "seed": 1, "test_acc": 0.5},
            {"arm": "adder", "seed": 0, "test_acc": 0.2, "params": None}]
    out = evidence_runs.summary(runs, ARMS, ("test_acc", "params"))
    assert out["float"]["seeds"] == [0, 1]
    assert out["float"]["test_acc"]["mean"] == pytest.approx(0.4)
    assert out["float"]["test_acc"]["sd"] == pytest.approx(0.1414213562)  # sample sd
    assert out["adder"]["test_acc"] == {"mean": 0.2, "sd": None}
    assert "params" not in out["adder"]


def test_runs_are_kept_as_they_finish_and_resume_skips_them(tmp_path: Path) -> None:
    a = args(tmp_path)
    calls: list[tuple[str, int]] = []

    def one(arm: str, seed: int) -> dict:
        calls.append((arm, seed))
        if (arm, seed) == ("adder", 1):
            raise RuntimeError("killed")
        return {"arm": arm, "seed": seed, "test_acc": 0.1 * (seed + 1)}

    with pytest.raises(RuntimeError, match="killed"):
        evidence_runs.run_jobs(evidence_runs.parse_jobs(a, ARMS), one,
                               lambda run: run.update(costed=True), a)
    kept = evidence_runs.read_runs(evidence_runs.runs_file(a.out))
    assert [(r["arm"], r["seed"], r["costed"]) for r in kept] == [
        ("float", 0, True), ("adder", 0, True), ("float", 1, True)]

    resumed = args(tmp_path, "--resume")
    assert evidence_runs.parse_jobs(resumed, ARMS) == [("adder", 1)]
    # without --resume an earlier runs file is moved aside, not overwritten
    evidence_runs.run_jobs([("adder", 1)], lambda arm, seed: {"arm": arm, "seed": seed},
                           lambda run: None, args(tmp_path))
    aside = list(tmp_path.glob("results.runs.jsonl.*"))
    assert len(aside) == 1 and len(aside[0].read_text().splitlines()) == 3


def test_results_are_built_from_every_run_on_file(tmp_path: Path) -> None:
    a = args(tmp_path, "--resume")
    path = evidence_runs.runs_file(a.out)
    path.write_text("".join(json.dumps(r) + "\n" for r in (
        {"arm": "adder", "seed": 0, "test_acc": 0.2},
        {"arm": "float", "seed": 1, "test_acc": 0.4},
        {"arm": "float", "seed": 0, "test_acc": 0.3})))
    result = evidence_runs.write_results(a, "x.py", ARMS, ("test_acc",), {"labels": {}},
                                         (0.0,), 0.0)
    assert [(r["arm"], r["seed"]) for r in result["runs"]] == [
        ("float", 0), ("float", 1), ("adder", 0)]
    assert json.loads(a.out.read_text())["summary"]["float"]["seeds"] == [0, 1]


def test_unknown_arm_is_refused(tmp_path: Path) -> None:
    with pytest.raises(SystemExit, match="unknown arm"):
        evidence_runs.parse_jobs(args(tmp_path, "--arms", "float,int3"), ARMS)


def test_a_run_folder_left_by_a_killed_bench_is_resumed_not_refused(tmp_path, monkeypatch
                                                                    ) -> None:
    calls: list[list[str]] = []
    monkeypatch.setattr(evidence_runs, "nas", lambda args: calls.append(args) or {})
    out = tmp_path / "search-0"
    evidence_runs.nas_run("search", out, ["--epochs", "2"])
    out.mkdir()
    evidence_runs.nas_run("search", out, ["--epochs", "2"])  # empty: still a fresh run
    (out / "checkpoint.pt").write_bytes(b"")
    evidence_runs.nas_run("retrain", out, ["--epochs", "2"], ["--no-measure"])
    assert calls == [["search", "--epochs", "2", "--out", str(out)],
                     ["search", "--epochs", "2", "--out", str(out)],
                     ["retrain", "--resume", str(out), "--no-measure"]]
