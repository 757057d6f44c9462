"""Full-covariance Gaussian mixtures over patches: EM at BLAS speed, in memory or streamed.

The mixture is a small frozen dataclass, :class:`GaussianMixture`.  :func:`fit_gmm` runs EM:

* **E-step.**  Per component the Cholesky factor ``Sigma_k = L_k L_k^T`` gives the upper
  triangular ``P_k = L_k^{-T}`` with ``||(x - mu_k)^T P_k||^2`` the Mahalanobis term.  All K
  factors are stacked side by side, so a sub-block of patches is whitened for every component
  by GEMMs (one per group of output columns, skipping most of the zero triangle); squared
  norms (``einsum``), log-sum-exp and the responsibilities follow on the ``(rows, K)`` block.
  Sub-blocks are sized (:data:`SUB_BLOCK_ELEMENTS`) to stay in cache while they are read again.
* **M-step statistics**: counts ``N_k`` and first moments ``R^T X``; the whitened patches
  ``y_nk`` of the pairs with ``r_nk > RESP_FLOOR`` are gathered (scaled by ``sqrt(r_nk)``)
  and grouped by component, then one symmetric rank-update ``S_k = Y_k^T diag(r_k) Y_k`` per
  component and block (BLAS ``syrk``: no per-patch outer products).  ``S_k`` is centred at
  the component's mean, which keeps float32 accurate;
  ``sum_n r_nk (x_n - mu_k)(x_n - mu_k)^T = L_k S_k L_k^T`` follows once per pass.
  Temporaries stay within :data:`BLOCK_ELEMENTS` per thread, never ``N x K x d``.
* Blocks are processed by worker threads, each with a single-threaded BLAS (a multi-threaded
  BLAS synchronises on every call, which costs a lot on a busy machine, and numpy's
  element-wise work would stay on one core); their float64 partial sums are folded in block
  order, so results do not depend on the number of threads.
* Statistics are summed in float64 over blocks, so the same code runs on an in-memory array or
  streams an ``h5py.Dataset`` chunk by chunk (reads aligned with the HDF5 chunking, prefetched in
  a background thread): exact EM whatever the size, with memory set by the chunk size.
* ``dtype=np.float32`` runs the GEMMs in single precision; responsibilities, log-likelihoods and
  all sums stay float64.

One *iteration* is an M-step followed by the E-step of the new parameters, so
``history.loglik_train[i]`` is the mean log-likelihood of the model after ``i + 1`` iterations
and ``history.loglik_train[-1]`` is that of the returned model (``history.loglik_init`` is the
initial model's).  With the same start and iteration count the returned parameters equal those
of ``sklearn.mixture.GaussianMixture(covariance_type="full")`` (``max_iter`` = our iterations).
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import json
import logging
import math
import os
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import h5py
import numpy as np
from scipy import linalg, sparse
from scipy.special import logsumexp

from .h5io import (
    GmmRestoreError,
    H5FormatError,
    open_h5,
    read_dataset,
    read_h5,
    write_h5,
)
from .threads import default_threads, one_blas_thread, run_in_order

log = logging.getLogger("gmmrestore.gmm")

#: Bound on ``rows * K * d`` of one work block (the task of one thread): its gathered M-step
#: rows take at most that many elements (if every responsibility counted), 64 MiB in float64.
BLOCK_ELEMENTS = 1 << 23
#: Elements of the whitened ``(rows, K*d)`` sub-block of the E-step, small enough to stay in
#: a core's cache between the GEMM that writes it and the norms and gathers that read it.
SUB_BLOCK_ELEMENTS = 1 << 19
#: Column groups of the triangular whitening GEMMs (more skip more zeros, each is narrower).
TRIANGLE_GROUPS = 2
#: Responsibilities at or below this do not enter the covariance sums (see ``_process_block``).
RESP_FLOOR = 1e-16
#: Patches used for k-means++ / random initialisation (a seeded subsample of bigger sets).
INIT_SUBSAMPLE = 100_000
#: Lloyd iterations after k-means++ seeding (on the subsample).
KMEANS_ITER = 10
#: A component whose responsibility sums to less than this many patches is re-seeded.
MIN_COMPONENT_COUNT = 1.0
INIT_METHODS = ("kmeans++", "random")
# root attribute ``prior`` of a gmm file over whole images (train_gmm.py --images)
WHOLE_IMAGE_PRIOR = "whole images"
_CHECKPOINT_KIND = "gmm_checkpoint"
_LOG2PI = math.log(2.0 * math.pi)


# --------------------------------------------------------------------------------------------
# The model
# --------------------------------------------------------------------------------------------


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


@dataclass
class FitHistory:
    """What happened during :func:`fit_gmm` (for the run that was kept).

    Attributes
    ----------
    loglik_train : (n_iter,)
        Mean training log-likelihood of the model after each iteration (last = returned model).
    loglik_heldout : (n_iter,) or (0,)
        The same on the held-out patches (empty when none were given).
    loglik_init, loglik_init_heldout : float
        Mean log-likelihood of the initial model (``nan`` held-out when none given).
    n_iter : int
        EM iterations (M-steps) performed.
    converged : bool
        Whether the relative change fell below ``tol`` before ``max_iter``.
    reseeded : list of (iteration, component)
        Components re-seeded after the M-step of that iteration.
    n_init : int
        Restarts run; ``best_init`` is the index of the one kept (highest final log-likelihood).
    final_loglik_all_inits : list of float
        Final mean training log-likelihood of each restart.
    timing : dict
        ``init_seconds`` (initialisation and first E-step), ``iteration_seconds`` (list, one per
        iteration of the kept run), ``total_seconds`` (whole call), ``streamed``.
    settings : dict
        The fit settings (seed, reg_covar, tol, ...) stored as attributes by :func:`save_gmm`.
    """

    loglik_train: np.ndarray
    loglik_heldout: np.ndarray
    loglik_init: float
    loglik_init_heldout: float
    n_iter: int
    converged: bool
    reseeded: list[tuple[int, int]] = field(default_factory=list)
    n_init: int = 1
    best_init: int = 0
    final_loglik_all_inits: list[float] = field(default_factory=list)
    timing: dict[str, Any] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)


def remove_patch_dc(X: np.ndarray) -> np.ndarray:
    """Subtract each patch's mean: ``X - X.mean(axis=1, keepdims=True)``.

    Parameters
    ----------
    X : (n_samples, n_features)
    """
    X = np.asarray(X)
    return X - X.mean(axis=1, keepdims=True)


# --------------------------------------------------------------------------------------------
# Data access: in-memory arrays and HDF5 datasets, block by block
# --------------------------------------------------------------------------------------------


def _describe(data: Any) -> str:
    if isinstance(data, h5py.Dataset):
        return f"{data.file.filename}:{data.name}"
    return "array"


class _Blocks:
    """Row blocks of an (N, d) array or h5py dataset, cast to ``dtype``, DC removed if asked.

    HDF5 datasets are read in blocks whose row count is a multiple of the dataset's chunk rows,
    the next block being read in a background thread while the current one is processed.
    """

    def __init__(self, data: Any, dtype: np.dtype, remove_dc: bool, chunk_size: int,
                 name: str = "X") -> None:
        self.data = data
        self.is_h5 = isinstance(data, h5py.Dataset)
        if not self.is_h5:
            self.data = data = np.asarray(data)
        if len(data.shape) != 2 or data.shape[0] < 1 or data.shape[1] < 1:
            raise GmmRestoreError(
                f"{name} ({_describe(data)}): expected a non-empty (n_samples, n_features) "
                f"array, got shape {tuple(data.shape)}")
        if not np.issubdtype(data.dtype, np.floating) and not np.issubdtype(data.dtype,
                                                                              np.integer):
            raise GmmRestoreError(f"{name} ({_describe(data)}): expected numbers, "
                                  f"got dtype {data.dtype}")
        self.n_samples, self.n_features = (int(s) for s in data.shape)
        self.dtype = np.dtype(dtype)
        self.remove_dc = remove_dc
        self.name = name
        rows = max(1, int(chunk_size))
        if self.is_h5 and data.chunks is not None:
            c0 = int(data.chunks[0])
            rows = max(c0, int(round(rows / c0)) * c0)
        self.block_rows = rows

    def _raw(self, start: int, stop: int) -> np.ndarray:
        """Rows ``start:stop`` as stored (HDF5 read errors name the file and the rows)."""
        if self.is_h5:
            return read_dataset(self.data, slice(start, stop))
        return self.data[start:stop]

    def _read(self, start: int, stop: int) -> np.ndarray:
        return self._prepare(self._raw(start, stop))

    def _prepare(self, block: np.ndarray) -> np.ndarray:
        block = np.ascontiguousarray(block, dtype=self.dtype)
        if self.remove_dc:
            block = block - block.mean(axis=1, keepdims=True, dtype=np.float64).astype(
                self.dtype)
        return block

    def __iter__(self) -> Iterator[tuple[int, np.ndarray]]:
        starts = range(0, self.n_samples, self.block_rows)
        if not self.is_h5 or len(starts) == 1:
            for s in starts:
                yield s, self._read(s, min(s + self.block_rows, self.n_samples))
            return
        with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
            future = pool.submit(self._read, 0, min(self.block_rows, self.n_samples))
            for s in starts:
                block = future.result()
                nxt = s + self.block_rows
                if nxt < self.n_samples:
                    future = pool.submit(self._read, nxt,
                                         min(nxt + self.block_rows, self.n_samples))
                yield s, block

    def rows(self, index: np.ndarray) -> np.ndarray:
        """The rows at sorted ``index`` (one pass over the blocks for HDF5), float64."""
        index = np.asarray(index)
        if not self.is_h5:
            return np.asarray(self._prepare(self.data[index]), dtype=np.float64)
        out = np.empty((len(index), self.n_features))
        for s, block in self:
            lo, hi = np.searchsorted(index, [s, s + len(block)])
            if hi > lo:
                out[lo:hi] = block[index[lo:hi] - s]
        return out

    def signature(self) -> str:
        """Shape plus a digest of the first and last block (to tell data sets apart)."""
        first = np.asarray(self._raw(0, min(256, self.n_samples)), dtype=np.float64)
        last = np.asarray(self._raw(max(0, self.n_samples - 256), self.n_samples),
                          dtype=np.float64)
        digest = hashlib.sha256(first.tobytes() + last.tobytes()).hexdigest()[:16]
        return f"{self.n_samples}x{self.n_features}:{digest}"


# --------------------------------------------------------------------------------------------
# Per-iteration precomputation and the fused E/M pass
# --------------------------------------------------------------------------------------------


class _Prepared:
    """Quantities of a mixture that the E-step needs, computed once per iteration."""

    def __init__(self, gmm: GaussianMixture, dtype: np.dtype) -> None:
        K, d = gmm.n_components, gmm.n_features
        chol = _cholesky_all(gmm.covariances)
        if chol is None:
            bad = np.flatnonzero(~_cholesky_ok(gmm.covariances))
            raise GmmRestoreError(
                f"covariance of component(s) {', '.join(map(str, bad[:10]))} not positive "
                "definite (increase reg_covar?)")
        # P_k = L_k^{-T} (upper triangular): ||(x - mu_k)^T P_k||^2 = Mahalanobis distance.
        P = np.empty_like(chol)
        for k, L in enumerate(chol):
            inv, info = linalg.lapack.dtrtri(L, lower=1)
            if info != 0:
                raise GmmRestoreError(f"covariance of component {k} is singular")
            P[k] = inv.T
        with np.errstate(divide="ignore"):
            log_w = np.log(gmm.weights)
        log_det = 2.0 * np.log(np.diagonal(chol, axis1=1, axis2=2)).sum(axis=1)
        self.const = log_w - 0.5 * (d * _LOG2PI + log_det)           # (K,)
        self.shift = gmm.weights @ gmm.means                           # (d,) global shift c
        self.delta64 = gmm.means - self.shift                          # (K, d) mu_k - c
        b = np.einsum("kd,kde->ke", self.delta64, P)                    # (K, d)
        # P_k is upper triangular: output coordinates j < b only read inputs i < b, so the
        # whitening is one GEMM per group [a, b) of output columns, [1, x_{<b} - c] @ W, which
        # skips most of the zero half of the K dense (d + 1, d) products.
        self.groups = _column_groups(d)
        self.W = [np.ascontiguousarray(np.concatenate(
            [-b[None, :, lo:hi], P[:, :hi, lo:hi].transpose(1, 0, 2)]).reshape(
                hi + 1, K * (hi - lo)), dtype=dtype)                   # (hi + 1, K (hi - lo))
            for lo, hi in self.groups]
        self.chol = chol                                               # (K, d, d) float64
        self.shift_w = self.shift.astype(dtype)
        self.K, self.d, self.dtype = K, d, np.dtype(dtype)


@dataclass
class _PassResult:
    n: int
    loglik_sum: float
    counts: np.ndarray | None = None      # (K,) sum_n r_nk
    first: np.ndarray | None = None       # (K, d) sum_n r_nk (x_n - c)
    gram: np.ndarray | None = None        # (K, d, d) sum_n r_nk (x_n - mu_k)(x_n - mu_k)^T
    #                                       (per block: S_k in the working dtype)
    worst_logp: np.ndarray | None = None  # lowest log p(x) seen, ascending
    worst_x: np.ndarray | None = None     # the corresponding patches


def _block_rows(K: int, d: int, chunk_rows: int, n_samples: int | None = None) -> int:
    """Rows per work block: ``rows * K * d`` stays within :data:`BLOCK_ELEMENTS`, and
    small data sets still make about 16 blocks for the worker threads (the partition depends on
    the data and chunk size only, never on the thread count)."""
    rows = min(chunk_rows, BLOCK_ELEMENTS // max(1, K * d))
    if n_samples is not None:
        rows = min(rows, max(64, -(-n_samples // 16)))
    return int(max(16, rows))


def _column_groups(d: int) -> list[tuple[int, int]]:
    """Output column groups ``[lo, hi)`` of the triangular whitening (:class:`_Prepared`)."""
    edges = sorted({round(d * i / TRIANGLE_GROUPS) for i in range(TRIANGLE_GROUPS + 1)})
    return list(zip(edges[:-1], edges[1:], strict=True))


def _sub_rows(K: int, d: int) -> int:
    """Rows of an E-step sub-block (see :data:`SUB_BLOCK_ELEMENTS`)."""
    return int(max(16, SUB_BLOCK_ELEMENTS // max(1, K * d)))


def _process_block(X: np.ndarray, start: int, prep: _Prepared, stats: bool, n_worst: int,
                   out_logdens: np.ndarray | None, buffers: dict) -> _PassResult:
    """Log-likelihood and (``stats``) M-step statistics of one block of patches."""
    K, d, dt = prep.K, prep.d, prep.dtype
    n = len(X)
    sub = _sub_rows(K, d)
    key = threading.get_ident()
    buf = buffers.get(key)
    if buf is None:
        # the whitened sub-block, one contiguous buffer per column group so that its
        # (rows K, hi - lo) view has one (patch, component) pair per row
        buf = buffers[key] = ([np.empty(sub * K * (hi - lo), dtype=dt)
                               for lo, hi in prep.groups], np.empty((sub, d + 1), dtype=dt))
    logp = np.empty(n)
    first = np.zeros((K, d + 1))                  # [N_k, sum_n r_nk (x_n - c)]
    pieces = []
    for s in range(0, n, sub):
        e = min(s + sub, n)
        r = e - s
        Xa = buf[1][:r]
        Xa[:, 0] = 1.0
        np.subtract(X[s:e], prep.shift_w, out=Xa[:, 1:])
        # [1, x - c] @ [-b; P]: the GEMMs whiten the rows for every component, offsets included;
        # y_nk = (Ys[0][n, k], Ys[1][n, k], ...)
        Ys = [np.matmul(Xa[:, :hi + 1], W, out=out[:r * K * (hi - lo)].reshape(
            r, K * (hi - lo))).reshape(r, K, hi - lo)
            for (lo, hi), W, out in zip(prep.groups, prep.W, buf[0], strict=True)]
        ld = np.zeros((r, K))
        for Y in Ys:
            ld += np.einsum("nkd,nkd->nk", Y, Y, dtype=dt)
        ld *= -0.5
        ld += prep.const
        if out_logdens is not None:
            out_logdens[start + s:start + e] = ld
        top = ld.max(axis=1, keepdims=True)
        R = np.exp(ld - top, out=ld)                                # (r, K) float64
        total = R.sum(axis=1)
        logp[s:e] = np.log(total) + top[:, 0]
        if not stats:
            continue
        R /= total[:, None]                                         # responsibilities
        first += R.T @ Xa.astype(np.float64)
        # the whitened y_nk = P_k^T (x_n - mu_k) of the pairs with r_nk > RESP_FLOOR, scaled
        # by sqrt(r_nk), gathered while the sub-block is in cache (see below)
        kk, nn = np.nonzero(R.T > RESP_FLOOR)
        pair = nn * K + kk
        Yg = np.empty((len(pair), d), dtype=dt)
        for (lo, hi), Y in zip(prep.groups, Ys, strict=True):
            np.take(Y.reshape(r * K, hi - lo), pair, axis=0, out=Yg[:, lo:hi])
        Yg *= np.sqrt(R.ravel()[pair]).astype(dt, copy=False)[:, None]
        pieces.append((kk, Yg))
    res = _PassResult(n=n, loglik_sum=float(logp.sum()))
    if n_worst:
        idx = np.arange(n) if n <= n_worst else np.argpartition(logp, n_worst - 1)[:n_worst]
        idx = idx[np.argsort(logp[idx], kind="stable")]
        res.worst_logp = logp[idx]
        res.worst_x = np.asarray(X[idx], dtype=np.float64)
    if stats:
        res.counts = first[:, 0]
        res.first = first[:, 1:]
        # S_k = sum_n r_nk y_nk y_nk^T, one symmetric rank-update (numpy calls BLAS syrk for
        # a.T @ a) per component over its gathered rows, centred at the component's mean so
        # that float32 stays accurate; sum_n r_nk (x_n - mu_k)(x_n - mu_k)^T = L_k S_k L_k^T.
        # Only pairs with r_nk > RESP_FLOOR take part: on image patches most responsibilities
        # are below it (MNIST, K=20: ~10% are above), and the terms left out are below the
        # rounding of the sums they would be added to.
        kk = np.concatenate([p[0] for p in pieces])
        order = np.argsort(kk, kind="stable")
        Yg = np.concatenate([p[1] for p in pieces])[order]
        bounds = np.searchsorted(kk[order], np.arange(K + 1))
        gram = np.zeros((K, d, d), dtype=dt)
        for k in range(K):
            a, b = bounds[k], bounds[k + 1]
            if b > a:
                np.matmul(Yg[a:b].T, Yg[a:b], out=gram[k])
        res.gram = gram
    return res


def _fold(acc: _PassResult, part: _PassResult, n_worst: int) -> None:
    acc.n += part.n
    acc.loglik_sum += part.loglik_sum
    if part.counts is not None:
        if acc.counts is None:
            acc.counts = part.counts.copy()
            acc.first = part.first.copy()
            acc.gram = part.gram.astype(np.float64)
        else:
            acc.counts += part.counts
            acc.first += part.first
            acc.gram += part.gram
    if n_worst:
        if acc.worst_logp is None:
            acc.worst_logp, acc.worst_x = part.worst_logp, part.worst_x
        else:
            logp = np.concatenate([acc.worst_logp, part.worst_logp])
            keep = np.argsort(logp, kind="stable")[:n_worst]
            acc.worst_logp = logp[keep]
            acc.worst_x = np.concatenate([acc.worst_x, part.worst_x])[keep]


def _run_pass(blocks: _Blocks, prep: _Prepared, *, stats: bool, n_worst: int = 0,
              out_logdens: np.ndarray | None = None, n_threads: int = 1) -> _PassResult:
    """One pass over the data: log-likelihood, and (``stats``) the M-step sufficient statistics.

    Blocks are processed by ``n_threads`` worker threads (each with a single-threaded BLAS)
    and their float64 partial sums folded in block order, so the result does not depend on
    the number of threads or their timing.
    """
    K, d = prep.K, prep.d
    rows = _block_rows(K, d, blocks.block_rows, blocks.n_samples)
    acc = _PassResult(n=0, loglik_sum=0.0)
    buffers: dict = {}

    def tasks() -> Iterator[tuple]:
        for start, block in blocks:
            for s in range(0, len(block), rows):
                yield (block[s:s + rows], start + s, prep, stats, n_worst, out_logdens,
                       buffers)

    for part in run_in_order(_process_block, tasks(), n_threads):
        _fold(acc, part, n_worst)
    if not np.isfinite(acc.loglik_sum):
        raise GmmRestoreError(
            f"{blocks.name} ({_describe(blocks.data)}): log-likelihood is not finite; the "
            "patches contain NaN or Inf, or a component is degenerate")
    if stats:   # L_k S_k L_k^T = sum_n r_nk (x_n - mu_k)(x_n - mu_k)^T
        acc.gram = prep.chol @ acc.gram @ prep.chol.transpose(0, 2, 1)
    return acc


def _cholesky_all(cov: np.ndarray) -> np.ndarray | None:
    try:
        return np.linalg.cholesky(cov)
    except np.linalg.LinAlgError:
        return None


def _cholesky_ok(cov: np.ndarray) -> np.ndarray:
    """(K,) bool: which covariances are finite and positive definite."""
    ok = np.zeros(len(cov), dtype=bool)
    for k, c in enumerate(cov):
        if np.all(np.isfinite(c)):
            try:
                np.linalg.cholesky(c)
                ok[k] = True
            except np.linalg.LinAlgError:
                pass
    return ok


# --------------------------------------------------------------------------------------------
# Public scoring
# --------------------------------------------------------------------------------------------


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
    blocks = _Blocks(X, np.dtype(dtype), False, chunk_size)
    _check_features(blocks, gmm)
    out = np.empty((blocks.n_samples, gmm.n_components))
    _run_pass(blocks, _Prepared(gmm, blocks.dtype), stats=False, out_logdens=out,
              n_threads=n_threads or default_threads())
    return out


def score_samples(X: Any, gmm: GaussianMixture, chunk_size: int = 8192,
                  n_threads: int | None = None) -> np.ndarray:
    """Log-density ``log p(x_n)`` of every patch, shape (n_samples,)."""
    return logsumexp(component_log_densities(X, gmm, chunk_size, n_threads=n_threads), axis=1)


def mean_log_likelihood(X: Any, gmm: GaussianMixture, chunk_size: int = 8192,
                        dtype: Any = np.float64, n_threads: int | None = None) -> float:
    """Mean of ``log p(x_n)`` over the patches (array or h5py.Dataset, streamed)."""
    blocks = _Blocks(X, np.dtype(dtype), False, chunk_size)
    _check_features(blocks, gmm)
    res = _run_pass(blocks, _Prepared(gmm, blocks.dtype), stats=False,
                    n_threads=n_threads or default_threads())
    return res.loglik_sum / res.n


def _check_features(blocks: _Blocks, gmm: GaussianMixture) -> None:
    if blocks.n_features != gmm.n_features:
        raise GmmRestoreError(
            f"{blocks.name} ({_describe(blocks.data)}) has {blocks.n_features} features per "
            f"patch, the mixture has {gmm.n_features}")


# --------------------------------------------------------------------------------------------
# Initialisation
# --------------------------------------------------------------------------------------------


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
    bad = np.flatnonzero(~_cholesky_ok(covs))
    if len(bad):
        fallback = pooled + reg_covar * np.eye(d)
        if not _cholesky_ok(fallback[None])[0]:
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


def _initialise(blocks: _Blocks, K: int, init: str, reg_covar: float, rng: np.random.Generator,
                zero_mean: bool) -> GaussianMixture:
    n_sub = min(blocks.n_samples, INIT_SUBSAMPLE)
    index = np.sort(rng.choice(blocks.n_samples, size=n_sub, replace=False))
    S = blocks.rows(index)
    if not np.all(np.isfinite(S)):
        raise GmmRestoreError(f"{blocks.name} ({_describe(blocks.data)}) contains NaN or Inf")
    # many small and medium BLAS calls: one BLAS thread avoids the synchronisation cost of
    # a multi-threaded BLAS on a busy machine (the results are the same)
    with one_blas_thread():
        return _cluster_init(S, K, init, reg_covar, rng, zero_mean)


def _cluster_init(S: np.ndarray, K: int, init: str, reg_covar: float,
                  rng: np.random.Generator, zero_mean: bool) -> GaussianMixture:
    n_sub = len(S)
    if init == "kmeans++":
        centres = S[kmeans_plusplus(S, K, rng)]
        labels = _lloyd(S, centres, KMEANS_ITER)
    else:  # random data points, one assignment
        centres = S[rng.choice(n_sub, size=K, replace=False)]
        labels = np.argmin(_sq_dist(S, np.einsum("nd,nd->n", S, S), centres), axis=1)
    return _params_from_labels(S, labels, K, reg_covar, zero_mean)


def init_gmm(X: Any, n_components: int, *, init: str = "kmeans++", reg_covar: float = 1e-4,
             seed: int = 0, run: int = 0, remove_dc: bool = False,
             chunk_size: int = 8192) -> GaussianMixture:
    """The initial mixture :func:`fit_gmm` starts restart ``run`` from (with float64 data).

    k-means++ seeding plus Lloyd iterations (``init="kmeans++"``) or random patches as centres
    (``"random"``), on a seeded subsample of at most :data:`INIT_SUBSAMPLE` patches; weights,
    means and covariances (+ ``reg_covar``) from the resulting clusters.

    Parameters
    ----------
    X : (n_samples, n_features) array or h5py.Dataset
    """
    if init not in INIT_METHODS:
        raise GmmRestoreError(f"init must be one of {', '.join(INIT_METHODS)}, got {init!r}")
    blocks = _Blocks(X, np.dtype(np.float64), remove_dc, chunk_size, name="training patches")
    if n_components > blocks.n_samples:
        raise GmmRestoreError(f"K={n_components} larger than the number of training patches "
                              f"N={blocks.n_samples}")
    rng = np.random.default_rng([int(seed), int(run)])
    return _initialise(blocks, int(n_components), init, reg_covar, rng, remove_dc)


# --------------------------------------------------------------------------------------------
# M-step with re-seeding
# --------------------------------------------------------------------------------------------


def _m_step(res: _PassResult, prep: _Prepared, reg_covar: float, zero_mean: bool,
            iteration: int) -> tuple[GaussianMixture, list[int]]:
    """New parameters from the sufficient statistics; re-seed degenerate components."""
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
    bad_cov = ~_cholesky_ok(covs) | ~np.all(np.isfinite(means), axis=1)
    bad = np.flatnonzero(bad_count | bad_cov)
    if len(bad):
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
        weights = weights / weights.sum()
    return GaussianMixture(weights, means, covs), [int(k) for k in bad]


# --------------------------------------------------------------------------------------------
# Checkpoints
# --------------------------------------------------------------------------------------------


def _write_checkpoint(path: str, fingerprint: str, state: dict[str, Any]) -> None:
    datasets: dict[str, np.ndarray] = {}
    attrs: dict[str, Any] = {"fingerprint": fingerprint}
    for key, value in state.items():
        if isinstance(value, GaussianMixture):
            datasets[f"{key}/weights"] = value.weights
            datasets[f"{key}/means"] = value.means
            datasets[f"{key}/covariances"] = value.covariances
        elif isinstance(value, np.ndarray):
            datasets[key] = value
        else:
            attrs[key] = json.dumps(value)
    write_h5(path, _CHECKPOINT_KIND, datasets, attrs, compress=False)


def _read_checkpoint(path: str, fingerprint: str) -> dict[str, Any] | None:
    if not os.path.exists(path):
        return None
    try:
        with open_h5(path, _CHECKPOINT_KIND) as fh:
            if fh.attrs.get("fingerprint") != fingerprint:
                log.warning("checkpoint %s was written by a fit with other settings or data; "
                            "starting afresh (it will be overwritten)", path)
                return None
            state: dict[str, Any] = {}
            for key, value in fh.attrs.items():
                if key not in ("fingerprint", "kind", "format_version", "gmmrestore_version"):
                    state[key] = json.loads(value)
            for key in fh.keys():
                obj = fh[key]
                if isinstance(obj, h5py.Group):
                    state[key] = GaussianMixture(obj["weights"][()], obj["means"][()],
                                                 obj["covariances"][()])
                else:
                    state[key] = obj[()]
    except (GmmRestoreError, OSError, KeyError, ValueError) as err:
        log.warning("checkpoint %s unreadable (%s); starting afresh", path, err)
        return None
    return state


# --------------------------------------------------------------------------------------------
# The fit
# --------------------------------------------------------------------------------------------


def _as_mixture(init_params: Any, K: int, d: int) -> GaussianMixture:
    if isinstance(init_params, GaussianMixture):
        gmm = init_params
    elif isinstance(init_params, Mapping):
        try:
            gmm = GaussianMixture(*(np.asarray(init_params[k], dtype=np.float64)
                                    for k in ("weights", "means", "covariances")))
        except KeyError as err:
            raise GmmRestoreError(f"init_params: missing key {err}; expected weights, means, "
                                  "covariances") from None
    else:
        gmm = GaussianMixture(*(np.asarray(a, dtype=np.float64) for a in init_params))
    if gmm.n_components != K or gmm.n_features != d:
        raise GmmRestoreError(f"init_params: {gmm.n_components} components of dimension "
                              f"{gmm.n_features}, expected K={K}, d={d}")
    w = gmm.weights
    if not (np.all(np.isfinite(w)) and np.all(w >= 0) and abs(w.sum() - 1.0) < 1e-6):
        raise GmmRestoreError("init_params: weights must be non-negative and sum to 1")
    if not np.all(_cholesky_ok(gmm.covariances)):
        raise GmmRestoreError("init_params: covariances must be symmetric positive definite")
    return GaussianMixture(w.astype(np.float64), gmm.means.astype(np.float64),
                           gmm.covariances.astype(np.float64))


def _new_history(settings: dict[str, Any]) -> dict[str, Any]:
    return {"loglik_train": [], "loglik_heldout": [], "loglik_init": float("nan"),
            "loglik_init_heldout": float("nan"), "converged": False, "reseeded": [],
            "iteration_seconds": [], "init_seconds": 0.0, "done": False,
            "last_reseed": -1}


def _in_memory_if_fits(X: Any, dtype: np.dtype, memory_budget_mb: float | None,
                       what: str) -> Any:
    """An HDF5 dataset read into memory (as ``dtype``) when it needs at most
    ``memory_budget_mb``; otherwise (or for arrays) ``X`` itself."""
    if not isinstance(X, h5py.Dataset) or memory_budget_mb is None:
        return X
    need_mb = math.prod(X.shape) * dtype.itemsize / 2**20
    if need_mb > memory_budget_mb:
        log.info("%s %s: %.0f MiB as %s exceed the memory budget of %.0f MiB: streamed from "
                 "the file", what, _describe(X), need_mb, dtype.name, memory_budget_mb)
        return X
    log.info("loading %s %s into memory (%.0f MiB as %s <= budget %.0f MiB)", what,
             _describe(X), need_mb, dtype.name, memory_budget_mb)
    return np.asarray(read_dataset(X), dtype=dtype)


def fit_gmm(
    X: Any,
    n_components: int,
    *,
    max_iter: int = 100,
    tol: float = 1e-4,
    reg_covar: float = 1e-4,
    init: str = "kmeans++",
    n_init: int = 1,
    seed: int = 0,
    dtype: Any = np.float64,
    chunk_size: int = 8192,
    remove_dc: bool = False,
    heldout: Any = None,
    checkpoint_path: str | os.PathLike | None = None,
    memory_budget_mb: float | None = None,
    init_params: Any = None,
    callback: Callable[[int, int, GaussianMixture, float], None] | None = None,
    n_threads: int | None = None,
) -> tuple[GaussianMixture, FitHistory]:
    """Fit a full-covariance Gaussian mixture by EM.

    Parameters
    ----------
    X : (n_samples, n_features) array or h5py.Dataset
        Training patches.  An HDF5 dataset is streamed block by block unless it fits in
        ``memory_budget_mb`` (then it is loaded once).
    n_components : int
        K, at most ``n_samples``.
    max_iter : int
        Maximum EM iterations per restart.
    tol : float
        Stop when ``|L_t - L_{t-1}| / max(|L_{t-1}|, 1) < tol`` (L = mean log-likelihood);
        0 runs exactly ``max_iter`` iterations.
    reg_covar : float
        Added to the diagonal of every covariance (as sklearn's ``reg_covar``).
    init : {"kmeans++", "random"}
        k-means++ seeding and Lloyd iterations, or random patches as centres; both on a seeded
        subsample of at most :data:`INIT_SUBSAMPLE` patches, then per-cluster statistics.
    n_init : int
        Restarts (different seeds derived from ``seed``); the one with the highest final mean
        log-likelihood is kept.
    seed : int
        Same seed, same data, same settings: identical arrays.
    dtype : np.float64 or np.float32
        Precision of the GEMMs; sums are always float64.
    chunk_size : int
        Patches per block (aligned with the HDF5 chunking when streaming).  Results do not
        depend on it beyond rounding.
    remove_dc : bool
        Subtract each patch's mean first and keep every component zero-mean.
    heldout : (n_heldout, n_features) array or h5py.Dataset, optional
        Scored after every iteration.
    checkpoint_path : path, optional
        State written atomically after every iteration; a later call with the same arguments
        and data resumes from it and returns the same result as an uninterrupted fit.
    memory_budget_mb : float, optional
        HDF5 input (training and held-out patches) larger than this is streamed, smaller input
        is read into memory once (default: always stream HDF5 input).
    init_params : GaussianMixture, mapping or (weights, means, covariances), optional
        Start from these parameters instead of ``init`` (then ``n_init`` is 1).
    callback : callable(run, iteration, gmm, loglik_train), optional
        Called after every iteration (after the checkpoint).
    n_threads : int, optional
        Worker threads of the passes over the data, each with a single-threaded BLAS
        (default: the BLAS thread count, see :func:`default_threads`).  The result does not
        depend on it.

    Returns
    -------
    gmm : GaussianMixture
    history : FitHistory
    """
    t_start = time.perf_counter()
    n_threads = int(n_threads) if n_threads else default_threads()
    dtype = np.dtype(dtype)
    if dtype not in (np.dtype(np.float64), np.dtype(np.float32)):
        raise GmmRestoreError(f"dtype must be float64 or float32, got {dtype}")
    if init not in INIT_METHODS:
        raise GmmRestoreError(f"init must be one of {', '.join(INIT_METHODS)}, got {init!r}")
    for name, value, low in (("n_components", n_components, 1), ("max_iter", max_iter, 1),
                             ("n_init", n_init, 1), ("chunk_size", chunk_size, 1)):
        if int(value) != value or value < low:
            raise GmmRestoreError(f"{name} must be an integer >= {low}, got {value!r}")
    if not (tol >= 0 and math.isfinite(tol)):
        raise GmmRestoreError(f"tol must be >= 0, got {tol}")
    if not (reg_covar >= 0 and math.isfinite(reg_covar)):
        raise GmmRestoreError(f"reg_covar must be >= 0, got {reg_covar}")
    source = _describe(X)
    X = _in_memory_if_fits(X, dtype, memory_budget_mb, "training patches")
    streamed = isinstance(X, h5py.Dataset)
    blocks = _Blocks(X, dtype, remove_dc, chunk_size, name="training patches")
    N, d = blocks.n_samples, blocks.n_features
    K = int(n_components)
    if K > N:
        raise GmmRestoreError(f"K={K} larger than the number of training patches N={N}")
    if not streamed:
        bad = int(np.count_nonzero(~np.isfinite(blocks.data)))
        if bad:
            raise GmmRestoreError(f"training patches ({source}) contain {bad} NaN/Inf "
                                  "value(s)")
    held = None
    if heldout is not None:
        heldout = _in_memory_if_fits(heldout, dtype, memory_budget_mb, "held-out patches")
        held = _Blocks(heldout, dtype, remove_dc, chunk_size, name="held-out patches")
        if held.n_features != d:
            raise GmmRestoreError(f"held-out patches have {held.n_features} features, "
                                  f"training patches {d}")
    start_params = None
    if init_params is not None:
        start_params = _as_mixture(init_params, K, d)
        if remove_dc and np.any(start_params.means != 0):
            raise GmmRestoreError("init_params: remove_dc=True needs zero means")
        n_init = 1
    settings = {"n_components": K, "max_iter": int(max_iter), "tol": float(tol),
                "reg_covar": float(reg_covar), "init": init if start_params is None else
                "init_params", "n_init": int(n_init), "seed": int(seed), "dtype": dtype.name,
                "remove_dc": bool(remove_dc)}
    fingerprint = ""
    state = None
    ckpt = os.fspath(checkpoint_path) if checkpoint_path is not None else None
    if ckpt is not None:
        parts = dict(settings, data=blocks.signature(),
                     heldout=held.signature() if held is not None else None)
        if start_params is not None:
            h = hashlib.sha256()
            for a in (start_params.weights, start_params.means, start_params.covariances):
                h.update(np.ascontiguousarray(a).tobytes())
            parts["init_params"] = h.hexdigest()
        fingerprint = hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()
        state = _read_checkpoint(ckpt, fingerprint)
        if state is not None:
            log.info("resuming from checkpoint %s (restart %d, iteration %d)", ckpt,
                     state["run"] + 1, len(state["hist"]["loglik_train"]))

    best: dict[str, Any] | None = None
    all_final: list[float] = []
    first_run = 0
    if state is not None:
        all_final = list(state["all_final"])
        if "best" in state:
            best = {"gmm": state["best"], "hist": state["best_hist"], "run": state["best_run"]}
        first_run = state["run"] + (1 if state["hist"]["done"] else 0)

    def save(run: int, gmm: GaussianMixture, hist: dict[str, Any]) -> None:
        if ckpt is None:
            return
        payload: dict[str, Any] = {"run": run, "current": gmm, "hist": hist,
                                   "all_final": all_final}
        if best is not None:
            payload.update(best=best["gmm"], best_hist=best["hist"], best_run=best["run"])
        _write_checkpoint(ckpt, fingerprint, payload)

    for run in range(first_run, n_init):
        t_run = time.perf_counter()
        resume = state is not None and state["run"] == run
        if resume:
            gmm, hist = state["current"], state["hist"]
            log.info("restart %d/%d: resumed after %d iterations", run + 1, n_init,
                     len(hist["loglik_train"]))
        else:
            hist = _new_history(settings)
            if start_params is not None:
                gmm = start_params
            else:
                rng = np.random.default_rng([int(seed), run])
                gmm = _initialise(blocks, K, init, reg_covar, rng, remove_dc)
        prep = _Prepared(gmm, dtype)
        res = _run_pass(blocks, prep, stats=True, n_worst=K, n_threads=n_threads)
        if not resume:
            hist["loglik_init"] = res.loglik_sum / res.n
            if held is not None:
                hist["loglik_init_heldout"] = _score(held, prep, n_threads)
            hist["init_seconds"] = time.perf_counter() - t_run
            log.info("restart %d/%d: initial mean log-likelihood %.6f%s (%.2f s)", run + 1,
                     n_init, hist["loglik_init"], _held_msg(hist["loglik_init_heldout"]),
                     hist["init_seconds"])
            save(run, gmm, hist)
        while not hist["done"]:
            t_it = time.perf_counter()
            it = len(hist["loglik_train"]) + 1
            gmm, bad = _m_step(res, prep, reg_covar, remove_dc, it)
            hist["reseeded"].extend([it, k] for k in bad)
            if bad:
                hist["last_reseed"] = it
            prep = _Prepared(gmm, dtype)
            last = it >= max_iter
            res = _run_pass(blocks, prep, stats=not last, n_worst=0 if last else K,
                            n_threads=n_threads)
            ll = res.loglik_sum / res.n
            prev = hist["loglik_train"][-1] if hist["loglik_train"] else hist["loglik_init"]
            hist["loglik_train"].append(ll)
            held_ll = _score(held, prep, n_threads) if held is not None else float("nan")
            if held is not None:
                hist["loglik_heldout"].append(held_ll)
            change = (ll - prev) / max(abs(prev), 1.0)
            if change < -1e-9 and hist["last_reseed"] != it:
                log.warning("EM iteration %d: mean log-likelihood decreased by %.3g (relative)",
                            it, -change)
            if abs(change) < tol and hist["last_reseed"] != it:
                hist["converged"] = True
            hist["done"] = hist["converged"] or last
            seconds = time.perf_counter() - t_it
            hist["iteration_seconds"].append(seconds)
            log.info("EM iteration %d/%d: train mean loglik %.6f%s change %+.3e (%.2f s)", it,
                     max_iter, ll, _held_msg(held_ll), change, seconds)
            if hist["done"]:
                all_final.append(ll)
                if best is None or ll > best["hist"]["loglik_train"][-1]:
                    best = {"gmm": gmm, "hist": hist, "run": run}
            save(run, gmm, hist)
            if callback is not None:
                callback(run, it, gmm, ll)
        if hist["converged"]:
            log.info("restart %d/%d converged after %d iterations", run + 1, n_init,
                     len(hist["loglik_train"]))
        state = None

    assert best is not None
    h = best["hist"]
    history = FitHistory(
        loglik_train=np.asarray(h["loglik_train"], dtype=np.float64),
        loglik_heldout=np.asarray(h["loglik_heldout"], dtype=np.float64),
        loglik_init=float(h["loglik_init"]),
        loglik_init_heldout=float(h["loglik_init_heldout"]),
        n_iter=len(h["loglik_train"]),
        converged=bool(h["converged"]),
        reseeded=[(int(i), int(k)) for i, k in h["reseeded"]],
        n_init=int(n_init),
        best_init=int(best["run"]),
        final_loglik_all_inits=[float(v) for v in all_final],
        timing={"init_seconds": float(h["init_seconds"]),
                "iteration_seconds": [float(s) for s in h["iteration_seconds"]],
                "total_seconds": time.perf_counter() - t_start, "streamed": streamed},
        settings=settings,
    )
    return best["gmm"], history


def _score(blocks: _Blocks, prep: _Prepared, n_threads: int) -> float:
    res = _run_pass(blocks, prep, stats=False, n_threads=n_threads)
    return res.loglik_sum / res.n


def _held_msg(value: float) -> str:
    return "" if not math.isfinite(value) else f", held-out {value:.6f}"


# --------------------------------------------------------------------------------------------
# Files
# --------------------------------------------------------------------------------------------


def save_gmm(path: str | os.PathLike, gmm: GaussianMixture, history: FitHistory | None,
             attrs: Mapping[str, Any] | None = None) -> None:
    """Write a mixture and its training history to an HDF5 file of kind ``gmm`` (atomically).

    Datasets ``weights``, ``means``, ``covariances``, ``loglik_train``, ``loglik_heldout``,
    ``reseeded``; root attributes ``n_components``, ``n_features``, ``patch_size`` (sqrt(d)
    when d is a square, else ``"none"``), the fit settings and history scalars, then ``attrs``
    (e.g. ``source``: the patches file).
    """
    K, d = gmm.n_components, gmm.n_features
    m = math.isqrt(d)
    root: dict[str, Any] = {"n_components": K, "n_features": d,
                            "patch_size": m if m * m == d else None}
    datasets: dict[str, np.ndarray] = {"weights": gmm.weights, "means": gmm.means,
                                       "covariances": gmm.covariances}
    if history is not None:
        root.update(history.settings)
        root.update(n_iter=history.n_iter, converged=bool(history.converged),
                    n_init=history.n_init, best_init=history.best_init,
                    loglik_init=history.loglik_init,
                    loglik_init_heldout=history.loglik_init_heldout,
                    final_loglik_train=(float(history.loglik_train[-1])
                                        if history.n_iter else history.loglik_init),
                    final_loglik_all_inits=list(history.final_loglik_all_inits),
                    timing=json.dumps(history.timing))
        datasets["loglik_train"] = history.loglik_train
        datasets["loglik_heldout"] = history.loglik_heldout
        datasets["reseeded"] = np.asarray(history.reseeded, dtype=np.int64).reshape(-1, 2)
    else:
        datasets["loglik_train"] = np.empty(0)
        datasets["loglik_heldout"] = np.empty(0)
    root.update(attrs or {})
    described = {
        "weights": "mixing proportions, shape (n_components,), sum 1",
        "means": "component means, shape (n_components, n_features); zero when remove_dc",
        "covariances": "component covariances, shape (n_components, n_features, n_features), "
                       "symmetric positive definite, reg_covar included",
        "loglik_train": "mean training log-likelihood after each EM iteration, shape (n_iter,)",
        "loglik_heldout": "mean held-out log-likelihood after each EM iteration, shape "
                          "(n_iter,), empty without held-out patches",
        "reseeded": "(iteration, component) pairs of re-seeded components, shape (n, 2)",
    }
    write_h5(path, "gmm", datasets, root,
             {name: {"description": text} for name, text in described.items()
              if name in datasets})


def load_gmm(path: str | os.PathLike) -> tuple[GaussianMixture, dict[str, Any]]:
    """Read a ``gmm`` HDF5 file; check shapes, weights and positive definiteness.

    Returns the mixture and a dict of the root attributes plus the arrays ``loglik_train`` and
    ``loglik_heldout``.  Errors (:class:`GmmRestoreError`) name the file and the dataset.
    """
    path = os.fspath(path)
    arrays, attrs = read_h5(path, "gmm", ["weights", "means", "covariances"])
    w, mu, cov = arrays["weights"], arrays["means"], arrays["covariances"]
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
    if not (np.all(np.isfinite(w)) and np.all(w >= 0) and abs(w.sum() - 1.0) < 1e-6):
        raise H5FormatError(f"{path}: dataset 'weights' must be finite, non-negative and sum "
                            f"to 1 (sum {w.sum():.6g})")
    if not np.all(np.isfinite(mu)):
        raise H5FormatError(f"{path}: dataset 'means' contains NaN or Inf")
    if not np.allclose(cov, cov.transpose(0, 2, 1), rtol=1e-10, atol=1e-12):
        raise H5FormatError(f"{path}: dataset 'covariances' is not symmetric")
    bad = np.flatnonzero(~_cholesky_ok(cov))
    if len(bad):
        raise H5FormatError(f"{path}: dataset 'covariances': component(s) "
                            f"{', '.join(map(str, bad[:10]))} not positive definite")
    info = dict(attrs)
    info["loglik_train"] = arrays.get("loglik_train", np.empty(0))
    info["loglik_heldout"] = arrays.get("loglik_heldout", np.empty(0))
    return GaussianMixture(w.astype(np.float64), mu.astype(np.float64),
                           cov.astype(np.float64)), info


__all__ = [
    "BLOCK_ELEMENTS", "FitHistory", "GaussianMixture", "component_log_densities",
    "default_threads", "fit_gmm", "init_gmm", "kmeans_plusplus", "load_gmm",
    "mean_log_likelihood", "remove_patch_dc", "save_gmm", "score_samples",
]
