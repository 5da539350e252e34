"""Datasets, the restricted CIFAR-10 unpickler, augmentations and batching."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from nas.data import (
    Batches,
    DataError,
    DatasetSpec,
    DatasetSplits,
    TrainAugment,
    crop_flip,
    cutout,
    cutout_at,
    cycle,
    dataset_names,
    load_cifar10,
    load_dataset,
    load_digits,
    random_crop_flip,
    train_augment,
    validate_arrays,
)
from nas.data.cifar10 import CIFAR10_MEAN, CIFAR10_STD
from search_spaces.errors import InputError

try:  # tests/ imported as a package, or as a plain directory on sys.path
    from tests.cifar_fixture import write_cifar_dir, write_pickle
except ModuleNotFoundError:  # pragma: no cover - depends on how pytest was started
    from cifar_fixture import write_cifar_dir, write_pickle


def _one_line_error(exc: pytest.ExceptionInfo, *needles: str) -> str:
    msg = str(exc.value)
    assert "\n" not in msg
    for needle in needles:
        assert needle in msg, (needle, msg)
    return msg


# --------------------------------------------------------------------------- digits


@pytest.fixture(scope="module")
def digits() -> DatasetSplits:
    return load_digits()


def test_digits_shapes_and_spec(digits: DatasetSplits) -> None:
    s = digits.spec
    assert (s.name, s.in_channels, s.image_size, s.num_classes) == ("digits", 1, 8, 10)
    assert digits.train_x.shape == (1437, 1, 8, 8) and digits.test_x.shape == (360, 1, 8, 8)
    assert digits.train_x.dtype == torch.float32 and digits.train_y.dtype == torch.int64
    assert set(digits.train_y.tolist()) == set(range(10)) == set(digits.test_y.tolist())
    # normalised with the train part's statistics
    assert abs(digits.train_x.mean().item()) < 1e-4
    assert abs(digits.train_x.std(unbiased=False).item() - 1.0) < 1e-4
    # stratified: every class is ~20% held out
    counts = torch.bincount(digits.test_y, minlength=10)
    assert counts.min() >= 35 and counts.max() <= 37


def test_digits_test_split_is_fixed(digits: DatasetSplits) -> None:
    again = load_digits()
    assert torch.equal(again.test_x, digits.test_x) and torch.equal(again.test_y, digits.test_y)
    # search splits with any seed only ever use the train part
    for seed in (0, 1, 7):
        xa, _, xb, _ = again.search_split(0.5, seed)
        assert xa.shape[0] + xb.shape[0] == digits.num_train
    assert torch.equal(again.test_x, digits.test_x)
    limited = load_digits(limit=100)
    assert limited.num_train == 100 and torch.equal(limited.test_x, digits.test_x)
    assert limited.spec == digits.spec


def _indexed_splits(n: int) -> DatasetSplits:
    """Train images whose pixels all equal the sample index, labels = index % 10."""
    x = torch.arange(n, dtype=torch.float32).view(n, 1, 1, 1).expand(n, 1, 2, 2).clone()
    y = torch.arange(n) % 10
    spec = DatasetSpec("toy", 1, 2, 10, (0.0,), (1.0,))
    return DatasetSplits(spec, x, y, x[:3].clone(), y[:3].clone())


def test_search_split_disjoint_covering_deterministic() -> None:
    splits = _indexed_splits(101)
    xa, ya, xb, yb = splits.search_split(0.5, seed=3)
    ids_a, ids_b = xa[:, 0, 0, 0].long(), xb[:, 0, 0, 0].long()
    assert len(ids_a) == 50 and len(ids_b) == 51  # floor(0.5 * 101) like DARTS
    assert set(ids_a.tolist()).isdisjoint(ids_b.tolist())
    assert sorted(ids_a.tolist() + ids_b.tolist()) == list(range(101))
    assert torch.equal(ya, ids_a % 10) and torch.equal(yb, ids_b % 10)  # pairs kept
    again = splits.search_split(0.5, seed=3)
    assert all(torch.equal(p, q) for p, q in zip((xa, ya, xb, yb), again, strict=True))
    other = splits.search_split(0.5, seed=4)
    assert not torch.equal(other[0], xa)
    xa8, *_ = splits.search_split(0.8, seed=3)
    assert len(xa8) == 80


def test_search_split_on_digits(digits: DatasetSplits) -> None:
    xa, ya, xb, yb = digits.search_split()
    assert xa.shape[0] == digits.num_train // 2
    assert xa.shape[0] + xb.shape[0] == digits.num_train
    assert torch.equal(digits.search_split()[1], ya)


@pytest.mark.parametrize("portion", [0.0, 1.0, -0.5, 1.5, 0.001])
def test_search_split_bad_portion(portion: float) -> None:
    with pytest.raises(DataError):
        _indexed_splits(20).search_split(portion)


# ------------------------------------------------------------------ validate_arrays


def test_validate_arrays_nan_inf() -> None:
    x = torch.zeros(4, 1, 2, 2)
    validate_arrays(x, torch.tensor([0, 1, 2, 3]), 4, "ok.bin")
    x[0, 0, 0, 0] = float("nan")
    x[2, 0, 1, 1] = float("inf")
    x[3, 0, 1, 0] = float("-inf")
    with pytest.raises(DataError) as exc:
        validate_arrays(x, torch.tensor([0, 1, 2, 3]), 4, "/data/bad.bin")
    _one_line_error(exc, "/data/bad.bin", "3 non-finite")
    assert isinstance(exc.value, InputError)


def test_validate_arrays_labels_and_shapes() -> None:
    x = np.zeros((3, 1, 2, 2), dtype=np.float32)
    with pytest.raises(DataError) as exc:
        validate_arrays(x, np.array([0, 5, -1]), 5, "f.npz")
    _one_line_error(exc, "f.npz", "2 labels outside [0, 5)")
    with pytest.raises(DataError, match="3 images but 2 labels"):
        validate_arrays(x, np.array([0, 1]), 5, "f.npz")
    with pytest.raises(DataError, match="N, C, H, W"):
        validate_arrays(x[0], np.array([0]), 5, "f.npz")
    with pytest.raises(DataError, match="integers"):
        validate_arrays(x, np.array([0.0, 1.0, 2.0]), 5, "f.npz")
    with pytest.raises(DataError, match="no images"):
        validate_arrays(x[:0], np.array([], dtype=np.int64), 5, "f.npz")


# ------------------------------------------------------------------------ CIFAR-10


def _unnormalise(x: torch.Tensor) -> np.ndarray:
    m = torch.tensor(CIFAR10_MEAN).view(1, 3, 1, 1)
    s = torch.tensor(CIFAR10_STD).view(1, 3, 1, 1)
    return torch.round((x * s + m) * 255).to(torch.int64).numpy()


@pytest.mark.parametrize("protocol", [2, 4, 5, "py2"])
def test_cifar_round_trip(tmp_path: Path, protocol: int | str) -> None:
    fx = write_cifar_dir(tmp_path, per_batch=4, n_test=6, protocol=protocol)
    splits = load_cifar10(tmp_path)  # parent of cifar-10-batches-py
    spec = splits.spec
    assert (spec.name, spec.in_channels, spec.image_size, spec.num_classes) == (
        "cifar10",
        3,
        32,
        10,
    )
    assert spec.class_names[0] == "airplane" and len(spec.class_names) == 10
    assert splits.train_x.shape == (20, 3, 32, 32) and splits.test_x.shape == (6, 3, 32, 32)
    assert splits.train_x.dtype == torch.float32 and splits.train_y.dtype == torch.int64
    assert np.array_equal(_unnormalise(splits.train_x).reshape(20, 3072), fx.train_data)
    assert np.array_equal(_unnormalise(splits.test_x).reshape(6, 3072), fx.test_data)
    assert np.array_equal(splits.train_y.numpy(), fx.train_labels)
    assert np.array_equal(splits.test_y.numpy(), fx.test_labels)


def test_cifar_pixel_layout_by_hand(tmp_path: Path) -> None:
    fx = write_cifar_dir(tmp_path, nested=False)
    # image 1 of the training set, green channel, row 5, column 7:
    # byte index = channel * 1024 + row * 32 + column
    raw = int(fx.train_data[1, 1 * 1024 + 5 * 32 + 7])
    splits = load_cifar10(fx.path)  # the batches directory itself
    got = splits.train_x[1, 1, 5, 7].item() * CIFAR10_STD[1] + CIFAR10_MEAN[1]
    assert round(got * 255) == raw
    blue_last = int(fx.train_data[1, 2 * 1024 + 31 * 32 + 31])
    got = splits.train_x[1, 2, 31, 31].item() * CIFAR10_STD[2] + CIFAR10_MEAN[2]
    assert round(got * 255) == blue_last
    # second batch file follows the first: image 4 is image 0 of data_batch_2
    assert splits.train_y[4].item() == 4


def test_cifar_limit_and_optional_meta(tmp_path: Path) -> None:
    fx = write_cifar_dir(tmp_path, per_batch=4, meta=False)
    (fx.path / "data_batch_5").unlink()  # not needed for the first 6 images
    splits = load_cifar10(tmp_path, limit=6)
    assert splits.num_train == 6 and splits.num_test == 6
    assert splits.spec.class_names == ()
    assert np.array_equal(_unnormalise(splits.train_x).reshape(6, 3072), fx.train_data[:6])
    with pytest.raises(DataError, match="limit"):
        load_cifar10(tmp_path, limit=0)


def test_cifar_missing_directory(tmp_path: Path) -> None:
    missing = tmp_path / "nope"
    with pytest.raises(DataError) as exc:
        load_cifar10(missing)
    _one_line_error(exc, str(missing), "not found")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataError) as exc:
        load_cifar10(empty)
    _one_line_error(exc, str(empty), "not a CIFAR-10")


def test_cifar_missing_batch_file(tmp_path: Path) -> None:
    fx = write_cifar_dir(tmp_path)
    (fx.path / "data_batch_3").unlink()
    with pytest.raises(DataError) as exc:
        load_cifar10(tmp_path)
    _one_line_error(exc, str(fx.path / "data_batch_3"), "missing")
    (fx.path / "test_batch").unlink()
    with pytest.raises(DataError, match="test_batch"):
        load_cifar10(tmp_path, limit=4)


def test_cifar_truncated_and_garbage(tmp_path: Path) -> None:
    fx = write_cifar_dir(tmp_path)
    target = fx.path / "data_batch_2"
    target.write_bytes(target.read_bytes()[:1000])
    with pytest.raises(DataError) as exc:
        load_cifar10(tmp_path)
    _one_line_error(exc, str(target), "corrupt or truncated")
    target.write_bytes(b"this is not a pickle at all\n")
    with pytest.raises(DataError) as exc:
        load_cifar10(tmp_path)
    _one_line_error(exc, str(target))


class _Evil:
    """Pickles as a call to os.system: loading it with plain pickle runs a command."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple:
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("protocol", [0, 2, 5])
def test_cifar_refuses_forbidden_global(tmp_path: Path, protocol: int) -> None:
    fx = write_cifar_dir(tmp_path)
    marker = tmp_path / "pwned"
    target = fx.path / "data_batch_1"
    batch = {b"data": np.zeros((1, 3072), np.uint8), b"labels": [_Evil(marker)]}
    write_pickle(target, batch, protocol)
    with pytest.raises(DataError) as exc:
        load_cifar10(tmp_path)
    _one_line_error(exc, str(target), "forbidden global", "system")
    assert not marker.exists()


