"""How EM runs: :class:`EMSettings`, the one place of the fit's defaults.

``scripts/train_gmm.py`` takes its argparse defaults from here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields, replace
from typing import Any

import numpy as np

from ..h5io import GmmRestoreError

INIT_METHODS = ("kmeans++", "random")
DTYPES = ("float64", "float32")


@dataclass(frozen=True)
class EMSettings:
    """Settings of :func:`~gmmrestore.gmm.fit_gmm` (and of :func:`~gmmrestore.gmm.init_gmm`).

    Attributes
    ----------
    max_iter : int
        Maximum EM iterations per restart.
    tol : float
        Stop when ``|L_t - L_{t-1}| / max(|L_{t-1}|, 1) < tol`` (L = mean log-likelihood);
        0 runs exactly ``max_iter`` iterations.
    reg_covar : float
        Added to the diagonal of every covariance (as sklearn's ``reg_covar``).
    init : {"kmeans++", "random"}
        k-means++ seeding and Lloyd iterations, or random patches as centres; both on a seeded
        subsample of at most ``INIT_SUBSAMPLE`` patches, then per-cluster statistics.
    n_init : int
        Restarts (different seeds derived from ``seed``); the one with the highest final mean
        log-likelihood is kept.
    seed : int
        Same seed, same data, same settings: identical arrays.
    dtype : "float64" or "float32" (or the numpy type)
        Precision of the GEMMs; sums are always float64.
    chunk_size : int
        Patches per block (aligned with the HDF5 chunking when streaming).  Results do not
        depend on it beyond rounding.
    remove_dc : bool
        Subtract each patch's mean first and keep every component zero-mean.
    memory_budget_mb : float or None
        HDF5 input (training and held-out patches) needing more MiB than this in ``dtype`` is
        streamed block by block, smaller input is read into memory once; None always streams.
    """

    max_iter: int = 100
    tol: float = 1e-4
    reg_covar: float = 1e-4
    init: str = "kmeans++"
    n_init: int = 1
    seed: int = 0
    dtype: str = "float64"
    chunk_size: int = 8192
    remove_dc: bool = False
    memory_budget_mb: float | None = 2048.0

    def __post_init__(self) -> None:
        dtype = np.dtype(self.dtype)
        if dtype.name not in DTYPES:
            raise GmmRestoreError(f"dtype must be float64 or float32, got {dtype}")
        object.__setattr__(self, "dtype", dtype.name)
        if self.init not in INIT_METHODS:
            raise GmmRestoreError(
                f"init must be one of {', '.join(INIT_METHODS)}, got {self.init!r}")
        for name in ("max_iter", "n_init", "chunk_size"):
            check_count(name, getattr(self, name))
        for name in ("tol", "reg_covar"):
            value = getattr(self, name)
            if not (value >= 0 and math.isfinite(value)):
                raise GmmRestoreError(f"{name} must be >= 0, got {value}")
        budget = self.memory_budget_mb
        if budget is not None and not budget > 0:
            raise GmmRestoreError(f"memory_budget_mb must be > 0 or None, got {budget}")

    @classmethod
    def of(cls, settings: EMSettings | None, overrides: dict[str, Any]) -> EMSettings:
        """``settings`` (default: the defaults) with the fields named in ``overrides`` replaced
        (a TypeError names an unknown field)."""
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(overrides) - names)
        if unknown:
            raise TypeError(f"unknown EM setting(s) {', '.join(unknown)}; "
                            f"EMSettings has {', '.join(sorted(names))}")
        return replace(settings if settings is not None else cls(), **overrides)

    @property
    def np_dtype(self) -> np.dtype:
        return np.dtype(self.dtype)

    def record(self, n_components: int, from_init_params: bool) -> dict[str, Any]:
        """The settings a fit records (``FitHistory.settings``, attributes of the gmm file)."""
        return {"n_components": int(n_components), "max_iter": int(self.max_iter),
                "tol": float(self.tol), "reg_covar": float(self.reg_covar),
                "init": "init_params" if from_init_params else self.init,
                "n_init": int(self.n_init), "seed": int(self.seed), "dtype": self.dtype,
                "remove_dc": bool(self.remove_dc)}


def check_count(name: str, value: Any) -> None:
    """A whole number >= 1, or a GmmRestoreError naming ``name``."""
    if int(value) != value or value < 1:
        raise GmmRestoreError(f"{name} must be an integer >= 1, got {value!r}")
