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
* ``PC_DARTS``: ``yuhuixu1993/PC-DARTS`` ``genotypes.py`` (``PC_DARTS_cifar``).
* ``GDAS``: ``D-X-Y/AutoDL-Projects`` ``lib/nas_infer_model/DXYs/genotypes.py``
  (``GDAS_V1``, the searched reduction cell). Some third-party copies end the reduction
  cell with ``('sep_conv_5x5', 2)``; the authors' file has ``('sep_conv_5x5', 1)``.
* ``SNAS_MILD``: ``SNAS-Series/SNAS-Series`` ``SNAS/genotypes.py`` (``SNAS_mild``; its
  ``SNAS_mild_edge_all`` is the same cell with the ``none`` edges written out).
* ``DRNAS``: ``xiangning-chen/DrNAS`` ``DARTS-space/genotypes.py`` (``DrNAS_cifar10``).
  The repository's older top-level ``genotypes.py`` holds a different ``DrNAS_cifar``
  (3.1M parameters here, not the paper's 4.1M); the DARTS-space file is the current one.
* ``SDARTS_RS``, ``SDARTS_ADV``: ``xiangning-chen/SmoothDARTS`` ``sota/cnn/genotypes.py``
  (``c10_s5_random``, ``c10_s5_pgd``: CIFAR-10, search space ``s5``, the original DARTS
  space).
* ``SGAS_CRI1``, ``SGAS_CRI2``: ``lightaime/sgas`` ``cnn/genotypes.py``
  (``Cri1_CIFAR_Best`` = ``Cri1_CIFAR_3``, ``Cri2_CIFAR_Best`` = ``Cri2_CIFAR_3``).
* ``DARTS_MINUS``: ``Meituan-AutoML/DARTS-`` ``src/eval/genotypes.py``
  (``cifar10_s0_best`` = ``cifar10_s0_0``; S0, "S5 in the code", is the DARTS space).
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

# PC-DARTS (CIFAR-10 search), yuhuixu1993/PC-DARTS genotypes.py PC_DARTS_cifar
PC_DARTS = Genotype(
    normal=(
        ("sep_conv_3x3", 1), ("skip_connect", 0),
        ("sep_conv_3x3", 0), ("dil_conv_3x3", 1),
        ("sep_conv_5x5", 0), ("sep_conv_3x3", 1),
        ("avg_pool_3x3", 0), ("dil_conv_3x3", 1),
    ),
    normal_concat=_CONCAT,
    reduce=(
        ("sep_conv_5x5", 1), ("max_pool_3x3", 0),
        ("sep_conv_5x5", 1), ("sep_conv_5x5", 2),
        ("sep_conv_3x3", 0), ("sep_conv_3x3", 3),
        ("sep_conv_3x3", 1), ("sep_conv_3x3", 2),
    ),
    reduce_concat=_CONCAT,
)  # fmt: skip

# GDAS (searched normal and reduction cells), D-X-Y/AutoDL-Projects
# lib/nas_infer_model/DXYs/genotypes.py GDAS_V1 (written there as one pair per node)
GDAS = Genotype(
    normal=(
        ("skip_connect", 0), ("skip_connect", 1),
        ("skip_connect", 0), ("sep_conv_5x5", 2),
        ("sep_conv_3x3", 3), ("skip_connect", 0),
        ("sep_conv_5x5", 4), ("sep_conv_3x3", 3),
    ),
    normal_concat=_CONCAT,
    reduce=(
        ("sep_conv_5x5", 0), ("sep_conv_3x3", 1),
        ("sep_conv_5x5", 2), ("sep_conv_5x5", 1),
        ("dil_conv_5x5", 2), ("sep_conv_3x3", 1),
        ("sep_conv_5x5", 0), ("sep_conv_5x5", 1),
    ),
    reduce_concat=_CONCAT,
)  # fmt: skip

# SNAS, mild resource constraint, SNAS-Series/SNAS-Series SNAS/genotypes.py SNAS_mild
SNAS_MILD = Genotype(
    normal=(
        ("sep_conv_3x3", 0), ("sep_conv_3x3", 1),
        ("skip_connect", 0), ("dil_conv_3x3", 1),
        ("skip_connect", 0), ("skip_connect", 1),
        ("skip_connect", 0), ("sep_conv_3x3", 1),
    ),
    normal_concat=_CONCAT,
    reduce=(
        ("max_pool_3x3", 0), ("max_pool_3x3", 1),
        ("max_pool_3x3", 1), ("skip_connect", 2),
        ("max_pool_3x3", 1), ("skip_connect", 2),
        ("max_pool_3x3", 0), ("dil_conv_5x5", 2),
    ),
    reduce_concat=_CONCAT,
)  # fmt: skip

# DrNAS (CIFAR-10 search), xiangning-chen/DrNAS DARTS-space/genotypes.py DrNAS_cifar10
DRNAS = Genotype(
    normal=(
        ("sep_conv_3x3", 0), ("sep_conv_5x5", 1),
        ("sep_conv_3x3", 1), ("sep_conv_3x3", 2),
        ("skip_connect", 0), ("sep_conv_3x3", 1),
        ("sep_conv_3x3", 2), ("dil_conv_5x5", 3),
    ),
    normal_concat=_CONCAT,
    reduce=(
        ("max_pool_3x3", 0), ("sep_conv_5x5", 1),
        ("dil_conv_5x5", 2), ("sep_conv_5x5", 1),
        ("sep_conv_5x5", 1), ("dil_conv_5x5", 3),
        ("skip_connect", 4), ("sep_conv_5x5", 1),
    ),
    reduce_concat=_CONCAT,
)  # fmt: skip

# SDARTS-RS (random smoothing), xiangning-chen/SmoothDARTS sota/cnn/genotypes.py
# c10_s5_random
SDARTS_RS = Genotype(
    normal=(
        ("sep_conv_3x3", 1), ("sep_conv_3x3", 0),
        ("sep_conv_5x5", 1), ("skip_connect", 0),
        ("sep_conv_3x3", 3), ("skip_connect", 1),
        ("sep_conv_3x3", 1), ("dil_conv_3x3", 2),
    ),
    normal_concat=_CONCAT,
    reduce=(
        ("max_pool_3x3", 0), ("sep_conv_3x3", 1),
        ("skip_connect", 2), ("max_pool_3x3", 0),
        ("dil_conv_5x5", 3), ("max_pool_3x3", 0),
        ("sep_conv_3x3", 2), ("sep_conv_5x5", 3),
    ),
    reduce_concat=_CONCAT,
)  # fmt: skip

# SDARTS-ADV (adversarial training), xiangning-chen/SmoothDARTS sota/cnn/genotypes.py
# c10_s5_pgd
SDARTS_ADV = Genotype(
    normal=(
        ("sep_conv_3x3", 0), ("sep_conv_3x3", 1),
        ("sep_conv_3x3", 1), ("skip_connect", 0),
        ("sep_conv_5x5", 0), ("dil_conv_3x3", 3),
        ("dil_conv_3x3", 4), ("skip_connect", 0),
    ),
    normal_concat=_CONCAT,
    reduce=(
        ("max_pool_3x3", 0), ("sep_conv_5x5", 1),
        ("skip_connect", 2), ("max_pool_3x3", 0),
        ("skip_connect", 3), ("skip_connect", 2),
        ("skip_connect", 2), ("sep_conv_5x5", 4),
    ),
    reduce_concat=_CONCAT,
)  # fmt: skip

# SGAS, criterion 1, best CIFAR-10 cell, lightaime/sgas cnn/genotypes.py Cri1_CIFAR_3
SGAS_CRI1 = Genotype(
    normal=(
        ("sep_conv_3x3", 0), ("dil_conv_3x3", 1),
        ("sep_conv_3x3", 0), ("sep_conv_3x3", 1),
        ("sep_conv_5x5", 1), ("sep_conv_5x5", 3),
        ("skip_connect", 0), ("dil_conv_5x5", 2),
    ),
    normal_concat=_CONCAT,
    reduce=(
        ("max_pool_3x3", 0), ("dil_conv_5x5", 1),
        ("sep_conv_3x3", 0), ("skip_connect", 2),
        ("sep_conv_3x3", 1), ("skip_connect", 2),
        ("max_pool_3x3", 0), ("max_pool_3x3", 1),
    ),
    reduce_concat=_CONCAT,
)  # fmt: skip

# SGAS, criterion 2, best CIFAR-10 cell, lightaime/sgas cnn/genotypes.py Cri2_CIFAR_3
SGAS_CRI2 = Genotype(
    normal=(
        ("sep_conv_3x3", 0), ("sep_conv_3x3", 1),
        ("sep_conv_3x3", 0), ("sep_conv_3x3", 2),
        ("max_pool_3x3", 0), ("sep_conv_3x3", 3),
        ("sep_conv_3x3", 2), ("sep_conv_3x3", 3),
    ),
    normal_concat=_CONCAT,
    reduce=(
        ("sep_conv_3x3", 0), ("max_pool_3x3", 1),
        ("dil_conv_3x3", 0), ("max_pool_3x3", 1),
        ("max_pool_3x3", 0), ("sep_conv_3x3", 2),
        ("max_pool_3x3", 0), ("sep_conv_5x5", 2),
    ),
    reduce_concat=_CONCAT,
)  # fmt: skip

# DARTS- (best CIFAR-10 cell of the DARTS space), Meituan-AutoML/DARTS-
# src/eval/genotypes.py cifar10_s0_0
DARTS_MINUS = Genotype(
    normal=(
        ("sep_conv_3x3", 0), ("sep_conv_5x5", 1),
        ("sep_conv_3x3", 1), ("dil_conv_3x3", 2),
        ("skip_connect", 1), ("sep_conv_3x3", 0),
        ("skip_connect", 1), ("sep_conv_3x3", 0),
    ),
    normal_concat=_CONCAT,
    reduce=(
        ("sep_conv_3x3", 0), ("max_pool_3x3", 1),
        ("skip_connect", 2), ("max_pool_3x3", 0),
        ("skip_connect", 2), ("skip_connect", 3),
        ("skip_connect", 2), ("skip_connect", 3),
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
        "PC_DARTS": PC_DARTS,
        "GDAS": GDAS,
        "SNAS_MILD": SNAS_MILD,
        "DRNAS": DRNAS,
        "SDARTS_RS": SDARTS_RS,
        "SDARTS_ADV": SDARTS_ADV,
        "SGAS_CRI1": SGAS_CRI1,
        "SGAS_CRI2": SGAS_CRI2,
        "DARTS_MINUS": DARTS_MINUS,
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
