"""Adversarial training during search (`nas search --adv-train`): both bilevel steps on
attacked batches, logged, reproducible across a kill, and refused when misconfigured."""

from __future__ import annotations

import json

import pytest

from nas.cli.main import main
from nas.run_dir import RunDir

TINY = ["search", "--space", "darts", "--epochs", "2", "--channels", "4", "--layers", "3",
        "--limit", "48", "--batch-size", "16"]
ADV = ["--adv-train", "pgd", "--adv-steps", "2"]


def weights(run) -> list:
    return RunDir(run).read_jsonl("arch_weights.jsonl")[-1]["weights"]["normal"]


def test_adversarial_search_trains_on_attacks_and_says_so(tmp_path, capsys) -> None:
    assert main([*TINY, "--out", str(tmp_path / "clean")]) == 0
    assert main([*TINY, *ADV, "--out", str(tmp_path / "adv"), "--json"]) == 0
    out, err = capsys.readouterr()
    assert "adversarial training on pgd: eps 0.03137, 2 step(s)" in err
    assert json.loads(out.splitlines()[-1])["genotype"]
    log = RunDir(tmp_path / "adv").read_jsonl("log.jsonl")
    assert all(r["adv_train"] == "pgd" for r in log)
    clean_log = RunDir(tmp_path / "clean").read_jsonl("log.jsonl")
    assert "adv_train" not in clean_log[-1]
    # same seed, same data: only the attacks differ, and they change the training
    assert log[-1]["train_loss"] > clean_log[-1]["train_loss"]
    assert weights(tmp_path / "adv") != weights(tmp_path / "clean")


def test_killed_adversarial_search_resumes_exactly(tmp_path, capsys, monkeypatch,
                                                   kill_at_checkpoint) -> None:
    args = [*TINY, *ADV, "--epochs", "3"]
    assert main([*args, "--out", str(tmp_path / "full")]) == 0
    with monkeypatch.context() as mp:
        kill_at_checkpoint(mp, 3)  # epoch 2 logged, its checkpoint not written
        assert main([*args, "--out", str(tmp_path / "run")]) == 130
    assert main(["search", "--resume", str(tmp_path / "run")]) == 0
    capsys.readouterr()
    for name in ("genotype.json", "arch_weights.jsonl"):
        assert (tmp_path / "run" / name).read_bytes() == (tmp_path / "full" / name).read_bytes()


@pytest.mark.parametrize("bad, needle", [
    (["--adv-eps", "0.1"], "without --adv-train"),
    (["--adv-train", "cw"], "unknown attack 'cw'"),
    (["--adv-train", "pgd", "--adv-steps", "0"], "--adv-steps must be at least 1"),
    (["--adv-train", "fgsm", "--adv-steps", "3"], "takes exactly one step"),
])
def test_bad_adversarial_settings_are_one_line_errors(tmp_path, capsys, bad, needle) -> None:
    code = main([*TINY, *bad, "--out", str(tmp_path / "r")])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: ") and err.count("\n") == 1, err
    assert needle in err and not (tmp_path / "r").exists()
