"""Fault injection: what a kill, a damaged file or an `--out` at someone else's file does.

The README promises that bad input gives one `error:` line and exit code 2, that nothing
which already exists is overwritten, and that long jobs resume. Each test here does what
a fault injector would (kill at a chosen point, corrupt a file a run or profile keeps,
point `--out` at an existing file or directory) and checks the promise: exit code 2, one
line, no traceback, every pre-existing byte unchanged; or, after a kill, a resume that
ends exactly where an uninterrupted run ends.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

import nas.cli.predictor as predictor_cli
from latency.hardware import profiles_dir
from nas.cli.main import main
from nas.run_dir import RunDir
from search_spaces.errors import InputError

TINY = ["--epochs", "2", "--channels", "4", "--layers", "3", "--limit", "64",
        "--batch-size", "32"]


def run_cli(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(args)
    out, err = capsys.readouterr()
    return code, out, err


def snapshot(path: Path) -> dict[str, bytes]:
    """Every byte under `path` (a file or a directory tree), by relative name."""
    if path.is_file():
        return {"": path.read_bytes()}
    return {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*"))
            if p.is_file()}


def assert_one_line_error(code: int, err: str, needle: str = "") -> None:
    assert code == 2, err
    assert err.startswith("error: ") and err.count("\n") == 1, err
    assert "Traceback" not in err and needle in err, err


def untimed(records: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k != "seconds"} for r in records]


@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """One uninterrupted tiny search and retrain, made once; tests work on copies."""
    root = tmp_path_factory.mktemp("finished")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HW_NAS_HOME", str(root / "home"))
        mp.setenv("OMP_NUM_THREADS", "1")
        assert main(["search", "--space", "darts", *TINY, "--out", str(root / "search")]) == 0
        assert main(["retrain", "--genotype", "DARTS_V2", *TINY, "--no-measure",
                     "--out", str(root / "retrain")]) == 0
    return {"search": root / "search", "retrain": root / "retrain"}


def copy_run(finished: dict[str, Path], kind: str, tmp_path: Path) -> Path:
    dest = tmp_path / kind
    shutil.copytree(finished[kind], dest)
    return dest


def fresh_args(kind: str, out: Path) -> list[str]:
    if kind == "search":
        return ["search", "--space", "darts", *TINY, "--out", str(out)]
    return ["retrain", "--genotype", "DARTS_V2", *TINY, "--no-measure", "--out", str(out)]


# ------------------------------------------------------------------ kills, then resume


@pytest.mark.parametrize("kind", ["search", "retrain"])
@pytest.mark.parametrize("torn", [None, b'{"stage": 0, "epo', b"garbage\n"])
def test_kill_between_log_write_and_checkpoint_resumes_exactly(
        finished, tmp_path, capsys, monkeypatch, kill_at_checkpoint, kind: str,
        torn: bytes | None) -> None:
    """Killed after epoch 2's log lines but before its checkpoint, with (optionally) a torn
    line after them: the resume cuts what the checkpoint does not cover and ends with
    exactly the uninterrupted run's logs and result."""
    run = tmp_path / "run"
    with monkeypatch.context() as mp:
        kill_at_checkpoint(mp, 3)
        code, _, err = run_cli(fresh_args(kind, run), capsys)
    assert code == 130 and "resume with" in err
    assert len(RunDir(run).read_jsonl("log.jsonl")) == 2  # epoch 2 logged, not checkpointed
    if torn is not None:
        for name in ("log.jsonl", "arch_weights.jsonl"):
            if (run / name).exists():
                with open(run / name, "ab") as f:
                    f.write(torn)
    extra = ["--no-measure"] if kind == "retrain" else []
    code, _, err = run_cli([kind, "--resume", str(run), *extra], capsys)
    assert code == 0, err
    done, ref = RunDir(run), RunDir(finished[kind])
    assert untimed(done.read_jsonl("log.jsonl")) == untimed(ref.read_jsonl("log.jsonl"))
    if kind == "search":
        assert (run / "arch_weights.jsonl").read_bytes() == \
            (finished[kind] / "arch_weights.jsonl").read_bytes()
        assert (run / "genotype.json").read_bytes() == \
            (finished[kind] / "genotype.json").read_bytes()
    else:
        a = torch.load(run / "model.pt", weights_only=True)
        b = torch.load(finished[kind] / "model.pt", weights_only=True)
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_kill_during_the_first_epoch_resumes_from_the_start(
        finished, tmp_path, capsys, monkeypatch, kill_at_checkpoint) -> None:
    run = tmp_path / "run"
    with monkeypatch.context() as mp:
        kill_at_checkpoint(mp, 2)  # epoch 1 logged, its checkpoint never written
        assert run_cli(fresh_args("search", run), capsys)[0] == 130
    assert run_cli(["search", "--resume", str(run)], capsys)[0] == 0
    assert (run / "genotype.json").read_bytes() == \
        (finished["search"] / "genotype.json").read_bytes()


