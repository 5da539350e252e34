"""`nas retrain`: the schedule, exact resume, the report, the exports, and bad input."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from nas.cli.main import main
from nas.data.registry import load_dataset
from nas.retrain.config import RetrainConfig, preset_config, validate_config
from nas.retrain.export import load_trained
from nas.retrain.trainer import Retrainer, drop_path_probability, holdout_split
from nas.run_dir import RunDir
from search_spaces.errors import InputError
from search_spaces.genotype_library import DARTS_V1, DARTS_V2
from search_spaces.nb201 import parse_arch

torch.set_num_threads(1)

TINY = ["--epochs", "2", "--channels", "4", "--layers", "3", "--limit", "64",
        "--batch-size", "32", "--no-measure"]


SMALL = preset_config("small")


def tiny_cfg(epochs: int = 3) -> RetrainConfig:
    return SMALL.with_overrides(epochs=epochs, init_channels=4, layers=3, batch_size=32,
                                data_limit=64)


def run_cli(args, capsys):
    code = main(args)
    out, err = capsys.readouterr()
    return code, out, err


def snapshot(path: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(path.iterdir()) if p.is_file()}


def test_schedule_is_darts_train_py() -> None:
    cfg = SMALL.with_overrides(epochs=10, drop_path=0.2)
    assert [drop_path_probability(cfg, e) for e in (0, 5, 9)] == pytest.approx([0, 0.1, 0.18])
    from nas.training import cosine_lr
    assert cosine_lr(0, 10, 0.025, 0.0) == pytest.approx(0.025)
    assert cosine_lr(5, 10, 0.025, 0.0) == pytest.approx(0.0125)
    assert cosine_lr(10, 10, 0.025, 0.0) == pytest.approx(0.0, abs=1e-12)


def test_nb201_presets_are_the_benchmarks_own_training() -> None:
    paper = preset_config("paper", "nb201")
    assert (paper.init_channels, paper.layers, paper.epochs, paper.batch_size) == (16, 5, 200, 256)
    assert (paper.lr, paper.momentum, paper.nesterov, paper.weight_decay) == (0.1, 0.9, True, 5e-4)
    assert (paper.grad_clip, paper.cutout, paper.drop_path, paper.auxiliary) == (0, 0, 0, False)
    small = preset_config("small", "nb201")
    assert (small.init_channels, small.layers, small.lr, small.nesterov) == (16, 5, 0.1, True)
    assert preset_config("paper").nesterov is False  # DARTS train.py: plain momentum
    with pytest.raises(InputError, match="no drop-path"):
        validate_config(small.with_overrides(drop_path=0.1))
    with pytest.raises(InputError, match="unknown retrain preset 'huge' for nb201"):
        preset_config("huge", "nb201")


def test_nb201_step_is_nesterov_sgd_without_clipping(tmp_path) -> None:
    """First step by hand: momentum buffer = g, so Nesterov moves by lr (1 + m) (g + wd p)."""
    import copy

    import torch.nn.functional as F

    data = load_dataset("digits", limit=32)
    cfg = preset_config("small", "nb201").with_overrides(
        epochs=1, init_channels=4, layers=1, batch_size=32, data_limit=32)
    arch = parse_arch("|nor_conv_3x3~0|+|skip_connect~0|nor_conv_1x1~1|"
                      "+|none~0|avg_pool_3x3~1|nor_conv_3x3~2|")
    trainer = Retrainer(cfg, arch, RunDir.create(tmp_path / "r", {}), data,
                        log=lambda m: None, channels_last=False)
    manual = copy.deepcopy(trainer.net)
    (x, y), = list(trainer.train_batches.epoch(0))
    manual.train()
    logits, aux = manual(x)
    assert aux is None
    F.cross_entropy(logits, y).backward()
    expected = {}
    with torch.no_grad():
        for name, p in manual.named_parameters():
            step = p.grad + cfg.weight_decay * p
            expected[name] = p - cfg.lr * (1 + cfg.momentum) * step
    trainer.run_all()
    got = dict(trainer.net.named_parameters())
    for name, want in expected.items():
        assert torch.allclose(got[name], want, atol=1e-6), name


def test_one_step_is_sgd_on_loss_plus_0_4_auxiliary_loss(tmp_path) -> None:
    """The trainer's first step equals a hand-written step on CE + 0.4 CE_aux, clipped."""
    import copy

    import torch.nn.functional as F

    data = load_dataset("digits", limit=32)
    cfg = tiny_cfg(1).with_overrides(batch_size=32, drop_path=0.0)
    trainer = Retrainer(cfg, DARTS_V2, RunDir.create(tmp_path / "r", {}), data,
                        log=lambda m: None, channels_last=False)
    manual = copy.deepcopy(trainer.net)
    (x, y), = list(trainer.train_batches.epoch(0))  # one batch: the same augmented images
    manual.train()
    logits, aux = manual(x)
    assert aux is not None and aux.shape == (32, 10)
    loss = F.cross_entropy(logits, y) + 0.4 * F.cross_entropy(aux, y)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(list(manual.parameters()), cfg.grad_clip)
    opt = torch.optim.SGD(manual.parameters(), lr=cfg.lr, momentum=cfg.momentum,
                          weight_decay=cfg.weight_decay)
    opt.step()
    trainer.run_all()
    for (name, a), b in zip(manual.state_dict().items(), trainer.net.state_dict().values()):
        assert torch.allclose(a, b, atol=1e-6), name
    net = trainer.net.eval()
    logits_eval, aux_eval = net(x)
    assert aux_eval is None and logits_eval.shape == (32, 10)


