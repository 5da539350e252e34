"""Discrete networks built from a genotype: the networks that are retrained and deployed.

Layouts follow the DARTS evaluation code (CIFAR and ImageNet), because their parameter
counts are what the papers' tables report and what our tests pin.
"""

from __future__ import annotations

import torch
from torch import nn

from search_spaces.genotype import Genotype
from search_spaces.ops import FactorizedReduce, Identity, ReLUConvBN, build_op


def drop_path(x: torch.Tensor, drop_prob: float) -> torch.Tensor:
    """Zero whole samples of a branch with probability `drop_prob`, rescaling the rest."""
    if drop_prob <= 0.0:
        return x
    keep = 1.0 - drop_prob
    mask = torch.empty(x.shape[0], 1, 1, 1, device=x.device, dtype=x.dtype).bernoulli_(keep)
    return x / keep * mask


def reduction_positions(layers: int) -> tuple[int, ...]:
    """Indices of the reduction cells: L//3 and 2L//3 (DARTS)."""
    return (layers // 3, 2 * layers // 3)


class Cell(nn.Module):
    """A discrete cell: each intermediate node sums two operations of earlier nodes."""

    def __init__(
        self,
        genotype: Genotype,
        C_prev_prev: int,
        C_prev: int,
        C: int,
        reduction: bool,
        reduction_prev: bool,
    ) -> None:
        super().__init__()
        self.reduction = reduction
        if reduction_prev:
            self.preprocess0: nn.Module = FactorizedReduce(C_prev_prev, C)
        else:
            self.preprocess0 = ReLUConvBN(C_prev_prev, C, 1, 1, 0)
        self.preprocess1 = ReLUConvBN(C_prev, C, 1, 1, 0)
        edges = genotype.reduce if reduction else genotype.normal
        self.concat = tuple(genotype.reduce_concat if reduction else genotype.normal_concat)
        self.steps = len(edges) // 2
        self.multiplier = len(self.concat)
        self.indices = tuple(index for _, index in edges)
        self._ops = nn.ModuleList(
            build_op(name, C, 2 if reduction and index < 2 else 1, True) for name, index in edges
        )

    def forward(self, s0: torch.Tensor, s1: torch.Tensor, drop_prob: float = 0.0) -> torch.Tensor:
        states = [self.preprocess0(s0), self.preprocess1(s1)]
        for i in range(self.steps):
            branches = []
            for k in (2 * i, 2 * i + 1):
                op = self._ops[k]
                h = op(states[self.indices[k]])
                if self.training and drop_prob > 0 and not isinstance(op, Identity):
                    h = drop_path(h, drop_prob)
                branches.append(h)
            states.append(branches[0] + branches[1])
        return torch.cat([states[i] for i in self.concat], dim=1)


class AuxiliaryHeadCIFAR(nn.Module):
    """Auxiliary classifier after the second reduction (8x8 maps at 32x32 images)."""

    def __init__(self, C: int, num_classes: int) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.ReLU(inplace=True),
            nn.AvgPool2d(5, stride=3, padding=0, count_include_pad=False),
            nn.Conv2d(C, 128, 1, bias=False),
            nn.BatchNorm2d(128),
            nn.ReLU(inplace=True),
            nn.Conv2d(128, 768, 2, bias=False),
            nn.BatchNorm2d(768),
            nn.ReLU(inplace=True),
        )
        self.classifier = nn.Linear(768, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(_at_least(x, 8))
        return self.classifier(torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1))


class AuxiliaryHeadImageNet(nn.Module):
    """Auxiliary classifier for ImageNet (7x7 maps); the DARTS code omits its last BN."""

    def __init__(self, C: int, num_classes: int) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.ReLU(inplace=True),
            nn.AvgPool2d(5, stride=2, padding=0, count_include_pad=False),
            nn.Conv2d(C, 128, 1, bias=False),
            nn.BatchNorm2d(128),
            nn.ReLU(inplace=True),
            nn.Conv2d(128, 768, 2, bias=False),
            nn.ReLU(inplace=True),
        )
        self.classifier = nn.Linear(768, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(_at_least(x, 7))
        return self.classifier(torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1))


