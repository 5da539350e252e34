"""CIFAR-10 from the standard "python version" directory (``cifar-10-batches-py``).

The batch files are pickles. A pickle can name any importable callable and make the
loader call it, so ``pickle.load`` on a file from a download or a shared drive is
arbitrary code execution. The loader here uses a restricted unpickler that can build
nothing but numpy arrays (plus the dicts/lists/bytes/ints pickles build natively) and
refuses every other global before anything runs.
"""

from __future__ import annotations

import io
import pickle
import struct
from pathlib import Path
from typing import Any

import numpy as np
import torch

from nas.data.spec import DataError, DatasetSpec, DatasetSplits, validate_arrays

__all__ = [
    "CIFAR10_MEAN",
    "CIFAR10_STD",
    "CIFAR10_SUBDIR",
    "TRAIN_BATCHES",
    "TEST_BATCH",
    "find_cifar10_dir",
    "load_cifar10",
    "read_batch",
    "safe_unpickle",
]

CIFAR10_MEAN: tuple[float, float, float] = (0.4914, 0.4822, 0.4465)
CIFAR10_STD: tuple[float, float, float] = (0.2470, 0.2435, 0.2616)
CIFAR10_SUBDIR = "cifar-10-batches-py"
TRAIN_BATCHES: tuple[str, ...] = tuple(f"data_batch_{i}" for i in range(1, 6))
TEST_BATCH = "test_batch"
META_FILE = "batches.meta"
_PIXELS = 3 * 32 * 32


# --------------------------------------------------------------------------- unpickler


class _ForbiddenGlobal(pickle.UnpicklingError):
    """A pickle asked for something outside the allow-list."""


# The allowed globals never hand attacker-chosen state to numpy: they build inert
# placeholder objects that only record what the pickle describes; once loading is
# finished the placeholders are checked (plain numeric dtype, size matches the bytes)
# and turned into real arrays by this module.

_DTYPE_KINDS = frozenset("biufc")


class _Inert:
    """Base of everything the unpickler hands out: a pickle BUILD opcode on it fails
    instead of setting attributes (which could otherwise alter this module's objects)."""

    __slots__ = ()

    def __setstate__(self, state: Any) -> None:
        raise _ForbiddenGlobal("refusing to set state on a numpy constructor")


class _NdarrayToken(_Inert):
    """Stands in for ``numpy.ndarray`` (only ever used as ``_reconstruct``'s subtype)."""

    __slots__ = ()


class _Callable(_Inert):
    """A fresh wrapper per lookup around one allowed constructor."""

    __slots__ = ("_func",)

    def __init__(self, func: Any) -> None:
        self._func = func

    def __call__(self, *args: Any) -> Any:
        return self._func(*args)


class _DtypeProxy:
    """What ``numpy.dtype(spec, align, copy)`` + ``__setstate__`` described."""

    def __init__(self, spec: Any, *_args: Any) -> None:
        if isinstance(spec, bytes):  # Python 2 pickles read with encoding="bytes"
            spec = spec.decode("ascii", errors="replace")
        if not isinstance(spec, str) or len(spec) < 2 or spec[0] not in _DTYPE_KINDS:
            raise _ForbiddenGlobal(f"refusing array dtype {spec!r} (only plain numeric)")
        self.spec = spec
        self.byteorder = "="

    def __setstate__(self, state: Any) -> None:
        if not isinstance(state, tuple) or len(state) < 2:
            raise _ForbiddenGlobal("refusing malformed dtype state")
        order = state[1].decode("ascii", "replace") if isinstance(state[1], bytes) else state[1]
        if order not in ("<", ">", "|", "="):
            raise _ForbiddenGlobal(f"refusing dtype byte order {order!r}")
        if any(item is not None for item in state[2:5]):
            raise _ForbiddenGlobal("refusing structured/sub-array dtype")
        self.byteorder = order

    def resolve(self) -> np.dtype:
        try:
            dt = np.dtype(("" if self.byteorder == "|" else self.byteorder) + self.spec)
        except TypeError:
            raise _ForbiddenGlobal(f"refusing array dtype {self.spec!r}") from None
        if dt.kind not in _DTYPE_KINDS or dt.hasobject or dt.names is not None:
            raise _ForbiddenGlobal(f"refusing array dtype {dt}")
        return dt


