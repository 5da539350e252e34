"""The Lipschitz confidence term of log-normal robust architecture search
(docs/methods.md#lipschitz-confidence-bound).

Our reconstruction of the search of Dong et al., "Adversarially Robust Neural
Architectures" (arXiv 2009.00902; no public code). Each edge mixes its candidate
operations with un-normalised weights w_o = exp(z_o), z ~ N(mu, Sigma), so an edge's
Lipschitz constant sum_o c_o w_o is a sum of correlated log-normals. The network's
constant is approximated by one univariate log-normal, and the search pays when the
probability that it exceeds a budget is above a chosen level.

Two halves:

- *per-operation constants* c_o (l2 / spectral norm), from a registry keyed by module
  type so that an operation family registers its own rule (`register_lipschitz_rule`);
  convolutions and linear layers by power iteration with a vector kept per module
  (`LipschitzEstimator`), normalisation, activations and pooling by exact formulas;
- *log-normal algebra* on torch tensors, differentiable in mu and the scale parameters:
  Fenton-Wilkinson moment matching for sums (`edge_lognormal`, `lognormal_sum`),
  products in series (`independent_product`, `LogNormal.power`), a DARTS cell
  (`cell_lognormal`), the network with its shared samples (`network_lognormal`;
  `cells_network_lognormal` when each cell has constants of its own, as in a supernet:
  `nas.robust.supernet_lipschitz`) and the penalty (`confidence_penalty`,
  `exceed_probability`).

Every constant is an l2 (spectral) Lipschitz constant of the map from one sample's
input to its output, not counting biases (they cancel in differences).
"""

from __future__ import annotations

import functools
import math
import weakref
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import cast

import torch
import torch.nn.functional as F
from torch import nn

from search_spaces.ops import Identity as SkipIdentity
from search_spaces.ops import Zero

Shape = tuple[int, ...]

# ------------------------------------------------------------------ per-op constants


@dataclass(frozen=True)
class OpLipschitz:
    """An operation's constant at one input shape, and the shape it outputs (so that a
    container can hand the next module its input shape: a conv's norm depends on it)."""

    constant: torch.Tensor
    output_shape: Shape


#: (module, per-sample input shape, estimator) -> its constant and output shape.
LipschitzRule = Callable[[nn.Module, Shape, "LipschitzEstimator"], OpLipschitz]

_RULES: dict[type[nn.Module], LipschitzRule] = {}


class NoLipschitzRuleError(TypeError):
    """A module type without a registered rule: a silent 1 would understate the bound."""


def register_lipschitz_rule(
    *module_types: type[nn.Module],
) -> Callable[[LipschitzRule], LipschitzRule]:
    """Register `rule` for `module_types`. A type is registered once, as activations are:
    two rules for one type would make the bound depend on import order."""

    def decorate(rule: LipschitzRule) -> LipschitzRule:
        for t in module_types:
            if t in _RULES and _RULES[t] is not rule:
                raise ValueError(f"a Lipschitz rule for {t.__qualname__} is already registered")
        for t in module_types:
            _RULES[t] = rule
        return rule

    return decorate


def lipschitz_rule(module_type: type[nn.Module]) -> LipschitzRule:
    """The rule for `module_type`, or for the nearest registered base class when the
    subclass inherits that base's forward (DARTS' `ReLUConvBN`, `DilConv` and `SepConv`
    are plain `nn.Sequential`s). A subclass with its own forward computes something else,
    so it needs its own rule."""
    for base in module_type.__mro__:
        rule = _RULES.get(base)
        if rule is None:
            continue
        if base is not module_type and getattr(module_type, "forward", None) is not getattr(
            base, "forward", None
        ):
            break
        return rule
    raise NoLipschitzRuleError(
        f"no Lipschitz rule for module type {module_type.__module__}.{module_type.__qualname__};"
        " register one with nas.robust.lipschitz.register_lipschitz_rule"
    )


class LipschitzEstimator:
    """Per-operation Lipschitz constants, keeping one power-iteration vector per
    (module, input shape) between calls.

    As in spectral normalisation, the weights move little between training steps, so the
    previous step's singular vector is nearly converged: `iters` (default 1) iterations
    per call suffice once a vector exists; a module seen for the first time gets
    `init_iters`. Vectors are held weakly (a deleted module frees its vector) and live
    here rather than in module buffers, so checkpoints and state dicts are unchanged.

    Power iteration approaches the largest singular value from below: a slightly low
    estimate until converged, never an overestimate.
    """

    def __init__(self, iters: int = 1, init_iters: int = 50, seed: int = 0) -> None:
        if iters < 1 or init_iters < 1:
            raise ValueError(f"iters and init_iters must be >= 1, got {iters}, {init_iters}")
        self.iters = iters
        self.init_iters = init_iters
        self._seed = seed
        self._vectors: weakref.WeakKeyDictionary[nn.Module, dict[tuple[object, ...],
                                                                  torch.Tensor]]
        self._vectors = weakref.WeakKeyDictionary()

    def __call__(self, module: nn.Module, input_shape: Sequence[int]) -> OpLipschitz:
        """`module`'s constant for one sample of `input_shape` (no batch dimension:
        (C, H, W) for images, (..., features) for a linear layer)."""
        shape = tuple(int(s) for s in input_shape)
        return lipschitz_rule(type(module))(module, shape, self)

    def constant(self, module: nn.Module, input_shape: Sequence[int]) -> torch.Tensor:
        return self(module, input_shape).constant

    def vector(
        self, module: nn.Module, key: tuple[object, ...], shape: Shape,
        dtype: torch.dtype, device: torch.device,
    ) -> tuple[torch.Tensor, int]:
        """The stored vector for (module, key) and how many iterations to run: a fresh
        random one (seeded, so estimates are reproducible) gets `init_iters`."""
        store = self._vectors.setdefault(module, {})
        v = store.get(_full_key(key, shape, dtype, device))
        if v is not None:
            return v, self.iters
        g = torch.Generator().manual_seed(self._seed)
        v = torch.randn(shape, generator=g, dtype=torch.float64).to(device=device, dtype=dtype)
        return v, self.init_iters

    def keep(self, module: nn.Module, key: tuple[object, ...], v: torch.Tensor) -> None:
        store = self._vectors.setdefault(module, {})
        store[_full_key(key, tuple(v.shape), v.dtype, v.device)] = v