def _at_least(x: torch.Tensor, size: int) -> torch.Tensor:
    """Upsample tiny feature maps (e.g. 2x2 on 8x8 digits) so the head's pooling fits.

    At the published resolutions (8x8 on CIFAR, 7x7 on ImageNet) this is a no-op, so
    the head is exactly the reference's there.
    """
    if min(x.shape[-2:]) >= size:
        return x
    return nn.functional.interpolate(x, size=(size, size), mode="nearest")


class _CellStack(nn.Module):
    """Cells with reductions at L//3 and 2L//3, channel bookkeeping as in DARTS."""

    auxiliary_head: nn.Module | None

    def _build_cells(
        self,
        genotype: Genotype,
        C: int,
        layers: int,
        C_prev_prev: int,
        C_prev: int,
        reduction_prev: bool,
    ) -> int:
        self.cells = nn.ModuleList()
        C_curr = C
        self._aux_position = 2 * layers // 3
        self._aux_channels = 0
        for i in range(layers):
            reduction = i in reduction_positions(layers)
            if reduction:
                C_curr *= 2
            cell = Cell(genotype, C_prev_prev, C_prev, C_curr, reduction, reduction_prev)
            self.cells.append(cell)
            reduction_prev = reduction
            C_prev_prev, C_prev = C_prev, cell.multiplier * C_curr
            if i == self._aux_position:
                self._aux_channels = C_prev
        return C_prev

    def _run_cells(
        self, s0: torch.Tensor, s1: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        logits_aux = None
        for i, cell in enumerate(self.cells):
            s0, s1 = s1, cell(s0, s1, self.drop_path_prob)
            if i == self._aux_position and self.auxiliary_head is not None and self.training:
                logits_aux = self.auxiliary_head(s1)
        return s1, logits_aux


class NetworkCIFAR(_CellStack):
    """The DARTS CIFAR evaluation network (stem conv 3x3 with 3C channels, then cells)."""

    def __init__(
        self,
        genotype: Genotype,
        C: int = 36,
        layers: int = 20,
        num_classes: int = 10,
        auxiliary: bool = True,
        in_channels: int = 3,
        stem_multiplier: int = 3,
    ) -> None:
        super().__init__()
        self.drop_path_prob = 0.0
        C_stem = stem_multiplier * C
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, C_stem, 3, padding=1, bias=False), nn.BatchNorm2d(C_stem)
        )
        C_prev = self._build_cells(genotype, C, layers, C_stem, C_stem, False)
        self.auxiliary_head = (
            AuxiliaryHeadCIFAR(self._aux_channels, num_classes) if auxiliary else None
        )
        self.global_pooling = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(C_prev, num_classes)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        s = self.stem(x)
        out, logits_aux = self._run_cells(s, s)
        return self.classifier(torch.flatten(self.global_pooling(out), 1)), logits_aux


class NetworkImageNet(_CellStack):
    """The DARTS ImageNet evaluation network (two stride-2 stems, then cells at 28x28)."""

    def __init__(
        self,
        genotype: Genotype,
        C: int = 48,
        layers: int = 14,
        num_classes: int = 1000,
        auxiliary: bool = True,
        in_channels: int = 3,
    ) -> None:
        super().__init__()
        self.drop_path_prob = 0.0
        self.stem0 = nn.Sequential(
            nn.Conv2d(in_channels, C // 2, 3, stride=2, padding=1, bias=False),
            nn.BatchNorm2d(C // 2),
            nn.ReLU(inplace=True),
            nn.Conv2d(C // 2, C, 3, stride=2, padding=1, bias=False),
            nn.BatchNorm2d(C),
        )
        self.stem1 = nn.Sequential(
            nn.ReLU(inplace=True),
            nn.Conv2d(C, C, 3, stride=2, padding=1, bias=False),
            nn.BatchNorm2d(C),
        )
        C_prev = self._build_cells(genotype, C, layers, C, C, True)
        self.auxiliary_head = (
            AuxiliaryHeadImageNet(self._aux_channels, num_classes) if auxiliary else None
        )
        self.global_pooling = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(C_prev, num_classes)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        s0 = self.stem0(x)
        s1 = self.stem1(s0)
        out, logits_aux = self._run_cells(s0, s1)
        return self.classifier(torch.flatten(self.global_pooling(out), 1)), logits_aux