def test_kill_mid_append_of_a_sample_resumes_to_the_same_file(tmp_path, capsys) -> None:
    full, part = tmp_path / "full.jsonl", tmp_path / "part.jsonl"
    base = ["profile", "--hardware", "p100", "--seed", "3"]
    assert run_cli([*base, "--samples", "6", "--out", str(full)], capsys)[0] == 0
    assert run_cli([*base, "--samples", "3", "--out", str(part)], capsys)[0] == 0
    fourth = full.read_bytes().split(b"\n")[3]
    with open(part, "ab") as f:  # the kill: half of the fourth row, no newline
        f.write(fourth[: len(fourth) // 2])
    assert run_cli([*base, "--samples", "6", "--out", str(part)], capsys)[0] == 0

    def rows(p: Path) -> list[dict]:
        return [{k: v for k, v in json.loads(line).items() if k != "timestamp"}
                for line in p.read_text().splitlines()]

    assert rows(part) == rows(full) and len(rows(full)) == 6
    assert all(r["seed"] == 3 for r in rows(full))


# ------------------------------------------------------------------ corrupt run files


def _garbage_middle_line(path: Path) -> None:
    lines = path.read_bytes().split(b"\n")
    lines[0] = b"this is not json"
    path.write_bytes(b"\n".join(lines))


def _drop_last_line(path: Path) -> None:
    lines = path.read_bytes().splitlines(keepends=True)
    path.write_bytes(b"".join(lines[:-1]))


CORRUPTIONS = {
    "config.json garbage": ("config.json", lambda p: p.write_bytes(b"\x00\x01 not json")),
    "config.json a list": ("config.json", lambda p: p.write_text("[1, 2]")),
    "log.jsonl damaged line": ("log.jsonl", _garbage_middle_line),
    "log.jsonl shorter than checkpoint": ("log.jsonl", _drop_last_line),
    "checkpoint.pt garbage": ("checkpoint.pt", lambda p: p.write_bytes(b"PK\x03\x04 junk")),
    "checkpoint.pt truncated": ("checkpoint.pt",
                                lambda p: p.write_bytes(p.read_bytes()[: p.stat().st_size // 2])),
    "checkpoint.pt missing": ("checkpoint.pt", lambda p: p.unlink()),
}


@pytest.mark.parametrize("kind", ["search", "retrain"])
@pytest.mark.parametrize("name", sorted(CORRUPTIONS))
def test_corrupt_run_file_is_one_line_and_changes_nothing(finished, tmp_path, capsys,
                                                          kind: str, name: str) -> None:
    run = copy_run(finished, kind, tmp_path)
    filename, corrupt = CORRUPTIONS[name]
    corrupt(run / filename)
    before = snapshot(run)
    code, _, err = run_cli([kind, "--resume", str(run), "--extend", "--epochs", "3"], capsys)
    assert_one_line_error(code, err)
    assert snapshot(run) == before


@pytest.mark.parametrize("content", [b"{ not json", b'{"space": "nb201", "arch": "|x~0|"}'])
def test_corrupt_genotype_of_a_retrain_is_one_line(finished, tmp_path, capsys,
                                                   content: bytes) -> None:
    run = copy_run(finished, "retrain", tmp_path)
    (run / "genotype.json").write_bytes(content)
    before = snapshot(run)
    assert_one_line_error(*run_cli(["retrain", "--resume", str(run)], capsys)[::2])
    assert snapshot(run) == before
    assert_one_line_error(*run_cli(["info", str(run / "genotype.json")], capsys)[::2])


def test_corrupt_sample_file_is_one_line_for_every_reader(tmp_path, capsys) -> None:
    samples = tmp_path / "p100.jsonl"
    assert run_cli(["profile", "--hardware", "p100", "--samples", "3", "--out", str(samples)],
                   capsys)[0] == 0
    _garbage_middle_line(samples)
    before = snapshot(samples)
    for args in (["profile", "--hardware", "p100", "--samples", "5", "--out", str(samples)],
                 ["predictor", "train", "--hardware", "p100", "--samples", str(samples),
                  "--out", str(tmp_path / "pred")],
                 ["profile", "merge", str(samples), "--out", str(tmp_path / "m.jsonl")]):
        assert_one_line_error(*run_cli(args, capsys)[::2], needle="p100.jsonl:1")
        assert snapshot(samples) == before
    assert not (tmp_path / "pred").exists() and not (tmp_path / "m.jsonl").exists()


@pytest.mark.parametrize("damage", ["predictor.json", "weights.pt"])
def test_corrupt_predictor_is_one_line(tmp_path, capsys, damage: str) -> None:
    pred = tmp_path / "p100.predictor"
    shutil.copytree(profiles_dir() / "p100.predictor", pred)
    (pred / damage).write_bytes((pred / damage).read_bytes()[:100])
    before = snapshot(pred)
    code, _, err = run_cli(["latency", "DARTS_V2", "--hardware", "p100", "--predictor",
                            str(pred)], capsys)
    assert_one_line_error(code, err, needle=damage)
    assert snapshot(pred) == before


def test_corrupt_hardware_yaml_is_one_line(tmp_path, capsys, monkeypatch) -> None:
    home = tmp_path / "home"
    (home / "hardware_profiles").mkdir(parents=True)
    (home / "hardware_profiles" / "mine.yaml").write_text("name: mine\nkind: [unclosed\n")
    monkeypatch.setenv("HW_NAS_HOME", str(home))
    code, _, err = run_cli(["profile", "--hardware", "mine", "--samples", "1",
                            "--out", str(tmp_path / "s.jsonl")], capsys)
    assert_one_line_error(code, err, needle="mine.yaml")
    assert not (tmp_path / "s.jsonl").exists()


# ------------------------------------------------------------------ --out at existing paths


def _cpu_samples(path: Path) -> None:
    row = {"arch": {"normal": [["sep_conv_3x3", 0]] * 8, "normal_concat": [2, 3, 4, 5],
                    "reduce": [["max_pool_3x3", 0]] * 8, "reduce_concat": [2, 3, 4, 5]},
           "backend": "torch-cpu", "batch_size": 1, "hardware": "cpu", "id": 0,
           "latency_ms": 1.5, "seed": 0, "source": "measured", "space": "darts",
           "timestamp": "2026-11-30T00:00:00+00:00"}
    path.write_text(json.dumps(row, sort_keys=True) + "\n")


def _notes(path: Path) -> None:
    path.write_text("my notes, not a sample file\n")


def _user_dir(path: Path) -> None:
    path.mkdir()
    (path / "thesis.tex").write_text("\\section{Results}\n")


def _a_predictor(path: Path) -> None:
    shutil.copytree(profiles_dir() / "p100.predictor", path)


def _csv(tmp_path: Path) -> Path:
    csv = tmp_path / "m.csv"
    csv.write_text("arch,ms\n|nor_conv_3x3~0|+|none~0|none~1|+|none~0|none~1|none~2|,2.5\n")
    return csv


def _samples_file(tmp_path: Path) -> Path:
    src = tmp_path / "src.jsonl"
    _cpu_samples(src)
    return src


OUT_CASES = {
    "search into a file": (_notes, lambda t, o: ["search", *TINY, "--out", o]),
    "search into a user's directory": (_user_dir, lambda t, o: ["search", *TINY, "--out", o]),
    "retrain into a file": (_notes, lambda t, o: ["retrain", "--genotype", "DARTS_V2", *TINY,
                                                  "--out", o]),
    "retrain into a user's directory": (_user_dir, lambda t, o: [
        "retrain", "--genotype", "DARTS_V2", *TINY, "--out", o]),
    "profile into notes": (_notes, lambda t, o: ["profile", "--hardware", "p100",
                                                 "--samples", "2", "--out", o]),
    "profile p100 into cpu samples": (_cpu_samples, lambda t, o: [
        "profile", "--hardware", "p100", "--samples", "2", "--out", o]),
    "profile into a directory": (_user_dir, lambda t, o: [
        "profile", "--hardware", "p100", "--samples", "2", "--out", o]),
    "import over a file": (_notes, lambda t, o: [
        "profile", "import", str(_csv(t)), "--space", "nb201", "--latency-column", "ms",
        "--hardware", "new-gpu", "--kind", "cuda", "--out", o]),
    "merge over a file": (_notes, lambda t, o: ["profile", "merge", str(_samples_file(t)),
                                                "--out", o]),
    "merge over one of its inputs": (_cpu_samples, lambda t, o: ["profile", "merge", o,
                                                                 "--out", o]),
    "predictor over a file": (_notes, lambda t, o: [
        "predictor", "train", "--hardware", "cpu", "--samples", str(_samples_file(t)),
        "--out", o]),
    "predictor over a user's directory": (_user_dir, lambda t, o: [
        "predictor", "train", "--hardware", "cpu", "--samples", str(_samples_file(t)),
        "--out", o]),
    "predictor over a predictor": (_a_predictor, lambda t, o: [
        "predictor", "train", "--hardware", "cpu", "--samples", str(_samples_file(t)),
        "--out", o]),
}


@pytest.mark.parametrize("case", sorted(OUT_CASES))
def test_out_at_an_existing_path_is_refused_before_any_work(tmp_path, capsys, monkeypatch,
                                                            case: str) -> None:
    make, args = OUT_CASES[case]
    target = tmp_path / "existing"
    make(target)
    before = snapshot(target)
    monkeypatch.setattr(predictor_cli, "train_predictor",
                        lambda *a, **k: pytest.fail("trained before refusing --out"))
    code, _, err = run_cli(args(tmp_path, str(target)), capsys)
    assert_one_line_error(code, err)
    assert snapshot(target) == before
    assert not (tmp_path / "home").exists() or "new-gpu" not in str(list(tmp_path.rglob("*")))


def test_predictor_force_replaces_only_a_predictor(tmp_path, capsys, monkeypatch) -> None:
    target = tmp_path / "pred"
    _a_predictor(target)
    called = {}

    def stub(rows, out, *a, **k):
        called["out"] = out
        raise InputError("stopped before training")

    monkeypatch.setattr(predictor_cli, "train_predictor", stub)
    samples = _samples_file(tmp_path)
    code, _, err = run_cli(["predictor", "train", "--hardware", "cpu", "--samples",
                            str(samples), "--out", str(target), "--force"], capsys)
    assert called["out"] == target and "stopped before training" in err


# ------------------------------------------------------------------ resume flags


@pytest.mark.parametrize("flags, needle", [
    (["--epochs", "10"], "--extend"),
    (["--seed", "99"], "--seed 99 conflicts"),
    (["--epochs", "10", "--seed", "99", "--hardware", "cpu"],
     "--hardware cpu, --epochs 10, --seed 99 conflict with the run's hardware = None, "
     "epochs = 2, seed = 0"),
    (["--hardware", "cpu"], "--hardware cpu conflicts"),
    (["--space", "pdarts"], "--space pdarts conflicts"),
    (["--strategy", "pdarts"], "--strategy pdarts conflicts"),
    (["--out", "elsewhere"], "--out"),
    ([], "already finished"),
    (["--extend", "--epochs", "2"], "larger than"),
])
def test_resume_refuses_what_it_would_ignore(finished, tmp_path, capsys, flags, needle) -> None:
    run = copy_run(finished, "search", tmp_path)
    before = snapshot(run)
    assert_one_line_error(*run_cli(["search", "--resume", str(run), *flags], capsys)[::2],
                          needle=needle)
    assert snapshot(run) == before


def test_extend_trains_a_finished_run_longer_and_records_it(finished, tmp_path,
                                                             capsys) -> None:
    for kind in ("search", "retrain"):
        run = copy_run(finished, kind, tmp_path)
        extra = ["--no-measure"] if kind == "retrain" else []
        code, _, err = run_cli([kind, "--resume", str(run), "--extend", "--epochs", "3",
                                *extra], capsys)
        assert code == 0, err
        records = RunDir(run).read_jsonl("log.jsonl")
        assert [r["epoch"] for r in records] == [0, 1, 2]
        assert untimed(records[:2]) == untimed(RunDir(finished[kind]).read_jsonl("log.jsonl"))
        config = RunDir(run).config()
        assert config[kind]["epochs"] == 3
        assert config["extensions"][0]["epochs_from"] == 2


def test_pdarts_epochs_within_the_alpha_freeze_are_refused(tmp_path, capsys) -> None:
    code, _, err = run_cli(["search", "--space", "pdarts", "--epochs", "3", "--out",
                            str(tmp_path / "r")], capsys)
    assert_one_line_error(code, err, needle="--epochs 4 or more")
    assert not (tmp_path / "r").exists()


def test_predictor_train_space_reads_that_spaces_samples(tmp_path, capsys, monkeypatch) -> None:
    """`--space nb201` reads the profile's NB201 sample file (not the DARTS one), and
    refuses explicit files of another space before training."""
    seen = {}

    def stub(rows, out, *a, **k):
        seen["spaces"] = {r["space"] for r in rows}
        seen["out"] = Path(out)
        raise InputError("stopped before training")

    monkeypatch.setattr(predictor_cli, "train_predictor", stub)
    assert run_cli(["profile", "--hardware", "p100", "--space", "nb201", "--samples", "12"],
                   capsys)[0] == 0
    code, _, err = run_cli(["predictor", "train", "--hardware", "p100", "--space", "nb201"],
                           capsys)
    assert "stopped before training" in err
    assert seen["spaces"] == {"nb201"} and seen["out"].name == "p100.nb201.predictor"
    darts = _samples_file(tmp_path)
    code, _, err = run_cli(["predictor", "train", "--hardware", "cpu", "--space", "nb201",
                            "--samples", str(darts)], capsys)
    assert_one_line_error(code, err, needle="darts samples, not --space nb201")