def _full_key(key: tuple[object, ...], shape: Shape, dtype: torch.dtype,
              device: torch.device) -> tuple[object, ...]:
    return (*key, shape, dtype, str(device))


def lipschitz_constant(module: nn.Module, input_shape: Sequence[int],
                       iters: int = 100) -> torch.Tensor:
    """One-off constant with a throwaway estimator (no vector kept): for reports and
    tests; a training loop should hold a `LipschitzEstimator`."""
    return LipschitzEstimator(iters=iters, init_iters=iters).constant(module, input_shape)


def _normalise(x: torch.Tensor, blocks: int) -> torch.Tensor:
    """x with each of `blocks` contiguous chunks (of the flattened tensor) at unit norm."""
    flat = x.reshape(blocks, -1)
    return (flat / flat.norm(dim=1, keepdim=True).clamp_min(1e-30)).reshape(x.shape)


def power_iteration(
    forward: Callable[[torch.Tensor], torch.Tensor],
    adjoint: Callable[[torch.Tensor], torch.Tensor],
    v: torch.Tensor,
    iters: int,
    blocks: int = 1,
) -> tuple[torch.Tensor, torch.Tensor]:
    """`iters` steps of power iteration on the linear map `forward` (A) from `v`; returns
    the right and left vectors (v, u), detached. With `blocks` > 1 the map is taken as
    block diagonal over that many contiguous chunks of input and output, and each chunk is
    normalised on its own: one iteration advances every block's own power iteration."""
    with torch.no_grad():
        v = _normalise(v, blocks)
        for _ in range(iters):
            u = _normalise(forward(v), blocks)
            back = adjoint(u)
            if back.shape != v.shape:  # an adjoint onto another input size: a wrong norm
                raise RuntimeError(
                    f"adjoint returned shape {tuple(back.shape)}, not {tuple(v.shape)}"
                )
            v = _normalise(back, blocks)
        u = _normalise(forward(v), blocks)
    return v, u


def _autograd_adjoint(
    forward: Callable[[torch.Tensor], torch.Tensor], like: torch.Tensor
) -> Callable[[torch.Tensor], torch.Tensor]:
    """A^T u of a linear `forward`, as the gradient of <u, A x>: for padding modes and
    'same' padding, whose transposed convolution would need care of its own."""

    def adjoint(u: torch.Tensor) -> torch.Tensor:
        with torch.enable_grad():
            x = torch.zeros_like(like, requires_grad=True)
            (g,) = torch.autograd.grad(forward(x), x, u)
        return g

    return adjoint


def _pair(x: int | Sequence[int]) -> tuple[int, int]:
    if isinstance(x, int):
        return (x, x)
    a, b = x
    return (int(a), int(b))


def _conv_operator(
    conv: nn.Conv2d, weight: torch.Tensor, groups: int, v: torch.Tensor
) -> tuple[Callable[[torch.Tensor], torch.Tensor], Callable[[torch.Tensor], torch.Tensor]]:
    """The convolution without bias as (A, A^T) for inputs shaped like v.

    A^T is `F.conv_transpose2d` with the conv's stride, padding, dilation and groups, and
    the output_padding that restores the input size: a strided conv maps several input
    sizes to one output size, and the transpose must land on this one."""
    stride, dilation = _pair(conv.stride), _pair(conv.dilation)
    if conv.padding_mode != "zeros":
        pad = tuple(conv._reversed_padding_repeated_twice)
        mode = conv.padding_mode

        def forward(x: torch.Tensor) -> torch.Tensor:
            return F.conv2d(F.pad(x, pad, mode=mode), weight, None, stride, 0, dilation, groups)

        return forward, _autograd_adjoint(forward, v)
    if isinstance(conv.padding, str):
        padding_str = conv.padding

        def forward_str(x: torch.Tensor) -> torch.Tensor:
            return F.conv2d(x, weight, None, stride, padding_str, dilation, groups)

        return forward_str, _autograd_adjoint(forward_str, v)
    padding = _pair(conv.padding)
    kernel = weight.shape[-2:]
    in_size = v.shape[-2:]

    def forward_int(x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, weight, None, stride, padding, dilation, groups)

    def adjoint(u: torch.Tensor) -> torch.Tensor:
        out = u.shape[-2:]
        output_padding = tuple(
            in_size[i]
            - ((out[i] - 1) * stride[i] - 2 * padding[i] + dilation[i] * (kernel[i] - 1) + 1)
            for i in range(2)
        )
        return F.conv_transpose2d(u, weight, None, stride, padding, output_padding, groups,
                                  dilation)

    return forward_int, adjoint


