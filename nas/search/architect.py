"""The architecture step of bilevel search (DARTS `architect.py`, docs/methods.md#darts).

First order: the gradient of the validation loss with respect to the architecture
parameters at the current weights. Second order: the same loss at the weights after one
virtual SGD step (momentum and weight decay included, step size = current weight LR),
minus the step size times a Hessian-vector product taken by central finite differences.

Extra differentiable terms computed from the soft architecture weights (the latency
loss, later a Lipschitz bound) are added to the validation loss; they are what makes the
search hardware-aware.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import cast

import torch
import torch.nn.functional as F
from torch.func import functional_call

from search_spaces.supernet import SuperNet

ArchWeights = dict[str, torch.Tensor]
#: gradients -> their mean over the data-parallel ranks
Average = Callable[[Sequence[torch.Tensor]], list[torch.Tensor]]


def _local(tensors: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    return list(tensors)


@dataclass
class ArchLossTerm:
    """A named differentiable penalty on the soft architecture: `fn(arch_weights) -> scalar`."""

    name: str
    fn: Callable[[ArchWeights], torch.Tensor]

    def __call__(self, weights: ArchWeights) -> torch.Tensor:
        return self.fn(weights)


class Architect:
    def __init__(
        self,
        model: SuperNet,
        lr: float,
        betas: tuple[float, float],
        weight_decay: float,
        weight_momentum: float,
        weight_weight_decay: float,
        second_order: bool = False,
        grad_clip: float | None = None,
        terms: Sequence[ArchLossTerm] = (),
        fd_radius: float = 1e-2,
        average: Average = _local,
    ) -> None:
        self.model = model
        # the mean over data-parallel ranks (`DataParallel.average`); identity in one process
        self.average = average
        self.fd_radius = fd_radius  # finite-difference step = fd_radius / |v| (reference: 0.01)
        self.second_order = second_order
        self.grad_clip = grad_clip
        self.terms = list(terms)
        self.weight_momentum = weight_momentum
        self.weight_weight_decay = weight_weight_decay
        self.optimizer = torch.optim.Adam(
            model.arch_parameters(), lr=lr, betas=betas, weight_decay=weight_decay
        )

    # ------------------------------------------------------------------ losses

    def extra_loss(self, weights: ArchWeights) -> tuple[torch.Tensor | float, dict[str, float]]:
        total: torch.Tensor | float = 0.0
        values = {}
        for term in self.terms:
            v = term(weights)
            values[term.name] = float(v.detach())
            total = total + v
        return total, values

    def step(
        self,
        x_train: torch.Tensor,
        y_train: torch.Tensor,
        x_val: torch.Tensor,
        y_val: torch.Tensor,
        eta: float,
        weight_optimizer: torch.optim.Optimizer,
        scales: tuple[float, float] = (1.0, 1.0),
    ) -> dict[str, float]:
        """One update of the architecture parameters; returns the losses it saw.

        `scales` multiply the (train, validation) losses of a data-parallel rank's slice,
        so that the ranks' averaged gradients are those of the global batch
        (`DataParallel.shard`); every gradient this step takes is averaged over the ranks
        before it is used, the unrolled weights and Hessian-vector product included."""
        self.optimizer.zero_grad(set_to_none=True)
        # one architecture sample for every loss of this step (a stochastic sampler)
        with self.model.arch_sampler.same_sample():
            if self.second_order:
                stats = self._second_order_grads(x_train, y_train, x_val, y_val, eta,
                                                 weight_optimizer, scales)
            else:
                stats = self._first_order_grads(x_val, y_val, scales[1])
        if self.grad_clip is not None:
            torch.nn.utils.clip_grad_norm_(self.model.arch_parameters(), self.grad_clip)
        self.optimizer.step()
        return stats

    def _first_order_grads(self, x_val: torch.Tensor, y_val: torch.Tensor,
                           scale: float = 1.0) -> dict[str, float]:
        alphas = self.model.arch_parameters()
        weights = self.model.sample_arch_weights()
        loss = F.cross_entropy(self.model(x_val, weights), y_val)
        extra, values = self.extra_loss(self.model.arch_sampler.as_mixture(weights))
        # Only the architecture gradient is needed: autograd.grad skips every
        # weight-gradient kernel that loss.backward() would run and then throw away.
        grads = self.average(torch.autograd.grad(_scaled(loss, scale) + extra, alphas))
        for a, g in zip(alphas, grads, strict=True):
            a.grad = g
        return {"arch_loss": float(loss.detach()), **values}

    def _second_order_grads(
        self,
        x_train: torch.Tensor,
        y_train: torch.Tensor,
        x_val: torch.Tensor,
        y_val: torch.Tensor,
        eta: float,
        weight_optimizer: torch.optim.Optimizer,
        scales: tuple[float, float] = (1.0, 1.0),
    ) -> dict[str, float]:
        model = self.model
        train_scale, val_scale = scales
        names, params = (list(t) for t in zip(*model.named_weight_parameters(), strict=True))
        alphas = model.arch_parameters()

        # Virtual step w' = w - eta * (momentum * m + grad L_train(w) + wd * w).
        arch_w = {k: v.detach() for k, v in model.sample_arch_weights().items()}
        train_loss = F.cross_entropy(model(x_train, arch_w), y_train)
        grads = self.average(torch.autograd.grad(_scaled(train_loss, train_scale), params))
        with torch.no_grad():
            unrolled = []
            for p, g in zip(params, grads, strict=True):
                state = weight_optimizer.state.get(p, {})
                buf = state.get("momentum_buffer")
                d = g + self.weight_weight_decay * p
                if buf is not None:
                    d = d + self.weight_momentum * buf
                unrolled.append((p - eta * d).requires_grad_())

        # L_val(w', alpha): the unrolled network gets its own copy of the BN buffers,
        # as the reference builds a fresh model for it.
        buffers = {n: b.clone() for n, b in model.named_buffers()}
        weights = model.sample_arch_weights()
        state = {**dict(zip(names, unrolled, strict=True)), **buffers}
        for k, a in model.arch.items():
            state[f"arch.{k}"] = a
        val_loss = F.cross_entropy(functional_call(model, state, (x_val, weights)), y_val)
        extra, values = self.extra_loss(model.arch_sampler.as_mixture(weights))
        out = self.average(torch.autograd.grad(_scaled(val_loss, val_scale) + extra,
                                               alphas + unrolled))
        d_alpha, d_unrolled = out[: len(alphas)], out[len(alphas) :]

        implicit = self.average(self._hessian_vector_product(
            d_unrolled, x_train, y_train, self.fd_radius, train_scale))
        for a, g, h in zip(alphas, d_alpha, implicit, strict=True):
            a.grad = g - eta * h
        return {"arch_loss": float(val_loss.detach()), **values}

    def _hessian_vector_product(
        self, vector: Sequence[torch.Tensor], x: torch.Tensor, y: torch.Tensor, r: float = 1e-2,
        scale: float = 1.0,
    ) -> list[torch.Tensor]:
        """[grad_alpha L_train(w + eps v) - grad_alpha L_train(w - eps v)] / 2 eps."""
        model = self.model
        params = model.weight_parameters()
        alphas = model.arch_parameters()
        # `vector` holds one gradient per weight tensor (never empty): the sum is a tensor
        eps = r / torch.sqrt(cast(torch.Tensor, sum((v * v).sum() for v in vector)))

        def grad_alpha() -> tuple[torch.Tensor, ...]:
            loss = F.cross_entropy(model(x, model.sample_arch_weights()), y)
            return torch.autograd.grad(_scaled(loss, scale), alphas)

        # Restore from a copy rather than by adding eps*v back: w + e - 2e + e drifts in
        # floating point, and the weight step must see exactly the weights it had.
        saved = [p.detach().clone() for p in params]
        with torch.no_grad():
            for p, v in zip(params, vector, strict=True):
                p.add_(v, alpha=float(eps))
        grads_pos = grad_alpha()
        with torch.no_grad():
            for p, s, v in zip(params, saved, vector, strict=True):
                torch.add(s, v, alpha=-float(eps), out=p)
        grads_neg = grad_alpha()
        with torch.no_grad():
            for p, s in zip(params, saved, strict=True):
                p.copy_(s)
        return [(gp - gn) / (2 * eps) for gp, gn in zip(grads_pos, grads_neg, strict=True)]


def _scaled(loss: torch.Tensor, scale: float) -> torch.Tensor:
    """`loss * scale`, and the loss itself at scale 1, so one process computes exactly
    what it computed before data parallelism existed."""
    return loss if scale == 1.0 else loss * scale
