"""Golden checks on what ships: a change to the simulator, the encoding or the predictor
code must not silently invalidate the shipped samples and predictors.

Every shipped profile except `cpu` comes with samples simulated by `latency/simulate/`
and a predictor trained on them, whose held-out figures the README and BENCHMARKS quote.
These tests re-simulate rows of every shipped sample file and match their stored
latencies, and re-score every shipped predictor on its own held-out split and match the
figures in its `report.json`. If one fails after a deliberate change, regenerate the
shipped files and their quoted figures; do not loosen the tolerance.
"""

from __future__ import annotations

import json

import pytest

from latency.hardware import load_profile, profiles_dir
from latency.predictor.train import evaluate_predictor, split
from latency.samples import load_samples
from latency.simulate import simulate_genotype
from search_spaces.space import get_space

#: "<profile>" (the DARTS space) or "<profile>.<space>" (e.g. p100.darts-act)
SHIPPED = sorted(p.name.removesuffix(".samples.jsonl")
                 for p in profiles_dir().glob("*.samples.jsonl"))


def hardware(name: str) -> str:
    return name.split(".", 1)[0]


def test_every_simulated_profile_ships_samples_and_a_predictor() -> None:
    assert [n for n in SHIPPED if "." not in n] == ["h100", "jetson-tx2", "p100", "pixel4",
                                                     "raspi4"]
    assert "p100.darts-act" in SHIPPED  # the factorised search's encoding
    for name in SHIPPED:
        assert (profiles_dir() / f"{name}.predictor" / "report.json").is_file()


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_samples_re_simulate_to_their_stored_latency(name: str) -> None:
    rows = load_samples(profiles_dir() / f"{name}.samples.jsonl")
    profile = load_profile(hardware(name))
    picked = rows[:: len(rows) // 5][:5]  # spread over the sampling strata
    for row in picked:
        space = get_space(row["space"])
        ms = simulate_genotype(space.parse(row["arch"]), profile).ms
        assert ms == pytest.approx(row["latency_ms"], rel=1e-9), (name, row["id"])


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_predictor_reproduces_its_reported_held_out_figures(name: str) -> None:
    directory = profiles_dir() / f"{name}.predictor"
    report = json.loads((directory / "report.json").read_text())
    meta = json.loads((directory / "predictor.json").read_text())
    rows = load_samples(profiles_dir() / f"{name}.samples.jsonl")
    _, test = split(len(rows), 0.2, int((meta.get("extra") or {}).get("seed", 0)))
    assert len(test) == report["n_test"]
    scored = evaluate_predictor(directory, [rows[i] for i in test])
    # what the artifact holds: the `shipped` row (blend.py); artifacts trained before the
    # blend existed ship the MLP alone
    shipped = report["metrics"].get("shipped", report["metrics"]["mlp"])
    assert meta["heldout_metrics"] == shipped
    for metric in ("mape", "within_5", "within_10", "kendall_tau"):
        assert scored[metric] == pytest.approx(shipped[metric], rel=1e-6), (name, metric)
