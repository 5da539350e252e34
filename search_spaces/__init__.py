"""Operations, cells, genotypes, supernets, discrete networks and encodings.

Knows nothing of hardware or of training loops.
"""
