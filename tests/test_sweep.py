"""`nas sweep`: an Optuna study whose trials are real `nas search` + `nas retrain` runs.

The slow tests run real sweeps in subprocesses at tiny sizes (64 images, 4 channels, 3
cells, one epoch each): outputs, a failing trial, a kill mid-trial and its resume. The
fast ones check the settings, the counting and the Pareto files on in-memory studies, and
the refusals through the CLI (they fail before any trial runs).
"""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from optuna.distributions import FloatDistribution
from optuna.trial import TrialState

from nas.cli.main import main
from nas.sweep import pareto
from nas.sweep.settings import SweepSettings, merge_settings, suggest
from nas.sweep.study import (
    SweepPlace,
    default_storage_url,
    enqueue_baseline,
    quiet_optuna,
    tally,
)
from search_spaces.errors import InputError

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--hardware", "p100", "--limit", "64", "--channels", "4", "--layers", "3",
        "--search-epochs", "1", "--retrain-epochs", "1", "--batch-size", "32"]


def sweep_cmd(sweep_dir: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "nas.cli.main", "--threads", "1", "sweep", "--dir",
            str(sweep_dir), *TINY, *extra]


def run_sweep(sweep_dir: Path, *extra: str, fail: str | None = None
              ) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    if fail is not None:
        env["HW_NAS_SWEEP_FAIL_TRIALS"] = fail
    return subprocess.run(sweep_cmd(sweep_dir, *extra), cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600)


def load_study(sweep_dir: Path) -> optuna.Study:
    with quiet_optuna():
        return optuna.load_study(study_name=sweep_dir.name,
                                 storage=default_storage_url(sweep_dir))


def dominates(a: list[float], b: list[float], directions: list[str]) -> bool:
    """a is at least as good as b in every objective and better in one."""
    better = [(x > y) if d == "maximize" else (x < y) for x, y, d in zip(a, b, directions)]
    worse = [(x < y) if d == "maximize" else (x > y) for x, y, d in zip(a, b, directions)]
    return any(better) and not any(worse)


# ---------------------------------------------------------------- real sweeps (slow)


