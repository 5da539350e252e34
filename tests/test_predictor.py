"""Latency predictor: metrics, MLP ensemble, differentiable forward, baselines, artifact."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from latency.predictor import (
    BASELINES,
    LatencyMLP,
    MLPConfig,
    kendall_tau,
    layout_for_space,
    load_predictor,
    make_baseline,
    mape,
    report,
    rmse,
    save_predictor,
    within,
)
from search_spaces.errors import InputError
from search_spaces.nb201 import NB201_OPS, encode, encode_weights, one_hot
from search_spaces.nb201_space import NB201_SPACE

LAYOUT = layout_for_space(NB201_SPACE)
FAST = dict(members=3, steps=400, weight_decay=1.0, huber_delta=0.05)
DATA = Path(__file__).resolve().parents[2] / "shared/data/nb201-latency/nb201_latency.csv"

torch.set_num_threads(1)


def synthetic(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Additive latency: a base plus a per-(edge, op) cost, with 1 % noise."""
    rng = np.random.default_rng(seed)
    cost = rng.uniform(0.0, 2.0, size=(6, 5))
    cost[:, 0] = 0.1  # `none` is cheap
    archs = [NB201_SPACE.sample(rng) for _ in range(n)]
    X = np.stack([encode(a) for a in archs])
    y = np.array([3.0 + (one_hot(a) * cost).sum() for a in archs])
    return X, y * (1 + 0.01 * rng.standard_normal(n))


@pytest.fixture(scope="module")
def fitted() -> tuple[LatencyMLP, np.ndarray, np.ndarray]:
    X, y = synthetic(400)
    return LatencyMLP(LAYOUT, MLPConfig(**FAST)).fit(X[:300], y[:300]), X, y


def test_metrics_on_hand_computed_values():
    y = np.array([1.0, 2.0, 4.0, 10.0])
    p = np.array([1.1, 1.8, 4.0, 9.0])  # relative errors 0.1, 0.1, 0, 0.1
    assert mape(y, p) == pytest.approx(0.075)
    assert within(0.10)(y, p) == 1.0
    assert within(0.05)(y, p) == 0.25
    assert rmse(y, p) == pytest.approx(np.sqrt((0.01 + 0.04 + 0 + 1.0) / 4))
    assert kendall_tau(y, p) == pytest.approx(1.0)
    assert kendall_tau(y, p[::-1]) == pytest.approx(-1.0)  # every pair discordant
    # 6 pairs, one discordant (2.0 < 4.0 but 5.0 > 3.0): (5 - 1) / 6
    assert kendall_tau(y, np.array([1.0, 5.0, 3.0, 10.0])) == pytest.approx(4 / 6)
    r = report(y, p)
    assert set(r) == {"mape", "within_5", "within_10", "kendall_tau", "spearman", "rmse"}
    with pytest.raises(InputError):
        mape([1.0, 2.0], [1.0])


def test_mlp_fits_additive_latency(fitted):
    model, X, y = fitted
    mean, std = model.predict(X[300:])
    assert mape(y[300:], mean) < 0.05
    # mean and spread are those of the three members' own predictions, in ms
    with torch.no_grad():
        members = (model.member_outputs(torch.from_numpy(X[300:]).float()).double()
                   * model.scale_ms.item()).numpy()
    assert members.shape == (3, 100)
    np.testing.assert_allclose(mean, members.mean(0), rtol=1e-6)
    np.testing.assert_allclose(std, members.std(0), rtol=1e-5, atol=1e-9)
    assert (std > 0).all()
    assert model.scale_ms.item() == pytest.approx(y[:300].mean())


def test_fit_is_deterministic():
    X, y = synthetic(120, seed=3)
    cfg = dict(members=2, steps=100, weight_decay=1.0, huber_delta=0.05)
    a = LatencyMLP(LAYOUT, MLPConfig(**cfg)).fit(X, y).predict(X)[0]
    b = LatencyMLP(LAYOUT, MLPConfig(**cfg)).fit(X, y).predict(X)[0]
    np.testing.assert_array_equal(a, b)