def test_killed_retrain_resumes_to_the_same_weights(tmp_path) -> None:
    data = load_dataset("digits", limit=64)
    quiet = lambda m: None  # noqa: E731
    full = Retrainer(tiny_cfg(), DARTS_V2, RunDir.create(tmp_path / "a", {}), data, log=quiet)
    full.run_all()

    run = RunDir.create(tmp_path / "b", {})
    first = Retrainer(tiny_cfg(), DARTS_V2, run, data, log=quiet)
    assert first.run_all(stop_after=1) is None
    run.append("log.jsonl", {"epoch": 99, "written_after_the_checkpoint": True})
    second = Retrainer(tiny_cfg(), DARTS_V2, RunDir.open(run.path), data, log=quiet)
    torch.manual_seed(1234)  # the resumed RNG must come from the checkpoint, not from here
    second.restore()
    second.run_all()

    for k, v in full.net.state_dict().items():
        assert torch.equal(v, second.net.state_dict()[k]), k
    strip = [{k: v for k, v in r.items() if k != "seconds"}
             for r in RunDir(tmp_path / "a").read_jsonl("log.jsonl")]
    assert [{k: v for k, v in r.items() if k != "seconds"}
            for r in run.read_jsonl("log.jsonl")] == strip
    assert len(strip) == 3


def test_cli_end_to_end_report_state_dict_and_onnx(tmp_path, capsys) -> None:
    out = tmp_path / "run"
    code, stdout, err = run_cli(["retrain", "--genotype", "DARTS_V2", "--hardware", "p100",
                                 *TINY, "--out", str(out), "--json"], capsys)
    assert code == 0, err
    report = json.loads(stdout)  # exactly one JSON object on stdout
    assert report == json.loads((out / "report.json").read_text())
    assert 0.0 <= report["test_acc"] <= 1.0 and report["test_images"] == 360
    code, info, _ = run_cli(["info", "DARTS_V2", "--dataset", "digits", "--channels", "4",
                             "--layers", "3", "--json"], capsys)
    sizes = json.loads(info)
    assert (report["params"], report["macs"]) == (sizes["params"], sizes["macs"])
    pred = report["predicted_latency"]
    assert pred["label"] == "simulated" and pred["ms"] > 0 and "3x32x32" in pred["refers_to"]
    # the same figure `nas latency` gives for the same genotype and profile
    code, lat, _ = run_cli(["latency", "DARTS_V2", "--hardware", "p100", "--json"], capsys)
    assert pred["ms"] == pytest.approx(json.loads(lat)["predicted_ms"], rel=1e-9)
    assert report["measured_latency"] == {"skipped": "--no-measure"}
    assert len(RunDir(out).read_jsonl("log.jsonl")) == 2

    # the state dict loads without unpickling objects and rebuilds the same network
    state = torch.load(out / "model.pt", weights_only=True)
    assert all(isinstance(v, torch.Tensor) for v in state.values())
    net, cfg, genotype = load_trained(out)
    assert genotype == DARTS_V2 and cfg.layers == 3
    data = load_dataset("digits")
    x = data.test_x[:16]
    with torch.no_grad():
        logits, _ = net(x)
    acc = float((net(data.test_x)[0].argmax(1) == data.test_y).float().mean())
    assert math.isclose(acc, report["test_acc"], abs_tol=1e-6)

    ort = pytest.importorskip("onnxruntime")
    session = ort.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"])
    (onnx_logits,) = session.run(None, {"input": x.numpy()})
    assert onnx_logits.shape == (16, 10)
    assert torch.allclose(torch.from_numpy(onnx_logits), logits, atol=1e-4, rtol=1e-4)


