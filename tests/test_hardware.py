"""Hardware profiles: every shipped YAML loads; every malformed field is one clear line."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from latency.hardware import (
    HardwareError,
    HardwareProfile,
    load_profile,
    parse_profile,
    profile_names,
)
from search_spaces.errors import InputError

SHIPPED = ("cpu", "h100", "jetson-tx2", "p100", "pixel4", "raspi4")

VALID: dict[str, Any] = {
    "name": "toy",
    "kind": "cuda",
    "source": "simulated",
    "device": "a toy GPU",
    "measurement": {"backend": "roofline-model", "batch_size": 1, "precision": "fp32"},
    "network": {"dataset": "cifar10", "input": [3, 32, 32], "layers": 20, "channels": 36,
                "num_classes": 10},
    "specs": {"peak_fp32_tflops": 1.0, "memory_bandwidth_gbs": 100.0,
              "kernel_overhead_us": 5.0, "source": "a datasheet"},
}


def write(tmp_path: Path, data: Any, name: str = "toy.yaml") -> Path:
    path = tmp_path / name
    path.write_text(data if isinstance(data, str) else yaml.safe_dump(data))
    return path


def load_error(tmp_path: Path, data: Any) -> str:
    path = write(tmp_path, data)
    with pytest.raises(HardwareError) as info:
        load_profile(str(path))
    message = str(info.value)
    assert "\n" not in message, message
    assert str(path) in message, message
    return message


def changed(path: tuple[str, ...], value: Any, delete: bool = False) -> dict[str, Any]:
    data = copy.deepcopy(VALID)
    node = data
    for key in path[:-1]:
        node = node[key]
    if delete:
        del node[path[-1]]
    else:
        node[path[-1]] = value
    return data


def test_shipped_profiles_load() -> None:
    assert set(SHIPPED) <= set(profile_names())
    for name in profile_names():
        profile = load_profile(name)
        assert isinstance(profile, HardwareProfile)
        assert profile.name == name
        assert profile.to_dict()["source"] == profile.source
        if profile.simulated:
            assert profile.label == "simulated"
            for key in ("source", "peak_fp32_tflops", "memory_bandwidth_gbs",
                        "kernel_overhead_us"):
                assert key in profile.specs, (name, key)
            assert "estimates" in profile.specs, name  # every simulated device says which
        # a profile's dict reads back as the same profile
        again = parse_profile(profile.to_dict(), "round trip")
        assert again.to_dict() == profile.to_dict()


def test_cpu_profile_is_the_measured_digits_network() -> None:
    cpu = load_profile("cpu")
    assert cpu.source == "measured" and cpu.label == "measured"
    assert cpu.measurement["backend"] == "torch-cpu"
    assert (cpu.batch_size, cpu.threads, cpu.precision) == (1, 1, "fp32")
    assert cpu.input_shape == (1, 8, 8)
    assert (cpu.network["layers"], cpu.network["channels"], cpu.network["num_classes"]) == (
        8, 16, 10)
    p100 = load_profile("p100")
    assert p100.simulated and p100.specs["peak_fp32_tflops"] == 9.3
    assert p100.specs["memory_bandwidth_gbs"] == 732


def test_valid_toy_profile(tmp_path: Path) -> None:
    profile = load_profile(str(write(tmp_path, VALID)))
    assert profile.simulated and profile.batch_size == 1 and profile.input_shape == (3, 32, 32)


def test_unknown_name_lists_known_profiles() -> None:
    with pytest.raises(HardwareError) as info:
        load_profile("abacus")
    message = str(info.value)
    assert "unknown hardware 'abacus'" in message
    for name in SHIPPED:
        assert name in message
    assert isinstance(info.value, InputError)


def test_missing_file() -> None:
    with pytest.raises(HardwareError, match="not found"):
        load_profile("no/such/profile.yaml")


def test_malformed_yaml(tmp_path: Path) -> None:
    message = load_error(tmp_path, "name: toy\nkind: [cuda\nsource: simulated\n")
    assert "malformed" in message and "line" in message


def test_not_a_mapping(tmp_path: Path) -> None:
    assert "mapping" in load_error(tmp_path, "- just\n- a list\n")


def test_duplicate_key(tmp_path: Path) -> None:
    text = yaml.safe_dump(VALID) + "kind: arm\n"
    assert "duplicate key 'kind'" in load_error(tmp_path, text)


@pytest.mark.parametrize(
    ("path", "field"),
    [
        (("colour",), "colour"),
        (("measurement", "batchsize"), "batchsize"),
        (("network", "cells"), "cells"),
        (("specs", "peak_flops"), "peak_flops"),
    ],
)
def test_unknown_keys(tmp_path: Path, path: tuple[str, ...], field: str) -> None:
    message = load_error(tmp_path, changed(path, 1))
    assert "unknown key" in message and repr(field) in message


@pytest.mark.parametrize(
    ("path", "value", "field"),
    [
        (("kind",), "abacus", "kind"),
        (("source",), "guessed", "source"),
        (("device",), 42, "device"),
        (("measurement",), "fast", "measurement"),
        (("measurement", "batch_size"), "one", "measurement.batch_size"),
        (("measurement", "batch_size"), 0, "measurement.batch_size"),
        (("measurement", "batch_size"), True, "measurement.batch_size"),
        (("measurement", "batch_size"), 1.5, "measurement.batch_size"),
        (("measurement", "precision"), "fp64", "measurement.precision"),
        (("measurement", "threads"), -2, "measurement.threads"),
        (("measurement", "noise_threshold"), 5, "measurement.noise_threshold"),
        (("network", "input"), [3, -32, 32], "network.input"),
        (("network", "input"), "3x32x32", "network.input"),
        (("network", "layers"), "20", "network.layers"),
        (("network", "layout"), "mobile", "network.layout"),
        (("specs", "memory_bandwidth_gbs"), -732, "specs.memory_bandwidth_gbs"),
        (("specs", "memory_bandwidth_gbs"), "fast", "specs.memory_bandwidth_gbs"),
        (("specs", "peak_fp32_tflops"), float("nan"), "specs.peak_fp32_tflops"),
        (("specs", "peak_fp32_tflops"), float("inf"), "specs.peak_fp32_tflops"),
        (("specs", "kernel_overhead_us"), -1, "specs.kernel_overhead_us"),
        (("specs", "eff_compute"), 1.5, "specs.eff_compute"),
        (("specs", "eff_memory"), 0, "specs.eff_memory"),
        (("specs", "fold_batchnorm"), "yes please", "specs.fold_batchnorm"),
        (("specs", "cores"), 2.5, "specs.cores"),
        (("specs", "source"), "", "specs.source"),
        (("specs", "estimates"), ["warp_speed"], "specs.estimates"),
        (("specs", "sources"), {"peak_fp32_tflops": 3}, "specs.sources.peak_fp32_tflops"),
    ],
)
def test_bad_values_name_the_field(
    tmp_path: Path, path: tuple[str, ...], value: Any, field: str
) -> None:
    message = load_error(tmp_path, changed(path, value))
    assert field in message, message


@pytest.mark.parametrize(
    ("path", "field"),
    [
        (("name",), "name"),
        (("measurement",), "measurement"),
        (("measurement", "backend"), "backend"),
        (("network", "input"), "input"),
        (("specs", "memory_bandwidth_gbs"), "memory_bandwidth_gbs"),
        (("specs", "source"), "source"),
    ],
)
def test_missing_keys(tmp_path: Path, path: tuple[str, ...], field: str) -> None:
    message = load_error(tmp_path, changed(path, None, delete=True))
    assert "missing" in message and field in message, message


def test_simulated_profile_needs_specs(tmp_path: Path) -> None:
    message = load_error(tmp_path, changed(("specs",), None, delete=True))
    assert "specs" in message and "simulated" in message
    # a measured profile may leave them out, or give only some
    measured = changed(("source",), "measured")
    del measured["specs"]
    assert load_profile(str(write(tmp_path, measured, "m.yaml"))).specs == {}
    measured["specs"] = {"cores": 2}
    assert load_profile(str(write(tmp_path, measured, "m2.yaml"))).specs == {"cores": 2}


def test_cpu_kinds_need_threads(tmp_path: Path) -> None:
    message = load_error(tmp_path, changed(("kind",), "arm"))
    assert "threads" in message


def test_shipped_name_must_match_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import latency.hardware as hardware

    write(tmp_path, changed(("name",), "other"))
    monkeypatch.setattr(hardware, "profiles_dir", lambda: tmp_path)
    with pytest.raises(HardwareError, match="does not match"):
        load_profile("toy")


def test_predictions_are_labelled_by_what_the_predictor_learned() -> None:
    # a model of measurements is still a model: never labelled plain "measured"
    assert load_profile("cpu").prediction_label == "measured-model"
    assert load_profile("p100").prediction_label == "simulated"


# --------------------------------------------- what the validation library adds (pydantic)


def test_one_problem_is_told_and_the_others_counted(tmp_path: Path) -> None:
    data = changed(("kind",), "abacus")
    data["measurement"]["batch_size"] = 0
    message = load_error(tmp_path, data)
    assert "kind must be one of cpu, x86, arm, cuda, got 'abacus'" in message
    assert message.endswith(" (and 1 more problem)"), message
    data["colour"] = "red"  # an unknown key is told first: it is often a misspelt field
    message = load_error(tmp_path, data)
    assert "unknown key 'colour'" in message and message.endswith("(and 2 more problems)")


@pytest.mark.parametrize(("path", "value", "needle"), [
    ((1,), 2, "unknown key '1'"),
    (("measurement", 1), 2, "measurement: unknown key '1'"),
    (("specs", "sources"), {1: "x"}, "specs.sources: key 1 must be a spec name"),
])
def test_keys_that_are_not_strings(tmp_path: Path, path: tuple[Any, ...], value: Any,
                                   needle: str) -> None:
    text = yaml.safe_dump(changed(path, value), sort_keys=False)
    assert needle in load_error(tmp_path, text)


def test_values_are_kept_as_written(tmp_path: Path) -> None:
    # pydantic would turn an int into a float where a number is expected; the profile
    # keeps what the YAML says (a profile's dict reads back as itself)
    data = changed(("specs", "memory_bandwidth_gbs"), 732)
    profile = load_profile(str(write(tmp_path, data)))
    assert type(profile.specs["memory_bandwidth_gbs"]) is int
    assert type(profile.specs["peak_fp32_tflops"]) is float
    with pytest.raises(HardwareError, match="network.input must be a list"):
        parse_profile(changed(("network", "input"), (3, 32, 32)), "toy.yaml")  # strict
