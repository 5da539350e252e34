"""Many small latency MLPs as one batched model: stacked weights, one matmul per layer.

Every model here has the shape of an ensemble member (`mlp.Member`): ``linear(x) +
mlp(x)``, a linear path beside an MLP of `depth` hidden ReLU layers and a one-unit head.
Training 41 of them one after another (the selection grid and the ensemble, `mlp.py`)
spends its time in Python and in the launch of hundreds of tiny operations per step;
stacked, the same arithmetic is a handful of larger matmuls per step for all of them.

The models are arranged as S *streams* x P *points*:

* a stream is what a seed fixes: the initial weights, the train/validation split and the
  order of the batches. The P models of one stream see the same rows at every step, so
  the first layer of all of them (linear path and first hidden layer) is a single matmul
  of the stream's batch with one (P * (1 + h), F) block of weights;
* a point is a set of hyper-parameters (weight decay, Huber delta, encoding L2). Each
  acts element-wise on a model's weights or loss, so points batch at no cost.

Selection (12 points on 3 splits) is S=3, P=12; the ensemble is S=5, P=1; inference is
S=1, P=members (one input for every member).

The stacked layout (a list of tensors, as `stack` returns and `forward` takes):

* ``w0`` (S, F, P * (1 + h0)) and ``b0`` (S, P * (1 + h0)): column p is model p's
  linear path, and columns ``P + p * h0`` to ``P + (p + 1) * h0`` its first MLP layer
  (``h0`` is `hidden`, or 1 when `depth` is 0 and that layer is the head itself);
* then per further layer ``w`` (S * P, in, out) and ``b`` (S * P, out), model
  ``s * P + p`` at index ``s * P + p``.

Weights are (in, out), the transpose of `nn.Linear`'s, so that no matmul and no gradient
is transposed in training; `stack` returns transposed views of the members' own weights
(inference reads them in place), and a trained model goes back, by slices, to the
per-member state dict that predictor artifacts have always had.

Each model's loss depends on its own weights only, so the gradient of the sum of the
losses is, model by model, the gradient of its own loss; AdamW is element-wise; so a
batched fit is the fit of each model alone, up to the rounding of the larger matmuls
(tested against the one-model loop, `LatencyMLP._train_member`, to 1e-10 in float64).

Training (`train`) writes the gradients out by hand (`_gradients`: the same products and
sums as autograd's, without its graph and temporaries) for a fused AdamW. Where the
inputs are mostly zeros (DARTS features: about 50 non-zero of 256) the first layer's
forward pass sums the weight rows of each row's non-zero features (`_FirstLayer`), a
fifth of the dense matmul's work; its weight gradient stays one dense matmul per stream.
On 1,000 DARTS samples a step costs about 9 ms for the 36 models of the grid and 1.7 ms
for the 5 members on one core of this machine, against about 1.1 ms per model and step
one at a time; it is now bound by those matmuls and by AdamW's pass over the weights.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch.nn import functional as nn_functional

Layer = tuple[torch.Tensor, torch.Tensor]  # (weight (out, in), bias (out,)) of a Linear


@dataclass(frozen=True)
class Stream:
    """What one seed fixes: initial layers ([linear path, MLP layers..., head]), the
    training and validation rows (indices into the data) and the batch order's seed."""

    init: Sequence[Layer]
    train: torch.Tensor
    val: torch.Tensor
    batch_seed: int


@dataclass(frozen=True)
class Point:
    """Hyper-parameters of one model: MLP weight decay, Huber delta, encoding L2."""

    weight_decay: float
    huber_delta: float
    encoding_l2: float


