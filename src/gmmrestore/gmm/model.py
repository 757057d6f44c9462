"""The mixture itself: :class:`GaussianMixture`, its patch size, patch DC removal,
positive-definiteness checks."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..h5io import GmmRestoreError


@dataclass(frozen=True)
class GaussianMixture:
    """A Gaussian mixture with full covariances.

    Attributes
    ----------
    weights : (n_components,)
        Mixing proportions, non-negative, summing to 1.
    means : (n_components, n_features)
    covariances : (n_components, n_features, n_features)
        Symmetric positive definite.
    """

    weights: np.ndarray
    means: np.ndarray
    covariances: np.ndarray

    def __post_init__(self) -> None:
        w, mu, cov = (np.asarray(a) for a in (self.weights, self.means, self.covariances))
        if mu.ndim != 2 or w.shape != (mu.shape[0],) or cov.shape != mu.shape + (mu.shape[1],):
            raise GmmRestoreError(
                "GaussianMixture: expected weights (K,), means (K, d), covariances (K, d, d); "
                f"got {w.shape}, {mu.shape}, {cov.shape}")
        object.__setattr__(self, "weights", w)
        object.__setattr__(self, "means", mu)
        object.__setattr__(self, "covariances", cov)

    @property
    def n_components(self) -> int:
        return int(self.means.shape[0])

    @property
    def n_features(self) -> int:
        return int(self.means.shape[1])


def patch_size_of(gmm: GaussianMixture) -> int:
    """The side m of the square patches ``gmm`` is over (m² features)."""
    m = math.isqrt(gmm.n_features)
    if m * m != gmm.n_features:
        raise ValueError(f"the GMM has {gmm.n_features} features, not an m x m patch")
    return m


def remove_patch_dc(X: np.ndarray) -> np.ndarray:
    """Subtract each patch's mean: ``X - X.mean(axis=1, keepdims=True)``.

    Parameters
    ----------
    X : (n_samples, n_features)
    """
    X = np.asarray(X)
    return X - X.mean(axis=1, keepdims=True)


def cholesky_all(cov: np.ndarray) -> np.ndarray | None:
    """Lower Cholesky factors (K, d, d) of covariances (K, d, d), or None if one fails."""
    try:
        return np.linalg.cholesky(cov)
    except np.linalg.LinAlgError:
        return None


def cholesky_ok(cov: np.ndarray) -> np.ndarray:
    """(K,) bool: which covariances of (K, d, d) are finite and positive definite."""
    ok = np.zeros(len(cov), dtype=bool)
    for k, c in enumerate(cov):
        if np.all(np.isfinite(c)):
            try:
                np.linalg.cholesky(c)
                ok[k] = True
            except np.linalg.LinAlgError:
                pass
    return ok


def valid_weights(w: np.ndarray) -> bool:
    """Whether mixing proportions (K,) are finite, non-negative and sum to 1 (within 1e-6)."""
    return bool(np.all(np.isfinite(w)) and np.all(w >= 0) and abs(w.sum() - 1.0) < 1e-6)