def _conv_norms(conv: nn.Conv2d, shape: Shape, est: LipschitzEstimator,
                blocks: int, shared_input: bool,
                weight: torch.Tensor | None = None) -> tuple[torch.Tensor, Shape]:
    if len(shape) != 3 or shape[0] != conv.in_channels:
        raise ValueError(
            f"a Conv2d with {conv.in_channels} input channels needs an input shape (C, H, W)"
            f" with C = {conv.in_channels}, got {shape}"
        )
    if weight is None:
        weight = conv.weight
    elif weight.shape != conv.weight.shape:
        raise ValueError(f"a substitute weight of shape {tuple(weight.shape)} for a conv whose"
                         f" weight is {tuple(conv.weight.shape)}")
    groups = blocks if shared_input else conv.groups
    in_shape = (1, blocks * shape[0], *shape[1:]) if shared_input else (1, *shape)
    key = ("conv2d", blocks, shared_input)
    v, iters = est.vector(conv, key, in_shape, weight.dtype, weight.device)
    forward, adjoint = _conv_operator(conv, weight.detach(), groups, v)
    v, u = power_iteration(forward, adjoint, v, iters, blocks)
    est.keep(conv, key, v)
    with_grad, _ = _conv_operator(conv, weight, groups, v)
    Av = with_grad(v)
    sigma = (u * Av).reshape(blocks, -1).sum(dim=1)
    return sigma, tuple(Av.shape[1:])


@register_lipschitz_rule(nn.Conv2d)
def _conv2d_rule(module: nn.Module, shape: Shape, est: LipschitzEstimator) -> OpLipschitz:
    """Power iteration on the convolution as the linear operator it is at this input size
    (padding, stride and borders included). The norm of the kernel reshaped to a matrix,
    which spectral normalisation uses, is not this operator's norm: it can be below it
    by up to a factor of sqrt(kernel area), so it is not a bound."""
    sigma, out_shape = _conv_norms(cast(nn.Conv2d, module), shape, est, 1, False)
    return OpLipschitz(sigma[0], out_shape)


def conv_operator_norm(conv: nn.Conv2d, input_shape: Sequence[int],
                       estimator: LipschitzEstimator,
                       weight: torch.Tensor | None = None) -> OpLipschitz:
    """The Conv2d rule for a layer that convolves with `weight` instead of its own (a
    quantized or binarised copy of the same shape): a registered rule for such a layer
    states what the rest of its forward contributes and calls this for the conv."""
    shape = tuple(int(s) for s in input_shape)
    sigma, out_shape = _conv_norms(conv, shape, estimator, 1, False, weight=weight)
    return OpLipschitz(sigma[0], out_shape)


def conv_block_norms(conv: nn.Conv2d, input_shape: Sequence[int], blocks: int,
                     estimator: LipschitzEstimator,
                     weight: torch.Tensor | None = None) -> torch.Tensor:
    """The spectral norm of each edge of a convolution batched over `blocks` edges, as a
    (blocks,) tensor (differentiable in the weight).

    Two layouts: when `conv.groups` is a multiple of `blocks` (the supernet's depthwise and
    grouped pointwise convs, input channels repeated per edge) the operator is block
    diagonal and block b maps input chunk b to output chunk b; when `conv.groups == 1`
    (one input shared by all edges, outputs concatenated: NB201's batched conv) edge b is
    the b-th slice of output channels, run here as a conv with `blocks` groups on the input
    repeated `blocks` times, which is block diagonal with exactly those slices. One power
    iteration over the whole batch with each block's vector normalised on its own is
    `blocks` independent power iterations for the price of one conv.

    `weight` replaces `conv.weight` (same shape) for layers that convolve with a transform
    of their weight (quantized, binarised): the operator is then that weight's."""
    shape = tuple(int(s) for s in input_shape)
    if blocks < 1 or conv.out_channels % blocks:
        raise ValueError(f"{conv.out_channels} output channels do not split into {blocks} blocks")
    if conv.groups % blocks == 0:
        sigma, _ = _conv_norms(conv, shape, estimator, blocks, shared_input=False,
                               weight=weight)
    elif conv.groups == 1:
        sigma, _ = _conv_norms(conv, shape, estimator, blocks, shared_input=True,
                               weight=weight)
    else:
        raise ValueError(
            f"a conv with {conv.groups} groups is neither block diagonal over {blocks} blocks"
            " nor a shared-input conv (groups=1)"
        )
    return sigma