def stack(models: Sequence[Sequence[Layer]], streams: int) -> list[torch.Tensor]:
    """The stacked layout of `models` (stream-major: model ``s * P + p``), each given as
    its layers [linear path, first MLP layer, ..., head]. Differentiable in the weights."""
    S = streams
    P = len(models) // S
    if not models or P * S != len(models):
        raise ValueError(f"{len(models)} models do not fill {S} streams")
    F = models[0][0][0].shape[1]
    # per stream: the P linear paths, then the P first MLP layers
    first = [m[part] for s in range(S) for part in (0, 1) for m in models[s * P:(s + 1) * P]]
    w0 = torch.cat([w for w, _ in first]).view(S, -1, F)
    b0 = torch.cat([b for _, b in first]).view(S, -1)
    out = [w0.transpose(1, 2), b0]
    for i in range(2, len(models[0])):
        out += [torch.stack([m[i][0] for m in models]).transpose(1, 2),
                torch.stack([m[i][1] for m in models])]
    return out


def unstack(params: Sequence[torch.Tensor], streams: int) -> list[list[Layer]]:
    """The models of a stacked layout as per-model layers (copies), the inverse of
    `stack`."""
    S = streams
    w0, b0, *rest = params
    P = _points(params, S)
    w0 = w0.detach().transpose(1, 2)  # (S, P * (1 + h0), F)
    b0 = b0.detach()
    F = w0.shape[2]
    lin_w, lin_b = w0[:, :P].reshape(S * P, 1, F), b0[:, :P].reshape(S * P, 1)
    first_w, first_b = w0[:, P:].reshape(S * P, -1, F), b0[:, P:].reshape(S * P, -1)
    models: list[list[Layer]] = []
    for m in range(S * P):
        layers: list[Layer] = [(lin_w[m].clone(), lin_b[m].clone()),
                               (first_w[m].clone(), first_b[m].clone())]
        for i in range(0, len(rest), 2):
            layers.append((rest[i][m].detach().t().contiguous(),
                           rest[i + 1][m].detach().clone()))
        models.append(layers)
    return models


def _points(params: Sequence[torch.Tensor], streams: int) -> int:
    if len(params) > 2:
        return params[2].shape[0] // streams
    return params[0].shape[2] // 2  # depth 0: linear path and head, one row each


