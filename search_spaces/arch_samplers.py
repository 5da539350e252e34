"""Architecture samplers: how a supernet's architecture parameters become the weights that
mix each edge's candidate operations (docs/methods.md, "Log-normal architecture sampling").

A supernet keeps one parameter tensor per choice (`arch["normal"]`, `arch["reduce"]`,
the activation choices of a factorised space), one row per edge. The sampler decides what
those parameters mean, through three views the search uses at different moments:

* `sample`: the mixture weights of one training step (the architecture and the weight
  step). Stochastic samplers draw them with the reparameterisation trick, from the global
  torch RNG, so a checkpoint's RNG state makes a resumed search draw the same samples.
* `expected`: the weights of a deterministic forward pass (evaluation).
* `importance`: one number per candidate, normalised per edge, that ranks them: what the
  genotype is derived from, P-DARTS prunes by, and the logs and heat maps show.

`softmax` (DARTS: all three views are softmax(alpha)) is the default. `lognormal`
(arXiv 2009.00902, our reconstruction, METHODS section 6) keeps per edge a multivariate
log-normal over the candidates: z = mu + sigma * eps + U eta, w = exp(z), with mu the
supernet's own `arch` tensor, sigma = softplus(rho) > 0 and an optional rank-r factor U;
the training weights are not normalised, so the size of the mixture is part of what is
learned, and what a Lipschitz bound constrains. One sampler class per rule, registered
by name: a new sampler is one `register_sampler` call.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

ArchWeights = dict[str, torch.Tensor]

#: How `LogNormalSampler.importance` ranks candidates.
DISCRETISE_MODES: tuple[str, ...] = ("mean", "median", "mc")


class ArchSampler(nn.Module):
    """The interface (module docstring). Parameters a sampler adds are trained with the
    architecture parameters, on the validation side of the bilevel split."""

    name = "abstract"
    #: True when `sample` draws random weights (the search then logs that it samples)
    stochastic = False

    def attach(self, arch: nn.ParameterDict) -> None:
        """Create whatever the sampler needs beside `arch` (called once, on a new supernet)."""

    def sample(self, arch: nn.ParameterDict) -> ArchWeights:
        raise NotImplementedError

    def expected(self, arch: nn.ParameterDict) -> ArchWeights:
        raise NotImplementedError

    def importance(self, arch: nn.ParameterDict) -> ArchWeights:
        raise NotImplementedError

    def as_mixture(self, weights: ArchWeights) -> ArchWeights:
        """`weights` as per-edge fractions (rows summing to 1), which is what a latency or
        energy encoding of the architecture expects."""
        return weights

    @contextmanager
    def same_sample(self) -> Iterator[None]:
        """Within the block every `sample` call reuses the noise of the first one (a
        second-order architecture step evaluates several losses on one sample)."""
        yield


class SoftmaxSampler(ArchSampler):
    """DARTS: every view is softmax(alpha) per edge; nothing random, no parameters."""

    name = "softmax"

    def sample(self, arch: nn.ParameterDict) -> ArchWeights:
        return {k: F.softmax(a, dim=-1) for k, a in arch.items()}

    expected = sample
    importance = sample


class LogNormalSampler(ArchSampler):
    """Per edge, z ~ N(mu, diag(sigma^2) + U U^T) over the candidates and w = exp(z)
    (module docstring).

    * ``init_sigma``: sigma at the start (0.2; the paper gives no value). rho is
      initialised to softplus^-1(init_sigma).
    * ``rank``: columns of the low-rank factor U (0: diagonal covariance), initialised at
      0 so a search starts diagonal and learns correlations only if they help.
    * ``mu_bounds``: mu is clamped to this range where it is used (log-normal weights
      grow as e^mu; an unbounded mu lets one op's weight explode). The lower bound keeps a
      weight from underflowing to an exact 0 that no gradient can bring back.
    * ``discretise``: "mean" ranks by E[w] = exp(mu + Var(z)/2), "median" by exp(mu),
      "mc" by the Monte Carlo probability of having the largest sampled weight on its edge
      (``mc_samples`` draws from a private generator seeded with ``mc_seed``, so deriving
      never moves the training RNG and always gives the same answer).

    mu starts at -ln(n) for n candidates per edge, so the expected mixture sums to about 1
    at the start, like a softmax.
    """

    name = "lognormal"
    stochastic = True

    def __init__(self, init_sigma: float = 0.2, rank: int = 0,
                 mu_bounds: tuple[float, float] = (-10.0, 2.0), discretise: str = "mean",
                 mc_samples: int = 2000, mc_seed: int = 0) -> None:
        super().__init__()
        if not init_sigma > 0.0:
            raise ValueError(f"init_sigma must be positive, got {init_sigma}")
        if rank < 0:
            raise ValueError(f"rank must be >= 0, got {rank}")
        if not mu_bounds[0] < mu_bounds[1]:
            raise ValueError(f"mu_bounds must be increasing, got {mu_bounds}")
        if discretise not in DISCRETISE_MODES:
            raise ValueError(f"unknown discretisation {discretise!r}; choose from "
                             f"{', '.join(DISCRETISE_MODES)}")
        if mc_samples < 1:
            raise ValueError(f"mc_samples must be >= 1, got {mc_samples}")
        self.init_sigma, self.rank = init_sigma, rank
        self.mu_bounds = mu_bounds
        self.discretise = discretise
        self.mc_samples, self.mc_seed = mc_samples, mc_seed
        self.rho = nn.ParameterDict()
        self.factor = nn.ParameterDict()
        self._noise: dict[str, tuple[torch.Tensor, torch.Tensor | None]] | None = None
        self._freeze = False

    def attach(self, arch: nn.ParameterDict) -> None:
        rho0 = math.log(math.expm1(self.init_sigma))  # softplus^-1
        for key, a in arch.items():
            with torch.no_grad():
                a.add_(-math.log(a.shape[-1]))
            self.rho[key] = nn.Parameter(torch.full_like(a, rho0))
            if self.rank:
                self.factor[key] = nn.Parameter(a.new_zeros(*a.shape, self.rank))

    # ---------------------------------------------------------------- distribution

    def mu(self, arch: nn.ParameterDict, key: str) -> torch.Tensor:
        return arch[key].clamp(*self.mu_bounds)

    def sigma(self, key: str) -> torch.Tensor:
        return F.softplus(self.rho[key])

    def covariance(self, arch: nn.ParameterDict, key: str) -> torch.Tensor:
        """Cov(z) per edge: (edges, n, n) = diag(sigma^2) + U U^T."""
        cov = torch.diag_embed(self.sigma(key) ** 2)
        if self.rank:
            u = self.factor[key]
            cov = cov + u @ u.transpose(-1, -2)
        return cov

    def log_variance(self, key: str) -> torch.Tensor:
        """Var(z_o) per candidate: sigma^2 + |U_o|^2."""
        var = self.sigma(key) ** 2
        if self.rank:
            var = var + (self.factor[key] ** 2).sum(-1)
        return var

    # ----------------------------------------------------------------------- views

    def sample(self, arch: nn.ParameterDict) -> ArchWeights:
        out: ArchWeights = {}
        for key in arch:
            mu, sigma = self.mu(arch, key), self.sigma(key)
            eps, eta = self._draw(key, mu)
            z = mu + sigma * eps
            if self.rank and eta is not None:
                z = z + (self.factor[key] @ eta.unsqueeze(-1)).squeeze(-1)
            out[key] = torch.exp(z)
        return out

    def _draw(self, key: str, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        if self._freeze and self._noise is not None and key in self._noise:
            return self._noise[key]
        eps = torch.randn(like.shape, dtype=like.dtype, device=like.device)
        eta = (torch.randn(*like.shape[:-1], self.rank, dtype=like.dtype, device=like.device)
               if self.rank else None)
        if self._freeze and self._noise is not None:
            self._noise[key] = (eps, eta)
        return eps, eta

    @contextmanager
    def same_sample(self) -> Iterator[None]:
        self._freeze, self._noise = True, {}
        try:
            yield
        finally:
            self._freeze, self._noise = False, None

    def expected(self, arch: nn.ParameterDict) -> ArchWeights:
        return {k: torch.exp(self.mu(arch, k) + self.log_variance(k) / 2) for k in arch}

    def importance(self, arch: nn.ParameterDict) -> ArchWeights:
        if self.discretise == "mc":
            return {k: self._largest_probability(arch, k) for k in arch}
        score = (self.expected(arch) if self.discretise == "mean"
                 else {k: torch.exp(self.mu(arch, k)) for k in arch})
        return self.as_mixture(score)

    def _largest_probability(self, arch: nn.ParameterDict, key: str) -> torch.Tensor:
        """P(candidate o has the largest weight on its edge), by Monte Carlo."""
        mu, sigma = self.mu(arch, key).detach(), self.sigma(key).detach()
        gen = torch.Generator(device="cpu").manual_seed(self.mc_seed)
        eps = torch.randn(self.mc_samples, *mu.shape, generator=gen, dtype=mu.dtype)
        z = mu.cpu() + sigma.cpu() * eps
        if self.rank:
            eta = torch.randn(self.mc_samples, *mu.shape[:-1], self.rank, generator=gen,
                              dtype=mu.dtype)
            z = z + (self.factor[key].detach().cpu() @ eta.unsqueeze(-1)).squeeze(-1)
        winners = F.one_hot(z.argmax(-1), mu.shape[-1]).to(mu.dtype)
        return winners.mean(0).to(mu.device)

    def as_mixture(self, weights: ArchWeights) -> ArchWeights:
        return {k: w / w.sum(-1, keepdim=True) for k, w in weights.items()}

    def extra_repr(self) -> str:
        return (f"init_sigma={self.init_sigma}, rank={self.rank}, "
                f"discretise={self.discretise!r}")


# ------------------------------------------------------------------------ registry

SamplerFactory = Callable[..., ArchSampler]
_SAMPLERS: dict[str, SamplerFactory] = {}


def register_sampler(name: str, factory: SamplerFactory) -> None:
    """Make `factory(**options)` available as sampler `name` (`nas search --sampler`)."""
    if name in _SAMPLERS:
        raise ValueError(f"sampler {name!r} is already registered")
    _SAMPLERS[name] = factory


def sampler_names() -> list[str]:
    return list(_SAMPLERS)


def make_sampler(name: str, **options: Any) -> ArchSampler:
    """A new sampler `name` with `options`; an unknown name or option is a ValueError
    naming it and the alternatives."""
    if name not in _SAMPLERS:
        raise ValueError(f"unknown sampler {name!r}; known: {', '.join(_SAMPLERS)}")
    try:
        return _SAMPLERS[name](**options)
    except TypeError as e:
        raise ValueError(f"sampler {name!r}: {e}") from None


register_sampler("softmax", SoftmaxSampler)
register_sampler("lognormal", LogNormalSampler)


__all__ = [
    "DISCRETISE_MODES",
    "ArchSampler",
    "ArchWeights",
    "LogNormalSampler",
    "SoftmaxSampler",
    "make_sampler",
    "register_sampler",
    "sampler_names",
]