def test_forward_is_normalised_and_differentiable(fitted):
    model, X, _ = fitted
    enc = torch.from_numpy(X[:4])
    np.testing.assert_allclose(
        model(enc).detach().double().numpy() * model.scale_ms.item(), model.predict(X[:4])[0],
        rtol=1e-5,
    )
    torch.manual_seed(0)
    alpha = torch.randn(6, 5, dtype=torch.float64)
    m64 = model.double()
    try:
        def f(a: torch.Tensor) -> torch.Tensor:
            return m64(encode_weights(torch.softmax(a, dim=-1)))

        a = alpha.clone().requires_grad_(True)
        f(a).backward()
        eps = 1e-6
        for e, o in [(0, 0), (1, 3), (5, 2)]:
            d = torch.zeros_like(alpha)
            d[e, o] = eps
            fd = ((f(alpha + d) - f(alpha - d)) / (2 * eps)).item()
            assert fd == pytest.approx(a.grad[e, o].item(), rel=1e-4, abs=1e-8)
        assert a.grad.abs().sum() > 0
    finally:
        model.float()


def test_wrong_encoding_size_is_refused(fitted):
    model, _, _ = fitted
    with pytest.raises(InputError, match="48"):
        model.predict(np.zeros((2, 30)))
    with pytest.raises(InputError, match="positive"):
        LatencyMLP(LAYOUT, MLPConfig(**FAST)).fit(np.zeros((20, 48)), -np.ones(20))


def test_baselines_registry():
    X, y = synthetic(200, seed=1)
    for name in BASELINES:
        pred = make_baseline(name, LAYOUT, seed=0).fit(X[:150], y[:150]).predict(X[150:])
        assert pred.shape == (50,) and np.isfinite(pred).all()
    assert mape(y[150:], make_baseline("ridge_onehot", LAYOUT).fit(X[:150], y[:150])
                .predict(X[150:])) < 0.03  # the data are additive: the linear model fits
    with pytest.raises(InputError, match="unknown baseline"):
        make_baseline("svm", LAYOUT)


def _save(model: LatencyMLP, path: Path) -> Path:
    return save_predictor(
        model, path, space="nb201", op_names=NB201_OPS, hardware="test-device",
        dataset="synthetic", metrics={"mape": 0.01},
    )


def test_artifact_round_trip(fitted, tmp_path):
    model, X, _ = fitted
    d = _save(model, tmp_path / "pred")
    loaded, meta = load_predictor(d, op_names=NB201_OPS, encoding_size=48)
    for a, b in zip(model.predict(X), loaded.predict(X)):
        np.testing.assert_array_equal(a, b)
    assert meta["space"] == "nb201" and meta["hardware"] == "test-device"
    assert meta["target_normalisation"]["scale_ms"] == pytest.approx(model.scale_ms.item())
    assert meta["heldout_metrics"] == {"mape": 0.01}


def test_artifact_refuses_other_op_set_or_size(fitted, tmp_path):
    model, _, _ = fitted
    d = _save(model, tmp_path / "pred")
    darts_like = ("none", "max_pool_3x3", "avg_pool_3x3", "skip_connect", "sep_conv_3x3")
    with pytest.raises(InputError, match="op set") as info:
        load_predictor(d, op_names=darts_like)
    assert "\n" not in str(info.value)
    with pytest.raises(InputError, match="size 48"):
        load_predictor(d, encoding_size=224)


@pytest.mark.parametrize("damage", ["weights", "weights_swapped", "json", "json_shape", "missing"])
def test_corrupt_artifact_is_one_line_input_error(fitted, tmp_path, damage):
    model, _, _ = fitted
    d = _save(model, tmp_path / "pred")
    weights, meta = d / "weights.pt", d / "predictor.json"
    if damage == "weights":
        weights.write_bytes(weights.read_bytes()[:100])
    elif damage == "weights_swapped":  # a valid torch file, but with a matching checksum
        torch.save({"x": torch.zeros(1)}, weights)
        m = json.loads(meta.read_text())
        import hashlib

        m["weights_sha256"] = hashlib.sha256(weights.read_bytes()).hexdigest()
        meta.write_text(json.dumps(m))
    elif damage == "json":
        meta.write_text(meta.read_text()[:50])
    elif damage == "json_shape":
        meta.write_text("[1, 2, 3]")
    else:
        weights.unlink()
    with pytest.raises(InputError) as info:
        load_predictor(d, op_names=NB201_OPS, encoding_size=48)
    assert "\n" not in str(info.value)


