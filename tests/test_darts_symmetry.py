"""DARTS latency twins: renamed genotypes deploy as networks of identical cost."""

from __future__ import annotations

import pytest
import torch

from latency.simulate import simulate_genotype
from search_spaces.complexity import count_macs, count_parameters
from search_spaces.darts_symmetry import cell_variants, equivalent_genotypes
from search_spaces.genotype import Genotype
from search_spaces.genotype_library import DARTS_V2, PDARTS
from search_spaces.space import get_space

torch.set_num_threads(1)
SPACE = get_space("darts")


def cost(g: Genotype) -> tuple[int, int]:
    net = SPACE.build_network(g, C=8, layers=5, num_classes=10, auxiliary=False).eval()
    return count_parameters(net), count_macs(net, (3, 32, 32))


@pytest.mark.parametrize("genotype", [DARTS_V2, PDARTS], ids=["DARTS_V2", "PDARTS"])
def test_equivalents_cost_the_same_and_encode_differently(genotype) -> None:
    others = equivalent_genotypes(genotype, limit=6)
    assert len(others) == 6
    base_cost = cost(genotype)
    base_sim = simulate_genotype(genotype, "p100").ms
    encodings = {SPACE.encode(genotype).tobytes()}
    for g in others:
        g.validate(SPACE.op_names)  # every edge still points forwards
        assert cost(g) == base_cost
        assert simulate_genotype(g, "p100").ms == pytest.approx(base_sim, rel=1e-12)
        encodings.add(SPACE.encode(g).tobytes())
    assert len(encodings) == 7  # all distinct architectures to the predictor


def test_only_forward_numberings_are_generated() -> None:
    # node 3 reads node 2, node 4 reads node 3, node 5 reads node 4: a chain; only the
    # input swap is free
    chain = [("sep_conv_3x3", 0), ("skip_connect", 1), ("sep_conv_3x3", 2), ("max_pool_3x3", 0),
             ("dil_conv_3x3", 3), ("skip_connect", 1), ("sep_conv_5x5", 4), ("avg_pool_3x3", 0)]
    variants = cell_variants(chain, (2, 3, 4, 5), 4)
    assert len(variants) == 2
    # four nodes that read only the cell inputs, all different: 4! numberings x 2 swaps
    flat = [("sep_conv_3x3", 0), ("skip_connect", 1), ("sep_conv_5x5", 0), ("max_pool_3x3", 1),
            ("dil_conv_3x3", 0), ("avg_pool_3x3", 1), ("dil_conv_5x5", 0), ("skip_connect", 0)]
    assert len(cell_variants(flat, (2, 3, 4, 5), 4)) == 48
    # a cell whose output is not every node keeps its numbering
    assert len(cell_variants(flat, (4, 5), 4)) == 2


def test_limit_is_deterministic_and_excludes_the_genotype_itself() -> None:
    a = equivalent_genotypes(DARTS_V2, limit=5)
    assert a == equivalent_genotypes(DARTS_V2, limit=5)
    full = equivalent_genotypes(DARTS_V2)
    assert set(a) <= set(full) and DARTS_V2 not in full
    assert len(SPACE.equivalents(DARTS_V2, 3)) == 3
