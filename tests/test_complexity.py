"""Parameter and MAC counts against figures computed by hand."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch
from torch import nn

from search_spaces.complexity import (
    MAC_COUNTERS,
    count_macs,
    count_parameters,
    register_mac_counter,
)


class Stack(nn.Module):
    """Plain, grouped, dilated-depthwise and pointwise convs, BN, pooling, two Linears.

    The forward returns (logits, aux_logits) like a DARTS evaluation network.
    """

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)  # bias
        self.bn = nn.BatchNorm2d(8)
        self.grouped = nn.Conv2d(8, 16, 3, stride=2, padding=1, groups=4, bias=False)
        self.dilated = nn.Conv2d(16, 16, 3, padding=2, dilation=2, groups=16)
        self.pointwise = nn.Conv2d(16, 4, 1)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(4, 10)
        self.auxiliary = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = torch.relu(self.bn(self.conv1(x)))
        x = self.pointwise(self.dilated(self.grouped(x)))
        x = self.pool(x).flatten(1)
        return self.classifier(x), self.auxiliary(x)


# Input 3x8x8, by hand:
#   conv1:     out 8x8x8 = 512 elements x (3/1) x 3x3       = 13824
#   grouped:   out 16x4x4 = 256 (stride 2) x (8/4) x 3x3    =  4608
#   dilated:   out 16x4x4 = 256 (pad 2, dil 2) x (16/16) x 9 =  2304
#   pointwise: out 4x4x4 = 64 x 16 x 1                      =  1024
#   classifier: 4 x 10 x 1 row                              =    40
#   bn, relu, pool                                          =     0
MAIN_MACS = 13824 + 4608 + 2304 + 1024 + 40
AUX_MACS = 4 * 3
# Params: conv1 3*8*9+8=224, bn 8+8=16, grouped 16*2*9=288, dilated 16*9+16=160,
#         pointwise 16*4+4=68, classifier 4*10+10=50; auxiliary 4*3+3=15
MAIN_PARAMS = 224 + 16 + 288 + 160 + 68 + 50
AUX_PARAMS = 15


def test_hand_computed_macs_and_aux_exclusion() -> None:
    model = Stack()
    assert count_macs(model, (3, 8, 8)) == MAIN_MACS == 21800
    assert count_macs(model, (3, 8, 8), exclude_prefixes=()) == MAIN_MACS + AUX_MACS


def test_hand_computed_parameters_and_aux_exclusion() -> None:
    model = Stack()
    assert count_parameters(model) == MAIN_PARAMS == 806
    assert count_parameters(model, exclude_prefixes=()) == MAIN_PARAMS + AUX_PARAMS
    assert count_parameters(model, exclude_prefixes="auxiliary") == MAIN_PARAMS


def test_linear_counts_every_row() -> None:
    # (1, 3, 5) input: 3 rows x 5 in x 7 out = 105
    assert count_macs(nn.Linear(5, 7, bias=False), (3, 5)) == 105


def test_conv1d_and_conv3d() -> None:
    # Conv1d: out 6 channels x 10 positions = 60 x 2 in x k3 = 360
    assert count_macs(nn.Conv1d(2, 6, 3, padding=1), (2, 10)) == 360
    # Conv3d: out 1 x 2x2x2 = 8 elements x 1 x 27 = 216
    assert count_macs(nn.Conv3d(1, 1, 3), (1, 4, 4, 4)) == 216


def test_tied_parameters_counted_once() -> None:
    a = nn.Linear(4, 4, bias=False)
    model = nn.Sequential(a, a)
    assert count_parameters(model) == 16
    assert count_macs(model, (4,)) == 32  # but called twice: counted twice


def test_training_flags_and_bn_stats_restored() -> None:
    model = Stack()
    model.train()
    model.bn.eval()  # a mixed state must come back as it was
    stats = model.bn.running_mean.clone()
    count_macs(model, (3, 8, 8))
    assert model.training and model.conv1.training and not model.bn.training
    assert torch.equal(model.bn.running_mean, stats)
    assert all(p.grad is None for p in model.parameters())


def test_training_flag_restored_after_error() -> None:
    model = Stack().train()
    with pytest.raises(RuntimeError):
        count_macs(model, (5, 8, 8))  # wrong channel count
    assert model.training
    assert all(not m._forward_hooks for m in model.modules())  # hooks removed


def test_bad_input_shape() -> None:
    with pytest.raises(ValueError, match="without the batch"):
        count_macs(Stack(), (3, 0, 8))


class Scale(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * 2


class Composite(nn.Module):
    """A custom op whose inner conv must not be counted on top of its own counter."""

    def __init__(self) -> None:
        super().__init__()
        self.inner = nn.Conv2d(2, 2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner(x)


class MyConv(nn.Conv2d):
    pass


@pytest.fixture
def clean_registry() -> Iterator[None]:
    saved = dict(MAC_COUNTERS)
    yield
    MAC_COUNTERS.clear()
    MAC_COUNTERS.update(saved)


def test_registry_extension(clean_registry: None) -> None:
    model = nn.Sequential(nn.Conv2d(2, 2, 1, bias=False), Scale())
    base = 2 * 3 * 3 * 2  # 18 output elements x 2 in channels x 1x1
    assert count_macs(model, (2, 3, 3)) == base

    @register_mac_counter(Scale)
    def scale_macs(module: nn.Module, inputs: tuple, output: torch.Tensor) -> int:
        return output.numel()

    assert count_macs(model, (2, 3, 3)) == base + 18


def test_registered_composite_owns_its_subtree(clean_registry: None) -> None:
    model = nn.Sequential(Composite())
    assert count_macs(model, (2, 3, 3)) == 18 * 2  # the inner conv, via the default

    register_mac_counter(Composite)(lambda m, i, o: 1000)
    assert count_macs(model, (2, 3, 3)) == 1000


def test_subclass_uses_base_counter_unless_registered(clean_registry: None) -> None:
    model = MyConv(2, 2, 1)
    assert count_macs(model, (2, 3, 3)) == 36
    register_mac_counter(MyConv)(lambda m, i, o: 7)
    assert count_macs(model, (2, 3, 3)) == 7


def test_register_rejects_non_module() -> None:
    with pytest.raises(TypeError):
        register_mac_counter(int)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        register_mac_counter()