@pytest.mark.skipif(not DATA.exists(), reason="shared NB201 latency data not present")
def test_quick_training_on_measured_gpu_latencies():
    import csv

    with DATA.open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    rng = np.random.default_rng(0)
    pick = rng.permutation(len(rows))[:700]
    X = np.stack([encode(rows[i]["arch"]) for i in pick])
    y = np.array([float(rows[i]["titan_rtx_bs1_ms"]) for i in pick])
    model = LatencyMLP(LAYOUT, MLPConfig(**FAST)).fit(X[:400], y[:400])
    r = report(y[400:], model.predict(X[400:])[0])
    assert r["within_10"] > 0.9 and r["kendall_tau"] > 0.8


def test_frozen_predictor_passes_gradient_to_weights_only(fitted):
    model, _, _ = fitted
    model.zero_grad(set_to_none=True)
    model.freeze()
    m64 = model.double()
    try:
        w = torch.full((6, 5), 0.2, dtype=torch.float64, requires_grad=True)
        m64(encode_weights(w)).backward()
        assert w.grad is not None
        assert all(p.grad is None for p in model.parameters())
        # the gradient that reaches the weights is the right one (finite differences)
        eps = 1e-6
        for e, o in [(0, 0), (2, 3), (5, 4)]:
            d = torch.zeros_like(w)
            d[e, o] = eps
            with torch.no_grad():
                fd = ((m64(encode_weights(w + d)) - m64(encode_weights(w - d))) / (2 * eps))
            assert w.grad[e, o].item() == pytest.approx(fd.item(), rel=1e-5, abs=1e-9)
        assert w.grad.abs().max() > 1e-4
    finally:
        model.requires_grad_(True)
        model.float()


# ----------------------------------------------------------- DARTS edge-group features

def _darts():
    from search_spaces.space import get_space

    return get_space("darts")


def test_darts_layout_groups_edges_by_stride():
    from search_spaces.encoding import edge_index

    space = _darts()
    lay = layout_for_space(space)
    assert lay.edge_groups is not None and len(lay.edge_groups) == 3
    flat = sorted(e for g in lay.edge_groups for e in g)
    assert flat == list(range(2 * space.num_edges))  # every edge in exactly one group
    rows = edge_index(space.steps)
    stride2 = {space.num_edges + r for (i, _), r in rows.items() if i < 2}
    assert set(lay.edge_groups[1]) == stride2 and len(stride2) == 8
    assert lay.num_features == space.encoding_size + len(space.op_names) * 4
    # the layout travels through JSON; a layout written before groups existed has none
    from latency.predictor.features import FeatureLayout

    assert FeatureLayout.from_dict(lay.to_dict()) == lay
    old = {k: v for k, v in lay.to_dict().items() if k != "edge_groups"}
    assert FeatureLayout.from_dict(old).edge_groups is None
    with pytest.raises(InputError, match="outside"):
        FeatureLayout.from_dict({**lay.to_dict(), "edge_groups": [[0, 999]]})
    assert layout_for_space(NB201_SPACE).edge_groups is None  # NB201: one shape per edge


def test_darts_group_counts_soft_agrees_with_onehot_and_is_differentiable():
    from latency.predictor import FeatureMap
    from search_spaces.genotype_library import resolve_genotype as get_genotype

    space = _darts()
    lay = layout_for_space(space)
    fmap = FeatureMap(lay).double()
    geno = get_genotype("DARTS_V2")
    enc = torch.from_numpy(space.encode(geno)).double()
    onehot = enc.reshape(2, space.num_edges, len(space.op_names))
    soft = space.encode_weights({"normal": onehot[0], "reduce": onehot[1]})
    torch.testing.assert_close(fmap(soft), fmap(enc))
    counts = fmap(enc)[-3 * len(space.op_names):].reshape(3, -1)
    assert counts.sum(dim=1).tolist() == [14.0, 8.0, 6.0]
    none = space.op_names.index("none")
    assert counts[0].sum() - counts[0, none] == 8  # 2 inputs x 4 nodes in the normal cell

    torch.manual_seed(0)
    alpha = torch.randn(2, space.num_edges, len(space.op_names), dtype=torch.float64)
    probe = torch.randn(lay.num_features, dtype=torch.float64)

    def f(a: torch.Tensor) -> torch.Tensor:
        w = torch.softmax(a, dim=-1)
        return (fmap(space.encode_weights({"normal": w[0], "reduce": w[1]})) * probe).sum()

    a = alpha.clone().requires_grad_(True)
    f(a).backward()
    eps = 1e-6
    for idx in [(0, 0, 0), (1, 2, 5), (1, 20 - space.num_edges, 3)]:
        d = torch.zeros_like(alpha)
        d[idx] = eps
        fd = ((f(alpha + d) - f(alpha - d)) / (2 * eps)).item()
        assert fd == pytest.approx(a.grad[idx].item(), rel=1e-5, abs=1e-8)