def forward(params: Sequence[torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """(S, P, N) outputs of the stacked models on inputs `x` (S, N, F): stream s's rows
    go through its P models. Differentiable in `x` and in the weights."""
    first = torch.baddbmm(params[1].unsqueeze(1), x, params[0])
    return _after_first(params, first, in_place=False)


def _after_first(params: Sequence[torch.Tensor], first: torch.Tensor,
                 in_place: bool) -> torch.Tensor:
    """The models' outputs (S, P, N) from their first layer's (S, N, P * (1 + h0)).
    `in_place` (no autograd) applies the ReLUs in place."""
    rest = params[2:]
    S, N, _ = first.shape
    P = _points(params, S)
    h0 = first.shape[2] // P - 1
    linear = first[..., :P].transpose(1, 2)  # (S, P, N)
    if not rest:  # depth 0: the "first layer" is the head
        return linear + first[..., P:].transpose(1, 2)
    z = first[..., P:].view(S, N, P, h0).transpose(1, 2).reshape(S * P, N, h0)
    z = z.relu_() if in_place else torch.relu(z)
    for i in range(0, len(rest), 2):
        z = torch.baddbmm(rest[i + 1].unsqueeze(1), z, rest[i])
        if i + 2 < len(rest):
            z = z.relu_() if in_place else torch.relu(z)
    return linear + z.view(S, P, N)


class _FirstLayer:
    """The first layer of every model (S, N, F) -> (S, N, P * (1 + h0)) in training, on
    rows given by index. Where the inputs are mostly zeros (DARTS: about 50 non-zero of
    256 features) and the layer is wide (the grid: 12 models' units side by side) it sums
    the weight rows of each row's non-zero features, scaled by them (`embedding_bag`), a
    fifth of the work of the dense matmul; otherwise it is that matmul."""

    MIN_WIDTH = 256  # narrower (the 5 members: 5 x 65 units in 5 streams), the matmul wins

    def __init__(self, x: torch.Tensor, streams: int, units: int) -> None:
        """`x` (n, F): every row any stream uses; `units`: the layer's width, P * (1 + h0)."""
        self.x = x
        n, F = x.shape
        nonzero = x != 0
        width = int(nonzero.sum(dim=1).max()) if n else 0
        self.sparse = 0 < width and 3 * width <= F and units >= self.MIN_WIDTH
        if self.sparse:
            # each row's non-zero columns first (stable: in column order), then zeros;
            # stream s's copy of the table points into its own rows s * F ... of w0 seen
            # as (S * F, P * (1 + h0)), and is looked up at s * n + row
            order = torch.sort(nonzero.to(torch.int8), dim=1, descending=True,
                               stable=True).indices[:, :width]
            shift = (torch.arange(streams) * F).view(streams, 1, 1)
            self.columns = (order.unsqueeze(0) + shift).view(streams * n, width)
            self.values = torch.gather(x, 1, order).repeat(streams, 1)  # 0: padding
            self.offset = (torch.arange(streams) * n).view(streams, 1)

    def __call__(self, params: Sequence[torch.Tensor], rows: torch.Tensor,
                 x_rows: torch.Tensor | None = None) -> torch.Tensor:
        """The first layer on rows `rows` (S, N) of x (stream s on rows[s]); `x_rows`,
        when given, is ``x[rows]`` already gathered."""
        w0, b0 = params[0], params[1]
        S, N = rows.shape
        if not self.sparse:
            return torch.baddbmm(b0.unsqueeze(1), self.x[rows] if x_rows is None else x_rows,
                                 w0)
        at = (rows + self.offset).view(-1)
        out = nn_functional.embedding_bag(
            self.columns.index_select(0, at), w0.view(-1, w0.shape[2]), mode="sum",
            per_sample_weights=self.values.index_select(0, at))
        return out.view(S, N, -1).add_(b0.unsqueeze(1))


def _decays(params: Sequence[torch.Tensor], S: int, points: Sequence[Point],
            linear_weight_decay: float) -> list[torch.Tensor]:
    """Per-element weight decay (float64, broadcastable to each tensor): the linear path
    takes `linear_weight_decay`, every MLP weight and bias its model's own."""
    P = len(points)
    h0 = params[0].shape[2] // P - 1
    wd = torch.tensor([p.weight_decay for p in points], dtype=torch.float64)
    rows = torch.cat([torch.full((P,), float(linear_weight_decay), dtype=torch.float64),
                      wd.repeat_interleave(h0)])
    per_model = wd.repeat(S)
    out = [rows.view(1, 1, -1), rows.view(1, -1)]
    for _ in range(2, len(params), 2):
        out += [per_model.view(-1, 1, 1), per_model.view(-1, 1)]
    return out


@torch.no_grad()
def train(
    streams: Sequence[Stream],
    points: Sequence[Point],
    x: torch.Tensor,
    target: torch.Tensor,
    *,
    steps: int,
    lr: float,
    batch_size: int,
    eval_every: int,
    linear_weight_decay: float,
    penalised: tuple[int, int],
    eps: float,
    done: Callable[[int], Any] | None = None,
) -> tuple[list[list[Layer]], np.ndarray]:
    """Train every (stream, point) model at once, as `LatencyMLP._train_member` trains one.

    `x` (n, F) are the inputs, `target` (n,) the latencies in units of the mean (> 0).
    The loss of a model is Huber (its delta) on ``log(max(pred, eps)) - log(y)`` over its
    batch, plus its encoding L2 times the squared linear-path weights of input columns
    `penalised`; AdamW with decoupled weight decay (its own on the MLP, the shared
    `linear_weight_decay` on the linear path) and a one-cycle learning rate. A stream with
    validation rows keeps, per model, the weights of its best validation step (mean
    |log ratio|, checked every `eval_every` steps and at the last); one without keeps the
    last. `done(k)` hears k more steps (progress).

    Returns the models' layers, stream-major (model ``s * len(points) + p``), and their
    best validation errors (S, P) (inf for a stream without validation rows).
    """
    S, P, N = len(streams), len(points), batch_size
    if not S or not P:
        raise ValueError("nothing to train")
    params = [t.contiguous().clone()
              for t in stack([s.init for s in streams for _ in range(P)], S)]
    grads = [torch.zeros_like(p) for p in params]
    for p, grad in zip(params, grads, strict=True):
        p.grad = grad  # written in place every step (`_gradients`), read by AdamW
    decays = _decays(params, S, points, linear_weight_decay)
    F = x.shape[1]
    delta = torch.tensor([p.huber_delta for p in points], dtype=x.dtype).view(1, P, 1)
    pen = torch.tensor([p.encoding_l2 for p in points], dtype=x.dtype).view(1, 1, P)
    h0 = params[0].shape[2] // P - 1
    a, b = penalised
    use_pen = bool((pen != 0).any())
    ylog = target.log()

    # the batch order of each stream, drawn as the one-model loop draws it (one call per
    # step on the stream's own generator), as global row indices (steps, S * batch)
    rows = torch.empty(steps, S, N, dtype=torch.long)
    for s, st in enumerate(streams):
        gen = torch.Generator().manual_seed(st.batch_seed)
        for step in range(steps):
            rows[step, s] = st.train[torch.randint(0, len(st.train), (N,), generator=gen)]
    rows = rows.view(steps, S * N)

    # validation rows, padded to the longest stream's and masked
    n_val = torch.tensor([len(st.val) for st in streams])
    has_val = n_val > 0
    val_rows = torch.zeros(S, int(n_val.max()), dtype=torch.long)
    for s, st in enumerate(streams):
        val_rows[s, : len(st.val)] = st.val
    val_mask = (torch.arange(val_rows.shape[1])[None, :] < n_val[:, None]).unsqueeze(1)
    yv = ylog[val_rows].unsqueeze(1)
    val_count = n_val.clamp_min(1).to(x.dtype).view(S, 1)

    # fused: one pass over each tensor instead of a dozen (the one-model loop's AdamW
    # computes the same update, rounded in another order)
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0, fused=True)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, lr, total_steps=steps)
    best_err = torch.full((S, P), torch.inf, dtype=x.dtype)
    best = [p.clone() for p in params]
    first_layer = _FirstLayer(x, S, params[0].shape[2])
    xb = torch.empty(S * N, F, dtype=x.dtype)
    g_first = torch.empty(S, N, params[0].shape[2], dtype=x.dtype)  # reused every step
    for step in range(steps):
        idx = rows[step]
        torch.index_select(x, 0, idx, out=xb)
        first = first_layer(params, idx.view(S, N), xb.view(S, N, F))
        _gradients(params, grads, xb.view(S, N, F), first, ylog[idx].view(S, 1, N), delta,
                   eps, g_first)
        if use_pen:  # encoding_l2 * sum(w ** 2) over the linear path's one-hot weights
            grads[0][:, a:b, :P].add_(2 * params[0][:, a:b, :P] * pen)
        # AdamW's decoupled decay, per element (the models' own), then its update
        step_lr = float(opt.param_groups[0]["lr"])
        for p, d in zip(params, decays, strict=True):
            p.mul_((1.0 - step_lr * d).to(p.dtype))
        opt.step()
        sched.step()
        last = step == steps - 1
        if bool(has_val.any()) and (step % eval_every == eval_every - 1 or last):
            pred = _after_first(params, first_layer(params, val_rows), in_place=True)
            err = (pred.clamp_min(eps).log() - yv).abs()
            err = torch.where(val_mask, err, 0.0).sum(dim=-1) / val_count
            better = (err < best_err) & has_val.view(S, 1)
            best_err = torch.where(better, err, best_err)
            _keep(best, params, better, S, P, h0)
        if done is not None:
            done(1)
    # a stream without validation keeps its last weights
    _keep(best, params, (~has_val).view(S, 1).expand(S, P), S, P, h0)
    return unstack(best, S), best_err.double().numpy()


