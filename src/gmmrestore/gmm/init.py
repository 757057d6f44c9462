"""The initial mixture: k-means++ seeding (or random centres) and Lloyd iterations on a seeded
subsample, then per-cluster weights, means and covariances."""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
from scipy import sparse

from ..h5io import GmmRestoreError
from ..threads import one_blas_thread
from .blocks import Blocks, describe
from .model import GaussianMixture, cholesky_ok
from .settings import EMSettings

log = logging.getLogger("gmmrestore.gmm")

#: Patches used for k-means++ / random initialisation (a seeded subsample of bigger sets).
INIT_SUBSAMPLE = 100_000
#: Lloyd iterations after k-means++ seeding (on the subsample).
KMEANS_ITER = 10


def _sq_dist(S: np.ndarray, sq_norms: np.ndarray, C: np.ndarray) -> np.ndarray:
    """(n, k) squared Euclidean distances between rows of S and rows of C."""
    D = S @ C.T
    D *= -2.0
    D += sq_norms[:, None]
    D += np.einsum("kd,kd->k", C, C)[None, :]
    np.maximum(D, 0.0, out=D)
    return D


def kmeans_plusplus(S: np.ndarray, n_clusters: int, rng: np.random.Generator) -> np.ndarray:
    """k-means++ seeding (D^2 sampling): indices of ``n_clusters`` rows of ``S`` (n, d)."""
    n = len(S)
    sq_norms = np.einsum("nd,nd->n", S, S)
    chosen = [int(rng.integers(n))]
    closest = _sq_dist(S, sq_norms, S[chosen[0]][None])[:, 0]
    for _ in range(1, n_clusters):
        total = closest.sum()
        if total <= 0.0:  # every remaining point coincides with a centre: take any unused one
            unused = np.setdiff1d(np.arange(n), chosen)
            idx = int(rng.choice(unused)) if len(unused) else int(rng.integers(n))
        else:
            idx = int(np.searchsorted(np.cumsum(closest), rng.random() * total, side="right"))
            idx = min(idx, n - 1)
        chosen.append(idx)
        np.minimum(closest, _sq_dist(S, sq_norms, S[idx][None])[:, 0], out=closest)
    return np.asarray(chosen)


def _lloyd(S: np.ndarray, centres: np.ndarray, n_iter: int) -> np.ndarray:
    """A few Lloyd iterations; returns the final labels (empty clusters keep their centre)."""
    sq_norms = np.einsum("nd,nd->n", S, S)
    labels = np.argmin(_sq_dist(S, sq_norms, centres), axis=1)
    for _ in range(n_iter):
        counts = np.bincount(labels, minlength=len(centres))
        onehot = sparse.csr_matrix((np.ones(len(S)), (labels, np.arange(len(S)))),
                                   shape=(len(centres), len(S)))
        sums = np.asarray(onehot @ S)
        nonempty = counts > 0
        centres = centres.copy()
        centres[nonempty] = sums[nonempty] / counts[nonempty, None]
        new = np.argmin(_sq_dist(S, sq_norms, centres), axis=1)
        if np.array_equal(new, labels):
            break
        labels = new
    return labels


def _params_from_labels(S: np.ndarray, labels: np.ndarray, K: int, reg_covar: float,
                        zero_mean: bool) -> GaussianMixture:
    """Weights, means (zero if ``zero_mean``) and covariances (+ ``reg_covar``) of the K
    clusters of the rows of S (n, d) given by ``labels`` (n,)."""
    n, d = S.shape
    counts = np.bincount(labels, minlength=K)
    centre = np.zeros(d) if zero_mean else S.mean(axis=0)
    pooled = (S - centre).T @ (S - centre) / n
    order = np.argsort(labels, kind="stable")
    bounds = np.concatenate([[0], np.cumsum(counts)])
    means = np.zeros((K, d))
    covs = np.empty((K, d, d))
    for k in range(K):
        members = S[order[bounds[k]:bounds[k + 1]]]
        if not zero_mean and len(members):
            means[k] = members.mean(axis=0)
        if len(members) >= 2:
            diff = members - means[k]
            covs[k] = diff.T @ diff / len(members)
        else:
            covs[k] = pooled
        covs[k].flat[:: d + 1] += reg_covar
    # a cluster of identical (e.g. all-black) patches has a singular covariance when
    # reg_covar is 0: start it from the pooled covariance instead
    bad = np.flatnonzero(~cholesky_ok(covs))
    if len(bad):
        fallback = pooled + reg_covar * np.eye(d)
        if not cholesky_ok(fallback[None])[0]:
            raise GmmRestoreError(
                f"the training patches have a singular covariance (constant patches, or "
                f"fewer than {d} independent directions) and reg_covar={reg_covar:g} does not "
                "regularise it: use reg_covar > 0")
        for k in bad:
            log.warning("initialisation: cluster %d (%d patches) has a singular covariance; "
                        "it starts from the covariance of all patches instead", k, counts[k])
            covs[k] = fallback
    weights = np.maximum(counts, 1).astype(np.float64)
    return GaussianMixture(weights / weights.sum(), means, covs)