def test_darts_predictor_round_trip_and_old_config(tmp_path):
    space = _darts()
    lay = layout_for_space(space)
    rng = np.random.default_rng(0)
    genos = [space.sample(rng) for _ in range(80)]
    X = np.stack([space.encode(g) for g in genos])
    y = 2.0 + X @ rng.uniform(0.0, 0.1, size=X.shape[1])
    cfg = dict(members=2, steps=150, weight_decay=1.0, huber_delta=0.05,
               encoding_l2=(0.0, 0.1))
    model = LatencyMLP(lay, MLPConfig(**cfg)).fit(X, y)
    assert model.config.chosen_encoding_l2 in (0.0, 0.1)
    d = save_predictor(model, tmp_path / "p", space="darts", op_names=space.op_names,
                       hardware="test", dataset="synthetic")
    loaded, meta = load_predictor(d, op_names=space.op_names,
                                  encoding_size=space.encoding_size)
    np.testing.assert_array_equal(model.predict(X)[0], loaded.predict(X)[0])
    assert meta["feature_layout"]["edge_groups"] is not None
    # a config written before `encoding_l2` existed still loads (trained without it)
    old = {k: v for k, v in model.config.to_dict().items()
           if k not in ("encoding_l2", "chosen_encoding_l2")}
    assert MLPConfig.from_dict(old).encoding_l2 == 0.0


@pytest.mark.parametrize("name", ["p100", "raspi4"])
def test_shipped_predictors_still_load(name):
    from latency.hardware import profiles_dir

    path = profiles_dir() / f"{name}.predictor"
    if not path.exists():
        pytest.skip(f"{path} not shipped")
    space = _darts()
    model, meta = load_predictor(path, op_names=space.op_names,
                                 encoding_size=space.encoding_size)
    from search_spaces.genotype_library import resolve_genotype as get_genotype

    ms, _ = model.predict(space.encode(get_genotype("PDARTS"))[None])
    assert np.isfinite(ms).all() and meta["hardware"] == name
    # both profiles are simulated: the predictor learned the roofline simulator, and a
    # predictor that loads wrongly (another profile's weights, a lost scale) is far off it
    from latency.simulate import simulate_genotype

    assert ms[0] == pytest.approx(simulate_genotype(get_genotype("PDARTS"), name).ms, rel=0.05)


def test_reference_normalisation_divides_out_the_machine_state() -> None:
    from latency.predictor.train import reference_normalised

    # three rows timed in rounds where the machine ran 0%, +10% and -5% slow
    rows = [{"reference_ms": 2.0}, {"reference_ms": 2.2}, {"reference_ms": 1.9}]
    y = np.array([4.0, 5.5, 0.95])
    out, ref = reference_normalised(rows, y)
    assert ref == 2.0  # the median reference
    assert out == pytest.approx([4.0, 5.0, 1.0])
    out, ref = reference_normalised(rows, y, reference_ms=4.0)
    assert ref == 4.0 and out == pytest.approx([8.0, 10.0, 2.0])
    # one row without a reference (simulated / imported data): labels untouched
    same, none = reference_normalised(rows + [{"latency_ms": 1.0}], np.append(y, 1.0))
    assert none is None and same.tolist() == [4.0, 5.5, 0.95, 1.0]