def _gradients(params: Sequence[torch.Tensor], grads: Sequence[torch.Tensor],
               x: torch.Tensor, first: torch.Tensor, ylog: torch.Tensor,
               delta: torch.Tensor, eps: float, g_first: torch.Tensor | None = None) -> None:
    """Write into `grads` the gradient of every model's loss (the mean over its batch of
    Huber(delta) on ``log(max(pred, eps)) - ylog``) in its own weights, given its inputs
    `x` (S, N, F) and its first layer's output on them, `first` (S, N, P * (1 + h0));
    `g_first`, a buffer of that shape for the gradient in `first` (overwritten).

    Written out rather than left to autograd: the same products and sums, without the
    graph, the zero-filled tensors around slices, or a fresh tensor per intermediate.
    Checked against autograd in float64 (tests/test_predictor.py)."""
    rest = params[2:]
    S, N, _ = x.shape
    P = _points(params, S)
    C = first.shape[2]
    h0 = C // P - 1
    # forward, keeping the post-ReLU activations (S * P, N, h) the backward pass needs
    linear = first[..., :P].transpose(1, 2)  # (S, P, N)
    hidden: list[torch.Tensor] = []
    if rest:
        z = first[..., P:].view(S, N, P, h0).transpose(1, 2).reshape(S * P, N, h0).relu_()
        hidden.append(z)
        for i in range(0, len(rest) - 2, 2):
            z = torch.baddbmm(rest[i + 1].unsqueeze(1), z, rest[i]).relu_()
            hidden.append(z)
        pred = torch.baddbmm(rest[-1].unsqueeze(1), z, rest[-2]).view(S, P, N).add_(linear)
    else:
        pred = linear + first[..., P:].transpose(1, 2)
    # d loss / d pred: Huber' (the log ratio clipped to +-delta), through log and clamp
    kept = pred.clamp_min(eps)
    g = (kept.log() - ylog).clamp_(-delta, delta).div_(kept).div_(N)
    g.masked_fill_(pred < eps, 0.0)  # (S, P, N)
    # backward, layer by layer from the head
    if g_first is None:
        g_first = torch.empty(S, N, C, dtype=x.dtype)
    g_first[..., :P] = g.transpose(1, 2)
    if rest:
        g_out = g.view(S * P, N, 1)
        for i in range(len(rest) - 2, -1, -2):  # weights rest[i], bias rest[i + 1]
            z_in, w = hidden[i // 2], rest[i]
            torch.sum(g_out, dim=1, out=grads[3 + i])
            if w.shape[2] == 1:  # the head: products and sums beat matrix-vector bmm
                torch.sum(z_in * g_out, dim=1, keepdim=True, out=grads[2 + i].transpose(1, 2))
                g_in = g_out * w.transpose(1, 2)
            else:
                torch.bmm(z_in.transpose(1, 2), g_out, out=grads[2 + i])
                g_in = torch.bmm(g_out, w.transpose(1, 2))
            g_out = torch.ops.aten.threshold_backward(g_in, z_in, 0)  # ReLU's gradient
        g_first[..., P:].view(S, N, P, h0).copy_(g_out.view(S, P, N, h0).transpose(1, 2))
    else:
        g_first[..., P:] = g.transpose(1, 2)
    torch.bmm(x.transpose(1, 2), g_first, out=grads[0])
    torch.sum(g_first, dim=1, out=grads[1])


def _keep(best: list[torch.Tensor], params: Sequence[torch.Tensor], which: torch.Tensor,
          S: int, P: int, h0: int) -> None:
    """Copy the weights of the models `which` (S, P) from `params` into `best`."""
    columns = torch.cat([which, which.repeat_interleave(h0, dim=1)], dim=1)  # (S, C)
    per_model = which.reshape(S * P)
    masks = [columns.unsqueeze(1), columns]
    for _ in range(2, len(params), 2):
        masks += [per_model.view(-1, 1, 1), per_model.view(-1, 1)]
    for i, (p, m) in enumerate(zip(params, masks, strict=True)):
        best[i] = torch.where(m, p.detach(), best[i])
