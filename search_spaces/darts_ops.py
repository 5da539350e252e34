"""The eight DARTS primitives' specs, in one place.

Each spec pairs the discrete module (`ops.py`, the DARTS reference layer for layer) with
its batched supernet form (`supernet_ops.py`) and the facts spaces, reports and profiling
read (family, heavy, zero). This module imports both of those, which import neither it
nor each other's registrations, so there is no import cycle; the package's `__init__`
imports it, so the specs exist whenever any `search_spaces` module is used. They are
the shared namespace: other spaces use these names as they are unless they register
their own meaning (NB201's `avg_pool_3x3`).

Heavy: the separable and dilated convolutions carry all of a DARTS cell's parameters and
nearly all of its compute; profiling strata vary their share.
"""

from __future__ import annotations

from torch import nn

from search_spaces.op_spec import OpSpec, register_op_spec
from search_spaces.ops import DilConv, FactorizedReduce, Identity, SepConv, Zero
from search_spaces.supernet_ops import (
    BatchedDilConv,
    BatchedFactorizedReduce,
    EdgeBatchOp,
    SharedIdentity,
    SharedPool,
)

# ------------------------------------------------------------------- discrete modules


def _none(C: int, stride: int, affine: bool) -> nn.Module:
    return Zero(stride)


def _avg_pool(C: int, stride: int, affine: bool) -> nn.Module:
    return nn.AvgPool2d(3, stride=stride, padding=1, count_include_pad=False)


def _max_pool(C: int, stride: int, affine: bool) -> nn.Module:
    return nn.MaxPool2d(3, stride=stride, padding=1)


def _skip(C: int, stride: int, affine: bool) -> nn.Module:
    return Identity() if stride == 1 else FactorizedReduce(C, C, affine)


def _sep3(C: int, stride: int, affine: bool) -> nn.Module:
    return SepConv(C, C, 3, stride, 1, affine)


def _sep5(C: int, stride: int, affine: bool) -> nn.Module:
    return SepConv(C, C, 5, stride, 2, affine)


def _dil3(C: int, stride: int, affine: bool) -> nn.Module:
    return DilConv(C, C, 3, stride, 2, 2, affine)


def _dil5(C: int, stride: int, affine: bool) -> nn.Module:
    return DilConv(C, C, 5, stride, 4, 2, affine)


# the same with another activation everywhere inside (an op named "sep_conv_3x3/silu")


def _sep3_act(C: int, stride: int, affine: bool, act: str) -> nn.Module:
    return SepConv(C, C, 3, stride, 1, affine, activation=act)


def _sep5_act(C: int, stride: int, affine: bool, act: str) -> nn.Module:
    return SepConv(C, C, 5, stride, 2, affine, activation=act)


def _dil3_act(C: int, stride: int, affine: bool, act: str) -> nn.Module:
    return DilConv(C, C, 3, stride, 2, 2, affine, activation=act)


def _dil5_act(C: int, stride: int, affine: bool, act: str) -> nn.Module:
    return DilConv(C, C, 5, stride, 4, 2, affine, activation=act)


# ---------------------------------------------------------------- supernet forms


def _batched_max_pool(C: int, stride: int, n: int) -> EdgeBatchOp:
    return SharedPool(nn.MaxPool2d(3, stride=stride, padding=1), C, n)


def _batched_avg_pool(C: int, stride: int, n: int) -> EdgeBatchOp:
    return SharedPool(nn.AvgPool2d(3, stride=stride, padding=1, count_include_pad=False), C, n)


def _batched_skip(C: int, stride: int, n: int) -> EdgeBatchOp:
    return SharedIdentity(n) if stride == 1 else BatchedFactorizedReduce(C, n)


def _batched_sep3(C: int, stride: int, n: int) -> EdgeBatchOp:
    return BatchedDilConv(C, stride, n, 3, 1, 1, repeat=2)


def _batched_sep5(C: int, stride: int, n: int) -> EdgeBatchOp:
    return BatchedDilConv(C, stride, n, 5, 2, 1, repeat=2)


def _batched_dil3(C: int, stride: int, n: int) -> EdgeBatchOp:
    return BatchedDilConv(C, stride, n, 3, 2, 2, repeat=1)


def _batched_dil5(C: int, stride: int, n: int) -> EdgeBatchOp:
    return BatchedDilConv(C, stride, n, 5, 4, 2, repeat=1)


def _batched_sep3_act(C: int, stride: int, n: int, act: str) -> EdgeBatchOp:
    return BatchedDilConv(C, stride, n, 3, 1, 1, repeat=2, activation=act)


def _batched_sep5_act(C: int, stride: int, n: int, act: str) -> EdgeBatchOp:
    return BatchedDilConv(C, stride, n, 5, 2, 1, repeat=2, activation=act)


def _batched_dil3_act(C: int, stride: int, n: int, act: str) -> EdgeBatchOp:
    return BatchedDilConv(C, stride, n, 3, 2, 2, repeat=1, activation=act)


def _batched_dil5_act(C: int, stride: int, n: int, act: str) -> EdgeBatchOp:
    return BatchedDilConv(C, stride, n, 5, 4, 2, repeat=1, activation=act)


# -------------------------------------------------------------------------- specs

#: In the order the registry has always listed them (error messages list them so).
DARTS_OP_SPECS: tuple[OpSpec, ...] = (
    OpSpec("none", _none, family="none", zero=True),
    # the DARTS search network follows pooling with an affine-free BN (`supernet_bn`)
    OpSpec("avg_pool_3x3", _avg_pool, _batched_avg_pool, family="pool", supernet_bn=True),
    OpSpec("max_pool_3x3", _max_pool, _batched_max_pool, family="pool", supernet_bn=True),
    OpSpec("skip_connect", _skip, _batched_skip, family="skip"),
    # the convolutions also run with another activation (pairs, "sep_conv_3x3/silu");
    # none, pooling and skip have no activation to choose
    OpSpec("sep_conv_3x3", _sep3, _batched_sep3, family="conv", heavy=True,
           build_activated=_sep3_act, batched_activated=_batched_sep3_act),
    OpSpec("sep_conv_5x5", _sep5, _batched_sep5, family="conv", heavy=True,
           build_activated=_sep5_act, batched_activated=_batched_sep5_act),
    OpSpec("dil_conv_3x3", _dil3, _batched_dil3, family="conv", heavy=True,
           build_activated=_dil3_act, batched_activated=_batched_dil3_act),
    OpSpec("dil_conv_5x5", _dil5, _batched_dil5, family="conv", heavy=True,
           build_activated=_dil5_act, batched_activated=_batched_dil5_act),
)

for _spec in DARTS_OP_SPECS:
    register_op_spec(_spec)


__all__ = ["DARTS_OP_SPECS"]
