"""`nas profile`: sampled architectures, resumable appends, shards, measured vs simulated."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from latency.hardware import load_profile, profile_names
from latency.measure import TimingConfig
from latency.profiling import profile_hardware, sample_genotype
from latency.samples import load_samples, merge_samples
from latency.simulate import simulate_genotype
from nas.cli.main import main
from search_spaces.space import get_space

SPACE = get_space("darts")
FAST = TimingConfig(warmup_runs=1, warmup_s=0.0, runs=3, min_time_s=0.0, max_attempts=1)


def quiet(msg: str) -> None:
    pass


def test_sample_sequence_is_a_pure_function_of_seed_and_id() -> None:
    assert sample_genotype(SPACE, 0, 7) == sample_genotype(SPACE, 0, 7)
    assert sample_genotype(SPACE, 0, 7) != sample_genotype(SPACE, 1, 7)


def test_simulated_profile_rows_and_resume_without_duplicates(tmp_path) -> None:
    out = tmp_path / "p100.jsonl"
    p100 = load_profile("p100")
    first = profile_hardware(p100, SPACE, out, samples=3, log=quiet)
    assert first.written == 3 and first.label == "simulated"
    again = profile_hardware(p100, SPACE, out, samples=5, log=quiet)
    assert (again.already, again.written) == (3, 2)
    rows = load_samples(out)
    assert [r["id"] for r in rows] == [0, 1, 2, 3, 4]
    assert all(r["source"] == "simulated" and r["backend"] == "roofline-model" for r in rows)
    # each row is the roofline latency of the sample its id names (seed 0)
    for r in rows:
        genotype = sample_genotype(SPACE, 0, r["id"])
        assert r["arch"] == genotype.to_dict()
        assert r["latency_ms"] == pytest.approx(simulate_genotype(genotype, p100).ms, rel=1e-12)


def test_measured_profile_records_how_it_was_measured(tmp_path) -> None:
    out = tmp_path / "cpu.jsonl"
    s = profile_hardware(load_profile("cpu"), SPACE, out, samples=2, timing=FAST, log=quiet)
    assert s.written == 2 and s.stability is not None and "relative_diff" in s.stability
    row = load_samples(out)[0]
    assert row["source"] == "measured" and row["backend"] == "torch-cpu"
    assert row["threads"] == 1 and row["batch_size"] == 1 and row["repeats"] >= 3
    assert row["arch"] == sample_genotype(SPACE, 0, 0).to_dict()
    # wall-clock: positive, finite, and far under 10 s for the 8-cell digits network
    assert row["fingerprint"]["hash"] and 0 < row["latency_ms"] < 10_000
    assert math.isfinite(row["latency_ms"])
    # both rows were timed in one interleaved group with the reference network
    rows = load_samples(out)
    assert 0 < rows[0]["reference_ms"] < 10_000
    assert rows[0]["reference_ms"] == rows[1]["reference_ms"]
    ref = s.to_dict()["reference"]
    assert ref["groups"] == 1 and ref["median_ms"] == rows[0]["reference_ms"]


def test_cpu_measures_activation_pairs(tmp_path) -> None:
    """`nas profile --space darts-act` on the measured profile times the sampled pairs'
    networks as built (SiLU, ELU, ... inside the convolutions), nothing modelled."""
    from search_spaces.activation_encoding import activation_space
    from search_spaces.activations import split_pair

    space = activation_space(SPACE, ("silu", "elu"))
    out = tmp_path / "cpu.darts-act.jsonl"
    s = profile_hardware(load_profile("cpu"), space, out, samples=2, timing=FAST, log=quiet)
    assert s.written == 2
    rows = load_samples(out)
    assert all(r["space"] == "darts-act" and r["source"] == "measured" for r in rows)
    ops = [op for r in rows for cell in ("normal", "reduce") for op, _ in r["arch"][cell]]
    convs = [op for op in ops if op.startswith(("sep", "dil"))]
    assert convs and all(split_pair(op)[1] in ("silu", "elu") for op in convs)
    assert all(0 < r["latency_ms"] < 10_000 and r["energy_mj"] > 0 for r in rows)


def test_reference_drift_summary_by_hand() -> None:
    from latency.profiling import reference_drift

    assert reference_drift([]) is None
    r = reference_drift([1.0, 2.0, 3.0])  # percentiles 1.1, 2.0, 2.9 (linear)
    assert r["median_ms"] == 2.0 and r["range_5_95"] == pytest.approx((2.9 - 1.1) / 2.0)


def test_shards_profile_disjoint_ids_that_merge_to_the_whole(tmp_path) -> None:
    p100 = load_profile("p100")
    files = []
    for i in range(2):
        f = tmp_path / f"shard{i}.jsonl"
        profile_hardware(p100, SPACE, f, samples=4, shard=(i, 2), log=quiet)
        files.append(f)
    assert [r["id"] for r in load_samples(files[1])] == [1, 3]
    assert merge_samples(files, tmp_path / "all.jsonl") == (4, 0)


def test_cli_profile_json_and_errors(tmp_path, capsys) -> None:
    out = tmp_path / "s.jsonl"
    assert main(["profile", "--hardware", "p100", "--samples", "2", "--out", str(out),
                 "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["written"] == 2 and summary["label"] == "simulated"
    # the CLI writes the same rows as the library call
    rows = load_samples(out)
    assert [r["arch"] for r in rows] == [sample_genotype(SPACE, 0, i).to_dict() for i in (0, 1)]
    assert [r["latency_ms"] for r in rows] == pytest.approx(
        [simulate_genotype(sample_genotype(SPACE, 0, i), "p100").ms for i in (0, 1)])
    for args, needle in [(["profile", "--hardware", "abacus"], "unknown hardware"),
                         (["profile", "--hardware", "p100", "--shard", "3/2"], "shard"),
                         (["profile"], "--hardware")]:
        assert main(args) == 2
        err = capsys.readouterr().err
        assert needle in err and err.count("\n") == 1


@pytest.mark.slow
def test_profile_cpu_default_run(tmp_path) -> None:
    s = profile_hardware(load_profile("cpu"), SPACE, tmp_path / "c.jsonl", samples=20, log=quiet)
    assert s.written == 20 and abs(s.stability["relative_diff"]) < 0.5


NB201_ROWS = [
    ("|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_3x3~1|"
     "skip_connect~2|", 6.7),
    ("|avg_pool_3x3~0|+|nor_conv_1x1~0|skip_connect~1|+|nor_conv_1x1~0|skip_connect~1|"
     "skip_connect~2|", 5.5),
]


@pytest.fixture
def tmp_profiles(tmp_path, monkeypatch):
    """The user's profile directory (where imports create profiles), empty at first."""
    from latency.hardware import user_profiles_dir

    monkeypatch.setenv("HW_NAS_HOME", str(tmp_path / "home"))
    return user_profiles_dir()


