"""The fused E-step / M-step-statistics pass over the patches, block by block in threads.

Per component the Cholesky factor ``Sigma_k = L_k L_k^T`` gives the upper triangular
``P_k = L_k^{-T}`` with ``||(x - mu_k)^T P_k||^2`` the Mahalanobis term (:class:`Prepared`).
A sub-block of patches is whitened for every component by GEMMs, then squared norms,
log-sum-exp and responsibilities follow on the ``(rows, K)`` block; the M-step statistics are
the counts ``N_k``, first moments and ``S_k = Y_k^T diag(r_k) Y_k`` (see :func:`process_block`).
"""

from __future__ import annotations

import math
import threading
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
from scipy import linalg

from ..h5io import GmmRestoreError
from ..threads import run_in_order
from .blocks import Blocks, describe
from .model import GaussianMixture, cholesky_all, cholesky_ok

#: Bound on ``rows * K * d`` of one work block (the task of one thread): its gathered M-step
#: rows take at most that many elements (if every responsibility counted), 64 MiB in float64.
BLOCK_ELEMENTS = 1 << 23
#: Elements of the whitened ``(rows, K*d)`` sub-block of the E-step, small enough to stay in
#: a core's cache between the GEMM that writes it and the norms and gathers that read it.
SUB_BLOCK_ELEMENTS = 1 << 19
#: Column groups of the triangular whitening GEMMs (more skip more zeros, each is narrower).
TRIANGLE_GROUPS = 2
#: Responsibilities at or below this do not enter the covariance sums (see ``_gram``).
RESP_FLOOR = 1e-16
_LOG2PI = math.log(2.0 * math.pi)


class Prepared:
    """Quantities of a mixture that the E-step needs, computed once per iteration.

    ``const`` (K,) log weight plus normalisation, ``shift`` (d,) the global shift ``c``,
    ``delta64`` (K, d) ``mu_k - c``, ``W`` one (hi + 1, K (hi - lo)) whitening matrix per column
    group ``[lo, hi)``, ``chol`` (K, d, d) the float64 Cholesky factors.
    """

    def __init__(self, gmm: GaussianMixture, dtype: np.dtype) -> None:
        K, d = gmm.n_components, gmm.n_features
        chol = cholesky_all(gmm.covariances)
        if chol is None:
            bad = np.flatnonzero(~cholesky_ok(gmm.covariances))
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
        self.groups = column_groups(d)
        self.W = [np.ascontiguousarray(np.concatenate(
            [-b[None, :, lo:hi], P[:, :hi, lo:hi].transpose(1, 0, 2)]).reshape(
                hi + 1, K * (hi - lo)), dtype=dtype)                   # (hi + 1, K (hi - lo))
            for lo, hi in self.groups]
        self.chol = chol                                               # (K, d, d) float64
        self.shift_w = self.shift.astype(dtype)
        self.K, self.d, self.dtype = K, d, np.dtype(dtype)


@dataclass
class PassResult:
    """What one pass over the patches sums up (the statistics only when asked for)."""

    n: int
    loglik_sum: float
    counts: np.ndarray | None = None      # (K,) sum_n r_nk
    first: np.ndarray | None = None       # (K, d) sum_n r_nk (x_n - c)
    gram: np.ndarray | None = None        # (K, d, d) sum_n r_nk (x_n - mu_k)(x_n - mu_k)^T
    #                                       (per block: S_k in the working dtype)
    worst_logp: np.ndarray | None = None  # lowest log p(x) seen, ascending
    worst_x: np.ndarray | None = None     # the corresponding patches

    @property
    def mean_loglik(self) -> float:
        return self.loglik_sum / self.n


