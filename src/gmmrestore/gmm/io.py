"""The ``gmm`` HDF5 file: :func:`save_gmm` and :func:`load_gmm`."""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from typing import Any

import numpy as np

from ..h5io import H5FormatError, read_h5, write_h5
from .history import FitHistory
from .model import GaussianMixture, cholesky_ok, valid_weights

# root attribute ``prior`` of a gmm file over whole images (train_gmm.py --images)
WHOLE_IMAGE_PRIOR = "whole images"

_DESCRIBED = {
    "weights": "mixing proportions, shape (n_components,), sum 1",
    "means": "component means, shape (n_components, n_features); zero when remove_dc",
    "covariances": "component covariances, shape (n_components, n_features, n_features), "
                   "symmetric positive definite, reg_covar included",
    "loglik_train": "mean training log-likelihood after each EM iteration, shape (n_iter,)",
    "loglik_heldout": "mean held-out log-likelihood after each EM iteration, shape "
                      "(n_iter,), empty without held-out patches",
    "reseeded": "(iteration, component) pairs of re-seeded components, shape (n, 2)",
}


def save_gmm(path: str | os.PathLike, gmm: GaussianMixture, history: FitHistory | None,
             attrs: Mapping[str, Any] | None = None) -> None:
    """Write a mixture and its training history to an HDF5 file of kind ``gmm`` (atomically).

    Datasets ``weights`` (K,), ``means`` (K, d), ``covariances`` (K, d, d), ``loglik_train``
    (n_iter,), ``loglik_heldout`` (n_iter,) or (0,), ``reseeded`` (n, 2); root attributes
    ``n_components``, ``n_features``, ``patch_size`` (sqrt(d) when d is a square, else
    ``"none"``), the fit settings and history scalars, then ``attrs`` (e.g. ``source``: the
    patches file).
    """
    K, d = gmm.n_components, gmm.n_features
    m = math.isqrt(d)
    root: dict[str, Any] = {"n_components": K, "n_features": d,
                            "patch_size": m if m * m == d else None}
    datasets: dict[str, np.ndarray] = {"weights": gmm.weights, "means": gmm.means,
                                       "covariances": gmm.covariances}
    if history is not None:
        root.update(_history_attrs(history))
        datasets["loglik_train"] = history.loglik_train
        datasets["loglik_heldout"] = history.loglik_heldout
        datasets["reseeded"] = np.asarray(history.reseeded, dtype=np.int64).reshape(-1, 2)
    else:
        datasets["loglik_train"] = np.empty(0)
        datasets["loglik_heldout"] = np.empty(0)
    root.update(attrs or {})
    write_h5(path, "gmm", datasets, root,
             {name: {"description": text} for name, text in _DESCRIBED.items()
              if name in datasets})


def _history_attrs(history: FitHistory) -> dict[str, Any]:
    """Root attributes of a gmm file from a fit's history: its settings, then its scalars."""
    out = dict(history.settings)
    out.update(n_iter=history.n_iter, converged=bool(history.converged),
               n_init=history.n_init, best_init=history.best_init,
               loglik_init=history.loglik_init,
               loglik_init_heldout=history.loglik_init_heldout,
               final_loglik_train=(float(history.loglik_train[-1])
                                   if history.n_iter else history.loglik_init),
               final_loglik_all_inits=list(history.final_loglik_all_inits),
               timing=json.dumps(history.timing))
    return out


def load_gmm(path: str | os.PathLike) -> tuple[GaussianMixture, dict[str, Any]]:
    """Read a ``gmm`` HDF5 file; check shapes, weights and positive definiteness.

    Returns the mixture (K components of dimension d, float64) and a dict of the root
    attributes plus the arrays ``loglik_train`` and ``loglik_heldout``.  Errors
    (:class:`GmmRestoreError`) name the file and the dataset.
    """
    path = os.fspath(path)
    arrays, attrs = read_h5(path, "gmm", ["weights", "means", "covariances"])
    w, mu, cov = arrays["weights"], arrays["means"], arrays["covariances"]
    _check_shapes(path, w, mu, cov, attrs)
    _check_values(path, w, mu, cov)
    info = dict(attrs)
    info["loglik_train"] = arrays.get("loglik_train", np.empty(0))
    info["loglik_heldout"] = arrays.get("loglik_heldout", np.empty(0))
    return GaussianMixture(w.astype(np.float64), mu.astype(np.float64),
                           cov.astype(np.float64)), info


def load_patch_prior(path: str | os.PathLike) -> tuple[GaussianMixture, bool]:
    """The mixture of a ``gmm`` file (:func:`load_gmm`) and whether it is over patches with
    their mean removed (attribute ``remove_dc``, False when absent), what a restoration or a
    kernel judge needs of it."""
    gmm, info = load_gmm(path)
    return gmm, bool(info.get("remove_dc", False))


def _check_shapes(path: str, w: np.ndarray, mu: np.ndarray, cov: np.ndarray,
                  attrs: Mapping[str, Any]) -> None:
    """weights (K,), means (K, d), covariances (K, d, d), as the attributes say."""
    if mu.ndim != 2:
        raise H5FormatError(f"{path}: dataset 'means' has shape {mu.shape}, expected (K, d)")
    K, d = mu.shape
    if w.shape != (K,):
        raise H5FormatError(f"{path}: dataset 'weights' has shape {w.shape}, expected ({K},)")
    if cov.shape != (K, d, d):
        raise H5FormatError(f"{path}: dataset 'covariances' has shape {cov.shape}, expected "
                            f"({K}, {d}, {d})")
    for key, value in (("n_components", K), ("n_features", d)):
        if key in attrs and int(attrs[key]) != value:
            raise H5FormatError(f"{path}: attribute {key}={attrs[key]} disagrees with the "
                                f"datasets ({value})")


def _check_values(path: str, w: np.ndarray, mu: np.ndarray, cov: np.ndarray) -> None:
    """Weights a distribution, means finite, covariances symmetric positive definite."""
    if not valid_weights(w):
        raise H5FormatError(f"{path}: dataset 'weights' must be finite, non-negative and sum "
                            f"to 1 (sum {w.sum():.6g})")
    if not np.all(np.isfinite(mu)):
        raise H5FormatError(f"{path}: dataset 'means' contains NaN or Inf")
    if not np.allclose(cov, cov.transpose(0, 2, 1), rtol=1e-10, atol=1e-12):
        raise H5FormatError(f"{path}: dataset 'covariances' is not symmetric")
    bad = np.flatnonzero(~cholesky_ok(cov))
    if len(bad):
        raise H5FormatError(f"{path}: dataset 'covariances': component(s) "
                            f"{', '.join(map(str, bad[:10]))} not positive definite")