def test_cifar_refuses_object_arrays_and_other_globals(tmp_path: Path) -> None:
    fx = write_cifar_dir(tmp_path)
    target = fx.path / "data_batch_1"
    write_pickle(target, {b"data": np.array([1, "x"], dtype=object), b"labels": []}, 2)
    with pytest.raises(DataError) as exc:
        load_cifar10(tmp_path)
    _one_line_error(exc, str(target), "refusing")
    write_pickle(target, {b"data": torch.zeros(2), b"labels": []}, 2)
    with pytest.raises(DataError, match="forbidden global"):
        load_cifar10(tmp_path)


def test_cifar_wrong_shape_and_labels(tmp_path: Path) -> None:
    fx = write_cifar_dir(tmp_path)
    target = fx.path / "data_batch_4"
    write_pickle(target, {b"data": np.zeros((2, 1000), np.uint8), b"labels": [0, 1]}, 2)
    with pytest.raises(DataError) as exc:
        load_cifar10(tmp_path)
    _one_line_error(exc, str(target), "(n, 3072)")
    write_pickle(target, {b"data": np.zeros((2, 3072), np.uint8), b"labels": [0, 10]}, 2)
    with pytest.raises(DataError) as exc:
        load_cifar10(tmp_path)
    _one_line_error(exc, str(target), "labels outside [0, 10)")
    write_pickle(target, {b"data": np.zeros((2, 3072), np.uint8), b"labels": [0]}, 2)
    with pytest.raises(DataError, match="2 images but labels"):
        load_cifar10(tmp_path)
    write_pickle(target, {b"data": np.zeros((2, 3072), np.float32), b"labels": [0, 1]}, 2)
    with pytest.raises(DataError, match="uint8"):
        load_cifar10(tmp_path)
    write_pickle(target, [1, 2, 3], 2)
    with pytest.raises(DataError, match="dict"):
        load_cifar10(tmp_path)