@register_lipschitz_rule(nn.Linear)
def _linear_rule(module: nn.Module, shape: Shape, est: LipschitzEstimator) -> OpLipschitz:
    """The largest singular value of the weight: a linear layer acts on the last dimension
    only, so leading dimensions do not change its norm."""
    lin = cast(nn.Linear, module)
    if not shape or shape[-1] != lin.in_features:
        raise ValueError(f"a Linear with {lin.in_features} inputs got input shape {shape}")
    weight = lin.weight
    key = ("linear",)
    v, iters = est.vector(lin, key, (lin.in_features,), weight.dtype, weight.device)
    w = weight.detach()
    v, u = power_iteration(lambda x: w @ x, lambda y: w.T @ y, v, iters)
    est.keep(lin, key, v)
    return OpLipschitz(u @ (weight @ v), (*shape[:-1], lin.out_features))


@register_lipschitz_rule(nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm)
def _batchnorm_rule(module: nn.Module, shape: Shape, est: LipschitzEstimator) -> OpLipschitz:
    """max_c |gamma_c| / sqrt(running_var_c + eps) (gamma = 1 without affine).

    In eval mode batch norm is a per-channel affine map with these scales, so this is its
    exact constant. In training mode it normalises by the batch's own statistics, which
    depend on the input (and the map is not even per-sample), so the running variance
    stands in for them: an estimate, not a bound."""
    bn = cast(nn.modules.batchnorm._BatchNorm, module)
    if bn.running_var is None:
        raise ValueError(
            f"{type(bn).__qualname__} keeps no running statistics (track_running_stats=False):"
            " its scale is the batch's, and no constant can be given"
        )
    if not shape or shape[0] != bn.num_features:
        raise ValueError(f"a batch norm over {bn.num_features} channels got input shape {shape}")
    scale = (bn.running_var + bn.eps).rsqrt()
    if bn.weight is not None:
        scale = bn.weight.abs() * scale
    return OpLipschitz(scale.max(), shape)


def _meta_shape(module: nn.Module, shape: Shape) -> Shape:
    """Output shape of a parameter-free module, computed on the meta device (no data)."""
    out = module(torch.empty((1, *shape), device="meta"))
    if isinstance(out, tuple):  # pooling with return_indices
        out = out[0]
    return tuple(out.shape[1:])


def _fixed(value: float) -> torch.Tensor:
    return torch.tensor(value, dtype=torch.float64)


#: sup of the derivative of x * sigmoid(x), reached at x = 2.39936 (where the second
#: derivative vanishes); SiLU is not 1-Lipschitz.
SILU_LIPSCHITZ = 1.0998393201288670
#: x * relu6(x + 3) / 6 has slope (2x + 3) / 6 on (-3, 3), 1.5 as x -> 3.
HARDSWISH_LIPSCHITZ = 1.5


def _constant_rule(value: Callable[[nn.Module], float]) -> LipschitzRule:
    def rule(module: nn.Module, shape: Shape, est: LipschitzEstimator) -> OpLipschitz:
        return OpLipschitz(_fixed(value(module)), _meta_shape(module, shape))

    return rule


register_lipschitz_rule(
    nn.Identity, SkipIdentity, nn.Flatten, nn.ReLU, nn.Hardtanh, nn.Tanh, nn.Softplus
)(_constant_rule(lambda m: 1.0))
register_lipschitz_rule(Zero)(_constant_rule(lambda m: 0.0))
register_lipschitz_rule(nn.Sigmoid)(_constant_rule(lambda m: 0.25))
register_lipschitz_rule(nn.Hardsigmoid)(_constant_rule(lambda m: 1.0 / 6.0))
register_lipschitz_rule(nn.SiLU)(_constant_rule(lambda m: SILU_LIPSCHITZ))
register_lipschitz_rule(nn.Hardswish)(_constant_rule(lambda m: HARDSWISH_LIPSCHITZ))
register_lipschitz_rule(nn.LeakyReLU)(
    _constant_rule(lambda m: max(1.0, abs(cast(nn.LeakyReLU, m).negative_slope)))
)
register_lipschitz_rule(nn.ELU)(_constant_rule(lambda m: max(1.0, cast(nn.ELU, m).alpha)))


def _pool_params(module: nn.Module) -> tuple[tuple[int, int], ...]:
    pool = cast(nn.MaxPool2d | nn.AvgPool2d, module)
    kernel = _pair(pool.kernel_size)
    stride = _pair(pool.stride) if pool.stride else kernel  # None / () mean the kernel
    return kernel, stride, _pair(pool.padding)


def _window_multiplicity(n: int, n_out: int, k: int, s: int, p: int, d: int) -> int:
    """The most windows any of n input positions lies in (one dimension)."""
    counts = [0] * n
    for o in range(n_out):
        for t in range(k):
            i = o * s - p + d * t
            if 0 <= i < n:
                counts[i] += 1
    return max(counts)


