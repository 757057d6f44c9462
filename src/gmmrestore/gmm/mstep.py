"""The M-step: new parameters from a pass's sufficient statistics, degenerate components
re-seeded at the worst-explained patches."""

from __future__ import annotations

import logging

import numpy as np

from .model import GaussianMixture, cholesky_ok
from .passes import PassResult, Prepared

log = logging.getLogger("gmmrestore.gmm")

#: A component whose responsibility sums to less than this many patches is re-seeded.
MIN_COMPONENT_COUNT = 1.0


def m_step(res: PassResult, prep: Prepared, reg_covar: float, zero_mean: bool,
           iteration: int) -> tuple[GaussianMixture, list[int]]:
    """New parameters from the statistics ``res`` of a pass with the mixture ``prep``, and the
    components that were re-seeded (lost their responsibility or collapsed)."""
    K, d = prep.K, prep.d
    counts = res.counts
    safe = np.maximum(counts, np.finfo(np.float64).tiny)
    if zero_mean:
        means = np.zeros((K, d))
        covs = res.gram / safe[:, None, None]
    else:
        delta = prep.delta64
        s = res.first - counts[:, None] * delta                  # sum r (x - mu_old)
        e = s / safe[:, None]                                   # mu_new - mu_old
        means = prep.shift + res.first / safe[:, None]
        covs = res.gram / safe[:, None, None]
        covs -= e[:, :, None] * e[:, None, :]
    covs = 0.5 * (covs + covs.transpose(0, 2, 1))
    covs[:, np.arange(d), np.arange(d)] += reg_covar
    weights = counts / counts.sum()
    bad_count = counts < MIN_COMPONENT_COUNT
    bad_cov = ~cholesky_ok(covs) | ~np.all(np.isfinite(means), axis=1)
    bad = np.flatnonzero(bad_count | bad_cov)
    if len(bad):
        weights = _reseed(res, bad, bad_count, weights, means, covs, zero_mean, iteration)
    return GaussianMixture(weights, means, covs), [int(k) for k in bad]


def _reseed(res: PassResult, bad: np.ndarray, bad_count: np.ndarray, weights: np.ndarray,
            means: np.ndarray, covs: np.ndarray, zero_mean: bool, iteration: int) -> np.ndarray:
    """Re-seed components ``bad`` in place in means (K, d) and covs (K, d, d) at the
    worst-explained patches of the pass, with the pooled covariance of the others; returns
    the new weights (K,)."""
    K, d = means.shape
    counts = res.counts
    good = np.setdiff1d(np.arange(K), bad)
    if len(good):
        pooled = np.einsum("k,kij->ij", weights[good] / weights[good].sum(), covs[good])
    else:
        pooled = np.eye(d)
    for j, k in enumerate(bad):
        x = res.worst_x[j % len(res.worst_x)]
        why = (f"lost its responsibility (N_k={counts[k]:.3g} patches)" if bad_count[k]
               else "collapsed (covariance not positive definite)")
        log.warning("EM iteration %d: component %d %s; re-seeded at the worst-explained "
                    "patch (log p = %.4g)", iteration, k, why,
                    res.worst_logp[j % len(res.worst_logp)])
        if zero_mean:
            means[k] = 0.0
            covs[k] = pooled + np.outer(x, x)
        else:
            means[k] = x
            covs[k] = pooled
        weights[k] = 1.0 / K
    return weights / weights.sum()
