"""Published genotypes, addressable by name wherever a genotype file is accepted.

Shipping them lets a user retrain or profile a known cell (``--genotype DARTS``) without
hunting for a file, and gives tests and reports fixed reference points (parameter counts
in the papers' tables). Only cells built from the eight DARTS primitives are included, so
every entry fits the DARTS search space.

Sources (published data, transcribed edge by edge):

* ``DARTS_V1``, ``DARTS_V2``: ``quark0/darts`` ``cnn/genotypes.py`` (commit a00cad0 and
  later). ``DARTS`` there is an alias of ``DARTS_V2``. Note that the original code release
  (commit 8876e79) called the V1 cell ``DARTS``; the alias follows the current file.
* ``PDARTS``: ``chenxin061/pdarts`` ``genotypes.py``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType

from search_spaces.errors import GenotypeError
from search_spaces.genotype import Genotype, load_genotype

_CONCAT = (2, 3, 4, 5)

# DARTS (first order), quark0/darts cnn/genotypes.py
DARTS_V1 = Genotype(
    normal=(
        ("sep_conv_3x3", 1), ("sep_conv_3x3", 0),
        ("skip_connect", 0), ("sep_conv_3x3", 1),
        ("skip_connect", 0), ("sep_conv_3x3", 1),
        ("sep_conv_3x3", 0), ("skip_connect", 2),
    ),
    normal_concat=_CONCAT,
    reduce=(
        ("max_pool_3x3", 0), ("max_pool_3x3", 1),
        ("skip_connect", 2), ("max_pool_3x3", 0),
        ("max_pool_3x3", 0), ("skip_connect", 2),
        ("skip_connect", 2), ("avg_pool_3x3", 0),
    ),
    reduce_concat=_CONCAT,
)  # fmt: skip

# DARTS (second order), quark0/darts cnn/genotypes.py
DARTS_V2 = Genotype(
    normal=(
        ("sep_conv_3x3", 0), ("sep_conv_3x3", 1),
        ("sep_conv_3x3", 0), ("sep_conv_3x3", 1),
        ("sep_conv_3x3", 1), ("skip_connect", 0),
        ("skip_connect", 0), ("dil_conv_3x3", 2),
    ),
    normal_concat=_CONCAT,
    reduce=(
        ("max_pool_3x3", 0), ("max_pool_3x3", 1),
        ("skip_connect", 2), ("max_pool_3x3", 1),
        ("max_pool_3x3", 0), ("skip_connect", 2),
        ("skip_connect", 2), ("max_pool_3x3", 1),
    ),
    reduce_concat=_CONCAT,
)  # fmt: skip

# P-DARTS (CIFAR-10 search), chenxin061/pdarts genotypes.py; concat there is range(2, 6)
PDARTS = Genotype(
    normal=(
        ("skip_connect", 0), ("dil_conv_3x3", 1),
        ("skip_connect", 0), ("sep_conv_3x3", 1),
        ("sep_conv_3x3", 1), ("sep_conv_3x3", 3),
        ("sep_conv_3x3", 0), ("dil_conv_5x5", 4),
    ),
    normal_concat=_CONCAT,
    reduce=(
        ("avg_pool_3x3", 0), ("sep_conv_5x5", 1),
        ("sep_conv_3x3", 0), ("dil_conv_5x5", 2),
        ("max_pool_3x3", 0), ("dil_conv_3x3", 1),
        ("dil_conv_3x3", 1), ("dil_conv_5x5", 3),
    ),
    reduce_concat=_CONCAT,
)  # fmt: skip

#: Published genotypes by canonical (upper-case) name; read-only.
PUBLISHED: Mapping[str, Genotype] = MappingProxyType(
    {
        "DARTS": DARTS_V2,
        "DARTS_V1": DARTS_V1,
        "DARTS_V2": DARTS_V2,
        "PDARTS": PDARTS,
    }
)


def published_names() -> list[str]:
    """Names accepted by `resolve_genotype`, sorted (for help texts and error messages)."""
    return sorted(PUBLISHED)


def get_published(name: str) -> Genotype | None:
    """The published genotype called `name` (any case, ``-`` or ``_``), or None."""
    key = name.strip().upper().replace("-", "_")
    return PUBLISHED.get(key)


def resolve_genotype(name_or_path: str | os.PathLike[str]) -> Genotype:
    """Turn a ``--genotype`` argument into a Genotype: a published name or a file.

    A string that is a published name (case-insensitive) wins over a file of the same name
    in the working directory, so ``DARTS`` always means the published cell; write
    ``./DARTS`` for such a file. A `Path` is always a path. A run directory holding a
    ``genotype.json`` is accepted too, so ``results/<run>`` works as well as its file.
    """
    if isinstance(name_or_path, str):
        if not name_or_path.strip():
            raise GenotypeError(
                "empty genotype: give a file or a published name "
                f"({', '.join(published_names())})"
            )
        found = get_published(name_or_path)
        if found is not None:
            return found
    elif not isinstance(name_or_path, os.PathLike):
        raise TypeError(
            f"resolve_genotype expects a name or a path, got {type(name_or_path).__name__}"
        )
    path = Path(name_or_path)
    if path.is_dir() and (path / "genotype.json").is_file():
        return load_genotype(path / "genotype.json")
    if path.exists():
        return load_genotype(path)
    raise GenotypeError(
        f"unknown genotype '{os.fspath(name_or_path)}': not a file and not a published name "
        f"({', '.join(published_names())})"
    )