def window_multiplicity(shape: Sequence[int], out_shape: Sequence[int],
                        kernel: Sequence[int], stride: Sequence[int], padding: Sequence[int],
                        dilation: Sequence[int]) -> int:
    """The most sliding windows (of a 2-D pooling or patch-based layer) that one input
    pixel lies in, at this input size: the product of the per-axis maxima, which one pixel
    attains on both axes at once. Padded positions are constants, not inputs, and are not
    counted. Any layer whose output is a 1-Lipschitz function of each window bounds its
    constant by sqrt of this (max pooling; AdderNet layers per tap, `supernet_lipschitz`)."""
    m = 1
    for axis in range(2):
        m *= _window_multiplicity(int(shape[-2 + axis]), int(out_shape[-2 + axis]),
                                  int(kernel[axis]), int(stride[axis]), int(padding[axis]),
                                  int(dilation[axis]))
    return m


@register_lipschitz_rule(nn.MaxPool2d)
def _maxpool_rule(module: nn.Module, shape: Shape, est: LipschitzEstimator) -> OpLipschitz:
    """sqrt(m), m the most windows one input pixel lies in: 3 for 3x3 stride 1, 2 for 3x3
    stride 2 (not 1: that holds only for non-overlapping windows).

    Bound: |max_W a - max_W b| <= max_{i in W} |a_i - b_i|, so ||dy||^2 <= sum over windows
    of max_{i in W} d_i^2 <= sum_i m_i d_i^2 <= m ||d||^2. Reached: a single spike of 1 at
    a pixel lying in m windows against the zero image moves each of those m outputs by 1.
    Windows are products of one window per axis, so m is the product of the per-axis
    maxima (and one pixel attains both)."""
    pool = cast(nn.MaxPool2d, module)
    kernel, stride, padding = _pool_params(pool)
    dilation = _pair(pool.dilation)
    out_shape = _meta_shape(pool, shape)
    m = 1
    for axis in range(2):
        m *= _window_multiplicity(shape[-2 + axis], out_shape[-2 + axis], kernel[axis],
                                  stride[axis], padding[axis], dilation[axis])
    return OpLipschitz(_fixed(math.sqrt(m)), out_shape)


@functools.lru_cache(maxsize=256)
def _avgpool_axis_norm(n: int, k: int, s: int, p: int, ceil_mode: bool,
                       count_include_pad: bool, sum_only: bool) -> float:
    """Spectral norm of average pooling along one axis of length n: the matrix is read off
    PyTorch's own pooling of the n unit vectors, so its divisors at borders (clipped
    windows, count_include_pad, ceil_mode) are exactly the ones it applies."""
    eye = torch.eye(n, dtype=torch.float64).view(n, 1, n, 1)
    rows = F.avg_pool2d(eye, (k, 1), (s, 1), (p, 0), ceil_mode=ceil_mode,
                        count_include_pad=count_include_pad,
                        divisor_override=1 if sum_only else None)
    return float(torch.linalg.matrix_norm(rows.reshape(n, -1), ord=2))


@register_lipschitz_rule(nn.AvgPool2d)
def _avgpool_rule(module: nn.Module, shape: Shape, est: LipschitzEstimator) -> OpLipschitz:
    """The exact operator norm of this linear map at this input size.

    Each output divides its window's sum by a count that is a product of one count per
    axis (also at borders, with or without count_include_pad), so the operator is the
    Kronecker product of two one-axis operators and its norm the product of theirs. Not
    1 in general. 3x3 stride 1 with count_include_pad=False (DARTS' avg_pool_3x3) is above
    1 (1.0047 at 32x32, 1.057 at 3x3): windows clipped by the border divide by fewer
    pixels, so a pixel next to the border carries a total weight of 7/6 per axis; a
    constant image keeps its norm and border-heavy inputs gain. Stride 2 is well below 1
    (0.62 at 32x32 with count_include_pad=False, 0.55 with it)."""
    pool = cast(nn.AvgPool2d, module)
    kernel, stride, padding = _pool_params(pool)
    divisor = pool.divisor_override
    norm = 1.0
    for axis in range(2):
        norm *= _avgpool_axis_norm(shape[-2 + axis], kernel[axis], stride[axis], padding[axis],
                                   pool.ceil_mode, pool.count_include_pad, bool(divisor))
    if divisor:
        norm /= divisor
    return OpLipschitz(_fixed(norm), _meta_shape(pool, shape))


@functools.lru_cache(maxsize=256)
def _adaptive_avgpool_axis_norm(n: int, out: int) -> float:
    """Spectral norm of adaptive average pooling of a length-n axis to `out` cells, read
    off PyTorch's own pooling of the n unit vectors (its windows may overlap)."""
    eye = torch.eye(n, dtype=torch.float64).unsqueeze(1)
    rows = F.adaptive_avg_pool1d(eye, out)
    return float(torch.linalg.matrix_norm(rows.reshape(n, -1), ord=2))