def _as_buffer(raw: Any) -> bytes | bytearray | memoryview:
    if isinstance(raw, pickle.PickleBuffer):
        return raw.raw()
    if isinstance(raw, (bytes, bytearray)):
        return raw
    if isinstance(raw, str):  # latin-1 text of a Python 2 pickle read as str
        return raw.encode("latin-1")
    raise _ForbiddenGlobal(f"refusing array data of type {type(raw).__name__}")


def _build_array(buf: Any, dtype: Any, shape: Any, fortran: bool) -> np.ndarray:
    if not isinstance(dtype, _DtypeProxy):
        raise _ForbiddenGlobal("refusing array without a plain numpy dtype")
    dt = dtype.resolve()
    if not isinstance(shape, tuple) or not all(
        isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape
    ):
        raise _ForbiddenGlobal(f"refusing array shape {shape!r}")
    data = _as_buffer(buf)
    nbytes = memoryview(data).nbytes
    count = int(np.prod(shape, dtype=np.int64)) if shape else 1
    if count * dt.itemsize != nbytes:
        raise pickle.UnpicklingError(
            f"array of shape {shape} and dtype {dt} does not match its {nbytes} data bytes"
        )
    flat = np.frombuffer(data, dtype=dt).copy()
    return flat.reshape(shape, order="F" if fortran else "C")


class _ArrayProxy:
    """What ``_reconstruct(ndarray, ...)`` + ``__setstate__`` described."""

    def __init__(self) -> None:
        self.array: np.ndarray | None = None

    def __setstate__(self, state: Any) -> None:
        if not isinstance(state, tuple) or len(state) != 5:
            raise _ForbiddenGlobal("refusing malformed array state")
        _version, shape, dtype, fortran, raw = state
        self.array = _build_array(raw, dtype, shape, bool(fortran))


def _safe_reconstruct(subtype: Any, shape: Any, dtype: Any) -> _ArrayProxy:
    """``numpy...multiarray._reconstruct`` restricted to plain ``ndarray``."""
    if not isinstance(subtype, _NdarrayToken):
        raise _ForbiddenGlobal(f"refusing to reconstruct array subtype {subtype!r}")
    return _ArrayProxy()


def _safe_frombuffer(buf: Any, dtype: Any, shape: Any, order: Any) -> np.ndarray:
    """Protocol-5 array reconstruction (``numpy...numeric._frombuffer``), restricted."""
    if isinstance(order, bytes):
        order = order.decode("ascii", "replace")
    if order not in ("C", "F"):
        raise _ForbiddenGlobal(f"refusing array order {order!r}")
    return _build_array(buf, dtype, shape, order == "F")


def _safe_codecs_encode(obj: Any, encoding: Any = "utf-8", errors: Any = "strict") -> bytes:
    """``_codecs.encode`` as used by protocol-2 pickles of ``bytes``: latin-1 only."""
    if not isinstance(obj, str) or encoding not in ("latin1", "latin-1") or errors != "strict":
        raise _ForbiddenGlobal("refusing _codecs.encode other than str -> latin-1 bytes")
    return obj.encode("latin-1")


_ALLOWED: dict[tuple[str, str], Any] = {
    ("numpy.core.multiarray", "_reconstruct"): _safe_reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _safe_reconstruct,
    ("numpy.core.numeric", "_frombuffer"): _safe_frombuffer,
    ("numpy._core.numeric", "_frombuffer"): _safe_frombuffer,
    ("numpy", "ndarray"): None,  # special-cased: a fresh _NdarrayToken
    ("numpy", "dtype"): _DtypeProxy,
    ("_codecs", "encode"): _safe_codecs_encode,
}