def test_user_files_go_to_the_user_directory_and_shadow_shipped_ones(tmp_path, tmp_profiles,
                                                                     capsys) -> None:
    from latency.hardware import profile_file, profiles_dir
    from latency.predictor.locate import default_predictor_path, default_samples_path

    shipped = profiles_dir() / "p100.predictor"
    assert default_predictor_path("p100") == shipped  # read: the shipped one
    assert default_predictor_path("p100", for_writing=True) == tmp_profiles / "p100.predictor"
    assert default_samples_path("cpu", for_writing=True) == tmp_profiles / "cpu.samples.jsonl"
    # profiling with the default --out writes into the user directory, not the package
    assert main(["profile", "--hardware", "p100", "--samples", "2"]) == 0
    assert len(load_samples(tmp_profiles / "p100.samples.jsonl")) == 2
    assert profile_file("p100.samples.jsonl") == tmp_profiles / "p100.samples.jsonl"
    # a user's profile of the same name shadows the shipped one
    text = (profiles_dir() / "p100.yaml").read_text().replace(
        "device: ", "device: my own P100, ", 1)
    (tmp_profiles / "p100.yaml").write_text(text)
    assert load_profile("p100").device.startswith("my own P100")
    capsys.readouterr()


def write_csv(path, rows, header="index,arch,gpu_ms"):
    path.write_text(header + "\n" + "".join(f"{i},{a},{v}\n" for i, (a, v) in enumerate(rows)))
    return path


