"""Operations, cells, genotypes, supernets, discrete networks and encodings.

Knows nothing of hardware or of training loops. The DARTS operations' specs
(`darts_ops`) are registered when the op registry is first used (`op_spec`).
"""