def test_plain_pickle_of_fixture_matches(tmp_path: Path) -> None:
    """Sanity check of the fixture itself: pickle.dump output is what we wrote."""
    fx = write_cifar_dir(tmp_path, protocol=2)
    raw = (fx.path / "test_batch").read_bytes()
    assert raw.startswith(b"\x80\x02") and b"labels" in raw and pickle.HIGHEST_PROTOCOL >= 2


# ------------------------------------------------------------------------ registry


def test_registry(tmp_path: Path) -> None:
    assert {"digits", "cifar10"} <= set(dataset_names())
    assert load_dataset("digits", limit=50).num_train == 50
    with pytest.raises(DataError) as exc:
        load_dataset("imagenet")
    _one_line_error(exc, "imagenet", "cifar10", "digits")
    with pytest.raises(DataError) as exc:
        load_dataset("cifar10")
    _one_line_error(exc, "--data-dir")
    write_cifar_dir(tmp_path)
    assert load_dataset("cifar10", tmp_path, limit=3).num_train == 3


def test_train_augment_defaults(digits: DatasetSplits) -> None:
    aug = train_augment(digits.spec)
    assert aug == TrainAugment(padding=1, flip=False, cutout_length=0)
    cifar_spec = DatasetSpec("cifar10", 3, 32, 10, CIFAR10_MEAN, CIFAR10_STD)
    assert train_augment(cifar_spec, cutout_length=16) == TrainAugment(4, True, 16)
    with pytest.raises(DataError, match="larger than"):
        train_augment(digits.spec, cutout_length=16)
    with pytest.raises(DataError):
        train_augment(digits.spec, cutout_length=-1)
    out = aug(digits.train_x[:16], torch.Generator().manual_seed(0))
    assert out.shape == (16, 1, 8, 8)
    out2 = TrainAugment(4, True, 16)(torch.randn(5, 3, 32, 32), torch.Generator())
    assert out2.shape == (5, 3, 32, 32)


