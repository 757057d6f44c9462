"""Scores of patches under a mixture: component log-densities, log p(x), their mean."""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy.special import logsumexp

from ..h5io import GmmRestoreError
from ..threads import default_threads
from .blocks import Blocks, describe
from .model import GaussianMixture
from .passes import Prepared, mean_loglik, run_pass


def component_log_densities(X: Any, gmm: GaussianMixture, chunk_size: int = 8192,
                            dtype: Any = np.float64, n_threads: int | None = None
                            ) -> np.ndarray:
    """``log pi_k + log N(x_n; mu_k, Sigma_k)`` for every patch and component.

    Parameters
    ----------
    X : (n_samples, n_features) array or h5py.Dataset
    gmm : GaussianMixture
    chunk_size : int
        Patches per block (bounds the temporaries, not the result).
    n_threads : int, optional
        Worker threads (default :func:`default_threads`).

    Returns
    -------
    (n_samples, n_components) float64
    """
    blocks = _blocks_of(X, gmm, chunk_size, dtype)
    out = np.empty((blocks.n_samples, gmm.n_components))
    run_pass(blocks, Prepared(gmm, blocks.dtype), stats=False, out_logdens=out,
             n_threads=n_threads or default_threads())
    return out


def score_samples(X: Any, gmm: GaussianMixture, chunk_size: int = 8192,
                  n_threads: int | None = None) -> np.ndarray:
    """Log-density ``log p(x_n)`` of every patch, shape (n_samples,)."""
    return logsumexp(component_log_densities(X, gmm, chunk_size, n_threads=n_threads), axis=1)


def mean_log_likelihood(X: Any, gmm: GaussianMixture, chunk_size: int = 8192,
                        dtype: Any = np.float64, n_threads: int | None = None) -> float:
    """Mean of ``log p(x_n)`` over the patches (array or h5py.Dataset, streamed)."""
    blocks = _blocks_of(X, gmm, chunk_size, dtype)
    return mean_loglik(blocks, Prepared(gmm, blocks.dtype), n_threads or default_threads())


def _blocks_of(X: Any, gmm: GaussianMixture, chunk_size: int, dtype: Any) -> Blocks:
    """The patches X (n_samples, n_features) as blocks; their dimension must be the mixture's."""
    blocks = Blocks(X, np.dtype(dtype), False, chunk_size)
    if blocks.n_features != gmm.n_features:
        raise GmmRestoreError(
            f"{blocks.name} ({describe(blocks.data)}) has {blocks.n_features} features per "
            f"patch, the mixture has {gmm.n_features}")
    return blocks
