"""A latency prior learned from devices already measured, adapted to a new device from a
handful of samples.

(About 680 lines: the prior, its adapted model and their file formats are one contract;
the regression maths is apart in `bayes.py`.)

What transfers between devices, measured (`bench/bench_few_shot.py`, leave-one-device-out
over 15 NAS-Bench-201 devices): the *shape* of the latency function of an architecture.
Every device's log-latency is fitted well by one linear model on a fixed feature map of
the encoding (`PriorFeatures`: a bias, the predictor's own features of `features.py`, and
the products of the op choices of every two edges, which carry the interactions a
compiler or a cache creates); across devices those weight vectors are strongly
correlated (the GPUs at batch 1 share one shape, the ARM boards another, and a new
device lies close to their span). So:

* `DevicePrior.fit` fits, per prior device, ``log(latency_ms) ~ phi(enc) . w_d`` by
  ridge on all its samples; the prior over a new device's weights is a mixture of
  Gaussians: one global component ``N(mean_d w_d, C + jitter I)`` (C the covariance of
  the prior devices' weights, rank <= devices - 1) and one per prior device,
  ``N(w_d, rho C + jitter I)`` ("it is like that device, plus a bit of the others").
* `DevicePrior.adapt` is exact Bayesian linear regression under each component
  (noise variance `noise_var`: the median residual variance of the prior devices' own
  fits), the components weighted by their evidence on the samples. The likelihood is a
  Student-t (`PriorConfig.robust_nu`, 4), by reweighting: measured samples have
  outliers (a sample taken while the device was busy), and with 10 samples one of them
  cost a Gaussian regression 0.3 of Spearman on a phone of the data. Its
  predictive mean is ``phi(enc) . w_bar`` with ``w_bar`` the evidence-weighted mean of
  the component posteriors: still one linear model on differentiable features, so the
  adapted predictor serves a search on soft encodings exactly as it serves `predict`.
* `rho` and `jitter` are chosen inside `fit` by leave-one-device-out over the prior's
  own devices (each held-in device adapted from 5, 10, 20 of its samples by a prior of
  the others, scored by Spearman on its other samples), so a benchmark that leaves a
  device out of the prior never tunes anything on it.

Table-based alternatives (the new device's log-latency as a combination of the prior
devices' measured latencies of the same cell, a low-rank factorisation of the cell x
device table) were measured too, and were not better while only serving cells of the
table; see `bench/bench_few_shot.py`.

Latencies: `fit` drops rows below `PriorConfig.min_ms` (the NB201 data's ARM devices
report 0.003-0.6 ms for cells whose output does not depend on their input: a toolchain
folding them to a constant, not the latency of a network) and rows that are NaN (a
missing entry of a devices x cells matrix). `adapt` drops rows below its `min_ms`
argument (default: none); anything non-finite or not positive is an `InputError`.

Files: `save(path)` writes ``<path>.json`` (metadata, config, device names, SHA-256 of
the tensors) and ``<path>.pt`` (tensors only, read with ``torch.load(...,
weights_only=True)``: nothing is unpickled). The shipped NB201 prior is
``hardware_profiles/priors/nb201.json`` (`shipped_prior_path`), built by
``bench/build_nb201_prior.py`` from public data (see its `notice`).

Example::

    prior = DevicePrior.load(shipped_prior_path("nb201"))
    model = prior.adapt(archs, latencies_ms)        # or prior.adapt(sample_rows)
    mean_ms, std_ms = model.predict(other_archs)    # or encodings (n, D)
    lat = model(space.encode_weights(w))            # differentiable, units of scale_ms
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from latency.predictor.bayes import device_noise as _device_noise
from latency.predictor.bayes import posterior as _posterior
from latency.predictor.bayes import rank_spearman as _spearman
from latency.predictor.features import FeatureLayout, FeatureMap
from search_spaces.errors import InputError
from search_spaces.fileio import atomic_write_bytes

FORMAT = "hw-nas-device-prior"
VERSION = 1
#: an adaptation needs at least this many usable samples
MIN_SAMPLES = 3
#: a prior needs at least this many devices (a covariance needs two; selection three)
MIN_DEVICES = 2
#: the most pairwise features `PriorFeatures` builds (the DARTS one-hot would give ~25,000)
MAX_PAIR_FEATURES = 4000
_CHUNK = 4096


# --------------------------------------------------------------------------- features


def _pair_index(layout: FeatureLayout) -> tuple[torch.Tensor, torch.Tensor]:
    """Flat one-hot indices (i, j) of every op pair on two different edges (e1 < e2)."""
    E, O = layout.num_edges, layout.num_ops
    first, second = [], []
    for e1 in range(E):
        for e2 in range(e1 + 1, E):
            for o1 in range(O):
                for o2 in range(O):
                    first.append(e1 * O + o1)
                    second.append(e2 * O + o2)
    return torch.tensor(first, dtype=torch.long), torch.tensor(second, dtype=torch.long)


class PriorFeatures(nn.Module):
    """encoding (..., D) -> (..., `num_features`): ``[1, FeatureMap(enc), pairs]``.

    `pairs` are the products ``w[e1, o1] * w[e2, o2]`` of the one-hot block over every two
    different edges (pairs within one edge are left out: always 0 for a discrete
    architecture). Products and sums only, so soft weights give the probability-weighted
    features and gradients flow; one-hot input gives 0/1 flags and counts."""

    first: torch.Tensor
    second: torch.Tensor

    def __init__(self, layout: FeatureLayout, pairs: bool = True) -> None:
        super().__init__()
        self.layout = layout
        self.pairs = bool(pairs)
        self.base = FeatureMap(layout)
        empty = torch.zeros(0, dtype=torch.long)
        first, second = _pair_index(layout) if self.pairs else (empty, empty)
        if len(first) > MAX_PAIR_FEATURES:
            raise InputError(
                f"pairwise prior features: {len(first)} pairs for {layout.num_edges} edges x "
                f"{layout.num_ops} ops (at most {MAX_PAIR_FEATURES}); use pairs=False"
            )
        self.register_buffer("first", first, persistent=False)
        self.register_buffer("second", second, persistent=False)

    @property
    def num_features(self) -> int:
        return 1 + self.layout.num_features + len(self.first)

    def forward(self, enc: torch.Tensor) -> torch.Tensor:
        base = self.base(enc)  # checks the encoding size
        parts = [torch.ones_like(base[..., :1]), base]
        if self.pairs:
            a, b = self.layout.onehot
            oh = enc[..., a:b]
            parts.append(oh[..., self.first] * oh[..., self.second])
        return torch.cat(parts, dim=-1)

    def numpy(self, X: np.ndarray) -> np.ndarray:
        """Features of encodings (n, D) as float64, in chunks."""
        out = []
        with torch.no_grad():
            for s in range(0, len(X), _CHUNK):
                out.append(self(torch.as_tensor(X[s:s + _CHUNK], dtype=torch.float64)).numpy())
        return np.concatenate(out) if out else np.zeros((0, self.num_features))


# ----------------------------------------------------------------------------- config


@dataclass
class PriorConfig:
    """How a prior is fitted and adapted; stored in the prior's JSON.

    `rho` (scale of the per-device components' covariance; 0 = the global Gaussian only)
    and `jitter` (isotropic prior variance added to every weight) may be candidate lists:
    `fit` chooses by leave-one-device-out over the prior's devices (`select_k` samples,
    `select_draws` draws each, Spearman on at most `select_cells` other cells)."""

    pairs: bool = True
    ridge: float = 1e-3
    min_ms: float | None = 1.0
    rho: float | Sequence[float] = (0.0, 0.1, 0.3)
    jitter: float | Sequence[float] = (1e-5, 1e-4)
    robust_nu: float | None = 4.0
    select_k: Sequence[int] = (5, 10, 20)
    select_draws: int = 2
    select_cells: int = 2000
    seed: int = 0
    chosen_rho: float | None = field(default=None)
    chosen_jitter: float | None = field(default=None)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        for name in ("rho", "jitter", "select_k"):
            v = d[name]
            d[name] = [float(u) if name != "select_k" else int(u) for u in v] \
                if isinstance(v, (list, tuple)) else v
        return d

    @classmethod
    def from_dict(cls, data: Any) -> PriorConfig:
        if not isinstance(data, Mapping):
            raise InputError("prior config must be a JSON object")
        unknown = sorted(set(data) - set(cls.__dataclass_fields__))
        if unknown:
            raise InputError(f"prior config has unknown key(s) {', '.join(unknown)}")
        d = dict(data)
        for name in ("rho", "jitter", "select_k"):
            if isinstance(d.get(name), list):
                d[name] = tuple(d[name])
        try:
            return cls(**d)
        except TypeError as exc:
            raise InputError(f"prior config is malformed ({exc})") from None


def _values(v: float | Sequence[float]) -> list[float]:
    return [float(v)] if isinstance(v, (int, float)) else [float(u) for u in v]


def _check_xy(X: Any, y: Any, size: int, what: str) -> tuple[np.ndarray, np.ndarray]:
    try:
        Xa = np.asarray(X, dtype=np.float64)
        ya = np.asarray(y, dtype=np.float64)
    except (TypeError, ValueError):
        raise InputError(f"{what}: encodings and latencies must be numeric arrays") from None
    if Xa.ndim != 2 or Xa.shape[1] != size:
        raise InputError(f"{what}: encodings must have shape (n, {size}), got {Xa.shape}")
    if not np.isfinite(Xa).all():
        raise InputError(f"{what}: encodings contain NaN or infinite values")
    if ya.shape != (len(Xa),):
        raise InputError(f"{what}: latencies must have shape ({len(Xa)},), got {ya.shape}")
    return Xa, ya


# --------------------------------------------------------------------- adapted model


class AdaptedPredictor(nn.Module):
    """A prior adapted to one device: ``log(latency_ms) = phi(enc) . weight``.

    `forward(enc)` is the latency in units of `scale_ms` (the geometric mean of the
    adaptation samples), differentiable in `enc`, like `LatencyMLP.forward`, so the
    search's latency term can use either; `latency_ms(enc)` is the same in ms.
    `predict(X or archs) -> (mean_ms, std_ms)`: the mean is ``exp(phi . weight)`` (the
    posterior median), the std that of a log-normal with the posterior predictive
    variance of the log (the mixture's, moment-matched, plus the noise variance)."""

    scale_ms: torch.Tensor
    cov_factors: torch.Tensor
    cov_signs: torch.Tensor
    jitter: torch.Tensor
    noise_var: torch.Tensor

    def __init__(self, layout: FeatureLayout, pairs: bool, num_factors: int = 0,
                 space: str | None = None) -> None:
        super().__init__()
        self.layout = layout
        self.space = space
        self.features = PriorFeatures(layout, pairs)
        F = self.features.num_features
        self.weight = nn.Parameter(torch.zeros(F), requires_grad=False)
        self.register_buffer("scale_ms", torch.ones((), dtype=torch.float64))
        self.register_buffer("cov_factors", torch.zeros(num_factors, F, dtype=torch.float64))
        self.register_buffer("cov_signs", torch.zeros(num_factors, dtype=torch.float64))
        self.register_buffer("jitter", torch.zeros((), dtype=torch.float64))
        self.register_buffer("noise_var", torch.zeros((), dtype=torch.float64))
        self.fitted = False
        self.info: dict[str, Any] = {}

    @property
    def encoding_size(self) -> int:
        return self.layout.encoding_size

    def log_latency(self, enc: torch.Tensor) -> torch.Tensor:
        """log(latency_ms), differentiable; shape (...)."""
        phi = self.features(enc)
        return phi @ self.weight.to(phi.dtype)

    def latency_ms(self, enc: torch.Tensor) -> torch.Tensor:
        return self.log_latency(enc).exp()

    def forward(self, enc: torch.Tensor) -> torch.Tensor:
        """Latency / `scale_ms`, differentiable in `enc` (..., D)."""
        return (self.log_latency(enc) - math.log(float(self.scale_ms))).exp()

    def freeze(self) -> AdaptedPredictor:
        self.requires_grad_(False)
        self.eval()
        return self

    def _encodings(self, X: Any) -> np.ndarray:
        if _is_archs(X):
            return _encode_archs(self.space, X)
        try:
            Xa = np.asarray(X, dtype=np.float64)
        except (TypeError, ValueError):
            raise InputError("predict: give encodings (n, D) or architectures") from None
        if Xa.ndim != 2 or Xa.shape[1] != self.encoding_size:
            raise InputError(
                f"predict: encodings must have shape (n, {self.encoding_size}), got {Xa.shape}"
            )
        if not np.isfinite(Xa).all():
            raise InputError("predict: encodings contain NaN or infinite values")
        return Xa

    @torch.no_grad()
    def predict(self, X: Any) -> tuple[np.ndarray, np.ndarray]:
        """(mean_ms, std_ms) of encodings (n, D) or a sequence of architectures."""
        phi = self.features.numpy(self._encodings(X))
        mu = phi @ self.weight.double().numpy()
        G = self.cov_factors.numpy()
        proj = phi @ G.T if len(G) else np.zeros((len(phi), 0))
        var = (float(self.noise_var) + float(self.jitter) * (phi**2).sum(axis=1)
               + np.maximum(proj**2 @ self.cov_signs.numpy(), 0.0))
        mean = np.exp(mu)
        return mean, mean * np.sqrt(np.expm1(var))

    def metadata(self) -> dict[str, Any]:
        """What rebuilds this model beside its `state_dict` (`from_state`)."""
        return {"kind": "prior_adapted_linear", "space": self.space, "pairs": self.features.pairs,
                "feature_layout": self.layout.to_dict(),
                "num_factors": int(self.cov_factors.shape[0]), "info": self.info}

    @classmethod
    def from_state(cls, meta: Mapping[str, Any], state: Mapping[str, torch.Tensor]
                   ) -> AdaptedPredictor:
        try:
            model = cls(FeatureLayout.from_dict(meta["feature_layout"]), bool(meta["pairs"]),
                        int(meta["num_factors"]), meta.get("space"))
            model.load_state_dict(dict(state), strict=True)
        except (KeyError, TypeError, ValueError, RuntimeError) as exc:
            if isinstance(exc, InputError):
                raise
            raise InputError(f"adapted predictor state is malformed ({type(exc).__name__})"
                             ) from None
        model.info = dict(meta.get("info", {}))
        model.fitted = True
        return model.eval()


def _is_archs(X: Any) -> bool:
    if isinstance(X, torch.Tensor):
        return False
    if isinstance(X, np.ndarray):
        return X.dtype.kind in "OUS"
    if isinstance(X, (list, tuple)) and X:
        first = X[0]
        return not isinstance(first, (list, tuple, np.ndarray, float, int, np.floating))
    return False


def _encode_archs(space_name: str | None, archs: Sequence[Any]) -> np.ndarray:
    if space_name is None:
        raise InputError("this prior names no search space; give encodings, not architectures")
    from search_spaces.space import get_space

    space = get_space(space_name)
    return np.stack([np.asarray(space.encode(space.parse(a)), dtype=np.float64)
                     for a in archs])


def _pairs_of(samples: Any, space: str | None, what: str) -> tuple[Any, Any]:
    """(encodings or archs, latencies) of sample rows or of a pair; archs encoded."""
    rows = isinstance(samples, Sequence) and not isinstance(samples, str) and bool(samples) \
        and all(isinstance(r, Mapping) for r in samples)
    if isinstance(samples, tuple) and len(samples) == 2 and not rows:
        X, y = samples
    elif rows:
        try:
            X = [r["arch"] for r in samples]
            y = [r["latency_ms"] for r in samples]
        except KeyError as exc:
            raise InputError(f"{what}: a sample row has no {exc.args[0]!r}") from None
    else:
        raise InputError(f"{what}: give sample rows (dicts with 'arch' and 'latency_ms') or "
                         "a pair (archs or encodings, latencies)")
    if _is_archs(X):
        X = _encode_archs(space, X)
    try:
        return X, np.asarray(y, dtype=np.float64)
    except (TypeError, ValueError):
        raise InputError(f"{what}: latencies must be numbers") from None


# ------------------------------------------------------------------------- the prior


class DevicePrior:
    """Per-device weight vectors of measured devices, and the adaptation to a new one."""

    def __init__(self, layout: FeatureLayout, config: PriorConfig, devices: Sequence[str],
                 weights: np.ndarray, noise_vars: np.ndarray, *, space: str | None = None,
                 op_names: Sequence[str] | None = None, samples_per_device: Sequence[int] = (),
                 selection: Mapping[str, Any] | None = None, notice: str | None = None) -> None:
        self.layout = layout
        self.config = config
        self.devices = list(devices)
        self.weights = np.asarray(weights, dtype=np.float64)
        self.noise_vars = np.asarray(noise_vars, dtype=np.float64)
        self.space = space
        self.op_names = list(op_names) if op_names is not None else None
        self.samples_per_device = [int(v) for v in samples_per_device]
        self.selection = dict(selection or {})
        self.notice = notice
        self.features = PriorFeatures(layout, config.pairs)
        F = self.features.num_features
        if self.weights.shape != (len(self.devices), F) or self.noise_vars.shape != (
                len(self.devices),):
            raise InputError(f"prior: weights must be ({len(self.devices)}, {F}) and noise "
                             f"variances ({len(self.devices)},), got {self.weights.shape} "
                             f"and {self.noise_vars.shape}")
        if len(self.devices) < MIN_DEVICES:
            raise InputError(f"a prior needs at least {MIN_DEVICES} devices, got "
                             f"{len(self.devices)}")

    @property
    def encoding_size(self) -> int:
        return self.layout.encoding_size

    @property
    def noise_var(self) -> float:
        return float(np.median(self.noise_vars))

    @property
    def rho(self) -> float:
        c = self.config
        return float(c.chosen_rho if c.chosen_rho is not None else _values(c.rho)[0])

    @property
    def jitter(self) -> float:
        c = self.config
        return float(c.chosen_jitter if c.chosen_jitter is not None else _values(c.jitter)[0])

    # -- fitting --------------------------------------------------------------------

    @classmethod
    def fit(cls, data: Mapping[str, Any], layout: FeatureLayout, *,
            config: PriorConfig | None = None, space: str | None = None,
            op_names: Sequence[str] | None = None, notice: str | None = None,
            log: Callable[[str], None] | None = None) -> DevicePrior:
        """A prior from per-device samples: ``{device: (encodings (n, D), latency_ms (n,))}``
        or ``{device: sample rows}`` (dicts with ``arch`` and ``latency_ms``, as `nas
        profile` writes them; needs `space`).

        NaN latencies (missing) and those below `config.min_ms` are dropped; anything
        else non-finite or not positive is an `InputError`."""
        cfg = config or PriorConfig()
        say = log or (lambda _m: None)
        if not isinstance(data, Mapping) or len(data) < MIN_DEVICES:
            raise InputError(f"a prior needs samples of at least {MIN_DEVICES} devices")
        feats = PriorFeatures(layout, cfg.pairs)
        F = feats.num_features
        names, W, noise, counts, kept = [], [], [], [], []
        for name, samples in data.items():
            X, y = _pairs_of(samples, space, f"prior device {name!r}")
            Xa, ya = _check_xy(X, y, layout.encoding_size, f"prior device {name!r}")
            finite = ~np.isnan(ya)
            if not (np.isfinite(ya[finite]).all() and (ya[finite] > 0).all()):
                raise InputError(f"prior device {name!r}: latencies must be positive and "
                                 "finite (NaN marks a missing one)")
            use = finite.copy()
            if cfg.min_ms is not None:
                use[finite] &= ya[finite] >= cfg.min_ms
            if use.sum() < 2 * MIN_SAMPLES:
                raise InputError(f"prior device {name!r}: only {int(use.sum())} usable samples")
            Phi = feats.numpy(Xa[use])
            z = np.log(ya[use])
            A = Phi.T @ Phi + cfg.ridge * np.eye(F)
            w = np.linalg.solve(A, Phi.T @ z)
            names.append(str(name))
            W.append(w)
            noise.append(float(np.mean((z - Phi @ w) ** 2)))
            counts.append(int(use.sum()))
            kept.append((Xa[use], z))
            say(f"prior device {name}: {int(use.sum())} samples, residual sd of log "
                f"{math.sqrt(noise[-1]):.3f}")
        prior = cls(layout, cfg, names, np.array(W), np.array(noise), space=space,
                    op_names=op_names, samples_per_device=counts, notice=notice)
        prior._select(kept, say)
        return prior

    @classmethod
    def from_matrix(cls, X: Any, Y: Any, devices: Sequence[str], layout: FeatureLayout,
                    **kwargs: Any) -> DevicePrior:
        """A prior from a cells x devices matrix `Y` (ms; NaN = not measured) of the
        encodings `X` (cells, D); `kwargs` as `fit`."""
        Ya = np.asarray(Y, dtype=np.float64)
        if Ya.ndim != 2 or Ya.shape[1] != len(devices):
            raise InputError(f"latency matrix must be (cells, {len(devices)}), got {Ya.shape}")
        return cls.fit({d: (X, Ya[:, j]) for j, d in enumerate(devices)}, layout, **kwargs)

    def _select(self, kept: list[tuple[np.ndarray, np.ndarray]],
                say: Callable[[str], None]) -> None:
        """Choose rho / jitter by leave-one-device-out over this prior's devices."""
        cfg = self.config
        grid = [(r, j) for r in _values(cfg.rho) for j in _values(cfg.jitter)]
        n = len(self.devices)
        if len(grid) == 1 or n < 3:
            cfg.chosen_rho, cfg.chosen_jitter = grid[0]
            self.selection = {"grid": [list(g) for g in grid], "scores": None,
                              "note": "single candidate or fewer than 3 devices"}
            return
        scores = np.zeros(len(grid))
        count = 0
        for d in range(n):
            others = np.array([i for i in range(n) if i != d])
            Xd, zd = kept[d]
            rng = np.random.default_rng(cfg.seed * 7919 + d)
            noise = float(np.median(self.noise_vars[others]))
            for k in cfg.select_k:
                if len(zd) < k + 10:
                    continue
                for _ in range(cfg.select_draws):
                    perm = rng.permutation(len(zd))
                    idx, rest = perm[:k], perm[k:k + cfg.select_cells]
                    P, Pe = self.features.numpy(Xd[idx]), self.features.numpy(Xd[rest])
                    for g, (r, j) in enumerate(grid):
                        post = _posterior(P, zd[idx], self.weights[others], noise, r, j,
                                          need_cov=False, nu=cfg.robust_nu)
                        scores[g] += _spearman(zd[rest], Pe @ post.mean)
                    count += 1
        if not count:
            cfg.chosen_rho, cfg.chosen_jitter = grid[0]
            self.selection = {"grid": [list(g) for g in grid], "scores": None,
                              "note": "too few samples per device to select"}
            return
        scores /= count
        best = int(np.argmax(scores))
        cfg.chosen_rho, cfg.chosen_jitter = grid[best]
        self.selection = {"grid": [list(g) for g in grid],
                          "mean_spearman": [float(s) for s in scores],
                          "adaptations": count, "chosen": list(grid[best])}
        say(f"chose rho {grid[best][0]:g}, jitter {grid[best][1]:g} (leave-one-device-out "
            f"Spearman {scores[best]:.4f})")

    def with_settings(self, *, rho: float | None = None, jitter: float | None = None
                      ) -> DevicePrior:
        """A copy adapting with other `rho` / `jitter` (rho 0: the global Gaussian only)."""
        copy = self.subset(self.devices)
        if rho is not None:
            copy.config.chosen_rho = float(rho)
        if jitter is not None:
            copy.config.chosen_jitter = float(jitter)
        return copy

    def subset(self, devices: Sequence[str]) -> DevicePrior:
        """The prior of some of its devices (same config and choices)."""
        idx = [self.devices.index(d) for d in devices]
        cfg = PriorConfig.from_dict(self.config.to_dict())
        return DevicePrior(self.layout, cfg, [self.devices[i] for i in idx],
                           self.weights[idx], self.noise_vars[idx], space=self.space,
                           op_names=self.op_names,
                           samples_per_device=[self.samples_per_device[i] for i in idx]
                           if self.samples_per_device else (), selection=self.selection,
                           notice=self.notice)

    # -- adapting -------------------------------------------------------------------

    def _samples(self, samples: Any, latencies: Any) -> tuple[np.ndarray, np.ndarray]:
        X, y = _pairs_of(samples if latencies is None else (samples, latencies), self.space,
                         "adapt")
        return _check_xy(X, y, self.encoding_size, "adapt")

    def adapt(self, samples: Any, latencies: Any = None, *, min_ms: float | None = None
              ) -> AdaptedPredictor:
        """The prior adapted to a new device's samples.

        `samples`: sample rows (dicts with ``arch`` and ``latency_ms``, as `nas profile`
        writes them), or a pair ``(archs or encodings, latencies_ms)``, or archs /
        encodings with `latencies` given separately. Rows below `min_ms` are dropped."""
        X, y = self._samples(samples, latencies)
        if not (np.isfinite(y).all() and (y > 0).all()):
            raise InputError("adapt: latencies must be finite and positive (NaN, inf, 0 or "
                             "negative given)")
        use = y >= min_ms if min_ms is not None else np.ones(len(y), dtype=bool)
        if use.sum() < MIN_SAMPLES:
            raise InputError(f"adapt: need at least {MIN_SAMPLES} samples, got "
                             f"{int(use.sum())}" + (f" at or above {min_ms} ms"
                                                    if min_ms is not None else ""))
        X, y = X[use], y[use]
        P = self.features.numpy(X)
        z = np.log(y)
        post = _posterior(P, z, self.weights, self.noise_var, self.rho, self.jitter,
                          nu=self.config.robust_nu)
        noise_var = _device_noise(P, z, self.weights, self.noise_var, self.jitter)
        model = AdaptedPredictor(self.layout, self.config.pairs, len(post.factors), self.space)
        with torch.no_grad():
            model.weight.copy_(torch.from_numpy(post.mean))
            model.scale_ms.fill_(float(np.exp(z.mean())))
            model.cov_factors.copy_(torch.from_numpy(post.factors))
            model.cov_signs.copy_(torch.from_numpy(post.signs))
            model.jitter.fill_(post.jitter)
            model.noise_var.fill_(noise_var)
        order = np.argsort(-post.component_weights)[:5]
        names = ["<global>"] + (self.devices if self.rho > 0 else [])
        model.info = {"samples": int(len(y)), "dropped_below_min_ms": int((~use).sum()),
                      "rho": self.rho, "jitter": self.jitter, "noise_var": noise_var,
                      "downweighted_samples": int((post.sample_noise > 2 * self.noise_var).sum()),
                      "closest_components": {names[i]: float(post.component_weights[i])
                                             for i in order}}
        model.fitted = True
        return model.eval()

    # -- files ----------------------------------------------------------------------

    @staticmethod
    def _paths(path: str | os.PathLike[str]) -> tuple[Path, Path]:
        p = Path(path)
        stem = p.with_suffix("") if p.suffix in (".json", ".pt") else p
        return stem.with_name(stem.name + ".json"), stem.with_name(stem.name + ".pt")

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write ``<path>.json`` and ``<path>.pt``; returns the JSON path."""
        meta_path, tensor_path = self._paths(path)
        buffer = io.BytesIO()
        torch.save({"weights": torch.from_numpy(self.weights.copy()),
                    "noise_vars": torch.from_numpy(self.noise_vars.copy())}, buffer)
        blob = buffer.getvalue()
        meta = {
            "format": FORMAT, "version": VERSION, "space": self.space,
            "op_names": self.op_names, "encoding_size": self.encoding_size,
            "feature_layout": self.layout.to_dict(),
            "num_features": self.features.num_features,
            "config": self.config.to_dict(), "devices": self.devices,
            "samples_per_device": self.samples_per_device,
            "selection": self.selection, "notice": self.notice,
            "tensors": tensor_path.name, "tensors_sha256": hashlib.sha256(blob).hexdigest(),
        }
        try:
            atomic_write_bytes(tensor_path, blob)
            atomic_write_bytes(meta_path, (json.dumps(meta, indent=2) + "\n").encode())
        except OSError as exc:
            raise InputError(f"cannot write prior to '{meta_path}': {exc.strerror or exc}"
                             ) from None
        return meta_path

    @classmethod
    def load(cls, path: str | os.PathLike[str], *, op_names: Sequence[str] | None = None,
             encoding_size: int | None = None) -> DevicePrior:
        """Read a prior written by `save`; refuse one of another op set / encoding size."""
        meta_path, _ = cls._paths(path)
        if not meta_path.is_file():
            raise InputError(f"prior '{meta_path}' not found")
        try:
            meta = json.loads(meta_path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
            raise InputError(f"prior '{meta_path}' is corrupt ({type(exc).__name__})") from None
        if not isinstance(meta, dict) or meta.get("format") != FORMAT:
            raise InputError(f"prior '{meta_path}' is not a {FORMAT} file")
        if meta.get("version") != VERSION:
            raise InputError(f"prior '{meta_path}': format version {meta.get('version')!r}; "
                             f"this code reads version {VERSION}")
        if op_names is not None and meta.get("op_names") is not None and \
                list(op_names) != meta["op_names"]:
            raise InputError(f"prior '{meta_path}' was learned on op set "
                             f"[{', '.join(meta['op_names'])}], not [{', '.join(op_names)}]")
        if encoding_size is not None and meta.get("encoding_size") != int(encoding_size):
            raise InputError(f"prior '{meta_path}' expects encodings of size "
                             f"{meta.get('encoding_size')}, not {encoding_size}")
        try:
            tensor_path = meta_path.with_name(str(meta["tensors"]))
            blob = tensor_path.read_bytes()
        except (KeyError, OSError):
            raise InputError(f"prior '{meta_path}': its tensor file is missing") from None
        if hashlib.sha256(blob).hexdigest() != meta.get("tensors_sha256"):
            raise InputError(f"prior '{meta_path}': {tensor_path.name} is corrupt "
                             "(checksum mismatch)")
        try:
            state = torch.load(io.BytesIO(blob), map_location="cpu", weights_only=True)
            weights = state["weights"].double().numpy()
            noise = state["noise_vars"].double().numpy()
            layout = FeatureLayout.from_dict(meta["feature_layout"])
            config = PriorConfig.from_dict(meta["config"])
            prior = cls(layout, config, meta["devices"], weights, noise,
                        space=meta.get("space"), op_names=meta.get("op_names"),
                        samples_per_device=meta.get("samples_per_device") or (),
                        selection=meta.get("selection"), notice=meta.get("notice"))
        except InputError:
            raise
        except Exception as exc:  # noqa: BLE001 - any failure to read is a corrupt prior
            raise InputError(f"prior '{meta_path}' is malformed ({type(exc).__name__})"
                             ) from None
        if prior.features.num_features != meta.get("num_features"):
            raise InputError(f"prior '{meta_path}': feature count disagrees with its layout")
        return prior


def shipped_prior_path(space: str) -> Path:
    """Where the prior shipped for `space` lives (it may not exist)."""
    import hardware_profiles

    return Path(hardware_profiles.__file__).parent / "priors" / f"{space}.json"
