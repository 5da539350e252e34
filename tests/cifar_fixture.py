"""Write a tiny CIFAR-10 "python version" directory in the real on-disk format.

Each batch file is a pickled dict with bytes keys ``b'batch_label'``, ``b'labels'``
(list of ints), ``b'data'`` (uint8 ``(n, 3072)``: red plane, green plane, blue plane,
each 32x32 row-major) and ``b'filenames'``, exactly what the official download holds,
so the loader is tested against the format rather than against itself.

The official files were written by Python 2 ``cPickle`` (protocol 2, ``str`` for bytes,
``numpy.core.multiarray._reconstruct``); :func:`py2_pickle_bytes` assembles such a file
opcode by opcode because Python 3 cannot produce one.
"""

from __future__ import annotations

import pickle
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

SUBDIR = "cifar-10-batches-py"
TRAIN_FILES = tuple(f"data_batch_{i}" for i in range(1, 6))
LABEL_NAMES = [
    b"airplane",
    b"automobile",
    b"bird",
    b"cat",
    b"deer",
    b"dog",
    b"frog",
    b"horse",
    b"ship",
    b"truck",
]


@dataclass
class CifarFixture:
    """Where the files are and what they contain (train batches concatenated)."""

    path: Path
    train_data: np.ndarray
    train_labels: np.ndarray
    test_data: np.ndarray
    test_labels: np.ndarray


def make_batch(n: int, rng: np.random.Generator, label: str, first: int = 0) -> dict:
    """One batch dict with random pixels and labels cycling through the 10 classes."""
    data = rng.integers(0, 256, size=(n, 3072), dtype=np.uint8)
    labels = [int((first + i) % 10) for i in range(n)]
    return {
        b"batch_label": label.encode(),
        b"labels": labels,
        b"data": data,
        b"filenames": [f"img_{first + i:05d}.png".encode() for i in range(n)],
    }


def write_cifar_dir(
    root: Path,
    per_batch: int = 4,
    n_test: int = 6,
    seed: int = 0,
    nested: bool = True,
    meta: bool = True,
    protocol: int | str = 2,
) -> CifarFixture:
    """Write five train batches of ``per_batch`` images and a test batch of ``n_test``.

    ``nested`` puts the files in ``root/cifar-10-batches-py`` (as the tarball unpacks),
    otherwise directly in ``root``. ``protocol`` is a pickle protocol number, or
    ``"py2"`` for a hand-assembled Python 2 style pickle.
    """
    folder = root / SUBDIR if nested else root
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    batches = []
    for i, name in enumerate(TRAIN_FILES):
        batch = make_batch(per_batch, rng, f"training batch {i + 1} of 5", first=i * per_batch)
        write_pickle(folder / name, batch, protocol)
        batches.append(batch)
    test = make_batch(n_test, rng, "testing batch 1 of 1", first=3)
    write_pickle(folder / "test_batch", test, protocol)
    if meta:
        write_pickle(
            folder / "batches.meta",
            {b"label_names": LABEL_NAMES, b"num_cases_per_batch": per_batch, b"num_vis": 3072},
            protocol,
        )
    return CifarFixture(
        path=folder,
        train_data=np.concatenate([b[b"data"] for b in batches]),
        train_labels=np.concatenate([np.asarray(b[b"labels"], dtype=np.int64) for b in batches]),
        test_data=test[b"data"],
        test_labels=np.asarray(test[b"labels"], dtype=np.int64),
    )


def write_pickle(path: Path, obj: dict, protocol: int | str = 2) -> None:
    """Write ``obj`` with ``pickle.dump`` or, for ``"py2"``, as a Python 2 pickle."""
    if protocol == "py2":
        path.write_bytes(py2_pickle_bytes(obj))
        return
    with path.open("wb") as fh:
        pickle.dump(obj, fh, protocol=int(protocol))


# ----------------------------------------------------------- Python 2 style pickle


def _str(b: bytes) -> bytes:
    """A Python 2 ``str`` (read back as ``bytes`` with ``encoding="bytes"``)."""
    if len(b) < 256:
        return b"U" + bytes([len(b)]) + b  # SHORT_BINSTRING
    return b"T" + struct.pack("<i", len(b)) + b  # BINSTRING


def _int(v: int) -> bytes:
    if 0 <= v < 256:
        return b"K" + bytes([v])  # BININT1
    if 0 <= v < 65536:
        return b"M" + struct.pack("<H", v)  # BININT2
    return b"J" + struct.pack("<i", v)  # BININT


def _array(a: np.ndarray) -> bytes:
    """A uint8 array as cPickle + numpy 1.x wrote it (``_reconstruct`` + BUILD)."""
    assert a.dtype == np.uint8
    a = np.ascontiguousarray(a)
    shape = b"(" + b"".join(_int(d) for d in a.shape) + b"t"
    dtype = (
        b"cnumpy\ndtype\n"
        + _str(b"u1")
        + b"\x89\x88\x87R"  # False, True, TUPLE3, REDUCE
        + b"("
        + _int(3)
        + _str(b"|")
        + b"NNN"
        + b"J\xff\xff\xff\xff" * 2
        + _int(0)
        + b"tb"  # TUPLE, BUILD
    )
    return (
        b"cnumpy.core.multiarray\n_reconstruct\n"
        + b"cnumpy\nndarray\n"
        + _int(0)
        + b"\x85"  # TUPLE1
        + _str(b"b")
        + b"\x87R"  # TUPLE3, REDUCE
        + b"("
        + _int(1)
        + shape
        + dtype
        + b"\x89"  # not Fortran order
        + _str(a.tobytes())
        + b"tb"
    )


def _value(v: object) -> bytes:
    if isinstance(v, np.ndarray):
        return _array(v)
    if isinstance(v, bytes):
        return _str(v)
    if isinstance(v, bool) or not isinstance(v, (int, list)):
        raise TypeError(f"py2 fixture cannot encode {type(v).__name__}")
    if isinstance(v, int):
        return _int(v)
    return b"](" + b"".join(_value(item) for item in v) + b"e"  # EMPTY_LIST, APPENDS


def py2_pickle_bytes(obj: dict) -> bytes:
    """Protocol-2 pickle of a dict of bytes keys, as Python 2 ``cPickle`` wrote it."""
    body = b"".join(_str(k) + _value(v) for k, v in obj.items())
    return b"\x80\x02}(" + body + b"u."
