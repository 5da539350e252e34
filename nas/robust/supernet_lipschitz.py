"""Lipschitz constants of a live DARTS supernet and its network log-normal: the model side
of the search's Lipschitz confidence term (docs/methods.md, "Using the Lipschitz term in
a search"; the algebra is `nas.robust.lipschitz`).

The supernet computes each operation for all edges that leave a node at once
(`search_spaces.supernet_ops`): a grouped conv over n edges, a pooling shared by all of
them, one module per edge for the ops without a batched form. The term needs one
constant per (cell, edge, candidate operation), so batched ops get rules of their own,
keyed by type like the per-module rules (`register_edge_rule`); each returns the n
constants of the edges it serves, and is checked against the standalone operation built
with that edge's weights. Layers whose forward is not a conv of their weight (AdderNet,
DSQ, IR-Net, the binary block) and DARTS' FactorizedReduce get module rules here.

All constants are computed without gradient (the penalty's gradient reaches the
log-normal's mu, sigma and U only: the term steers the architecture distribution, not
the operation weights), at the input shapes the supernet runs (recorded from one
shape-only forward pass), with one power iteration per call from kept vectors (a
`LipschitzEstimator` per supernet). Batch norms count with their running statistics (the
network as evaluated); P-DARTS' train-time skip dropout is not counted.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import cast

import torch
import torch.nn.functional as F
from torch import nn

from nas.robust.lipschitz import (
    LipschitzEstimator,
    LogNormal,
    OpLipschitz,
    Shape,
    cell_lognormal,
    cells_network_lognormal,
    conv_block_norms,
    conv_operator_norm,
    edge_lognormal,
    register_lipschitz_rule,
    window_multiplicity,
)
from search_spaces.activations import activation_module
from search_spaces.adder import AdderConv2d
from search_spaces.adder_ops import BatchedAdderDilConv
from search_spaces.arch_samplers import LogNormalSampler
from search_spaces.binary_ops import BinaryConvBlock
from search_spaces.dsq import DSQConv2d, hard_quantize
from search_spaces.errors import InputError
from search_spaces.irnet import IRConv2d
from search_spaces.layer_spec import counting_pass
from search_spaces.ops import FactorizedReduce
from search_spaces.supernet import SearchCell, SourceEdges, SuperNet, activation_key
from search_spaces.supernet_ops import (
    MIXED,
    BatchedDilConv,
    BatchedFactorizedReduce,
    BatchedReLUConvBN,
    EdgeBatchOp,
    EdgeMixture,
    PerEdge,
    SharedIdentity,
    SharedPool,
)

F64 = torch.float64
#: The constant an edge whose every candidate is `none` gets: it contributes nothing, and
#: a log-normal needs a positive value (exp(-69): no gradient, no effect on any sum).
ABSENT_EDGE = 1e-30


class UnsupportedSupernetError(InputError):
    """A supernet (or sampler) the Lipschitz term has no network form for."""


# ------------------------------------------------------------------ helpers


def _f64(x: torch.Tensor) -> torch.Tensor:
    return x.detach().to(F64)


def batchnorm_scales(bn: nn.modules.batchnorm._BatchNorm) -> torch.Tensor:
    """|gamma_c| / sqrt(running_var_c + eps) per channel: the slope of each channel of an
    evaluated batch norm (`nas.robust.lipschitz`'s BN rule takes their max)."""
    if bn.running_var is None:
        raise UnsupportedSupernetError(
            "a batch norm without running statistics has no constant (track_running_stats"
            "=False)")
    scale = (bn.running_var + bn.eps).rsqrt()
    if bn.weight is not None:
        scale = bn.weight.abs() * scale
    return _f64(scale)


def _bn_edges(bn: nn.modules.batchnorm._BatchNorm, n: int) -> torch.Tensor:
    """Per-edge constants of a batch norm over n edges' channels side by side."""
    return batchnorm_scales(bn).view(n, -1).amax(dim=1)


def _conv_out_shape(conv: nn.Conv2d, shape: Shape) -> Shape:
    x = torch.empty((1, *shape), device="meta")
    w = torch.empty(conv.weight.shape, device="meta")
    out = F.conv2d(x, w, None, conv.stride, conv.padding, conv.dilation, conv.groups)
    return tuple(out.shape[1:])


def _activation(name: str, shape: Shape, est: LipschitzEstimator) -> tuple[torch.Tensor, int]:
    """The constant of the activation registered as `name`, and 1 if it is the edge's
    mixture of activations (a factorised supernet): that one counts 1 here, and the
    network log-normal multiplies the edge by its mixture's log-normal per use."""
    if name == MIXED:
        return torch.ones((), dtype=F64), 1
    return _f64(est(activation_module(name), shape).constant), 0


# ------------------------------------------------------------------ module rules


def _factorized_reduce_norms(conv_1: nn.Conv2d, conv_2: nn.Conv2d, scales: torch.Tensor,
                             n: int) -> torch.Tensor:
    """Per-edge constants of FactorizedReduce without its activation, for n edges whose
    1x1 stride-2 convs are stacked in `conv_1` / `conv_2` (n * C/2 outputs each) and whose
    batch-norm slopes are `scales` (n * C, edge-major, each edge's conv_1 half first).

    Exact, not a bound: conv_1 reads the pixels at even (row, column), conv_2 (on the
    input shifted by one pixel) those at odd ones, so the two halves of the output read
    disjoint pixels P and Q of the input, and with A = diag(bn_a) W_1, B = diag(bn_b) W_2
    (1x1 convs act per pixel): ||y||^2 = sum_{p in P} |A x_p|^2 + sum_{q in Q} |B x_q|^2
    <= max(||A||, ||B||)^2 ||x||^2, reached by x concentrated on one pixel of the phase of
    the larger. (With a height or width of 1 the odd phase is padding only and this
    overstates by taking ||B|| into the max.)"""
    half = conv_1.out_channels // n
    s = scales.view(n, 2, half)
    a = s[:, 0, :, None] * _f64(conv_1.weight).reshape(n, half, -1)
    b = s[:, 1, :, None] * _f64(conv_2.weight).reshape(n, half, -1)
    return torch.maximum(torch.linalg.matrix_norm(a, ord=2), torch.linalg.matrix_norm(b, ord=2))


@register_lipschitz_rule(FactorizedReduce)
def _factorized_reduce_rule(module: nn.Module, shape: Shape,
                            est: LipschitzEstimator) -> OpLipschitz:
    """ReLU (1) times the exact constant of the two shifted 1x1 convs with their batch
    norm (`_factorized_reduce_norms`): DARTS' stride-2 skip and a cell's preprocessing
    after a reduction."""
    fr = cast(FactorizedReduce, module)
    relu, _ = _activation("relu", shape, est)
    norms = _factorized_reduce_norms(fr.conv_1, fr.conv_2, batchnorm_scales(fr.bn), 1)
    out = _conv_out_shape(fr.conv_1, shape)
    return OpLipschitz(relu * norms[0], (fr.bn.num_features, *out[1:]))


@register_lipschitz_rule(AdderConv2d)
def _adder_rule(module: nn.Module, shape: Shape, est: LipschitzEstimator) -> OpLipschitz:
    """sqrt((C_out / groups) * K * m), K = (C_in / groups) kh kw taps per patch and m the
    most windows one input pixel lies in (`window_multiplicity`).

    Output t at position p is -sum_k |x_k - f_tk| over its patch, and ||a| - |b|| <=
    |a - b|, so |dy_tp| <= ||dx_patch||_1 <= sqrt(K) ||dx_patch||_2 whatever the filter;
    summing the squares over the C_out / groups outputs of a group and over positions
    counts each input pixel at most m times. This is an upper bound, independent of the
    weights, and nearly reached where every tap of a patch lies on the same side of its
    filter values (the unnormalised inputs adder layers see: `adder_ops`). As a gauge of
    the layer's typical sensitivity it is an ESTIMATE on the pessimistic side: typical
    perturbations are not sign-aligned over a whole patch, and the batch norm after the
    layer divides by the large spread of its outputs."""
    adder = cast(AdderConv2d, module)
    if len(shape) != 3 or shape[0] != adder.in_channels:
        raise ValueError(f"an AdderConv2d with {adder.in_channels} inputs got shape {shape}")
    out_hw = [
        (n + 2 * p - d * (k - 1) - 1) // s + 1
        for n, k, s, p, d in zip(shape[1:], adder.kernel_size, adder.stride, adder.padding,
                                 adder.dilation, strict=True)
    ]
    m = window_multiplicity(shape, out_hw, adder.kernel_size, adder.stride, adder.padding,
                            adder.dilation)
    taps = adder.in_channels // adder.groups * adder.kernel_size[0] * adder.kernel_size[1]
    outputs = adder.out_channels // adder.groups
    return OpLipschitz(torch.tensor(math.sqrt(outputs * taps * m), dtype=F64),
                       (adder.out_channels, *out_hw))


@register_lipschitz_rule(DSQConv2d)
def _dsq_rule(module: nn.Module, shape: Shape, est: LipschitzEstimator) -> OpLipschitz:
    """An ESTIMATE: the norm of the convolution with the hard-quantized weights the
    forward uses, the input quantizer counted as 1.

    A staircase is not Lipschitz (it jumps by Delta at every step), so no finite constant
    covers the layer; clipping is 1-Lipschitz and rounding moves a value by at most
    Delta / 2, so |Q(x) - Q(x')| <= |x - x'| + Delta: slope 1 up to the quantization error,
    the convention this takes. Before the weight quantizer has seen the weights (its range
    is set by the first forward), the full-precision weights stand in for their
    quantization."""
    conv = cast(DSQConv2d, module)
    wq = conv.weight_quantizer
    weight = conv.weight.detach()
    if bool(wq.initialized):
        lower, upper = wq.clip_range()
        weight = hard_quantize(weight, lower.detach().to(weight.dtype),
                               upper.detach().to(weight.dtype), wq.alpha.detach(), wq.bits)
    return conv_operator_norm(conv, shape, est, weight=weight)


@register_lipschitz_rule(IRConv2d)
def _irnet_rule(module: nn.Module, shape: Shape, est: LipschitzEstimator) -> OpLipschitz:
    """An ESTIMATE by convention: k t (the steepest slope of the EDE surrogate k tanh(t x)
    that trains the input's sign) times the norm of the convolution with the Libra-PB
    binary weights.

    sign() is not Lipschitz (a jump of 2 at 0), so the binary layer has no finite constant;
    the surrogate is the function the training gradient treats the sign as. k t is 1
    early in the EDE schedule (the identity straight-through estimator) and grows to t_max
    = 10 at its end, so a binary op's constant rises over a search as the surrogate
    sharpens towards the jump: the fragility the term is meant to see."""
    conv = cast(IRConv2d, module)
    slope = _f64(conv.k * conv.t)
    part = conv_operator_norm(conv, shape, est, weight=conv.binary_weight().detach())
    return OpLipschitz(slope * _f64(part.constant), part.output_shape)


@register_lipschitz_rule(BinaryConvBlock)
def _binary_block_rule(module: nn.Module, shape: Shape,
                       est: LipschitzEstimator) -> OpLipschitz:
    """Hardtanh (1) of the sum of the two paths: L(bn_out) L(conv) L(bn_in) + L(shortcut)
    (triangle inequality). Inherits the binary conv's estimate (`IRConv2d`'s rule)."""
    block = cast(BinaryConvBlock, module)
    bn_in = est(block.bn_in, shape)
    conv = est(block.conv, bn_in.output_shape)
    bn_out = est(block.bn_out, conv.output_shape)
    shortcut = est(block.shortcut, shape)
    act = est(block.act, conv.output_shape)
    path = _f64(bn_in.constant) * _f64(conv.constant) * _f64(bn_out.constant)
    return OpLipschitz(_f64(act.constant) * (path + _f64(shortcut.constant)),
                       conv.output_shape)


@register_lipschitz_rule(EdgeMixture)
def _edge_mixture_rule(module: nn.Module, shape: Shape,
                       est: LipschitzEstimator) -> OpLipschitz:
    """1 here: the mixture of activations of a factorised supernet's per-edge module is
    counted by the network log-normal (one factor of the edge's activation log-normal per
    mixture, `SupernetLipschitz`), not by the module's constant."""
    return OpLipschitz(torch.ones((), dtype=F64), shape)


# ------------------------------------------------------------------ edge rules


@dataclass(frozen=True)
class EdgeConstants:
    """The constants of one batched op for each edge it serves (in its edge order), and
    how many times each edge's output passes through that edge's mixture of activations
    (factorised supernets; 0 otherwise)."""

    constants: torch.Tensor
    mixed: int = 0


#: (batched op, per-sample input shape of its source node, estimator) -> its edges'
EdgeRule = Callable[[EdgeBatchOp, Shape, LipschitzEstimator], EdgeConstants]

_EDGE_RULES: dict[type[EdgeBatchOp], EdgeRule] = {}


def register_edge_rule(
    *op_types: type[EdgeBatchOp],
) -> Callable[[EdgeRule], EdgeRule]:
    """Register `rule` for batched operation types; a type is registered once (two rules
    would make the bound depend on import order)."""

    def decorate(rule: EdgeRule) -> EdgeRule:
        for t in op_types:
            if t in _EDGE_RULES and _EDGE_RULES[t] is not rule:
                raise ValueError(f"an edge rule for {t.__qualname__} is already registered")
        for t in op_types:
            _EDGE_RULES[t] = rule
        return rule

    return decorate


def edge_constants(op: EdgeBatchOp, input_shape: Sequence[int],
                   estimator: LipschitzEstimator) -> EdgeConstants:
    """The per-edge constants of batched op `op` reading a source node of `input_shape`
    (C, H, W). A subclass with its own forward computes something else and needs its own
    rule, as for module rules."""
    shape = tuple(int(s) for s in input_shape)
    for base in type(op).__mro__:
        rule = _EDGE_RULES.get(base)
        if rule is None:
            continue
        if base is not type(op) and type(op).forward is not getattr(base, "forward", None):
            break
        out = rule(op, shape, estimator)
        if out.constants.shape != (op.n,):
            raise RuntimeError(f"the edge rule of {type(op).__qualname__} gave "
                               f"{tuple(out.constants.shape)} constants for {op.n} edges")
        return out
    raise UnsupportedSupernetError(
        f"no Lipschitz edge rule for the batched operation {type(op).__qualname__};"
        " register one with nas.robust.supernet_lipschitz.register_edge_rule")


@register_edge_rule(SharedIdentity)
def _identity_edges(op: EdgeBatchOp, shape: Shape, est: LipschitzEstimator) -> EdgeConstants:
    """1 for every edge (P-DARTS' dropout on skips runs in training only)."""
    return EdgeConstants(torch.ones(op.n, dtype=F64))


@register_edge_rule(SharedPool)
def _pool_edges(op: EdgeBatchOp, shape: Shape, est: LipschitzEstimator) -> EdgeConstants:
    """The pooling's exact constant times its batch norm's, the same for every edge: the
    pooling and its affine-free BN are computed once for all edges (per-edge BNs would see
    identical inputs and keep identical statistics)."""
    pool = cast(SharedPool, op)
    part = est(pool.pool, shape)
    c = _f64(part.constant)
    if pool.bn is not None:
        c = c * _f64(est(pool.bn, part.output_shape).constant)
    return EdgeConstants(c.expand(op.n).clone())


@register_edge_rule(BatchedFactorizedReduce)
def _factorized_reduce_edges(op: EdgeBatchOp, shape: Shape,
                             est: LipschitzEstimator) -> EdgeConstants:
    """The stride-2 skip of each edge: its activation times the exact two-conv constant
    (`_factorized_reduce_norms`) with the edge's slice of the batch norm."""
    fr = cast(BatchedFactorizedReduce, op)
    act, mixed = _activation(fr.activation, shape, est)
    norms = _factorized_reduce_norms(fr.conv_1, fr.conv_2, batchnorm_scales(fr.bn), fr.n)
    return EdgeConstants(act * norms, mixed)


@register_edge_rule(BatchedDilConv)
def _dil_conv_edges(op: EdgeBatchOp, shape: Shape, est: LipschitzEstimator) -> EdgeConstants:
    """Per block: activation x depthwise x pointwise x BN, each edge's own block of the
    grouped convs (`conv_block_norms`) and slice of the BN; the same layer-by-layer product
    the registry gives a standalone `DilConv` / `SepConv` (a product of layer constants,
    an upper bound on the block's own norm)."""
    dil = cast(BatchedDilConv, op)
    n = dil.n
    h: Shape = (n * shape[0], *shape[1:])
    total = torch.ones(n, dtype=F64)
    mixed = 0
    for block in cast(Sequence[nn.ModuleDict], dil.blocks):
        act, m = _activation(dil.activation, h, est)
        mixed += m
        dw, pw = cast(nn.Conv2d, block["dw"]), cast(nn.Conv2d, block["pw"])
        c_dw = _f64(conv_block_norms(dw, h, n, est))
        h = _conv_out_shape(dw, h)
        c_pw = _f64(conv_block_norms(pw, h, n, est))
        h = _conv_out_shape(pw, h)
        bn = cast(nn.BatchNorm2d, block["bn"])
        total = total * act * c_dw * c_pw * _bn_edges(bn, n)
    return EdgeConstants(total, mixed)


@register_edge_rule(BatchedReLUConvBN)
def _relu_conv_bn_edges(op: EdgeBatchOp, shape: Shape,
                        est: LipschitzEstimator) -> EdgeConstants:
    """Activation x each edge's output slice of the shared-input conv x its BN slice."""
    rcb = cast(BatchedReLUConvBN, op)
    act, mixed = _activation(rcb.activation, shape, est)
    conv = _f64(conv_block_norms(rcb.conv, shape, rcb.n, est))
    return EdgeConstants(act * conv * _bn_edges(rcb.bn, rcb.n), mixed)


@register_edge_rule(BatchedAdderDilConv)
def _adder_edges(op: EdgeBatchOp, shape: Shape, est: LipschitzEstimator) -> EdgeConstants:
    """Per block: activation x depthwise adder x BN x pointwise adder x BN. The adder
    layers' constants (`AdderConv2d`'s rule, an estimate) depend on shapes only, and a
    grouped adder layer over n edges has each edge's group shapes, so the batched layer's
    constant is every edge's; the BN slices are per edge."""
    adder = cast(BatchedAdderDilConv, op)
    n = adder.n
    h: Shape = (n * shape[0], *shape[1:])
    total = torch.ones(n, dtype=F64)
    mixed = 0
    for block in adder.blocks:
        act, m = _activation(adder.activation, h, est)
        mixed += m
        total = total * act
        for layer in cast(nn.Sequential, block):
            if isinstance(layer, nn.BatchNorm2d):
                total = total * _bn_edges(layer, n)
                continue
            part = est(layer, h)
            total = total * _f64(part.constant)
            h = part.output_shape
    return EdgeConstants(total, mixed)


@register_edge_rule(PerEdge)
def _per_edge(op: EdgeBatchOp, shape: Shape, est: LipschitzEstimator) -> EdgeConstants:
    """Each edge's own module through the module registry (adder, DSQ, binary ops)."""
    per = cast(PerEdge, op)
    constants = torch.stack([_f64(est(m, shape).constant) for m in per.ops])
    mixed = sum(isinstance(m, EdgeMixture) for m in per.ops[0].modules())
    return EdgeConstants(constants, mixed)


# ------------------------------------------------------------------ the network


@dataclass(frozen=True)
class CellConstants:
    """One cell's constants: per edge and candidate column (the columns of its type's
    architecture tensor; 0 for `none`), how many activation mixtures each candidate's
    output passes (factorised supernets), and its two preprocessing layers'."""

    cell_type: str
    edges: torch.Tensor  # (edges, columns)
    mixed: torch.Tensor  # (edges, columns)
    inputs: tuple[torch.Tensor, torch.Tensor]


@dataclass(frozen=True)
class SupernetConstants:
    cells: tuple[CellConstants, ...]
    #: stem x global pooling x classifier: the layers without architecture weights
    fixed: torch.Tensor


@dataclass(frozen=True)
class LipschitzSummary:
    """What a search logs of the network log-normal."""

    log_mean: float
    log_std: float
    median: float
    quantile: float
    exceed_probability: float | None


def check_supernet(model: nn.Module) -> SuperNet:
    """`model` as a DARTS supernet with a log-normal sampler, or a one-line error."""
    if not isinstance(model, SuperNet):
        raise UnsupportedSupernetError(
            f"the Lipschitz term needs DARTS cells; a {type(model).__name__} (NB201 cells) has"
            " no network form for it yet")
    if not isinstance(model.arch_sampler, LogNormalSampler):
        raise UnsupportedSupernetError(
            "the Lipschitz term needs --sampler lognormal: the softmax sampler has no "
            "distribution to bound")
    return model


class SupernetLipschitz:
    """The per-operation constants and the network log-normal of one live supernet.

    Holds the input shapes every part of the supernet runs at (recorded once, from a
    shape-only forward pass of one blank image of `input_shape`) and the estimator whose
    kept power-iteration vectors make each call cheap; `reset` starts the vectors afresh
    (deterministically: the estimator's own seeded generator, never the training RNG)."""

    def __init__(self, model: nn.Module, input_shape: Sequence[int],
                 iters: int = 1, init_iters: int = 50) -> None:
        self.model = check_supernet(model)
        self.input_shape = tuple(int(s) for s in input_shape)
        self._iters, self._init_iters = iters, init_iters
        self.estimator = LipschitzEstimator(iters=iters, init_iters=init_iters)
        self.shapes = record_input_shapes(self.model, self.input_shape)

    def reset(self) -> None:
        """Forget the kept vectors: the next call starts from the seeded ones."""
        self.estimator = LipschitzEstimator(iters=self._iters, init_iters=self._init_iters)

    # -------------------------------------------------------------- constants

    def constants(self) -> SupernetConstants:
        """Every constant of the network at its current weights, without gradient."""
        model, est, shapes = self.model, self.estimator, self.shapes
        with torch.no_grad():
            fixed = (_f64(est(model.stem, shapes[model.stem]).constant)
                     * _f64(est(model.global_pooling, shapes[model.global_pooling]).constant)
                     * _f64(est(model.classifier, shapes[model.classifier]).constant))
            cells = tuple(self._cell(cell) for cell in cast(Sequence[SearchCell], model.cells))
        return SupernetConstants(cells, fixed)

    def _cell(self, cell: SearchCell) -> CellConstants:
        model, est, shapes = self.model, self.estimator, self.shapes
        cell_type = "reduce" if cell.reduction else "normal"
        ops = model.edge_ops[cell_type]
        rows, cols = len(ops), len(ops[0])
        edges = torch.zeros(rows * cols, dtype=F64)
        mixed = torch.zeros(rows * cols, dtype=F64)
        for source in cast(Sequence[SourceEdges], cell.sources):
            for k, op in enumerate(cast(Sequence[EdgeBatchOp], source.ops)):
                flat = getattr(source, f"flat_{k}").cpu()
                got = edge_constants(op, shapes[source], est)
                edges[flat] = got.constants.cpu()
                mixed[flat] = float(got.mixed)
        inputs = (_f64(est(cell.preprocess0, shapes[cell.preprocess0]).constant),
                  _f64(est(cell.preprocess1, shapes[cell.preprocess1]).constant))
        return CellConstants(cell_type, edges.view(rows, cols), mixed.view(rows, cols), inputs)

    # -------------------------------------------------------------- log-normals

    def network_lognormal(self, constants: SupernetConstants | None = None) -> LogNormal:
        """The network's Lipschitz constant as one log-normal, differentiable in the
        sampler's mu, sigma and U (float64).

        Edges: Fenton-Wilkinson (`edge_lognormal`, full covariance) over the cell's own
        constants with its type's mu and covariance. In a factorised supernet an edge's
        mixture of activations, A = sum_k q_k L(a_k) with q = exp(z_act), is fitted as a
        log-normal exp(a) (Fenton-Wilkinson again, independent of the op sample) and an
        op through it r times contributes c exp(z_o + r a): the fold into the op sample is
        mu + r E[a], cov + r r^T Var(a), exact given the fit.

        Cells: the DARTS DAG (`cell_lognormal`) with the preprocessing constants for its
        two inputs. Cells are then taken in series (a chain): with L_k the constant of
        state k, a cell reading states k-2 and k-1 gives L_k <= C_k max(L_{k-2}, L_{k-1}),
        which is C_k L_{k-1} whenever the constants grow (every C_k >= 1, the usual case:
        a cell sums several edges), so the product of the C_k bounds the network there;
        where a cell shrinks its input, the skip from state k-2 past it is not followed
        and the product can understate. The true two-input recursion L_k <= A_k L_{k-2} +
        B_k L_{k-1} would need sums of log-normals correlated through the shared samples
        (Fenton-Wilkinson with the cross-covariances of every state), for a tighter but
        not differently directed penalty.

        The network: cells of one type read one sample, so their log-normals multiply as
        perfectly correlated factors (log-stds add, `shared_sample_product`), types as
        independent ones; stem, pooling and classifier are fixed factors."""
        model = self.model
        consts = self.constants() if constants is None else constants
        sampler = cast(LogNormalSampler, model.arch_sampler)
        dists: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        for key in model.arch:
            dists[key] = (sampler.mu(model.arch, key).to(F64),
                          sampler.covariance(model.arch, key).to(F64))
        act_constants = self._activation_constants()
        cells = []
        for cell in consts.cells:
            mu, cov = dists[cell.cell_type]
            edges_c = cell.edges.to(mu.device)
            if model.activations:
                mu_a, cov_a = dists[activation_key(cell.cell_type)]
                act = edge_lognormal(mu_a, cov_a, act_constants.to(mu.device).expand(
                    mu_a.shape[0], -1))
                mu, cov = fold_activation(mu, cov, cell.mixed.to(mu.device), act)
            edges = _edge_lognormals(mu, cov, edges_c)
            inputs = (LogNormal.constant(cell.inputs[0], mu),
                      LogNormal.constant(cell.inputs[1], mu))
            per_edge = [LogNormal(edges.log_mean[e], edges.log_var[e])
                        for e in range(edges_c.shape[0])]
            cells.append((cell.cell_type,
                          cell_lognormal(per_edge, model.steps, model.multiplier, inputs)))
        return cells_network_lognormal(cells, consts.fixed.to(F64))

    def _activation_constants(self) -> torch.Tensor:
        """L(a_k) of each searched activation (shape-free: activations act per element)."""
        names = self.model.activations
        return torch.stack([_f64(self.estimator(activation_module(a), (1, 1, 1)).constant)
                            for a in names]) if names else torch.ones(0, dtype=F64)

    def summary(self, budget: float | None = None, confidence: float = 0.9
                ) -> LipschitzSummary:
        """The network log-normal's figures, without gradient."""
        with torch.no_grad():
            net = self.network_lognormal()
            exceed = None if budget is None else float(net.sf(budget))
            return LipschitzSummary(float(net.log_mean), float(net.log_std),
                                    float(net.log_mean.exp()), float(net.quantile(confidence)),
                                    exceed)


def fold_activation(mu: torch.Tensor, cov: torch.Tensor, mixed: torch.Tensor,
                    activation: LogNormal) -> tuple[torch.Tensor, torch.Tensor]:
    """The op sample's mean and covariance (edges, n) / (edges, n, n) with each edge's
    mixture of activations folded in: an op whose output passes the mixture r_o times
    (`mixed`, (edges, n)) contributes c_o exp(z_o + r_o a), a ~ N(m, v) the log of the
    edge's fitted activation log-normal (`activation`, shape (edges,)), independent of z.
    So (z_o + r_o a)_o ~ N(mu + r m, cov + v r r^T), and `edge_lognormal` of these is the
    edge's sum with its activations; a separable conv's two activations read the same
    mixture, hence r = 2 and one a, not two independent ones."""
    m = activation.log_mean.unsqueeze(-1)
    v = activation.log_var[..., None, None]
    return mu + mixed * m, cov + v * (mixed.unsqueeze(-1) * mixed.unsqueeze(-2))


def _edge_lognormals(mu: torch.Tensor, cov: torch.Tensor, c: torch.Tensor) -> LogNormal:
    """`edge_lognormal` for all edges of a cell, with an edge whose candidates are all
    `none` (possible after P-DARTS pruning) as the negligible constant `ABSENT_EDGE`."""
    absent = (c <= 0).all(dim=-1)
    fitted = edge_lognormal(mu, cov, torch.where(absent.unsqueeze(-1), torch.ones_like(c), c))
    if not bool(absent.any()):
        return fitted
    floor = torch.full_like(fitted.log_mean, math.log(ABSENT_EDGE))
    return LogNormal(torch.where(absent, floor, fitted.log_mean),
                     torch.where(absent, torch.zeros_like(fitted.log_var), fitted.log_var))


def record_input_shapes(model: SuperNet, input_shape: Sequence[int]
                        ) -> dict[nn.Module, Shape]:
    """The per-sample input shape of the stem, every cell's preprocessing and source
    nodes, the pooling and the classifier, from one forward pass of a blank image.

    The pass is shape-only: eval mode (no batch-norm statistics move; training flags are
    restored), no gradient, and a counting pass (`layer_spec.counting_pass`), in which
    adder layers return zeros without computing and DSQ quantizers do not take their
    range from the blank image. No random numbers are drawn."""
    targets: list[nn.Module] = [model.stem, model.global_pooling, model.classifier]
    for cell in cast(Sequence[SearchCell], model.cells):
        targets += [cell.preprocess0, cell.preprocess1, *cell.sources]
    shapes: dict[nn.Module, Shape] = {}

    def hook(module: nn.Module, args: tuple[torch.Tensor, ...]) -> None:
        shapes[module] = tuple(int(s) for s in args[0].shape[1:])

    handles = [m.register_forward_pre_hook(hook) for m in targets]
    modes = [(m, m.training) for m in model.modules()]
    param = next(model.parameters())
    try:
        model.eval()
        with torch.no_grad(), counting_pass():
            model(torch.zeros((1, *input_shape), dtype=param.dtype, device=param.device))
    finally:
        for h in handles:
            h.remove()
        for m, mode in modes:
            m.training = mode
    missing = [m for m in targets if m not in shapes]
    if missing:
        raise RuntimeError(f"{len(missing)} parts of the supernet never ran in its forward")
    return shapes


__all__ = [
    "ABSENT_EDGE",
    "CellConstants",
    "EdgeConstants",
    "LipschitzSummary",
    "SupernetConstants",
    "SupernetLipschitz",
    "UnsupportedSupernetError",
    "batchnorm_scales",
    "check_supernet",
    "edge_constants",
    "fold_activation",
    "record_input_shapes",
    "register_edge_rule",
]