def test_import_csv_creates_an_imported_profile_and_samples(tmp_path, tmp_profiles,
                                                            capsys) -> None:
    csv_path = write_csv(tmp_path / "m.csv", NB201_ROWS)
    out = tmp_path / "gpu.jsonl"
    assert main(["profile", "import", str(csv_path), "--space", "nb201", "--latency-column",
                 "gpu_ms", "--hardware", "some-gpu", "--kind", "cuda", "--out", str(out)]) == 0
    rows = load_samples(out)
    assert [r["latency_ms"] for r in rows] == [6.7, 5.5]
    assert [r["arch"] for r in rows] == [a for a, _ in NB201_ROWS]  # the CSV's cells, in order
    assert [r["id"] for r in rows] == [0, 1]
    assert (tmp_profiles / "some-gpu.yaml").is_file()  # created in the user's directory
    assert rows[0]["source"] == "imported" and rows[0]["space"] == "nb201"
    assert load_profile("some-gpu").source == "imported"


@pytest.mark.parametrize(
    "rows, column, needle",
    [([("|nor_conv_9x9~0|+|none~0|none~1|+|none~0|none~1|none~2|", 1.0)], "gpu_ms",
      "m.csv:2"),
     ([(NB201_ROWS[0][0], "nan")], "gpu_ms", "finite positive"),
     ([(NB201_ROWS[0][0], "fast")], "gpu_ms", "not a number"),
     (NB201_ROWS, "cpu_ms", "no column 'cpu_ms'")],
)
def test_import_csv_errors_name_the_row(tmp_path, tmp_profiles, capsys, rows, column,
                                        needle) -> None:
    csv_path = write_csv(tmp_path / "m.csv", rows)
    code = main(["profile", "import", str(csv_path), "--space", "nb201", "--latency-column",
                 column, "--hardware", "g", "--kind", "cuda", "--out", str(tmp_path / "o.jsonl")])
    err = capsys.readouterr().err
    assert code == 2 and needle in err and err.count("\n") == 1
    assert not (tmp_path / "o.jsonl").exists()
    # a failed import leaves no profile behind to show up in every list of profiles
    assert not (tmp_profiles / "g.yaml").exists() and "g" not in profile_names()


def test_predictor_train_on_imported_nb201_adds_equivalent_cells(tmp_path, tmp_profiles,
                                                                  capsys, monkeypatch) -> None:
    """The report counts the equivalent cells trained on: those of the training rows only."""
    import latency.predictor.train as train_mod
    from latency.predictor.mlp import MLPConfig
    from search_spaces.nb201 import equivalent_archs
    from search_spaces.nb201_space import NB201_SPACE

    monkeypatch.setattr(train_mod, "MLPConfig", lambda seed=0: MLPConfig(
        members=2, steps=100, weight_decay=1.0, huber_delta=0.05, encoding_l2=0.0, seed=seed))
    rng = np.random.default_rng(0)
    archs = [str(NB201_SPACE.sample(rng)) for _ in range(40)]
    archs[:4] = ["|skip_connect~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|none~0|none~1|none~2|",
                 "|skip_connect~0|+|nor_conv_1x1~0|none~1|+|avg_pool_3x3~0|none~1|none~2|",
                 "|skip_connect~0|+|none~0|nor_conv_3x3~1|+|none~0|none~1|none~2|",
                 "|skip_connect~0|+|avg_pool_3x3~0|avg_pool_3x3~1|+|none~0|none~1|none~2|"]
    rows = [(a, 2.0 + a.count("conv")) for a in archs]
    out = tmp_path / "gpu.jsonl"
    assert main(["profile", "import", str(write_csv(tmp_path / "m.csv", rows)), "--space",
                 "nb201", "--latency-column", "gpu_ms", "--hardware", "some-gpu", "--kind",
                 "cuda", "--out", str(out)]) == 0
    capsys.readouterr()
    assert main(["predictor", "train", "--hardware", "some-gpu", "--samples", str(out),
                 "--out", str(tmp_path / "pred"), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    train, _ = train_mod.split(40, 0.2, 0, None)
    expected = sum(len(equivalent_archs(archs[i])) for i in train)
    assert expected > 0 and summary["n_equivalents_added"] == expected
    assert summary["n_train"] == len(train) == 32