# ------------------------------------------------------------ equivalent cells as data
def test_equivalent_archs_partition_the_space() -> None:
    from search_spaces.nb201 import _cells_by_computation, computation_key, equivalent_archs

    groups = _cells_by_computation()
    assert sum(len(g) for g in groups.values()) == 5 ** 6
    twin = "|skip_connect~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|nor_conv_1x1~0|none~1|none~2|"
    others = equivalent_archs(twin)
    # ops into node 2 swap, ops into node 3 from nodes 0 and 1 swap: 2 x 2 - 1 others
    assert len(others) == 3 and all(computation_key(o) == computation_key(twin) for o in others)
    for o in others:  # symmetric
        assert twin in {str(a) for a in equivalent_archs(o)}
    # node 1 computed by a conv: no two inputs are equal, no equivalents
    assert equivalent_archs(
        "|nor_conv_3x3~0|+|nor_conv_3x3~0|none~1|+|none~0|none~1|nor_conv_3x3~2|") == ()


def test_with_equivalents_adds_them_with_the_row_label_and_its_group() -> None:
    from latency.predictor.augment import with_equivalents

    a = "|skip_connect~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|nor_conv_1x1~0|none~1|none~2|"
    b = "|nor_conv_3x3~0|+|nor_conv_3x3~0|none~1|+|none~0|none~1|nor_conv_3x3~2|"  # no twins
    X = np.stack([encode(a), encode(b)]).astype(np.float32)
    y = np.array([2.0, 5.0])
    X2, y2, g = with_equivalents(NB201_SPACE, [a, b], X, y)
    assert X2.shape == (5, X.shape[1]) and (X2[:2] == X).all()
    assert y2.tolist() == [2.0, 5.0, 2.0, 2.0, 2.0] and g.tolist() == [0, 1, 0, 0, 0]
    assert {tuple(r) for r in X2[2:]} == {tuple(encode(o)) for o in NB201_SPACE.equivalents(a)}

    class NoSymmetry:  # a space that knows none (the SearchSpace default) is left alone
        def equivalents(self, arch, limit=None):
            return ()

    X3, y3, g3 = with_equivalents(NoSymmetry(), [a, b], X, y)  # type: ignore[arg-type]
    assert X3 is X and y3 is y and g3.tolist() == [0, 1]


def test_validation_split_keeps_groups_whole() -> None:
    X, y = synthetic(120)
    groups = np.repeat(np.arange(40), 3)  # 40 measurements, 3 copies each
    mlp = LatencyMLP(LAYOUT, MLPConfig(**FAST))
    mlp._groups = groups
    for k in range(3):
        train, val = mlp._split(k, len(y), hold_out=True)
        assert len(val) >= round(0.15 * len(y)) and len(train) + len(val) == len(y)
        assert not set(groups[train.numpy()]) & set(groups[val.numpy()])
    with pytest.raises(InputError, match="groups must have shape"):
        mlp.fit(X, y, groups=groups[:10])


def test_one_row_per_group_splits_exactly_like_no_groups() -> None:
    mlp = LatencyMLP(LAYOUT, MLPConfig(**FAST))
    mlp._groups = None
    plain = mlp._split(1, 50, hold_out=True)
    mlp._groups = np.arange(50)
    grouped = mlp._split(1, 50, hold_out=True)
    for a, b in zip(plain, grouped):
        assert torch.equal(a, b)


# ----------------------------------------------------------- batched fitting and inference

def _prepared(model: LatencyMLP, X: np.ndarray, y: np.ndarray, groups=None):
    """The inputs and targets `fit` trains on (features, latency / mean), in the
    default dtype."""
    dtype = torch.get_default_dtype()
    model._groups = None if groups is None else np.unique(groups, return_inverse=True)[1]
    model.scale_ms.fill_(float(np.mean(y)))
    x = model._inputs(torch.from_numpy(X).to(dtype)).detach()
    return x, torch.from_numpy(y / np.mean(y)).to(dtype)


def _outputs(member, layers, x):
    member.load_layers(layers)
    with torch.no_grad():
        return member(x)


@pytest.mark.parametrize("space_name,depth", [("nb201", 2), ("nb201", 0), ("darts", 2),
                                              ("darts", 1)])