def block_rows(K: int, d: int, chunk_rows: int, n_samples: int | None = None) -> int:
    """Rows per work block: ``rows * K * d`` stays within :data:`BLOCK_ELEMENTS`, and
    small data sets still make about 16 blocks for the worker threads (the partition depends on
    the data and chunk size only, never on the thread count)."""
    rows = min(chunk_rows, BLOCK_ELEMENTS // max(1, K * d))
    if n_samples is not None:
        rows = min(rows, max(64, -(-n_samples // 16)))
    return int(max(16, rows))


def column_groups(d: int) -> list[tuple[int, int]]:
    """Output column groups ``[lo, hi)`` of the triangular whitening (:class:`Prepared`)."""
    edges = sorted({round(d * i / TRIANGLE_GROUPS) for i in range(TRIANGLE_GROUPS + 1)})
    return list(zip(edges[:-1], edges[1:], strict=True))


def _sub_rows(K: int, d: int) -> int:
    """Rows of an E-step sub-block (see :data:`SUB_BLOCK_ELEMENTS`)."""
    return int(max(16, SUB_BLOCK_ELEMENTS // max(1, K * d)))


def _thread_buffers(buffers: dict, prep: Prepared, sub: int) -> tuple[list, np.ndarray]:
    """This thread's work buffers: the whitened sub-block, one contiguous buffer per column
    group so that its (rows K, hi - lo) view has one (patch, component) pair per row, and the
    (sub, d + 1) rows ``[1, x - c]``."""
    key = threading.get_ident()
    buf = buffers.get(key)
    if buf is None:
        buf = buffers[key] = ([np.empty(sub * prep.K * (hi - lo), dtype=prep.dtype)
                               for lo, hi in prep.groups],
                              np.empty((sub, prep.d + 1), dtype=prep.dtype))
    return buf


def _whiten(X: np.ndarray, prep: Prepared, buf: tuple[list, np.ndarray]
            ) -> tuple[np.ndarray, list[np.ndarray], np.ndarray]:
    """Rows ``[1, x - c]`` (r, d + 1), the whitened ``y_nk`` per column group (each
    (r, K, hi - lo)) and the component log-densities (r, K) of a sub-block X (r, d)."""
    K, r = prep.K, len(X)
    Xa = buf[1][:r]
    Xa[:, 0] = 1.0
    np.subtract(X, prep.shift_w, out=Xa[:, 1:])
    # [1, x - c] @ [-b; P]: the GEMMs whiten the rows for every component, offsets included;
    # y_nk = (Ys[0][n, k], Ys[1][n, k], ...)
    Ys = [np.matmul(Xa[:, :hi + 1], W, out=out[:r * K * (hi - lo)].reshape(
        r, K * (hi - lo))).reshape(r, K, hi - lo)
        for (lo, hi), W, out in zip(prep.groups, prep.W, buf[0], strict=True)]
    ld = np.zeros((r, K))
    for Y in Ys:
        ld += np.einsum("nkd,nkd->nk", Y, Y, dtype=prep.dtype)
    ld *= -0.5
    ld += prep.const
    return Xa, Ys, ld


def _gather(R: np.ndarray, Ys: list[np.ndarray], prep: Prepared
            ) -> tuple[np.ndarray, np.ndarray]:
    """Components (m,) and rows ``sqrt(r_nk) y_nk`` (m, d) of the m pairs with
    ``r_nk > RESP_FLOOR`` of a sub-block (responsibilities R (r, K)), gathered while the
    whitened sub-block is in cache."""
    K, r = prep.K, len(R)
    kk, nn = np.nonzero(R.T > RESP_FLOOR)
    pair = nn * K + kk
    Yg = np.empty((len(pair), prep.d), dtype=prep.dtype)
    for (lo, hi), Y in zip(prep.groups, Ys, strict=True):
        np.take(Y.reshape(r * K, hi - lo), pair, axis=0, out=Yg[:, lo:hi])
    Yg *= np.sqrt(R.ravel()[pair]).astype(prep.dtype, copy=False)[:, None]
    return kk, Yg


def _gram(pieces: list[tuple[np.ndarray, np.ndarray]], prep: Prepared) -> np.ndarray:
    """(K, d, d) ``S_k = sum_n r_nk y_nk y_nk^T`` from the gathered pairs of a block.

    One symmetric rank-update (numpy calls BLAS syrk for a.T @ a) per component over its
    gathered rows, centred at the component's mean so that float32 stays accurate;
    ``sum_n r_nk (x_n - mu_k)(x_n - mu_k)^T = L_k S_k L_k^T``.  Only pairs with
    ``r_nk > RESP_FLOOR`` take part: on image patches most responsibilities are below it, and
    the terms left out are below the rounding of the sums they would be added to.
    """
    K, d = prep.K, prep.d
    # (on MNIST patches with K=20 about 10% of the responsibilities are above RESP_FLOOR)
    kk = np.concatenate([p[0] for p in pieces])
    order = np.argsort(kk, kind="stable")
    Yg = np.concatenate([p[1] for p in pieces])[order]
    bounds = np.searchsorted(kk[order], np.arange(K + 1))
    gram = np.zeros((K, d, d), dtype=prep.dtype)
    for k in range(K):
        a, b = bounds[k], bounds[k + 1]
        if b > a:
            np.matmul(Yg[a:b].T, Yg[a:b], out=gram[k])
    return gram


def _worst(logp: np.ndarray, X: np.ndarray, n_worst: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``n_worst`` lowest log-densities of a block, ascending, and their patches."""
    n = len(logp)
    idx = np.arange(n) if n <= n_worst else np.argpartition(logp, n_worst - 1)[:n_worst]
    idx = idx[np.argsort(logp[idx], kind="stable")]
    return logp[idx], np.asarray(X[idx], dtype=np.float64)


def process_block(X: np.ndarray, start: int, prep: Prepared, stats: bool, n_worst: int,
                  out_logdens: np.ndarray | None, buffers: dict) -> PassResult:
    """Log-likelihood and (``stats``) M-step statistics of one block X (n, d) of patches
    starting at row ``start``; component log-densities go to ``out_logdens`` (N, K) if given."""
    K, d = prep.K, prep.d
    n = len(X)
    sub = _sub_rows(K, d)
    buf = _thread_buffers(buffers, prep, sub)
    logp = np.empty(n)
    first = np.zeros((K, d + 1))                  # [N_k, sum_n r_nk (x_n - c)]
    pieces = []
    for s in range(0, n, sub):
        e = min(s + sub, n)
        Xa, Ys, ld = _whiten(X[s:e], prep, buf)
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
        pieces.append(_gather(R, Ys, prep))
    res = PassResult(n=n, loglik_sum=float(logp.sum()))
    if n_worst:
        res.worst_logp, res.worst_x = _worst(logp, X, n_worst)
    if stats:
        res.counts = first[:, 0]
        res.first = first[:, 1:]
        res.gram = _gram(pieces, prep)
    return res


def _fold(acc: PassResult, part: PassResult, n_worst: int) -> None:
    """Add the sums of a block's ``part`` to ``acc`` (keeping the ``n_worst`` worst patches)."""
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


def run_pass(blocks: Blocks, prep: Prepared, *, stats: bool, n_worst: int = 0,
             out_logdens: np.ndarray | None = None, n_threads: int = 1) -> PassResult:
    """One pass over the data: log-likelihood, and (``stats``) the M-step sufficient statistics.

    Blocks are processed by ``n_threads`` worker threads (each with a single-threaded BLAS)
    and their float64 partial sums folded in block order, so the result does not depend on
    the number of threads or their timing.
    """
    K, d = prep.K, prep.d
    rows = block_rows(K, d, blocks.block_rows, blocks.n_samples)
    acc = PassResult(n=0, loglik_sum=0.0)
    buffers: dict = {}

    def tasks() -> Iterator[tuple]:
        for start, block in blocks:
            for s in range(0, len(block), rows):
                yield (block[s:s + rows], start + s, prep, stats, n_worst, out_logdens,
                       buffers)

    for part in run_in_order(process_block, tasks(), n_threads):
        _fold(acc, part, n_worst)
    if not np.isfinite(acc.loglik_sum):
        raise GmmRestoreError(
            f"{blocks.name} ({describe(blocks.data)}): log-likelihood is not finite; the "
            "patches contain NaN or Inf, or a component is degenerate")
    if stats:   # L_k S_k L_k^T = sum_n r_nk (x_n - mu_k)(x_n - mu_k)^T
        acc.gram = prep.chol @ acc.gram @ prep.chol.transpose(0, 2, 1)
    return acc


def mean_loglik(blocks: Blocks, prep: Prepared, n_threads: int) -> float:
    """Mean log-likelihood of the patches of ``blocks`` under the prepared mixture."""
    return run_pass(blocks, prep, stats=False, n_threads=n_threads).mean_loglik
