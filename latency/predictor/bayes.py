"""The Bayesian linear regression behind the device prior (`prior.py`).

A new device's weights w (log-ms per feature) get a prior that is a mixture: one
Gaussian around the mean of the prior devices' weights with their covariance, and one
narrower Gaussian around each prior device; the posterior of each component is exact
for a Gaussian likelihood, the components are weighted by their evidence, and a
Student-t likelihood is applied by reweighting the samples (`robust_noise`). Covariances
are kept as low-rank factors plus an isotropic jitter, so nothing of size features x
features is ever formed. The reasoning and the measurements are in prior.py's docstring
and docs/methods.md.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy.stats import rankdata


@dataclass
class Posterior:
    """The evidence-weighted mixture posterior of one adaptation (weights in log-ms)."""

    mean: np.ndarray  # (F,)
    factors: np.ndarray  # (m, F): covariance = jitter I + sum_i sign_i f_i f_i^T
    signs: np.ndarray  # (m,)
    jitter: float
    noise_var: float
    component_weights: np.ndarray  # (components,)
    sample_noise: np.ndarray  # (k,) per-sample noise variance (Student-t reweighting)


def robust_noise(P: np.ndarray, z: np.ndarray, W: np.ndarray, noise_var: float,
                  jitter: float, nu: float, iters: int = 3) -> np.ndarray:
    """Per-sample noise variances of a Student-t likelihood (nu degrees of freedom).

    Measured latencies have outliers (a sample taken while the device was busy: the
    NB201 data hold samples a factor 2.7 off their device's own fit), and a Gaussian
    regression on a handful of samples follows them. Each sample's leave-one-out
    residual under the global component is scaled by its leave-one-out predictive sd,
    and the sample gets the weight (nu + 1) / (nu + t^2) of iteratively reweighted
    Student-t regression: its noise variance is `noise_var` / weight."""
    n = len(W)
    m = W.mean(axis=0)
    D = (W - m) / math.sqrt(max(n - 1, 1))
    DP = D @ P.T
    Kp = DP.T @ DP + jitter * (P @ P.T)
    noise = np.full(len(z), noise_var)
    r = z - P @ m
    for _ in range(iters):
        Ki = np.linalg.inv(Kp + np.diag(noise))
        kii = np.diag(Ki)
        loo = (Ki @ r) / kii
        spread = np.maximum(1.0 / kii - noise, 0.0) + noise_var
        weight = (nu + 1.0) / (nu + loo**2 / spread)
        noise = noise_var / np.minimum(weight, 1.0)
    return noise


#: pseudo-samples of the prior's noise level in a device's own noise estimate
NOISE_PRIOR_SAMPLES = 2.0


def device_noise(P: np.ndarray, z: np.ndarray, W: np.ndarray, noise_var: float,
                  jitter: float) -> float:
    """This device's noise variance (log-latency), for `predict`'s spread: from the
    samples' leave-one-out residuals under the global component (robustly: their median
    squared / 0.455, the median of a chi-square with one degree of freedom, less the
    leave-one-out predictive variance the model accounts for itself), shrunk towards the
    prior's `noise_var` as if that were `NOISE_PRIOR_SAMPLES` samples. Devices noisier
    than the prior's median (the phones, the ARM board) get a wider spread; measured on
    the NB201 devices this takes the share of cells within one predicted sd from
    0.35-0.5 to 0.6-0.75 on those."""
    n, k = len(W), len(z)
    m = W.mean(axis=0)
    D = (W - m) / math.sqrt(max(n - 1, 1))
    DP = D @ P.T
    Ki = np.linalg.inv(DP.T @ DP + jitter * (P @ P.T) + noise_var * np.eye(k))
    kii = np.diag(Ki)
    loo = (Ki @ (z - P @ m)) / kii
    own = max(noise_var / 20.0, float(np.median(loo**2)) / 0.455
              - float(np.median(1.0 / kii - noise_var)))
    return (k * own + NOISE_PRIOR_SAMPLES * noise_var) / (k + NOISE_PRIOR_SAMPLES)


def posterior(P: np.ndarray, z: np.ndarray, W: np.ndarray, noise_var: float, rho: float,
               jitter: float, need_cov: bool = True, nu: float | None = None) -> Posterior:
    """Bayesian linear regression of z (k,) on features P (k, F) under the mixture prior
    of prior-device weights W (n, F): see the module docstring. `nu`: Student-t
    likelihood (`robust_noise`), else Gaussian."""
    n = len(W)
    m = W.mean(axis=0)
    D = (W - m) / math.sqrt(max(n - 1, 1))  # C = D^T D
    DP = D @ P.T  # (n, k)
    k = len(z)
    noise = (np.full(k, noise_var) if nu is None
             else robust_noise(P, z, W, noise_var, jitter, nu))
    comps: list[tuple[np.ndarray, float]] = [(m, 1.0)]  # (mean, covariance scale)
    if rho > 0:
        comps += [(W[d], rho) for d in range(n)]
    means, logev, Es = [], [], []
    for mu, a in comps:
        B = a * (DP.T @ D) + jitter * P  # P S, (k, F)
        K = a * (DP.T @ DP) + jitter * (P @ P.T) + np.diag(noise)
        K = 0.5 * (K + K.T)
        try:
            Lc = np.linalg.cholesky(K)
        except np.linalg.LinAlgError:
            Lc = np.linalg.cholesky(K + 1e-9 * np.trace(K) / k * np.eye(k))
        r = z - P @ mu
        y = np.linalg.solve(Lc, r)
        E = np.linalg.solve(Lc, B)  # (k, F)
        means.append(mu + E.T @ y)
        logev.append(-0.5 * float(y @ y) - float(np.log(np.diag(Lc)).sum()))
        Es.append(E)
    lw = np.array(logev)
    pw = np.exp(lw - lw.max())
    pw /= pw.sum()
    M = np.array(means)
    mean = pw @ M
    if not need_cov:
        return Posterior(mean, np.zeros((0, P.shape[1])), np.zeros(0), jitter, noise_var, pw,
                          noise)
    keep = pw > 1e-8
    wk = pw[keep] / pw[keep].sum()
    scale = float(sum(p * c[1] for p, c in zip(wk, [c for c, kp in zip(comps, keep,
                                                                        strict=True) if kp],
                                                strict=True)))
    rows, signs = [math.sqrt(scale) * D], [np.ones(n)]
    for p, E, mu in zip(wk, [e for e, kp in zip(Es, keep, strict=True) if kp],
                        M[keep], strict=True):
        rows += [math.sqrt(p) * E, (math.sqrt(p) * (mu - mean))[None, :]]
        signs += [-np.ones(len(E)), np.ones(1)]
    return Posterior(mean, np.concatenate(rows), np.concatenate(signs), jitter, noise_var,
                      pw, noise)


def rank_spearman(a: np.ndarray, b: np.ndarray) -> float:
    ra, rb = rankdata(a), rankdata(b)
    ra, rb = ra - ra.mean(), rb - rb.mean()
    den = math.sqrt(float(ra @ ra) * float(rb @ rb))
    return float(ra @ rb / den) if den > 0 else 0.0
