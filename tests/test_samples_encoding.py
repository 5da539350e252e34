"""The shared encoding, architecture sampling, and the sample dataset store."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest
import torch

from latency.samples import (
    SampleError,
    SampleWriter,
    load_samples,
    merge_samples,
    parse_shard,
    shard_ids,
    validate_row,
)
from search_spaces.derive import derive_genotype
from search_spaces.genotype_library import DARTS_V2, PDARTS
from search_spaces.op_spec import op_spec
from search_spaces.ops import DARTS_PRIMITIVES
from search_spaces.space import get_space

SPACE = get_space("darts")


def one_hot_weights(genotype):
    enc = torch.tensor(SPACE.encode(genotype)).view(2, 14, 8)
    return {"normal": enc[0], "reduce": enc[1]}


@pytest.mark.parametrize("genotype", [DARTS_V2, PDARTS])
def test_encoding_of_genotype_equals_encoding_of_its_one_hot_weights(genotype) -> None:
    enc = SPACE.encode(genotype)
    assert enc.shape == (SPACE.encoding_size,) == (224,)
    rows = enc.reshape(2, 14, 8)
    assert (rows.sum(-1) == 1).all()
    # 8 of the 14 edges carry an operation, the others are coded `none`
    assert (rows[:, :, 0] == 1).sum() == 2 * 6
    w = one_hot_weights(genotype)
    assert torch.equal(SPACE.encode_weights(w), torch.tensor(enc))
    # and the one-hot weights derive back to the same cells (edge order within a node
    # may differ: derivation lists a node's inputs by strength, ties by index)
    back = derive_genotype({k: v.numpy() for k, v in w.items()}, SPACE.full_edge_ops())

    def nodes(edges):
        return [set(edges[2 * i : 2 * i + 2]) for i in range(len(edges) // 2)]

    assert nodes(back.normal) == nodes(genotype.normal)
    assert nodes(back.reduce) == nodes(genotype.reduce)


def test_darts_v2_first_node_encoding_by_hand() -> None:
    rows = SPACE.encode(DARTS_V2).reshape(2, 14, 8)
    # DARTS_V2 normal node 2: sep_conv_3x3 from 0 and from 1 -> edges 0 and 1, op index 4
    assert rows[0, 0, 4] == 1 and rows[0, 1, 4] == 1
    # node 3: sep_conv_3x3 from 0 (edge 2), sep_conv_3x3 from 1 (edge 3); from 2 is none
    assert rows[0, 2, 4] == 1 and rows[0, 3, 4] == 1 and rows[0, 4, 0] == 1


def test_soft_encoding_scatters_pruned_columns_and_is_differentiable() -> None:
    edge_ops = {"normal": [["skip_connect", "sep_conv_3x3"]] * 14,
                "reduce": [["max_pool_3x3", "dil_conv_5x5"]] * 14}
    torch.manual_seed(0)
    alpha = {k: torch.randn(14, 2, dtype=torch.float64, requires_grad=True) for k in edge_ops}
    w = {k: torch.softmax(a, -1) for k, a in alpha.items()}
    enc = SPACE.encode_weights(w, edge_ops).view(2, 14, 8)
    # each edge's two weights land in the columns of its two ops (skip 3, sep 4; max_pool
    # 1, dil_conv_5x5 7), every other column is 0
    for c, cols in ((0, (3, 4)), (1, (1, 7))):
        cell = ("normal", "reduce")[c]
        torch.testing.assert_close(enc[c][:, list(cols)], w[cell])
        others = [k for k in range(8) if k not in cols]
        assert torch.count_nonzero(enc[c][:, others]) == 0
    # gradient of sum(enc^2) = sum(p^2) per edge: d/d a_j = 2 p_j (p_j - sum_k p_k^2)
    enc.view(-1)[torch.arange(224)].pow(2).sum().backward()
    for a in alpha.values():
        p = torch.softmax(a.detach(), -1)
        expected = 2 * p * (p - p.pow(2).sum(-1, keepdim=True))
        torch.testing.assert_close(a.grad, expected)
        assert expected.abs().max() > 1e-3  # not a vacuous comparison of zeros


def test_sampling_is_valid_seeded_and_strata_shift_heavy_share() -> None:
    rng = np.random.default_rng(0)
    gs = [SPACE.sample(rng) for _ in range(50)]
    for g in gs:
        g.validate(DARTS_PRIMITIVES)
        assert all(op != "none" for op, _ in g.normal + g.reduce)
    again = [SPACE.sample(np.random.default_rng(0)) for _ in range(1)]
    assert again[0] == gs[0]

    def heavy(share):
        r = np.random.default_rng(1)
        cells = [SPACE.sample(r, share) for _ in range(40)]
        return np.mean([op_spec(op).heavy for g in cells for op, _ in g.normal + g.reduce])

    assert heavy(0.1) < 0.2 < 0.8 < heavy(0.9)


# ------------------------------------------------------------------ sample store


def row(i, lat=1.0, **kw):
    base = {"id": i, "space": "darts", "arch": DARTS_V2.to_dict(), "latency_ms": lat,
            "hardware": "cpu", "source": "measured", "backend": "torch-cpu",
            "batch_size": 1, "timestamp": "2026-11-24T00:00:00+00:00"}
    return {**base, **kw}


def test_append_and_resume_after_a_torn_line(tmp_path) -> None:
    path = tmp_path / "s.jsonl"
    w = SampleWriter(path)
    w.append(row(0))
    w.append(row(1, 2.0))
    with open(path, "ab") as f:  # a kill in the middle of the third write
        f.write(b'{"id": 2, "latency_')
    assert [r["id"] for r in load_samples(path)] == [0, 1]
    w2 = SampleWriter(path)  # resume: the torn line is cut, ids 0 and 1 are done
    assert w2.keys == {(0, 0), (0, 1)}
    w2.append(row(2, 3.0))
    assert [r["latency_ms"] for r in load_samples(path)] == [1.0, 2.0, 3.0]
    with pytest.raises(SampleError, match="already present"):
        w2.append(row(1))


@pytest.mark.parametrize(
    "bad, needle",
    [(row(0, float("nan")), "finite"), (row(0, -1.0), "positive"),
     ({"id": 0}, "missing fields"), (row(0, source="guessed"), "source")],
)
def test_invalid_rows_are_refused(tmp_path, bad, needle) -> None:
    with pytest.raises(SampleError, match=needle):
        SampleWriter(tmp_path / "s.jsonl").append(bad)


def test_corrupt_middle_line_is_a_one_line_error(tmp_path) -> None:
    path = tmp_path / "s.jsonl"
    path.write_text(json.dumps(row(0)) + "\nnot json\n" + json.dumps(row(1)) + "\n")
    with pytest.raises(SampleError, match=r"s.jsonl:2"):
        load_samples(path)


def test_shards_partition_ids_and_merge(tmp_path) -> None:
    assert parse_shard("2/3") == (1, 3)
    with pytest.raises(SampleError):
        parse_shard("4/3")
    parts = [shard_ids(10, i, 3) for i in range(3)]
    assert sorted(sum(parts, [])) == list(range(10))
    files = []
    for i, ids in enumerate(parts):
        w = SampleWriter(tmp_path / f"s{i}.jsonl")
        for k in ids:
            w.append(row(k, float(k + 1)))
        files.append(tmp_path / f"s{i}.jsonl")
    assert merge_samples(files, tmp_path / "all.jsonl") == (10, 0)
    assert [r["id"] for r in load_samples(tmp_path / "all.jsonl")] == list(range(10))
    other = tmp_path / "other.jsonl"
    SampleWriter(other).append(row(99, hardware="p100"))
    with pytest.raises(SampleError, match="different"):
        merge_samples([files[0], other], tmp_path / "x.jsonl")


def test_merge_keeps_every_distinct_measurement(tmp_path) -> None:
    """Two runs with different seeds reuse ids 0..4: both survive the merge; a file merged
    twice adds nothing; a second measurement of the same sample is kept beside the first."""
    a, b, again = tmp_path / "seed0.jsonl", tmp_path / "seed7.jsonl", tmp_path / "again.jsonl"
    for path, seed in ((a, 0), (b, 7)):
        w = SampleWriter(path)
        for k in range(5):
            w.append(row(k, 1.0 + k + seed, seed=seed))
    SampleWriter(again).append(row(3, 99.0, seed=7))
    n, dropped = merge_samples([a, b, a, again], tmp_path / "all.jsonl")
    assert (n, dropped) == (11, 5)
    merged = load_samples(tmp_path / "all.jsonl")
    assert [(r["seed"], r["id"]) for r in merged][:6] == [(0, 0), (0, 1), (0, 2), (0, 3),
                                                          (0, 4), (7, 0)]
    assert [r["latency_ms"] for r in merged if (r["seed"], r["id"]) == (7, 3)] == [11.0, 99.0]


def test_merge_never_overwrites_its_out(tmp_path) -> None:
    src = tmp_path / "s.jsonl"
    SampleWriter(src).append(row(0))
    out = tmp_path / "notes.txt"
    out.write_text("my notes\n")
    with pytest.raises(SampleError, match="already exists"):
        merge_samples([src], out)
    assert out.read_text() == "my notes\n"


@pytest.mark.parametrize("content", [b"my notes\n", b"hello", b'{"a": 1}', b"a,b\n1,2\n",
                                     b'{"a": 1}\n'])
def test_a_file_that_is_not_a_sample_file_is_refused_not_truncated(tmp_path, content) -> None:
    path = tmp_path / "x.jsonl"
    path.write_bytes(content)
    with pytest.raises(SampleError):
        SampleWriter(path)
    assert path.read_bytes() == content


def test_a_torn_first_row_is_cut(tmp_path) -> None:
    """A kill during the very first append leaves only an unfinished object."""
    path = tmp_path / "s.jsonl"
    path.write_bytes(json.dumps(row(0), sort_keys=True).encode()[:40])
    w = SampleWriter(path)
    assert w.count == 0 and path.read_bytes() == b""


def test_a_file_of_another_profile_or_space_is_refused(tmp_path) -> None:
    path = tmp_path / "cpu.jsonl"
    SampleWriter(path).append(row(0))
    before = path.read_bytes()
    with pytest.raises(SampleError, match="hardware cpu, not p100"):
        SampleWriter(path, expect={"hardware": "p100", "space": "darts"})
    with pytest.raises(SampleError, match="space darts, not nb201"):
        SampleWriter(path, expect={"hardware": "cpu", "space": "nb201"})
    assert path.read_bytes() == before


ROW: dict[str, Any] = {"id": 0, "space": "darts", "arch": {}, "latency_ms": 1.0,
                       "hardware": "cpu", "source": "measured", "backend": "torch-cpu",
                       "batch_size": 1, "timestamp": "2026-11-24T00:00:00+00:00"}


@pytest.mark.parametrize(("change", "told"), [
    ({"latency_ms": "1"}, "latency_ms must be a positive, finite number, got '1'"),
    ({"latency_ms": True}, "latency_ms must be a positive, finite number, got True"),
    ({"id": 1.0}, "id must be a non-negative integer, got 1.0"),
    ({"seed": "7"}, "seed must be a non-negative integer, got '7'"),
    ({"batch_size": 0}, "batch_size must be a positive integer, got 0"),
    ({"hardware": 3}, "hardware must be a non-empty string, got 3"),
    ({"space": ""}, "space must be a non-empty string, got ''"),
    ({"id": -1, "source": "guessed"}, "id must be a non-negative integer, got -1 "
                                      "(and 1 more problem)"),
])
def test_sample_rows_are_checked_field_by_field(change: dict[str, Any], told: str) -> None:
    with pytest.raises(SampleError) as info:
        validate_row({**ROW, **change}, "s.jsonl:3")
    assert str(info.value) == f"s.jsonl:3: {told}"


def test_a_valid_row_is_returned_as_it_is() -> None:
    good = {**ROW, "latency_ms": 2, "seed": 3, "threads": None, "noisy": False}
    assert validate_row(good, "s.jsonl:1") is good and good["latency_ms"] == 2
