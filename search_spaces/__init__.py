"""Operations, cells, genotypes, supernets, discrete networks and encodings.

Knows nothing of hardware or of training loops. Importing the package registers the
DARTS operations' specs (`darts_ops`), so every module that builds or looks up an op by
name finds them, whichever of them is imported first.
"""

from search_spaces import darts_ops as _darts_ops  # noqa: F401  (registers the specs)