# ------------------------------------------------------------------------- augment


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_crop_padding0_noflip_is_identity() -> None:
    x = torch.randn(7, 3, 5, 6)
    assert torch.equal(random_crop_flip(x, 0, _gen(), flip=False), x)


def test_flip_is_exact_mirror() -> None:
    x = torch.randn(4, 2, 5, 6)
    zeros = torch.zeros(4, dtype=torch.long)
    flipped = crop_flip(x, zeros, zeros, torch.ones(4, dtype=torch.bool), padding=0)
    assert torch.equal(flipped, x.flip(-1))
    assert torch.equal(flipped[0, 1, 2], x[0, 1, 2].flip(0))
    # random flips with no crop: each image is itself or its mirror, and both occur
    out = random_crop_flip(x.repeat(16, 1, 1, 1), 0, _gen(1))
    src = x.repeat(16, 1, 1, 1)
    same = (out == src).flatten(1).all(1)
    mirrored = (out == src.flip(-1)).flatten(1).all(1)
    assert bool((same | mirrored).all()) and same.any() and mirrored.any()


def test_crop_by_hand() -> None:
    x = torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0], [7.0, 8.0, 9.0]]).view(1, 1, 3, 3)
    # padding 1, row offset 0, column offset 2: shift up-left by one -> right/bottom edge
    out = crop_flip(x, torch.tensor([0]), torch.tensor([2]), None, padding=1)
    expected = torch.tensor([[0.0, 0.0, 0.0], [2.0, 3.0, 0.0], [5.0, 6.0, 0.0]])
    assert torch.equal(out[0, 0], expected)
    out = crop_flip(x, torch.tensor([2]), torch.tensor([2]), torch.tensor([True]), padding=1)
    expected = torch.tensor([[0.0, 6.0, 5.0], [0.0, 9.0, 8.0], [0.0, 0.0, 0.0]])
    assert torch.equal(out[0, 0], expected)