def test_measured_latency_says_how_it_was_measured(tmp_path, capsys) -> None:
    out = tmp_path / "run"
    args = [a for a in TINY if a != "--no-measure"]
    code, stdout, err = run_cli(["retrain", "--genotype", "DARTS_V1", *args, "--epochs", "1",
                                 "--out", str(out)], capsys)
    assert code == 0, err
    report = json.loads((out / "report.json").read_text())
    torch_m = report["measured_latency"]["torch"]
    assert "batch 1" in torch_m["how"] and "1 thread" in torch_m["how"]
    # a wall-clock time: positive, finite, far under 10 s for a 3-cell, 4-channel network
    assert 0 < torch_m["ms"] < 10_000 and math.isfinite(torch_m["ms"])
    assert report["predicted_latency"] is None
    assert "test accuracy" in stdout and "measured here" in stdout


def test_resume_of_a_finished_run_is_refused_and_changes_nothing(tmp_path, capsys) -> None:
    out = tmp_path / "run"
    assert run_cli(["retrain", "--genotype", "DARTS_V2", *TINY, "--out", str(out)], capsys)[0] == 0
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    code, _, err = run_cli(["retrain", "--resume", str(out), "--no-measure", "--json"], capsys)
    _one_line_error(code, err, "already finished")
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()} == before


def test_resume_after_a_kill_before_the_report_reports_without_training(tmp_path,
                                                                        capsys) -> None:
    out = tmp_path / "run"
    assert run_cli(["retrain", "--genotype", "DARTS_V2", *TINY, "--out", str(out)], capsys)[0] == 0
    before = json.loads((out / "report.json").read_text())
    (out / "report.json").unlink()  # killed after the last checkpoint, before the report
    code, _, err = run_cli(["retrain", "--resume", str(out), "--no-measure", "--json"], capsys)
    assert code == 0, err
    after = json.loads((out / "report.json").read_text())
    assert after["test_acc"] == before["test_acc"] and "epoch 1/" not in err
    assert len(RunDir(out).read_jsonl("log.jsonl")) == 2


def _one_line_error(code: int, err: str, needle: str) -> None:
    assert code == 2
    assert err.count("\n") == 1 and err.startswith("error:"), err
    assert needle in err, err


def test_unknown_op_in_genotype_is_one_line_and_writes_nothing(tmp_path, capsys) -> None:
    bad = DARTS_V2.to_dict()
    bad["normal"][0][0] = "conv_9x9"
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(bad))
    code, _, err = run_cli(["retrain", "--genotype", str(path), *TINY,
                            "--out", str(tmp_path / "out")], capsys)
    _one_line_error(code, err, "conv_9x9")
    assert not (tmp_path / "out").exists()


def test_corrupt_checkpoint_is_one_line_and_leaves_files_alone(tmp_path, capsys) -> None:
    out = tmp_path / "run"
    assert run_cli(["retrain", "--genotype", "DARTS_V2", *TINY, "--out", str(out)], capsys)[0] == 0
    (out / "checkpoint.pt").write_bytes(b"not a zip archive")
    before = snapshot(out)
    code, _, err = run_cli(["retrain", "--resume", str(out), "--no-measure"], capsys)
    _one_line_error(code, err, "corrupt checkpoint")
    assert snapshot(out) == before


def test_checkpoint_of_another_genotype_is_refused(tmp_path, capsys) -> None:
    out = tmp_path / "run"
    assert run_cli(["retrain", "--genotype", "DARTS_V2", *TINY, "--out", str(out)], capsys)[0] == 0
    before = snapshot(out)
    code, _, err = run_cli(["retrain", "--resume", str(out), "--genotype", "DARTS_V1"], capsys)
    _one_line_error(code, err, "not the genotype")
    assert snapshot(out) == before

    # a checkpoint copied in from a run of another genotype
    other = tmp_path / "other"
    assert run_cli(["retrain", "--genotype", "DARTS_V1", *TINY, "--out", str(other)],
                   capsys)[0] == 0
    (out / "checkpoint.pt").write_bytes((other / "checkpoint.pt").read_bytes())
    before = snapshot(out)
    code, _, err = run_cli(["retrain", "--resume", str(out), "--no-measure"], capsys)
    _one_line_error(code, err, "different genotype")
    assert snapshot(out) == before
    assert DARTS_V1 != DARTS_V2