@register_lipschitz_rule(nn.AdaptiveAvgPool2d)
def _adaptive_avgpool_rule(module: nn.Module, shape: Shape,
                           est: LipschitzEstimator) -> OpLipschitz:
    """The exact operator norm, a product of one per axis (the windows are products of one
    window per axis, as for `nn.AvgPool2d`). Global pooling (output 1x1) is 1/sqrt(H W):
    the mean of HW values moves by at most ||dx|| / sqrt(HW), reached by a constant
    perturbation; a classifier after global pooling is therefore much smaller than 1 on
    large feature maps, and leaving the pooling out would overstate the bound by sqrt(HW)."""
    pool = cast(nn.AdaptiveAvgPool2d, module)
    # not `_meta_shape`: adaptive pooling on the meta device imports torch._refs (~2 s)
    size = cast("int | None | Sequence[int | None]", pool.output_size)
    sizes = list(size) if isinstance(size, Sequence) else [size, size]
    out_shape = (*shape[:-2], *(shape[-2 + a] if s is None else int(s)
                                for a, s in enumerate(sizes)))
    norm = 1.0
    for axis in range(2):
        norm *= _adaptive_avgpool_axis_norm(shape[-2 + axis], out_shape[-2 + axis])
    return OpLipschitz(_fixed(norm), out_shape)


@register_lipschitz_rule(nn.Sequential)
def _sequential_rule(module: nn.Module, shape: Shape, est: LipschitzEstimator) -> OpLipschitz:
    """Product of the children's constants (Lipschitz constants multiply under
    composition), each at the shape its predecessor outputs."""
    constant = _fixed(1.0)
    for child in module.children():
        part = est(child, shape)
        constant = constant * part.constant
        shape = part.output_shape
    return OpLipschitz(constant, shape)


# ------------------------------------------------------------------ log-normal algebra


def _ndtr(x: torch.Tensor) -> torch.Tensor:
    """Phi(x) with its lower tail intact: torch.special.ndtr loses it (6.1e-16 for
    Phi(-8) = 6.2e-16, 0 below -9), which would report a small exceed probability as 0."""
    return 0.5 * torch.special.erfc(-x * math.sqrt(0.5))


