"""`nas info` and `nas latency` on NAS-Bench-201 cells: the genotype.json `nas search --space
nb201` writes, and arch strings, as `nas retrain --genotype` takes them."""

from __future__ import annotations

import json
import math

import pytest

from latency.hardware import load_profile
from latency.predictor.locate import default_predictor_path, default_samples_path
from latency.predictor.mlp import MLPConfig
from latency.predictor.train import train_predictor
from latency.profiling import profile_hardware
from latency.samples import load_samples
from nas.cli.main import main
from nas.retrain.report import predicted_latency
from search_spaces.complexity import count_macs, count_parameters
from search_spaces.genotype_library import DARTS_V2
from search_spaces.nb201 import Nb201Network, parse_arch
from search_spaces.space import get_space

CELL = "|nor_conv_3x3~0|+|skip_connect~0|nor_conv_1x1~1|+|none~0|avg_pool_3x3~1|nor_conv_3x3~2|"
FAST = MLPConfig(members=2, steps=150, weight_decay=1.0, huber_delta=0.1, encoding_l2=0.0)


def run_cli(args, capsys):
    code = main(args)
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def genotype_json(tmp_path):
    """What `nas search --space nb201` leaves in its run directory."""
    path = tmp_path / "run" / "genotype.json"
    path.parent.mkdir()
    get_space("nb201").save(parse_arch(CELL), path)
    assert json.loads(path.read_text()) == {"space": "nb201", "arch": CELL}
    return path


def test_info_on_a_nb201_genotype_json_sizes_the_benchmark_network(genotype_json,
                                                                    capsys) -> None:
    code, out, err = run_cli(["info", str(genotype_json), "--json"], capsys)
    assert code == 0, err
    r = json.loads(out)
    net = Nb201Network(parse_arch(CELL), C=16, N=5, num_classes=10, in_channels=3)
    assert r["space"] == "nb201" and r["arch"] == CELL
    assert (r["channels"], r["layers"], r["input"]) == (16, 5, [3, 32, 32])
    assert r["params"] == count_parameters(net) and r["macs"] == count_macs(net, (3, 32, 32))
    # the run directory stands for its genotype.json, as for a DARTS search
    code, out, err = run_cli(["info", str(genotype_json.parent), "--json"], capsys)
    assert code == 0, err
    assert json.loads(out)["params"] == r["params"]
    # the arch string itself, and overrides of channels / cells per stage on digits
    code, out, _ = run_cli(["info", CELL, "--dataset", "digits", "--channels", "4",
                            "--layers", "1", "--json"], capsys)
    small = Nb201Network(parse_arch(CELL), C=4, N=1, num_classes=10, in_channels=1)
    r = json.loads(out)
    assert code == 0 and r["input"] == [1, 8, 8]
    assert r["params"] == count_parameters(small) and r["macs"] == count_macs(small, (1, 8, 8))
    code, out, _ = run_cli(["info", str(genotype_json)], capsys)
    assert code == 0 and "5 cells per stage" in out and f"{count_parameters(net):,}" in out


def test_info_darts_figures_are_unchanged(capsys) -> None:
    code, out, _ = run_cli(["info", "PDARTS", "--json"], capsys)
    r = json.loads(out)
    assert code == 0 and r["space"] == "darts"
    assert (r["params"], r["macs"]) == (3_433_798, 532_174_464)


@pytest.mark.parametrize("args, needle", [
    (["info", CELL.replace("nor_conv_1x1", "nor_conv_9x9")], "nor_conv_9x9"),
    (["latency", CELL.replace("avg_pool_3x3", "max_pool_3x3"), "--hardware", "p100"],
     "max_pool_3x3"),
    (["info", CELL, "--dataset", "imagenet"], "no network for dataset 'imagenet'"),
    (["info", CELL, "--layers", "0"], "--layers"),
    (["latency", CELL, "--hardware", "p100"], "nas profile --hardware p100 --space nb201"),
])
def test_bad_nb201_input_is_one_error_line(args, needle, capsys) -> None:
    code, out, err = run_cli(args, capsys)
    assert code == 2 and out == ""
    assert err.startswith("error:") and err.count("\n") == 1 and needle in err, err


def test_bad_op_in_a_nb201_genotype_json_is_one_error_line(tmp_path, capsys) -> None:
    path = tmp_path / "genotype.json"
    path.write_text(json.dumps({"space": "nb201", "arch": CELL.replace("none", "zero")}))
    for args in (["info", str(path)], ["latency", str(path), "--hardware", "p100"]):
        code, _, err = run_cli(args, capsys)
        assert code == 2 and err.count("\n") == 1 and "'zero'" in err


def test_latency_of_a_nb201_cell_with_the_profiles_nb201_predictor(genotype_json,
                                                                    capsys) -> None:
    """A predictor trained here on a few simulated samples, where `nas latency` looks for
    the profile's nb201 predictor; so few samples must come with a caution."""
    samples = default_samples_path("p100", "nb201", for_writing=True)
    profile_hardware(load_profile("p100"), get_space("nb201"), samples, samples=16,
                     log=lambda m: None)
    train_predictor(load_samples(samples), default_predictor_path("p100", "nb201",
                                                                   for_writing=True),
                    "p100", str(samples), config=FAST, baselines=("ridge_onehot",))
    code, out, err = run_cli(["latency", str(genotype_json), "--hardware", "p100", "--json"],
                             capsys)
    assert code == 0, err
    r = json.loads(out)
    assert r["space"] == "nb201" and r["label"] == "simulated" and r["measured_ms"] is None
    assert math.isfinite(r["predicted_ms"]) and r["predicted_ms"] > 0
    assert r["predictor"].endswith("p100.nb201.predictor")
    assert "NAS-Bench-201" in r["refers_to"]
    assert "samples" in r["caution"] and "--space nb201" in r["caution"]
    code, out, _ = run_cli(["latency", CELL, "--hardware", "p100"], capsys)
    assert code == 0 and "\n  caution:   predictor trained on only" in out
    # `nas retrain`'s report carries the same caution
    assert predicted_latency(parse_arch(CELL), "p100")["caution"] == r["caution"]
    # the DARTS predictor of the same profile is untouched, and trusted
    code, out, _ = run_cli(["latency", "DARTS_V2", "--hardware", "p100", "--json"], capsys)
    r = json.loads(out)
    assert code == 0 and r["space"] == "darts" and r["caution"] is None
    assert predicted_latency(DARTS_V2, "p100")["caution"] is None


def test_measure_times_the_nb201_deployed_network(capsys) -> None:
    code, out, err = run_cli(["latency", CELL, "--hardware", "cpu", "--measure", "--json"],
                             capsys)
    assert code == 0, err
    r = json.loads(out)
    assert r["measured_ms"] > 0 and "torch-cpu" in r["measured_with"]
    assert r["predicted_ms"] is None and r["caution"] is None  # no cpu nb201 predictor