@pytest.mark.slow
def test_sweep_writes_a_front_of_real_runs_and_survives_a_failing_trial(tmp_path) -> None:
    sweep_dir = tmp_path / "sw"
    proc = run_sweep(sweep_dir, "--trials", "3", "--json", fail="0")
    assert proc.returncode == 0, proc.stderr[-2000:]
    # --json: exactly one JSON object on stdout, nothing else
    assert proc.stdout.count("\n") == 1
    result = json.loads(proc.stdout)
    assert result == json.loads((sweep_dir / "pareto.json").read_text()) | {
        "wall_s_this_invocation": result["wall_s_this_invocation"]}
    # trial 0 failed (the hook's bad setting), with its error; the sweep went on
    rows = {r["trial"]: r for r in result["all_trials"]}
    assert rows[0]["state"] == "FAIL"
    assert "--epochs must be at least 1" in rows[0]["error"]
    assert result["trials"]["complete"] == 2 and result["trials"]["failed"] == 1
    assert result["trials"]["counted"] == 3
    assert "trial 0 FAIL: search exited with code 2" in proc.stderr
    assert proc.stderr.count(" COMPLETE in ") == 2
    # every objective is labelled; the choice is on val_acc, test accuracy only recorded
    assert [o["key"] for o in result["objectives"]] == ["val_acc", "latency_ms"]
    assert result["latency"]["axis"] == "latency on p100 (simulated), ms"
    front = result["front"]
    assert front
    for p in front:
        assert p["latency_label"] == "simulated" and p["test_acc"] is not None
        assert set(p["objectives"]) == {"val_acc", "latency_ms"}
        search_dir, retrain_dir = Path(p["search_dir"]), Path(p["retrain_dir"])
        assert search_dir.parent == retrain_dir.parent == sweep_dir.resolve() / "trials" / str(
            p["trial"])
        genotype = json.loads((search_dir / "genotype.json").read_text())
        assert genotype == p["genotype"]
        report = json.loads((retrain_dir / "report.json").read_text())
        assert report["val_acc"] == p["objectives"]["val_acc"]
        assert report["predicted_latency"]["ms"] == p["objectives"]["latency_ms"]
    # the front is non-dominated, and every other completed trial is dominated by it
    directions = [o["direction"] for o in result["objectives"]]
    values = {r["trial"]: list(r["objectives"].values()) for r in result["all_trials"]
              if r["state"] == "COMPLETE"}
    on_front = {p["trial"] for p in front}
    for a in on_front:
        assert not any(dominates(values[b], values[a], directions) for b in values)
    for b in set(values) - on_front:
        assert any(dominates(values[a], values[b], directions) for a in on_front)
    with open(sweep_dir / "pareto.csv") as f:
        table = list(csv.DictReader(f))
    assert [int(r["trial"]) for r in table] == [p["trial"] for p in front]
    assert json.loads(table[0]["genotype"]) == front[0]["genotype"]
    assert (sweep_dir / "pareto.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.slow
def test_a_sweep_killed_mid_trial_resumes_with_no_lost_or_stuck_trial(tmp_path) -> None:
    sweep_dir = tmp_path / "sw"
    args = ["--trials", "1", "--search-epochs", "3", "--heartbeat", "1"]
    first = subprocess.Popen(sweep_cmd(sweep_dir, *args), cwd=ROOT, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
    checkpoint = sweep_dir / "trials" / "0" / "search" / "checkpoint.pt"
    deadline = time.monotonic() + 300
    while not checkpoint.exists():
        assert first.poll() is None, "the sweep ended before it could be killed"
        assert time.monotonic() < deadline
        time.sleep(0.1)
    first.send_signal(signal.SIGKILL)  # no clean-up: the trial stays RUNNING in the study
    first.wait()
    assert [t.state for t in load_study(sweep_dir).trials] == [TrialState.RUNNING]

    proc = run_sweep(sweep_dir, *args, "--json")
    assert proc.returncode == 0, proc.stderr[-2000:]
    trials = load_study(sweep_dir).trials
    assert not [t for t in trials if t.state in (TrialState.RUNNING, TrialState.WAITING)]
    assert [t.state for t in trials] == [TrialState.FAIL, TrialState.COMPLETE]
    retry = trials[1]
    assert retry.system_attrs["failed_trial"] == 0 and retry.user_attrs["retry_of"] == 0
    assert retry.params == trials[0].params
    # the retry continued trial 0's run directory, it did not start a new one
    search_dir = sweep_dir.resolve() / "trials" / "0" / "search"
    assert retry.user_attrs["search_dir"] == str(search_dir)
    assert retry.user_attrs["search_run"] in ("resumed", "finished before")
    assert len((search_dir / "log.jsonl").read_text().splitlines()) == 3
    assert not (sweep_dir / "trials" / "1").exists()
    result = json.loads(proc.stdout)
    counts = {k: result["trials"][k] for k in ("complete", "counted", "fail_retried",
                                                "running", "waiting")}
    assert counts == {"complete": 1, "counted": 1, "fail_retried": 1, "running": 0,
                      "waiting": 0}
    assert [p["trial"] for p in result["front"]] == [1]


# ---------------------------------------------------------------- refusals


def test_conflicting_settings_on_resume_are_refused_in_one_line(tmp_path, capsys) -> None:
    sweep_dir = tmp_path / "sw"
    proc = run_sweep(sweep_dir, "--trials", "1", fail="0")  # one quick FAIL: a study exists
    assert proc.returncode == 1 and "trial 0 FAIL" in proc.stderr
    before = sorted(p.name for p in sweep_dir.iterdir())
    record = (sweep_dir / "sweep.json").read_text()
    for extra, needle in (
        (["--search-epochs", "2"], "--search-epochs 2 (the study's search_epochs = 1)"),
        (["--vary", "latency_weight,ops"], "--vary latency_weight,ops"),
        (["--ops-choices", "darts"], "the study does not vary ops"),
        (["--study-name", "other"], "conflicts with"),
    ):
        code = main(["sweep", "--resume", str(sweep_dir), *extra])
        err = capsys.readouterr().err
        assert code == 2, extra
        assert err.startswith("error: ") and err.count("\n") == 1 and needle in err, err
    assert sorted(p.name for p in sweep_dir.iterdir()) == before
    assert (sweep_dir / "sweep.json").read_text() == record
    # the same settings are accepted: nothing more to run for one trial
    code = main(["sweep", "--dir", str(sweep_dir), *TINY, "--trials", "1"])
    assert code == 1  # no trial completed (the only one failed), which is an error
    assert "nothing to run: 1 of 1 trials have finished" in capsys.readouterr().err


@pytest.mark.parametrize("args, needle", [
    (["--hardware", "abacus"], "unknown hardware 'abacus'"),
    (["--hardware", "p100", "--vary", "ops"], "p100.darts.darts+adder.predictor"),
    (["--hardware", "p100", "--latency-source", "measured"], "p100 is simulated"),
    (["--hardware", "p100", "--latency-weight-range", "0,1"], "0 < LO <= HI"),
    (["--hardware", "p100", "--ops-choices", "darts"], "applies only when --vary"),
    (["--hardware", "p100", "--limit", "10", "--holdout", "10"], "leaves no training"),
    (["--hardware", "p100", "--channels", "3"], "--channels must be an even number"),
    (["--hardware", "p100", "--objectives", "latency,energy"], "needs accuracy"),
    (["--search-epochs", "2"], "--hardware NAME is required"),
])
def test_bad_settings_fail_in_one_line_before_anything_is_written(
        args, needle, tmp_path, capsys) -> None:
    sweep_dir = tmp_path / "sw"
    code = main(["sweep", "--dir", str(sweep_dir), *args])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and needle in err, err
    assert not sweep_dir.exists()


def test_a_directory_that_is_not_a_sweep_is_refused_and_left_alone(tmp_path, capsys) -> None:
    (tmp_path / "mine.txt").write_text("keep me")
    code = main(["sweep", "--dir", str(tmp_path), "--hardware", "p100"])
    assert code == 2 and "is not a sweep" in capsys.readouterr().err
    assert [p.name for p in tmp_path.iterdir()] == ["mine.txt"]
    code = main(["sweep", "--resume", str(tmp_path / "none")])
    assert code == 2 and "no sweep.json" in capsys.readouterr().err


# ---------------------------------------------------------------- settings and counting


def test_settings_merge_takes_the_study_values_and_refuses_changes() -> None:
    stored = SweepSettings(hardware="p100", vary=("latency_weight", "ops"),
                           ops_choices=("darts", "adder")).to_dict()
    assert "ops" not in stored and "ops_choices" in stored  # only what applies is stored
    same = merge_settings(stored, {"vary": ("ops", "latency_weight"), "hardware": "p100"}, "s")
    assert same.to_dict() == stored  # the order of --vary does not matter
    with pytest.raises(InputError, match="--ops darts .the study varies ops"):
        merge_settings(stored, {"ops": "darts"}, "s")
    with pytest.raises(InputError, match="--retrain-epochs 3 .the study's retrain_epochs"):
        merge_settings(stored, {"retrain_epochs": 3}, "s")
    fresh = merge_settings(None, {"hardware": "p100", "limit": 100}, "s")
    assert fresh.holdout == 20 and fresh.vary == ("latency_weight",)


def test_the_latency_weight_is_zero_once_then_log_uniform_in_its_range() -> None:
    s = SweepSettings(hardware="p100", latency_weight_range=(0.5, 2.0))
    with quiet_optuna():
        study = optuna.create_study(directions=["maximize", "minimize"],
                                    sampler=optuna.samplers.RandomSampler(seed=1))
        enqueue_baseline(study, s)
        weights = []
        for _ in range(40):
            trial = study.ask()
            weights.append(suggest(trial, s).latency_weight)
            study.tell(trial, [0.5, 1.0])
    assert weights[0] == 0.0  # the baseline, the plain search, comes first
    assert all(0.5 <= w <= 2.0 for w in weights[1:])
    assert len(set(weights)) == 40


def _add(study: optuna.Study, state: TrialState, values: list[float] | None = None,
         **attrs: object) -> None:
    study.add_trial(optuna.trial.create_trial(
        state=state, values=values, params={"latency_weight": 1.0},
        distributions={"latency_weight": FloatDistribution(0.01, 10, log=True)},
        user_attrs=attrs))


def test_killed_trials_count_through_their_retry_and_duplicates_do_not_count() -> None:
    from nas.sweep.study import _RETRY

    with quiet_optuna():
        study = optuna.create_study(directions=["maximize", "minimize"])
        _add(study, TrialState.FAIL)  # 0: its process died
        _RETRY(max_retry=3)(study, study.trials[0])  # 1: Optuna's retry of it, WAITING
        _add(study, TrialState.FAIL, error="search exited with code 2: ...")  # 2: failed
        _add(study, TrialState.FAIL, error="not run", duplicate_of=2)  # 3: not run
        _add(study, TrialState.COMPLETE, [0.9, 2.0])  # 4
        t = tally(study)
    assert (t.complete, t.failed, t.retried, t.duplicates, t.waiting) == (1, 1, 1, 1, 1)
    assert t.counted == 2  # trials 2 and 4; the retry (1) will count when it has run


def test_pareto_files_hold_optunas_front_with_labels(tmp_path) -> None:
    s = SweepSettings(hardware="p100", objectives=("accuracy", "latency", "energy"))
    points = [(0.9, 3.0, 2.0), (0.8, 2.0, 1.5), (0.85, 3.5, 2.5), (0.7, 1.0, 1.0),
              (0.7, 1.2, 0.9), (0.6, 2.5, 2.0)]
    with quiet_optuna():
        study = optuna.create_study(directions=s.directions)
        for i, v in enumerate(points):
            _add(study, TrialState.COMPLETE, list(v), settings={"latency_weight": 1.0},
                 latency_label="simulated", test_acc=0.5, genotype={"n": i},
                 search_dir=f"/s/{i}", retrain_dir=f"/r/{i}")
        _add(study, TrialState.FAIL, error="search exited with code 2: error: boom")
        place = SweepPlace(tmp_path, default_storage_url(tmp_path), "demo", None)
        result = pareto.write_outputs(study, s, place, target=7)
    directions = s.directions
    expected = {i for i, v in enumerate(points)
                if not any(dominates(list(w), list(v), directions) for w in points)}
    assert {p["trial"] for p in result["front"]} == expected == {0, 1, 3, 4}
    assert json.loads((tmp_path / "pareto.json").read_text())["front"] == result["front"]
    assert result["all_trials"][-1]["error"] == "search exited with code 2: error: boom"
    assert result["trials"]["counted"] == 7 and result["trials"]["failed"] == 1
    assert [o["axis"] for o in result["objectives"]][1:] == [
        "latency on p100 (simulated), ms", "energy on p100 (modelled), mJ per image"]
    with open(tmp_path / "pareto.csv") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["trial"]) for r in rows] == [p["trial"] for p in result["front"]]
    assert rows[0].keys() >= {"val_acc", "latency_ms", "energy_mj", "latency_label",
                              "test_acc", "genotype", "search_dir", "retrain_dir"}
    assert (tmp_path / "pareto.png").stat().st_size > 10_000


def test_a_proposal_with_a_finished_trials_settings_is_not_run(tmp_path) -> None:
    from nas.sweep.study import TrialFailed, tally
    from nas.sweep.trial import TrialContext, objective

    s = SweepSettings(hardware="p100", vary=("sampler",), sampler_choices=("softmax",))
    ctx = TrialContext(s, tmp_path, None, 1, log=lambda msg: None)
    settings = {"latency_weight": 0.0, "ops": "darts", "activations": "none",
                "sampler": "softmax"}
    with quiet_optuna():
        study = optuna.create_study(directions=s.directions)
        _add(study, TrialState.COMPLETE, [0.9, 2.0], settings=settings)
        study.optimize(lambda t: objective(t, ctx), n_trials=2, catch=(TrialFailed,))
        t = tally(study)
    skipped = study.trials[1:]
    assert [tr.user_attrs["duplicate_of"] for tr in skipped] == [0, 0]
    assert all(tr.state == TrialState.FAIL and "not run" in tr.user_attrs["error"]
               for tr in skipped)
    assert not (tmp_path / "trials").exists()  # nothing was started
    assert (t.counted, t.duplicates, ctx.worker.skipped_in_a_row) == (1, 2, 2)
