"""The published-genotype library: every cell is a well-formed DARTS cell, spot checks of
the transcription against the authors' files, and the CIFAR-10 network sizes the papers
(or the authors' repositories) report."""

from __future__ import annotations

import numpy as np
import pytest

from nas.cli.info import network_size
from search_spaces.genotype_library import PUBLISHED
from search_spaces.ops import DARTS_PRIMITIVES
from search_spaces.space import get_space

#: the eight DARTS primitives, spelled out so that a change to the op list shows here
EIGHT = {"none", "max_pool_3x3", "avg_pool_3x3", "skip_connect", "sep_conv_3x3",
         "sep_conv_5x5", "dil_conv_3x3", "dil_conv_5x5"}

CELLS = sorted(name for name in PUBLISHED if name != "DARTS")  # DARTS: alias of DARTS_V2


def test_the_eight_primitives_are_the_spaces() -> None:
    assert set(DARTS_PRIMITIVES) == EIGHT and len(DARTS_PRIMITIVES) == 8


@pytest.mark.parametrize("name", CELLS)
def test_parses_through_the_darts_space(name: str) -> None:
    space = get_space("darts")
    g = PUBLISHED[name]
    assert space.parse(g.to_dict(), source=name) == g
    assert space.parse(str(g), source=name) == g  # the DARTS literal form as well
    code = space.encode(g)
    assert code.ndim == 1 and np.isfinite(code).all()


@pytest.mark.parametrize("name", CELLS)
def test_cell_shape_ops_and_inputs(name: str) -> None:
    g = PUBLISHED[name]
    for edges, concat in ((g.normal, g.normal_concat), (g.reduce, g.reduce_concat)):
        assert len(edges) == 8, name
        assert concat == (2, 3, 4, 5), name
        assert {op for op, _ in edges} <= EIGHT, name
        for k, (_, src) in enumerate(edges):
            node = 2 + k // 2  # edges 2i, 2i+1 feed node 2 + i
            assert 0 <= src < node, (name, k, src)
        for i in range(0, 8, 2):  # a node's two edges come from two different states
            assert edges[i][1] != edges[i + 1][1], (name, i)


def test_no_two_names_share_a_cell_but_the_alias() -> None:
    cells = [PUBLISHED[n] for n in CELLS]
    assert len(set(cells)) == len(cells)
    assert PUBLISHED["DARTS"] is PUBLISHED["DARTS_V2"]


def test_spot_checks_against_the_authors_files() -> None:
    # yuhuixu1993/PC-DARTS genotypes.py, PC_DARTS_cifar: reduce edge 1, node 0's 2nd input
    assert PUBLISHED["PC_DARTS"].reduce[1] == ("max_pool_3x3", 0)
    assert PUBLISHED["PC_DARTS"].normal[6] == ("avg_pool_3x3", 0)
    # D-X-Y/AutoDL-Projects lib/nas_infer_model/DXYs/genotypes.py, GDAS_V1: the last
    # reduction node is (sep_conv_5x5, 0), (sep_conv_5x5, 1); some copies have input 2
    assert PUBLISHED["GDAS"].reduce[6:] == (("sep_conv_5x5", 0), ("sep_conv_5x5", 1))
    # SNAS-Series/SNAS-Series SNAS/genotypes.py, SNAS_mild: last reduction node
    assert PUBLISHED["SNAS_MILD"].reduce[6:] == (("max_pool_3x3", 0), ("dil_conv_5x5", 2))


#: name -> (reported parameters in millions, its rounding step, where it is reported).
#: Auxiliary head excluded, as the DARTS code counts (`utils.count_parameters_in_MB`).
REPORTED = {
    "PC_DARTS": (3.6, 0.1, "PC-DARTS paper; also the DrNAS README's CIFAR-10 table"),
    "GDAS": (3.4, 0.1, "GDAS paper, CIFAR-10 results (GDAS with the searched reduction "
                       "cell; GDAS (FRC), a fixed reduction cell, is smaller)"),
    "DRNAS": (4.1, 0.1, "DrNAS README, DARTS space (CIFAR-10) table"),
    "SGAS_CRI1": (3.80, 0.01, "lightaime/sgas cnn/genotypes.py, Cri1_CIFAR_3 comment"),
    "SGAS_CRI2": (4.09, 0.01, "lightaime/sgas cnn/genotypes.py, Cri2_CIFAR_3 comment"),
}


@pytest.mark.parametrize("name", sorted(REPORTED))
def test_cifar10_parameters_match_the_reported_figure(name: str) -> None:
    reported, step, _ = REPORTED[name]
    size = network_size(PUBLISHED[name], "cifar10")  # what `nas info NAME` prints
    assert (size["channels"], size["layers"]) == (36, 20)
    assert abs(size["params"] / 1e6 - reported) <= step / 2, (name, size["params"])