@pytest.mark.parametrize(
    "args, needle",
    [
        (["retrain"], "--genotype"),
        (["retrain", "--genotype", "NOPE"], "unknown genotype"),
        (["retrain", "--genotype", "DARTS_V2", "--hardware", "abacus"], "unknown hardware"),
        (["retrain", "--genotype", "DARTS_V2", "--epochs", "0"], "--epochs"),
        (["retrain", "--genotype", "DARTS_V2", "--drop-path", "1.5"], "--drop-path"),
        (["retrain", "--resume", "/nonexistent/run"], "cannot resume"),
        (["retrain", "--genotype", "DARTS_V2", "--hardware", "cpu", "--predictor",
          "/nonexistent/pred"], "no latency predictor"),
        (["retrain", "--genotype", "DARTS_V2", "--predictor", "/x"], "--hardware"),
        (["retrain", "--genotype", "DARTS_V2", "--holdout", "-1"], "--holdout"),
        (["retrain", "--genotype", "DARTS_V2", "--limit", "64", "--holdout", "64"],
         "leaves no training images"),
    ],
)
def test_bad_arguments(args, needle, tmp_path, capsys, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    code, _, err = run_cli(args, capsys)
    _one_line_error(code, err, needle)
    assert not (tmp_path / "results").exists()


def test_existing_output_directory_is_not_overwritten(tmp_path, capsys) -> None:
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    code, _, err = run_cli(["retrain", "--genotype", "DARTS_V2", *TINY, "--out", str(out)],
                           capsys)
    _one_line_error(code, err, "not empty")
    assert (out / "notes.txt").read_text() == "keep me" and len(list(out.iterdir())) == 1


@pytest.mark.slow
def test_small_preset_reaches_95_percent_on_digits(tmp_path, capsys) -> None:
    """Issue 4's quality bar (about a minute): DARTS_V2, small preset, held-out digits."""
    out = tmp_path / "run"
    code, stdout, err = run_cli(["retrain", "--genotype", "DARTS_V2", "--no-measure",
                                 "--out", str(out), "--json"], capsys)
    assert code == 0, err
    assert json.loads(stdout)["test_acc"] >= 0.95


NB201_CELL = ("|nor_conv_3x3~0|+|skip_connect~0|nor_conv_1x1~1|"
              "+|none~0|avg_pool_3x3~1|nor_conv_3x3~2|")


def test_nb201_cell_retrains_as_the_benchmark_network(tmp_path, capsys) -> None:
    out = tmp_path / "nb"
    code, stdout, err = run_cli(["retrain", "--genotype", NB201_CELL, "--epochs", "1",
                                 "--channels", "4", "--layers", "1", "--limit", "64",
                                 "--batch-size", "32", "--no-measure", "--out", str(out),
                                 "--json"], capsys)
    assert code == 0, err
    report = json.loads(stdout)
    assert report["network"]["layout"] == "nb201" and report["genotype_name"] == "nb201-cell"
    saved = json.loads((out / "config.json").read_text())["retrain"]
    assert saved["space"] == "nb201" and saved["auxiliary_weight"] == 0.0
    assert saved["drop_path"] == 0.0
    assert json.loads((out / "genotype.json").read_text())["arch"] == NB201_CELL

    net, cfg, arch = load_trained(out)
    assert str(arch) == NB201_CELL and cfg.layers == 1
    from search_spaces.complexity import count_parameters
    assert count_parameters(net) == report["params"]
    x = load_dataset("digits").test_x[:8]
    with torch.no_grad():
        logits, aux = net(x)
    assert aux is None and logits.shape == (8, 10)
    ort = pytest.importorskip("onnxruntime")
    session = ort.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"])
    (onnx_logits,) = session.run(None, {"input": x.numpy()})
    assert torch.allclose(torch.from_numpy(onnx_logits), logits, atol=1e-4, rtol=1e-4)

    # a search run's NB201 genotype.json is accepted too; resuming with a DARTS one is not
    code, _, err = run_cli(["retrain", "--resume", str(out), "--genotype", "DARTS_V2"], capsys)
    _one_line_error(code, err, "not the genotype")


def test_holdout_is_a_fixed_disjoint_part_of_the_training_split() -> None:
    data = load_dataset("digits", None, limit=200)
    train, held = holdout_split(data, 50)
    assert held is not None and train.num_train == 150 and held.num_train == 50
    # together they are the training split, each image once (digits rows are distinct)
    rows = {tuple(r.flatten().tolist()) for r in data.train_x}
    assert len(rows) == 200
    ours = [tuple(r.flatten().tolist()) for r in torch.cat([train.train_x, held.train_x])]
    assert len(set(ours)) == 200 and set(ours) == rows
    assert torch.equal(train.test_x, data.test_x)  # the test split is untouched
    again_train, again_held = holdout_split(data, 50)
    assert again_held is not None and torch.equal(again_held.train_x, held.train_x)
    assert holdout_split(data, 0) == (data, None)


def test_holdout_accuracy_is_reported_and_images_leave_training(tmp_path, capsys) -> None:
    out = tmp_path / "run"
    code, stdout, _ = run_cli(["retrain", "--genotype", "DARTS_V2", *TINY, "--holdout", "24",
                               "--out", str(out), "--json"], capsys)
    assert code == 0
    report = json.loads(stdout)
    assert report["val_images"] == 24 and 0.0 <= report["val_acc"] <= 1.0
    assert math.isfinite(report["val_loss"])
    # 64 images, 24 held out: 40 trained on, two batches of 32 -> 2 steps per epoch
    assert json.loads((out / "config.json").read_text())["retrain"]["holdout"] == 24
