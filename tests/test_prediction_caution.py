"""A caution on predictions of a predictor trained on few or noisy samples, or one that
misses its held-out cells: each threshold, just below and just above, and where it shows."""

from __future__ import annotations

import copy

import pytest

from latency.predictor.train import noisy_count
from latency.predictor.trust import (
    MAX_MAPE,
    MAX_NOISY_SHARE,
    MIN_TRAIN,
    MIN_WITHIN_10,
    prediction_caution,
)
from nas.retrain.report import format_report

#: a predictor nothing is wrong with (the shipped ones look like this)
GOOD = {
    "hardware": "p100", "space": "darts",
    "heldout_metrics": {"mape": 0.02, "within_5": 0.95, "within_10": 0.99},
    "extra": {"sources": ["measured"], "n_train": 800, "n_test": 200, "n_noisy_train": 10},
}


def meta_with(**changes: float) -> dict:
    meta = copy.deepcopy(GOOD)
    for key, value in changes.items():
        section = "heldout_metrics" if key in ("mape", "within_10") else "extra"
        meta[section][key] = value
    return meta


def test_a_good_predictor_gets_no_caution() -> None:
    assert prediction_caution(GOOD) is None


def test_few_training_samples() -> None:
    assert prediction_caution(meta_with(n_train=MIN_TRAIN)) is None
    text = prediction_caution(meta_with(n_train=MIN_TRAIN - 1, n_test=100))
    assert text is not None and f"only {MIN_TRAIN - 1} samples" in text
    # says what to do, with the profile's name and twice the samples it had (rounded up)
    assert "nas profile --hardware p100 --samples 1200" in text
    assert "nas predictor train --hardware p100" in text and "\n" not in text
    text = prediction_caution(meta_with(n_train=40, n_test=10))
    assert text is not None and "--samples 1000" in text  # at least the shipped 1,000


def test_heldout_mape() -> None:
    assert prediction_caution(meta_with(mape=MAX_MAPE)) is None
    text = prediction_caution(meta_with(mape=0.123))
    assert text is not None and "MAPE 12.3%" in text and "nas profile" in text


def test_share_within_10_percent() -> None:
    assert prediction_caution(meta_with(within_10=MIN_WITHIN_10)) is None
    text = prediction_caution(meta_with(within_10=0.7))
    assert text is not None and "70% of held-out predictions within 10%" in text


def test_noisy_training_samples_when_recorded() -> None:
    limit = int(MAX_NOISY_SHARE * 800)
    assert prediction_caution(meta_with(n_noisy_train=limit)) is None
    text = prediction_caution(meta_with(n_noisy_train=limit + 1))
    assert text is not None and f"{limit + 1} of its 800 training samples" in text
    assert "quiet" in text  # noisy only: profiling more on a busy machine would not help
    # not recorded (simulated / imported samples, older artifacts): no judgement
    meta = copy.deepcopy(GOOD)
    del meta["extra"]["n_noisy_train"]
    assert prediction_caution(meta) is None


def test_several_reasons_make_one_line_and_missing_figures_are_skipped() -> None:
    text = prediction_caution(meta_with(n_train=40, n_test=10, mape=0.3, within_10=0.2))
    assert text is not None and "\n" not in text
    assert "only 40 samples" in text and "MAPE 30.0%" in text and "20% of" in text
    assert prediction_caution({"format": "x"}) is None
    assert prediction_caution({"extra": {"n_train": "many"}, "heldout_metrics": None}) is None


def test_nb201_and_imported_predictors_are_told_their_own_remedy() -> None:
    meta = meta_with(n_train=100)
    meta["space"] = "nb201"
    text = prediction_caution(meta)
    assert text is not None and "nas profile --hardware p100 --space nb201 --samples" in text
    # training must read the nb201 samples, and replace the predictor it cautions about
    assert "nas predictor train --hardware p100 --space nb201 --force" in text
    meta["extra"]["sources"] = ["imported"]
    text = prediction_caution(meta)
    assert text is not None and "nas profile import" in text


def test_noisy_count_only_when_every_row_says() -> None:
    assert noisy_count([{"noisy": True}, {"noisy": False}, {"noisy": True}]) == 2
    assert noisy_count([{"noisy": True}, {}]) is None  # an imported row says nothing
    assert noisy_count([]) is None


@pytest.mark.parametrize("caution", [None, "predictor trained on only 40 samples"])
def test_retrain_report_prints_the_caution(caution) -> None:
    report = {"genotype_name": "DARTS_V2", "dataset": "digits", "epochs": 1,
              "network": {"layers": 3, "channels": 4}, "run_dir": "r", "test_acc": 0.9,
              "test_images": 360, "params": 1, "macs": 2, "files": ["model.pt"],
              "predicted_latency": {"ms": 1.0, "std_ms": 0.1, "hardware": "p100",
                                    "label": "simulated", "refers_to": "x",
                                    "caution": caution}}
    text = format_report(report)
    assert ("caution:" in text) == (caution is not None)
    if caution:
        assert caution in text


# ------------------------------------------------- training says what it does (and where)


def _rows(n: int = 40) -> list[dict]:
    import numpy as np

    from search_spaces.nb201_space import NB201_SPACE

    rng = np.random.default_rng(0)
    archs = [NB201_SPACE.sample(rng) for _ in range(n)]
    return [{"space": "nb201", "arch": str(a), "latency_ms": 2.0 + str(a).count("conv"),
             "source": "measured", "noisy": k % 4 == 0} for k, a in enumerate(archs)]


def test_training_logs_its_phases_only_when_asked_and_computes_the_same(tmp_path,
                                                                        capsys) -> None:
    import torch

    from latency.predictor.artifact import read_metadata
    from latency.predictor.mlp import MLPConfig
    from latency.predictor.train import split, train_predictor

    def config() -> MLPConfig:  # a two-point grid, so the selection phase runs
        return MLPConfig(members=2, steps=30, weight_decay=(1.0, 3.0), huber_delta=0.1,
                         encoding_l2=0.0, selection_repeats=2)

    rows = _rows()
    quiet = train_predictor(rows, tmp_path / "quiet", "dev", "rows", config=config(),
                            baselines=("ridge_onehot", "ridge_onehot_relative"))
    assert capsys.readouterr() == ("", "")  # a library caller hears nothing
    lines: list[str] = []
    told = train_predictor(rows, tmp_path / "told", "dev", "rows", config=config(),
                           baselines=("ridge_onehot", "ridge_onehot_relative"), log=lines.append)
    assert quiet["metrics"] == told["metrics"]  # same seeds, same draws, same model
    a, b = (torch.load(tmp_path / d / "weights.pt", weights_only=True)
            for d in ("quiet", "told"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    text = "\n".join(lines)
    assert "training on 32 nb201 samples" in lines[0] and "holding out 8" in lines[0]
    assert "choosing weight decay and loss" in text and "on 2 validation splits" in text
    assert "chose weight decay" in text and "training 2 ensemble members" in text
    assert lines[-1] == "fitting baselines: ridge_onehot, ridge_onehot_relative"
    # how many training samples were marked noisy is recorded, for the caution
    train, _ = split(len(rows), 0.2, 0)
    noisy = sum(rows[i]["noisy"] for i in train)
    assert told["n_noisy_train"] == noisy > 0
    assert read_metadata(tmp_path / "told")["extra"]["n_noisy_train"] == noisy