def initialise(blocks: Blocks, K: int, init: str, reg_covar: float, rng: np.random.Generator,
               zero_mean: bool) -> GaussianMixture:
    """A K-component mixture from clusters of a subsample of ``blocks`` drawn with ``rng``."""
    n_sub = min(blocks.n_samples, INIT_SUBSAMPLE)
    index = np.sort(rng.choice(blocks.n_samples, size=n_sub, replace=False))
    S = blocks.rows(index)
    if not np.all(np.isfinite(S)):
        raise GmmRestoreError(f"{blocks.name} ({describe(blocks.data)}) contains NaN or Inf")
    # many small and medium BLAS calls: one BLAS thread avoids the synchronisation cost of
    # a multi-threaded BLAS on a busy machine (the results are the same)
    with one_blas_thread():
        return _cluster_init(S, K, init, reg_covar, rng, zero_mean)


def _cluster_init(S: np.ndarray, K: int, init: str, reg_covar: float,
                  rng: np.random.Generator, zero_mean: bool) -> GaussianMixture:
    """K clusters of the rows of S (n, d) by ``init``, and their mixture."""
    n_sub = len(S)
    if init == "kmeans++":
        centres = S[kmeans_plusplus(S, K, rng)]
        labels = _lloyd(S, centres, KMEANS_ITER)
    else:  # random data points, one assignment
        centres = S[rng.choice(n_sub, size=K, replace=False)]
        labels = np.argmin(_sq_dist(S, np.einsum("nd,nd->n", S, S), centres), axis=1)
    return _params_from_labels(S, labels, K, reg_covar, zero_mean)


def check_components(K: int, blocks: Blocks) -> None:
    """K components need at least K training patches."""
    if K > blocks.n_samples:
        raise GmmRestoreError(f"K={K} larger than the number of training patches "
                              f"N={blocks.n_samples}")


def init_gmm(X: Any, n_components: int, settings: EMSettings | None = None, *, run: int = 0,
             **overrides: Any) -> GaussianMixture:
    """The initial mixture :func:`fit_gmm` starts restart ``run`` from (with float64 data).

    k-means++ seeding plus Lloyd iterations (``init="kmeans++"``) or random patches as centres
    (``"random"``), on a seeded subsample of at most :data:`INIT_SUBSAMPLE` patches; weights,
    means and covariances (+ ``reg_covar``) from the resulting clusters.  Uses ``init``,
    ``reg_covar``, ``seed``, ``remove_dc`` and ``chunk_size`` of ``settings``, with
    ``overrides`` (keyword arguments named as the fields of :class:`EMSettings`) replacing them.

    Parameters
    ----------
    X : (n_samples, n_features) array or h5py.Dataset

    Returns
    -------
    GaussianMixture with n_components components of n_features dimensions
    """
    s = EMSettings.of(settings, overrides)
    blocks = Blocks(X, np.dtype(np.float64), s.remove_dc, s.chunk_size, name="training patches")
    check_components(int(n_components), blocks)
    rng = np.random.default_rng([int(s.seed), int(run)])
    return initialise(blocks, int(n_components), s.init, s.reg_covar, rng, s.remove_dc)