def _as_tensor(x: float | torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return torch.as_tensor(x, dtype=like.dtype, device=like.device)


@dataclass(frozen=True)
class LogNormal:
    """X = exp(Y), Y ~ N(log_mean, log_var): the mean and variance are of log X. Tensors
    of any (matching) shape; log_var 0 is a constant."""

    log_mean: torch.Tensor
    log_var: torch.Tensor

    @classmethod
    def constant(cls, value: float | torch.Tensor, like: torch.Tensor | None = None) -> LogNormal:
        v = torch.as_tensor(value, dtype=torch.float64) if like is None else _as_tensor(value, like)
        return cls(v.log(), torch.zeros_like(v))

    @property
    def log_std(self) -> torch.Tensor:
        return self.log_var.sqrt()

    def mean(self) -> torch.Tensor:
        return torch.exp(self.log_mean + self.log_var / 2)

    def var(self) -> torch.Tensor:
        return torch.expm1(self.log_var) * torch.exp(2 * self.log_mean + self.log_var)

    def cdf(self, x: float | torch.Tensor) -> torch.Tensor:
        return _ndtr((_as_tensor(x, self.log_mean).log() - self.log_mean) / self.log_std)

    def sf(self, x: float | torch.Tensor) -> torch.Tensor:
        """P(X > x), computed directly so small tail probabilities keep their digits."""
        return _ndtr((self.log_mean - _as_tensor(x, self.log_mean).log()) / self.log_std)

    def quantile(self, q: float | torch.Tensor) -> torch.Tensor:
        z = torch.special.ndtri(_as_tensor(q, self.log_mean))
        return torch.exp(self.log_mean + self.log_std * z)

    def power(self, p: float) -> LogNormal:
        """X^p, exactly log-normal: log-mean times p, log-variance times p^2. p = n is n
        perfectly correlated copies in series (`shared_product`)."""
        return LogNormal(self.log_mean * p, self.log_var * (p * p))

    def scale(self, k: float | torch.Tensor) -> LogNormal:
        """k X for a constant k > 0."""
        return LogNormal(self.log_mean + _as_tensor(k, self.log_mean).log(), self.log_var)


def lowrank_covariance(scale: torch.Tensor, factor: torch.Tensor | None = None) -> torch.Tensor:
    """Sigma = diag(scale)^2 + factor factor^T for scale (..., K) > 0 and factor (..., K, R):
    positive definite for any factor, so the scales and factor can be free parameters
    (scale through exp or softplus)."""
    cov = torch.diag_embed(scale * scale)
    if factor is not None:
        cov = cov + factor @ factor.transpose(-1, -2)
    return cov


def _fenton_wilkinson(log_terms: torch.Tensor, log_cov: torch.Tensor) -> LogNormal:
    """Moment match of S = sum_o T_o, T_o log-normal with E[T_o] = exp(log_terms_o) and
    log-covariance log_cov (-inf in log_terms drops a term).

    With w = softmax(log_terms) (each term's share of the mean m), E[S^2] / m^2 =
    sum_{o,p} w_o w_p exp(cov_op), so sigma^2 = ln(1 + v / m^2) = log1p(sum_{o,p} w_o w_p
    expm1(cov_op)) and mu = ln m - sigma^2 / 2. Written this way there is no cancellation
    in E[S^2] - m^2 when the spread is small (float32 would lose it), and no overflow
    for large means."""
    log_m = torch.logsumexp(log_terms, dim=-1)
    w = torch.softmax(log_terms, dim=-1)
    ratio = (w.unsqueeze(-1) * torch.expm1(log_cov) * w.unsqueeze(-2)).sum(dim=(-1, -2))
    log_var = torch.log1p(ratio)
    return LogNormal(log_m - log_var / 2, log_var)


def edge_lognormal(mu: torch.Tensor, cov: torch.Tensor,
                   c: torch.Tensor | Sequence[float]) -> LogNormal:
    """Fenton-Wilkinson log-normal of an edge's constant S = sum_o c_o exp(z_o),
    z ~ N(mu, cov) (mu (..., K), cov (..., K, K), c (..., K) >= 0).

    The first two moments of S are matched exactly (full covariance: correlated
    operations of one edge); the tail is the approximation's weak point: the true sum's
    far upper tail is usually heavier (a single operation with a wide spread dominates
    it), so P(S > q) at q the fitted 0.99-quantile came out up to 27% above 1% in our tests.
    Operations with c_o = 0 (`none`) drop out of both moments."""
    c = torch.as_tensor(c, dtype=mu.dtype, device=mu.device)
    if bool((c < 0).any()):
        raise ValueError(f"operation constants must be >= 0, got {c.tolist()}")
    keep = c > 0
    if not bool(keep.any(dim=-1).all()):
        raise ValueError("an edge whose operations all have constant 0 has no log-normal")
    log_c = torch.where(keep, c.clamp_min(torch.finfo(c.dtype).tiny).log(),
                        torch.full_like(c, -math.inf))
    log_terms = log_c + mu + torch.diagonal(cov, dim1=-2, dim2=-1) / 2
    return _fenton_wilkinson(log_terms, cov)


def lognormal_sum(terms: Sequence[LogNormal]) -> LogNormal:
    """Fenton-Wilkinson log-normal of a sum of independent log-normals."""
    if not terms:
        raise ValueError("a sum needs at least one term")
    mu = torch.stack(torch.broadcast_tensors(*[t.log_mean for t in terms]), dim=-1)
    s2 = torch.stack(torch.broadcast_tensors(*[t.log_var for t in terms]), dim=-1)
    return _fenton_wilkinson(mu + s2 / 2, torch.diag_embed(s2))


def independent_product(*factors: LogNormal) -> LogNormal:
    """Product of independent log-normals (layers in series): exact, log-means and
    log-variances add."""
    if not factors:
        raise ValueError("a product needs at least one factor")
    log_mean = factors[0].log_mean
    log_var = factors[0].log_var
    for f in factors[1:]:
        log_mean = log_mean + f.log_mean
        log_var = log_var + f.log_var
    return LogNormal(log_mean, log_var)


def shared_product(factor: LogNormal, n: int) -> LogNormal:
    """n cells driven by one shared sample in series: the same random variable n times,
    perfectly correlated, so the log-standard-deviations add (n sigma), not the
    log-variances: log-mean n mu, log-variance n^2 sigma^2. Independent copies would give
    n sigma^2 and understate the spread by a factor n."""
    if n < 0:
        raise ValueError(f"a cell count must be >= 0, got {n}")
    return factor.power(n)


def darts_edge_count(steps: int) -> int:
    """Edges of a DARTS cell with `steps` intermediate nodes: node j reads 2 + j states."""
    return sum(2 + j for j in range(steps))


def cell_lognormal(edge_lognormals: Sequence[LogNormal], steps: int,
                   multiplier: int,
                   inputs: tuple[LogNormal, LogNormal] | None = None) -> LogNormal:
    """Log-normal bound on a DARTS cell's Lipschitz constant from its edges' log-normals
    (in DARTS order: node 0's edges from the two inputs, node 1's from the inputs and node
    0, ...).

    Node j = sum_i edge_ij(state_i), so L_j <= sum_i L_ij L_i: products along edges
    (independent factors), Fenton-Wilkinson sums at nodes. The inputs count 1 each, or
    `inputs` (the constants of the cell's two preprocessing layers, so that the bound is
    from the cell's raw inputs: ||ds_i|| <= delta for both inputs gives ||dy|| <= L delta). The
    output concatenates the last `multiplier` nodes: ||(y_1, .., y_m)|| <= sqrt(sum_k
    L_k^2) ||dx||, tighter than sum_k L_k.

    Approximations beyond Fenton-Wilkinson itself: the terms of a node's sum are taken as
    independent, and so are the concatenated nodes. Edges have independent samples, but
    two paths that leave one upstream node share that node's constant, so the terms are
    positively correlated and the true spread is somewhat wider than this one (the
    tests measure how much)."""
    if steps < 1 or not 1 <= multiplier <= steps:
        raise ValueError(f"need steps >= 1 and 1 <= multiplier <= steps, got {steps}, {multiplier}")
    expected = darts_edge_count(steps)
    if len(edge_lognormals) != expected:
        raise ValueError(
            f"a cell of {steps} steps has {expected} edges, got {len(edge_lognormals)} log-normals"
        )
    one = LogNormal(torch.zeros_like(edge_lognormals[0].log_mean),
                    torch.zeros_like(edge_lognormals[0].log_var))
    states = [one, one] if inputs is None else list(inputs)
    offset = 0
    for _ in range(steps):
        terms = [independent_product(edge_lognormals[offset + i], s) for i, s in enumerate(states)]
        offset += len(states)
        states.append(lognormal_sum(terms))
    return lognormal_sum([s.power(2) for s in states[-multiplier:]]).power(0.5)


def network_lognormal(cell_lognormals: Mapping[str, LogNormal], counts: Mapping[str, int],
                      fixed: float | torch.Tensor = 1.0) -> LogNormal:
    """The network's constant: `fixed` (stem, preprocessing, classifier: no architecture
    weights) times each cell type's constant once per cell of that type.

    All cells of one type read one sample of the architecture weights per step, so they
    are the same random variable: a type with n cells contributes n mu and n^2 sigma^2
    (`shared_product`). Different types have independent samples; their factors multiply
    as independent log-normals. The cells of one type share their sample but not their
    operation weights, so their constants are not literally equal: taking them so is exact
    for the correlation and an approximation for the value."""
    if set(cell_lognormals) != set(counts):
        raise ValueError(
            f"cell types {sorted(cell_lognormals)} and counts {sorted(counts)} must name the"
            " same types"
        )
    if not cell_lognormals:
        raise ValueError("a network needs at least one cell type")
    if not bool((torch.as_tensor(fixed) > 0).all()):
        raise ValueError(f"fixed must be positive, got {fixed!r}")
    factors = [shared_product(cell_lognormals[t], int(counts[t])) for t in sorted(counts)]
    net = independent_product(*factors)
    return net.scale(fixed)


def shared_sample_product(factors: Sequence[LogNormal]) -> LogNormal:
    """Cells in series that are driven by one shared sample but have constants of their
    own: `shared_product` for cells with different operation weights.

    Each factor X_k = exp(m_k + s_k xi) is taken as a function of one standard normal xi
    (perfectly correlated, comonotone log-normals: the same architecture sample pushes
    every cell of the type up or down together), so log prod X_k = sum m_k + (sum s_k) xi:
    log-means add and log-standard-deviations add. That is exact for the correlation of
    the log-normals as given; the approximation is in giving each cell's constant, a
    Fenton-Wilkinson fit of a function of the shared sample, correlation 1 with its
    siblings (their op weights differ, so the same sample weights their operations
    differently). Given the fitted marginals, correlation 1 is the widest spread their
    product can have, so the error is on the safe side; against Monte Carlo of three
    cells on one sample, the fitted 0.99-quantile was exceeded 0.9-1.2% of the time
    (independent factors: 6%). Independent factors add log-variances instead and
    understate the spread by up to a factor sqrt(n)."""
    if not factors:
        raise ValueError("a product needs at least one factor")
    log_mean = factors[0].log_mean
    log_std = factors[0].log_std
    for f in factors[1:]:
        log_mean = log_mean + f.log_mean
        log_std = log_std + f.log_std
    return LogNormal(log_mean, log_std * log_std)


def cells_network_lognormal(cells: Sequence[tuple[str, LogNormal]],
                            fixed: float | torch.Tensor = 1.0) -> LogNormal:
    """The network's constant from each cell's own log-normal, in series, with the type
    (architecture key) that drives it: `network_lognormal` for cells of one type that
    share a sample but not their weights. Cells of one type multiply as perfectly
    correlated factors (`shared_sample_product`), types as independent ones, and `fixed`
    (stem, classifier: no architecture weights) scales the result."""
    if not cells:
        raise ValueError("a network needs at least one cell")
    if not bool((torch.as_tensor(fixed) > 0).all()):
        raise ValueError(f"fixed must be positive, got {fixed!r}")
    by_type: dict[str, list[LogNormal]] = {}
    for cell_type, cell in cells:
        by_type.setdefault(cell_type, []).append(cell)
    factors = [shared_sample_product(by_type[t]) for t in sorted(by_type)]
    return independent_product(*factors).scale(fixed)


def _check_budget(budget: float) -> None:
    if not (budget > 0 and math.isfinite(budget)):
        raise ValueError(f"budget must be a positive finite number, got {budget!r}")


def confidence_penalty(net: LogNormal, budget: float, confidence: float) -> torch.Tensor:
    """max(0, mu + Phi^-1(confidence) sigma - ln budget): the amount (in log units) by which
    the network's `confidence`-quantile exceeds the budget. Zero exactly when
    P(Lip <= budget) >= confidence; where positive, its gradient pushes the quantile (mean
    and spread together) down. The gradient in the spread is d sigma = d log_var /
    (2 sigma): finite only while some factor of the network is random (log_var > 0)."""
    _check_budget(budget)
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must lie strictly between 0 and 1, got {confidence!r}")
    z = torch.special.ndtri(_as_tensor(confidence, net.log_mean))
    return torch.relu(net.log_mean + z * net.log_std - math.log(budget))


def exceed_probability(net: LogNormal, budget: float) -> torch.Tensor:
    """P(Lip > budget) = 1 - Phi((ln budget - mu) / sigma), for reports."""
    _check_budget(budget)
    return net.sf(budget)