def test_batched_training_equals_the_one_model_loop(space_name, depth, monkeypatch):
    """Every (split, grid point) model of the batched fit is the model `_train_member`
    trains alone: in float64, where rounding cannot hide a wrong gradient, to 1e-10 (its
    validation error too); DARTS features are sparse enough for the gathered first layer
    (used here however narrow the layer), NB201's are not, so both first layers are
    checked."""
    from latency.predictor import batched

    monkeypatch.setattr(batched._FirstLayer, "MIN_WIDTH", 0)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        if space_name == "nb201":
            X, y = synthetic(90, seed=5)
            lay = LAYOUT
        else:
            space = _darts()
            rng = np.random.default_rng(5)
            X = np.stack([space.encode(space.sample(rng)) for _ in range(90)])
            y = 2.0 + X @ rng.uniform(0.0, 0.1, size=X.shape[1])
            lay = layout_for_space(space)
        groups = np.arange(len(y)) // 3  # whole groups on one side of every split
        cfg = MLPConfig(depth=depth, hidden=8, steps=60, batch_size=16, eval_every=7,
                        linear_weight_decay=0.05)
        model = LatencyMLP(lay, cfg)
        x, target = _prepared(model, X, y, groups)
        assert batched._FirstLayer(x, 2, 18).sparse == (space_name == "darts")
        points = [batched.Point(1.0, 0.05, 0.3), batched.Point(3.0, 0.1, 0.0)]
        for hold_out in (True, False):
            streams = [model._stream(k, x, hold_out) for k in range(2)]
            layers, errors = model._train_batched(streams, points, x, target)
            for k in range(2):
                for i, p in enumerate(points):
                    state, err = model._train_member(k, x, target, p.weight_decay,
                                                     p.huber_delta, p.encoding_l2, hold_out)
                    ref = model.members[0]
                    ref.load_state_dict(state)
                    with torch.no_grad():
                        expected = ref(x)
                    got = _outputs(model.members[1], layers[k * len(points) + i], x)
                    torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-10)
                    assert errors[k, i] == pytest.approx(err, rel=1e-10)  # inf: no hold-out
    finally:
        torch.set_default_dtype(previous)


def test_batched_training_float32_matches_the_loop_for_one_grid_point():
    """In float32 the batched matmuls round differently from the loop's; over a short fit
    the two stay within float noise of each other."""
    from latency.predictor import batched

    X, y = synthetic(120, seed=6)
    model = LatencyMLP(LAYOUT, MLPConfig(steps=80, batch_size=32))
    x, target = _prepared(model, X, y)
    layers, errors = model._train_batched([model._stream(0, x, True)],
                                          [batched.Point(1.0, 0.05, 0.0)], x, target)
    state, err = model._train_member(0, x, target, 1.0, 0.05, 0.0)
    model.members[0].load_state_dict(state)
    with torch.no_grad():
        expected = model.members[0](x)
    torch.testing.assert_close(_outputs(model.members[1], layers[0], x), expected,
                               rtol=1e-4, atol=1e-5)
    assert errors[0, 0] == pytest.approx(err, rel=1e-3)


def test_batched_fit_is_deterministic_and_picks_what_the_loop_picks():
    """Two fits with one seed predict identically; the grid point chosen is the one the
    one-model loop's scores (`_selection_score`) choose, on a problem where the grid
    points differ by more than float noise (non-additive latency: strong weight decay on
    the MLP cannot fit the interaction)."""
    rng = np.random.default_rng(7)
    archs = [NB201_SPACE.sample(rng) for _ in range(160)]
    X = np.stack([encode(a) for a in archs])
    oh = np.stack([one_hot(a) for a in archs])  # (n, 6 edges, 5 ops)
    conv = oh[:, :, 3].sum(axis=1)  # nor_conv_3x3 count
    y = 2.0 + 0.3 * oh[:, :, 2].sum(axis=1) + 0.5 * conv * conv
    cfg = dict(members=2, steps=120, weight_decay=(0.01, 1000.0), huber_delta=(0.05,),
               encoding_l2=(0.0,), selection_repeats=2, batch_size=32)
    a = LatencyMLP(LAYOUT, MLPConfig(**cfg)).fit(X, y)
    b = LatencyMLP(LAYOUT, MLPConfig(**cfg)).fit(X, y)
    np.testing.assert_array_equal(a.predict(X)[0], b.predict(X)[0])
    np.testing.assert_array_equal(a.predict(X)[1], b.predict(X)[1])
    chosen = (a.config.chosen_weight_decay, a.config.chosen_huber_delta,
              a.config.chosen_encoding_l2)
    assert chosen == (b.config.chosen_weight_decay, b.config.chosen_huber_delta,
                      b.config.chosen_encoding_l2)
    # the loop: every grid point trained alone on the same splits
    ref = LatencyMLP(LAYOUT, MLPConfig(**cfg))
    x, target = _prepared(ref, X, y)
    scores = {wd: ref._selection_score(x, target, wd, 0.05, 0.0) for wd in (0.01, 1000.0)}
    assert chosen == (min(scores, key=scores.get), 0.05, 0.0)
    assert max(scores.values()) > 1.5 * min(scores.values())  # a real difference