def _materialise(obj: Any, depth: int = 0) -> Any:
    """Replace array placeholders by the arrays they built (containers rebuilt)."""
    if depth > 50:
        raise _ForbiddenGlobal("refusing pickle nested more than 50 levels")
    if isinstance(obj, _ArrayProxy):
        if obj.array is None:
            raise _ForbiddenGlobal("refusing array without state")
        return obj.array
    if isinstance(obj, (_DtypeProxy, _Inert)):
        raise _ForbiddenGlobal("refusing bare numpy dtype/type object")
    if isinstance(obj, dict):
        return {_materialise(k, depth + 1): _materialise(v, depth + 1) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_materialise(v, depth + 1) for v in obj]
    if isinstance(obj, tuple):
        return tuple(_materialise(v, depth + 1) for v in obj)
    return obj


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Unpickler whose only reachable globals are the numpy array constructors."""

    def find_class(self, module: str, name: str) -> Any:
        key = (module, name)
        if key not in _ALLOWED:
            raise _ForbiddenGlobal(
                f"refusing to load forbidden global {module}.{name} "
                "(CIFAR-10 batches contain only numpy arrays)"
            )
        func = _ALLOWED[key]
        return _NdarrayToken() if func is None else _Callable(func)

    def persistent_load(self, pid: Any) -> Any:
        raise _ForbiddenGlobal("refusing persistent id in pickle")


def safe_unpickle(path: Path) -> Any:
    """Read one pickle file with the numpy-only unpickler; any failure (forbidden
    global, truncation, garbage) becomes a one-line :class:`DataError` naming ``path``.
    ``encoding="bytes"`` matches the official loading snippet: Python 2 ``str`` values
    (the dict keys) come back as ``bytes``."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise DataError(f"cannot read {path}: {exc.strerror or exc}") from None
    try:
        loaded = _NumpyOnlyUnpickler(io.BytesIO(raw), encoding="bytes").load()
        return _materialise(loaded)
    except _ForbiddenGlobal as exc:
        raise DataError(f"{path}: {_one_line(exc)}") from None
    except (
        pickle.UnpicklingError,
        EOFError,
        ValueError,
        TypeError,
        AttributeError,
        IndexError,
        KeyError,
        struct.error,
        UnicodeDecodeError,
        OverflowError,
        MemoryError,
        RecursionError,
    ) as exc:
        raise DataError(
            f"{path}: corrupt or truncated pickle ({type(exc).__name__}: {_one_line(exc)})"
        ) from None


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text[:200] if text else type(exc).__name__


# --------------------------------------------------------------------------- batches


def find_cifar10_dir(data_dir: str | Path) -> Path:
    """Accept either the ``cifar-10-batches-py`` directory itself or a parent that
    contains it (what ``tar xzf cifar-10-python.tar.gz`` produces)."""
    root = Path(data_dir).expanduser()
    if not root.exists():
        raise DataError(f"CIFAR-10 data directory not found: {root}")
    if not root.is_dir():
        raise DataError(f"CIFAR-10 data directory is not a directory: {root}")
    nested = root / CIFAR10_SUBDIR
    if nested.is_dir():
        return nested
    if any((root / name).exists() for name in (*TRAIN_BATCHES, TEST_BATCH)):
        return root
    raise DataError(
        f"{root}: not a CIFAR-10 python directory (expected data_batch_1..5 and test_batch "
        f"in it or in {CIFAR10_SUBDIR}/)"
    )


def read_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """One batch file -> (uint8 ``(n, 3, 32, 32)``, int64 ``(n,)``), shape-checked."""
    if not path.is_file():
        raise DataError(f"missing CIFAR-10 batch file: {path}")
    obj = safe_unpickle(path)
    if not isinstance(obj, dict):
        raise DataError(f"{path}: expected a dict batch, got {type(obj).__name__}")
    data = obj.get(b"data", obj.get("data"))
    labels = obj.get(b"labels", obj.get("labels"))
    if data is None or labels is None:
        raise DataError(f"{path}: batch has no 'data'/'labels' entries")
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8:
        kind = data.dtype if isinstance(data, np.ndarray) else type(data).__name__
        raise DataError(f"{path}: 'data' must be a uint8 array, got {kind}")
    if data.ndim != 2 or data.shape[1] != _PIXELS:
        raise DataError(f"{path}: 'data' must have shape (n, {_PIXELS}), got {data.shape}")
    try:
        y = np.asarray(labels, dtype=np.int64)
    except (TypeError, ValueError, OverflowError):
        raise DataError(f"{path}: 'labels' is not a list of integers") from None
    if y.ndim != 1 or y.shape[0] != data.shape[0]:
        raise DataError(f"{path}: {data.shape[0]} images but labels of shape {tuple(y.shape)}")
    # Row-major RGB planes: the first 1024 bytes are the red 32x32 plane, and so on.
    x = np.ascontiguousarray(data).reshape(-1, 3, 32, 32)
    validate_arrays(torch.from_numpy(x), torch.from_numpy(y), 10, str(path))
    return x, y