def test_random_crop_matches_shift_from_generator() -> None:
    n, p = 6, 3
    x = torch.arange(n * 2 * 8 * 8, dtype=torch.float32).view(n, 2, 8, 8) + 1
    out = random_crop_flip(x, p, _gen(42))
    # replay the documented draw order: row offsets, column offsets, flip coins
    g = _gen(42)
    oy = torch.randint(0, 2 * p + 1, (n,), generator=g)
    ox = torch.randint(0, 2 * p + 1, (n,), generator=g)
    coin = torch.randint(0, 2, (n,), generator=g).bool()
    padded = F.pad(x, (p, p, p, p))
    for i in range(n):
        want = padded[i, :, oy[i] : oy[i] + 8, ox[i] : ox[i] + 8]
        if coin[i]:
            want = want.flip(-1)
        assert torch.equal(out[i], want), i
    # image 0 by hand: its crop is the padded original shifted by (oy - p, ox - p)
    dy, dx = int(oy[0]) - p, int(ox[0]) - p
    r, c = 4, 4
    val = out[0, 1, r, 7 - c] if coin[0] else out[0, 1, r, c]
    assert val.item() == x[0, 1, r + dy, c + dx].item()


def test_crop_is_a_shift_of_the_padded_original() -> None:
    x = torch.rand(20, 1, 6, 6) + 0.5  # no zeros inside the images
    p = 2
    out = random_crop_flip(x, p, _gen(3), flip=False)
    padded = F.pad(x, (p, p, p, p))
    for i in range(20):
        matches = [
            (a, b)
            for a in range(2 * p + 1)
            for b in range(2 * p + 1)
            if torch.equal(out[i], padded[i, :, a : a + 6, b : b + 6])
        ]
        assert len(matches) == 1


def test_cutout_square_far_from_border() -> None:
    x = torch.ones(2, 3, 16, 16)
    for length in (4, 5):
        out = cutout_at(x, torch.tensor([8, 7]), torch.tensor([8, 9]), length)
        assert int((out == 0).sum()) == 2 * 3 * length * length
        zeros = (out[0, 0] == 0).nonzero()
        y0 = 8 - length // 2
        assert zeros[:, 0].min() == y0 and zeros[:, 0].max() == y0 + length - 1
        assert bool((out[:, 0] == out[:, 2]).all())  # same hole in every channel
    assert torch.equal(x, torch.ones(2, 3, 16, 16))  # input untouched


def test_cutout_clipped_at_border_and_random() -> None:
    x = torch.ones(1, 1, 10, 10)
    out = cutout_at(x, torch.tensor([0]), torch.tensor([9]), 4)  # rows -2..1, cols 7..10
    assert int((out == 0).sum()) == 2 * 3
    big = torch.ones(50, 2, 32, 32)
    a = cutout(big, 8, _gen(5))
    b = cutout(big, 8, _gen(5))
    c = cutout(big, 8, _gen(6))
    assert torch.equal(a, b) and not torch.equal(a, c)
    per_image = (a[:, 0] == 0).flatten(1).sum(1)
    assert int(per_image.max()) == 64 and int(per_image.min()) > 0
    assert torch.equal(cutout(big, 0, _gen()), big)