def _member_loop(model: LatencyMLP, enc: torch.Tensor) -> torch.Tensor:
    """The ensemble as it was evaluated before batching: member after member."""
    x = model._inputs(enc)
    return torch.stack([m(x) for m in model.members])


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_batched_inference_equals_the_member_loop(fitted, dtype):
    model, X, _ = fitted
    model.to(dtype)
    try:
        # values, on a batch and on one encoding
        enc = torch.from_numpy(X[:50]).to(dtype)
        rtol = 1e-6 if dtype == torch.float32 else 1e-12
        with torch.no_grad():
            torch.testing.assert_close(model.member_outputs(enc), _member_loop(model, enc),
                                       rtol=rtol, atol=0)
            one = model.member_outputs(enc[0])
            assert one.shape == (3,)
            torch.testing.assert_close(one, _member_loop(model, enc[0]), rtol=rtol, atol=0)
        # gradients: into soft architecture weights, and into the predictor's own weights
        torch.manual_seed(0)
        alpha = torch.randn(6, 5, dtype=dtype)
        grads = []
        for f in (lambda e: model(e), lambda e: _member_loop(model, e).mean(dim=0)):
            a = alpha.clone().requires_grad_(True)
            model.zero_grad(set_to_none=True)
            f(encode_weights(torch.softmax(a, dim=-1))).backward()
            grads.append([a.grad] + [p.grad for p in model.parameters()])
        for g_batched, g_loop in zip(*grads):
            torch.testing.assert_close(g_batched, g_loop,
                                       rtol=1e-5 if dtype == torch.float32 else 1e-10,
                                       atol=1e-7 if dtype == torch.float32 else 1e-13)
    finally:
        model.zero_grad(set_to_none=True)
        model.float()


def test_frozen_inference_sees_every_change_of_the_weights(fitted):
    """A frozen predictor keeps its stacked weights between calls; loading other weights,
    an in-place change, a dtype change, or replacing a parameter must all be seen."""
    model, X, _ = fitted
    state = {k: v.clone() for k, v in model.state_dict().items()}
    enc = torch.from_numpy(X[:20]).float()
    model.freeze()
    try:
        before = model(enc).detach().clone()
        torch.testing.assert_close(before, _member_loop(model, enc).mean(0), rtol=1e-6, atol=0)
        with torch.no_grad():
            model.members[1].mlp[-1].bias.add_(0.5)  # in place
        torch.testing.assert_close(model(enc), before + 0.5 / 3, rtol=1e-5, atol=1e-6)
        model.load_state_dict(state)  # back, through load_state_dict
        torch.testing.assert_close(model(enc), before, rtol=0, atol=0)
        model.members[0].linear.bias = torch.nn.Parameter(
            torch.full((1,), 2.0), requires_grad=False)  # a new tensor
        torch.testing.assert_close(model(enc), _member_loop(model, enc).mean(0), rtol=1e-6,
                                   atol=0)
        model.double()
        out64 = model(enc.double())
        assert out64.dtype == torch.float64
        torch.testing.assert_close(out64, _member_loop(model, enc.double()).mean(0),
                                   rtol=1e-12, atol=0)
    finally:
        model.float()
        model.members[0].linear.bias = torch.nn.Parameter(torch.zeros(1))
        model.load_state_dict(state)
        model.requires_grad_(True)