def _read_class_names(folder: Path) -> tuple[str, ...]:
    meta_path = folder / META_FILE
    if not meta_path.is_file():
        return ()
    meta = safe_unpickle(meta_path)
    names = meta.get(b"label_names", meta.get("label_names")) if isinstance(meta, dict) else None
    if not isinstance(names, list) or len(names) != 10:
        raise DataError(f"{meta_path}: expected 'label_names' with 10 entries")
    out = []
    for n in names:
        if isinstance(n, bytes):
            n = n.decode("utf-8", errors="replace")
        if not isinstance(n, str):
            raise DataError(f"{meta_path}: label names must be strings")
        out.append(n)
    return tuple(out)


def _to_tensor(x: np.ndarray) -> torch.Tensor:
    """uint8 -> normalised float32, in place after the one unavoidable copy (50k CIFAR
    images are 600 MB as float32; avoiding temporaries halves the peak memory)."""
    out = torch.from_numpy(x).to(torch.float32).div_(255.0)
    out.sub_(torch.tensor(CIFAR10_MEAN).view(1, 3, 1, 1))
    return out.div_(torch.tensor(CIFAR10_STD).view(1, 3, 1, 1))


def load_cifar10(data_dir: str | Path | None, limit: int | None = None) -> DatasetSplits:
    """Load CIFAR-10 as normalised float32 ``(N, 3, 32, 32)`` tensors.

    Train = ``data_batch_1..5`` (50k), test = ``test_batch`` (10k, held out from search).
    ``limit`` keeps only the first ``limit`` train images and stops reading batch files
    once it has them, which makes smoke runs on the real data fast.
    """
    if data_dir is None:
        raise DataError(
            "dataset 'cifar10' needs --data-dir pointing at the CIFAR-10 python version "
            f"directory ({CIFAR10_SUBDIR}) or its parent"
        )
    folder = find_cifar10_dir(data_dir)
    if limit is not None and int(limit) <= 0:
        raise DataError(f"{folder}: limit must be a positive number of images, got {limit}")
    want = None if limit is None else int(limit)

    xs: list[np.ndarray] = []
    ys: list[np.ndarray] = []
    have = 0
    for name in TRAIN_BATCHES:
        if want is not None and have >= want:
            break
        x, y = read_batch(folder / name)
        xs.append(x)
        ys.append(y)
        have += x.shape[0]
    train_x_u8 = np.concatenate(xs)
    train_y = np.concatenate(ys)
    if want is not None:
        train_x_u8, train_y = train_x_u8[:want], train_y[:want]
    test_x_u8, test_y = read_batch(folder / TEST_BATCH)

    spec = DatasetSpec(
        name="cifar10",
        in_channels=3,
        image_size=32,
        num_classes=10,
        mean=CIFAR10_MEAN,
        std=CIFAR10_STD,
        class_names=_read_class_names(folder),
        pixel_range=(0.0, 1.0),  # uint8 / 255 in _to_tensor
    )
    return DatasetSplits(
        spec=spec,
        train_x=_to_tensor(np.ascontiguousarray(train_x_u8)),
        train_y=torch.from_numpy(np.ascontiguousarray(train_y)),
        test_x=_to_tensor(test_x_u8),
        test_y=torch.from_numpy(np.ascontiguousarray(test_y)),
    )