def test_augment_determinism() -> None:
    x = torch.randn(32, 3, 8, 8)
    assert torch.equal(random_crop_flip(x, 2, _gen(9)), random_crop_flip(x, 2, _gen(9)))
    assert not torch.equal(random_crop_flip(x, 2, _gen(9)), random_crop_flip(x, 2, _gen(10)))


# ------------------------------------------------------------------------- batches


def _toy(n: int = 23) -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.arange(n, dtype=torch.float32).view(n, 1, 1, 1).expand(n, 1, 4, 4).clone()
    return x, torch.arange(n)


def test_batches_cover_every_sample_once() -> None:
    x, y = _toy()
    b = Batches(x, y, batch_size=5, shuffle=True, seed=0)
    assert len(b) == 5
    got = torch.cat([yb for _, yb in b.epoch(0)])
    assert sorted(got.tolist()) == list(range(23))
    for xb, yb in b.epoch(1):
        assert torch.equal(xb[:, 0, 0, 0].long(), yb)  # images stay with their labels
    dropped = Batches(x, y, 5, shuffle=True, seed=0, drop_last=True)
    assert len(dropped) == 4
    assert [len(yb) for _, yb in dropped.epoch(0)] == [5, 5, 5, 5]
    plain = Batches(x, y, 10, shuffle=False, seed=0)
    assert torch.equal(torch.cat([yb for _, yb in plain.epoch(3)]), y)


def test_batches_pure_function_of_seed_and_epoch() -> None:
    x, y = _toy(40)
    aug = TrainAugment(padding=1, flip=True)
    b1 = Batches(x, y, 8, shuffle=True, seed=5, augment=aug)
    b2 = Batches(x, y, 8, shuffle=True, seed=5, augment=aug)
    list(b2.epoch(0))  # drawing other epochs first must not matter
    e1 = list(b1.epoch(2))
    e2 = list(b2.epoch(2))
    assert all(
        torch.equal(p[0], q[0]) and torch.equal(p[1], q[1]) for p, q in zip(e1, e2, strict=True)
    )
    assert not torch.equal(torch.cat([t[1] for t in e1]), torch.cat([t[1] for t in b1.epoch(3)]))
    other_seed = Batches(x, y, 8, shuffle=True, seed=6, augment=aug)
    assert not torch.equal(e1[0][1], next(other_seed.epoch(2))[1])
    # resuming mid-epoch gives the same remaining batches
    resumed = list(b1.epoch(2, start_batch=3))
    assert len(resumed) == 2
    assert all(torch.equal(p[0], q[0]) for p, q in zip(resumed, e1[3:], strict=True))
    with pytest.raises(DataError):
        b1.epoch(0, start_batch=6)


def test_cycle_crosses_epochs_and_resumes() -> None:
    x, y = _toy(10)
    b = Batches(x, y, 4, shuffle=True, seed=1)  # 3 batches per epoch
    stream = cycle(b, start_epoch=2)
    got = [next(stream)[1] for _ in range(7)]
    expected = [yb for e in (2, 3, 4) for _, yb in b.epoch(e)][:7]
    assert all(torch.equal(p, q) for p, q in zip(got, expected, strict=True))
    assert stream.state() == (4, 1)
    resumed = cycle(b, *stream.state())
    assert all(torch.equal(next(resumed)[1], next(stream)[1]) for _ in range(5))
    with pytest.raises(DataError):
        cycle(Batches(x[:2], y[:2], 4, shuffle=False, seed=0, drop_last=True))


def test_batches_bad_arguments() -> None:
    x, y = _toy(5)
    with pytest.raises(DataError):
        Batches(x, y[:4], 2, shuffle=False, seed=0)
    with pytest.raises(DataError):
        Batches(x, y, 0, shuffle=False, seed=0)
