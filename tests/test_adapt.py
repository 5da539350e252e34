"""`nas predictor adapt`: a new device's predictor from a handful of samples and the
shipped device prior, used by every command that uses a predictor."""

from __future__ import annotations

import json

import numpy as np
import pytest

from latency.predictor.artifact import load_predictor, read_metadata
from latency.predictor.locate import default_predictor_path
from latency.predictor.prior import DevicePrior, shipped_prior_path
from latency.predictor.trust import prediction_caution
from latency.samples import load_samples
from nas.cli.main import main
from search_spaces.space import get_space

CELL = "|nor_conv_3x3~0|+|none~0|skip_connect~1|+|avg_pool_3x3~0|nor_conv_1x1~1|skip_connect~2|"


@pytest.fixture
def few(tmp_path, capsys):
    """20 simulated NB201 samples of p100, as `nas profile --samples 20` writes them."""
    out = tmp_path / "few.jsonl"
    assert main(["profile", "--hardware", "p100", "--space", "nb201", "--samples", "20",
                 "--out", str(out), "--json"]) == 0
    capsys.readouterr()
    return out


def test_adapt_writes_a_predictor_every_command_uses(few, tmp_path, capsys) -> None:
    out = tmp_path / "p100.adapted"
    assert main(["predictor", "adapt", "--hardware", "p100", "--samples", str(few),
                 "--out", str(out), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["n_train"] == 20 and summary["space"] == "nb201"
    assert summary["prior"] == str(shipped_prior_path("nb201"))
    # the artifact is the prior adapted to exactly these samples
    space = get_space("nb201")
    rows = load_samples(few)
    archs = [space.parse(r["arch"]) for r in rows]
    y = np.array([r["latency_ms"] for r in rows])
    prior = DevicePrior.load(shipped_prior_path("nb201"), op_names=space.op_names)
    direct = prior.adapt(archs, y)
    model, meta = load_predictor(out, op_names=space.op_names,
                                 encoding_size=space.encoding_size)
    X = np.stack([space.encode(a) for a in archs])
    np.testing.assert_allclose(model.predict(X)[0], direct.predict(X)[0], rtol=1e-9)
    assert meta["model"]["kind"] == "prior_adapted_linear"
    # leave-one-out metrics, recomputed here: sample i predicted by the prior adapted to
    # the other 19
    loo = np.array([prior.adapt([a for j, a in enumerate(archs) if j != i],
                                np.delete(y, i)).predict([archs[i]])[0][0]
                    for i in range(len(y))])
    assert summary["leave_one_out"]["mape"] == pytest.approx(np.mean(np.abs(loo / y - 1)))
    assert meta["heldout_metrics"] == summary["leave_one_out"]
    # few samples are what an adapted predictor is for: no "too few samples" caution
    caution = prediction_caution(read_metadata(out))
    assert caution is None or "samples (fewer than" not in caution

    # nas latency: the adapted predictor's own figure
    assert main(["latency", CELL, "--hardware", "p100", "--predictor", str(out),
                 "--json"]) == 0
    r = json.loads(capsys.readouterr().out)
    mean, std = model.predict(space.encode(space.parse(CELL))[None])
    assert r["predicted_ms"] == pytest.approx(float(mean[0]), rel=1e-6)

    # nas predictor eval reports Spearman too
    assert main(["predictor", "eval", "--predictor", str(out), "--samples", str(few),
                 "--json"]) == 0
    ev = json.loads(capsys.readouterr().out)
    assert ev["n"] == 20 and -1.0 <= ev["spearman"] <= 1.0
    from scipy.stats import spearmanr

    assert ev["spearman"] == pytest.approx(spearmanr(y, model.predict(X)[0]).statistic)


def test_a_latency_aware_search_uses_the_adapted_predictor(few, tmp_path, capsys) -> None:
    assert main(["predictor", "adapt", "--hardware", "p100", "--samples", str(few)]) == 0
    capsys.readouterr()
    assert default_predictor_path("p100", "nb201").is_dir()  # the default place
    run = tmp_path / "run"
    assert main(["search", "--space", "nb201", "--hardware", "p100", "--latency-weight",
                 "0.5", "--epochs", "1", "--channels", "4", "--limit", "64", "--out",
                 str(run), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    space = get_space("nb201")
    model, _ = load_predictor(default_predictor_path("p100", "nb201"))
    arch = space.parse(summary["genotype"])
    assert summary["latency"]["genotype_predicted_latency_ms"] == pytest.approx(
        float(model.predict(space.encode(arch)[None])[0][0]), rel=1e-5)


def test_bad_adapt_input_is_one_line(few, tmp_path, capsys) -> None:
    existing = tmp_path / "taken"
    existing.mkdir()
    (existing / "notes.txt").write_text("mine")
    cases = [
        (["predictor", "adapt", "--hardware", "p100"], "needs --samples"),
        (["predictor", "adapt", "--hardware", "h100", "--samples", str(few)],
         "samples of p100"),
        (["predictor", "adapt", "--hardware", "p100", "--samples", str(few), "--out",
          str(existing)], "holds other files"),
        (["predictor", "adapt", "--hardware", "p100", "--samples", str(few), "--prior",
          str(tmp_path / "nope")], "not found"),
    ]
    for args, needle in cases:
        assert main(args) == 2
        err = capsys.readouterr().err
        assert needle in err and err.count("\n") == 1, err
    assert (existing / "notes.txt").read_text() == "mine"


def test_an_adapted_predictor_is_cautioned_on_its_leave_one_out_figures_only() -> None:
    meta = {"hardware": "mydevice", "space": "darts",
            "heldout_metrics": {"mape": 0.08, "within_10": 0.7},
            "extra": {"n_train": 20, "prior": "hardware_profiles/priors/darts.json"}}
    caution = prediction_caution(meta)
    assert caution is not None and "only 70% of held-out predictions within 10%" in caution
    assert "fewer than" not in caution  # 20 samples are what adapting is for
    assert "nas predictor adapt --hardware mydevice" in caution
    meta["heldout_metrics"]["within_10"] = 0.9
    assert prediction_caution(meta) is None
