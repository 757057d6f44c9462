"""M-step of blind deconvolution: the quadratic in the kernel from the E-step moments and
its exact solution under k >= 0 and sum k = 1."""

from __future__ import annotations

import logging

import numpy as np
from scipy import linalg, optimize
from threadpoolctl import threadpool_limits

from ..h5io import GmmRestoreError
from .model import _as_batch, _check_kernel_size, _windows

log = logging.getLogger("gmmrestore.deconv")


def project_kernel(kernel: np.ndarray) -> np.ndarray:
    """Non-negative part of ``kernel``, normalised to sum 1; a centred delta if nothing
    positive is left.  kernel : (s, s) or (t,); returns the same shape."""
    k = np.maximum(kernel, 0.0)
    total = k.sum()
    if not total > 0:
        k = np.zeros_like(k)
        k[tuple(n // 2 for n in k.shape)] = 1.0
        return k
    return k / total


def _overlap_counts(s: int, n: int) -> np.ndarray:
    """(s, s) counts: for taps a, a2, the output rows i in [0, n) for which both
    ``i - a + c`` and ``i - a2 + c`` fall inside [0, n)."""
    c = s // 2
    a = np.arange(s)
    hi = np.maximum(np.maximum(a[:, None], a[None, :]), c)
    lo = np.minimum(np.minimum(a[:, None], a[None, :]), c)
    return np.maximum(n - (hi - lo), 0).astype(np.float64)


def mstep_system(y: np.ndarray, mu: np.ndarray, var: np.ndarray | None,
                 kernel_size: int, autocov: np.ndarray | None = None,
                 chunk_bytes: int = 64 * 2**20) -> tuple[np.ndarray, np.ndarray]:
    """M-step quadratic from the E-step moments, pooled over the images, without dense
    N x N matrices.

    Parameters
    ----------
    y, mu : (n, H, W) or (H, W)
    var : (H, W) or (n, H, W) or None
        Diagonal of the posterior covariance (shared by the images if (H, W)); None
        means no diagonal term.
    kernel_size : int (odd)
    autocov : (2s-1, 2s-1), optional
        Instead of (or on top of) ``var``: a stationary posterior covariance
        ``C[q1, q2] = autocov[q2 - q1 + s - 1]`` between pixels inside the image (zero
        outside), e.g. :func:`stationary_covariance`; contributes
        ``autocov[ab - a'b'] * (number of output pixels whose two taps fall inside)``.
    chunk_bytes : int
        Memory bound of the tap-window matrix (images are processed in chunks).

    Returns
    -------
    A : (s*s, s*s)  ``sum_p E[X_p X_p^T]`` over images and pixels.
    b : (s*s,)      ``sum_p y_p mu_p``.
    """
    s = _check_kernel_size(kernel_size)
    y = _as_batch(y, "y")
    mu = _as_batch(mu, "mu")
    n, h, w = y.shape
    A = np.zeros((s * s, s * s))
    b = np.zeros(s * s)
    step = max(1, int(chunk_bytes // (8 * s * s * h * w)))
    for start in range(0, n, step):
        X = _windows(mu[start:start + step], s)
        # One BLAS thread: OpenBLAS's threaded kernels are erratic (up to 50x slower under
        # load) for this short-and-wide shape; single-threaded it runs near peak.
        with threadpool_limits(1, user_api="blas"):
            A += X @ X.T
        b += X @ y[start:start + step].ravel()
    A = 0.5 * (A + A.T)
    if var is not None:
        var = np.asarray(var, dtype=np.float64)
        if var.ndim == 2:
            A[np.diag_indices_from(A)] += n * _windows(var[None], s).sum(axis=1)
        else:
            A[np.diag_indices_from(A)] += _windows(var, s).sum(axis=1)
    if autocov is not None:
        autocov = np.asarray(autocov, dtype=np.float64)
        if autocov.shape != (2 * s - 1, 2 * s - 1):
            raise GmmRestoreError(f"autocov: expected shape {(2 * s - 1, 2 * s - 1)}, got "
                                  f"{autocov.shape}")
        a = np.arange(s)
        da = a[:, None] - a[None, :] + s - 1  # (a - a2) + s - 1: offset of q2 - q1
        counts = _overlap_counts(s, h)[:, None, :, None] * _overlap_counts(s, w)[None, :, None, :]
        cov = autocov[da[:, None, :, None], da[None, :, None, :]]  # [a, b, a2, b2]
        A += n * (cov * counts).reshape(s * s, s * s)
    return A, b


def solve_kernel_qp(A: np.ndarray, b: np.ndarray, constraint: str = "simplex") -> np.ndarray:
    """Minimise ``k^T A k - 2 b^T k`` over the kernel taps.

    Parameters
    ----------
    A : (t, t) symmetric positive definite;  b : (t,)
    constraint : {"simplex", "nnls"}
        ``"simplex"``: exact solution under ``k >= 0`` and ``sum k = 1``.  For a multiplier
        ``lam`` the problem ``min k^T A k - 2 (b + lam 1)^T k, k >= 0`` is a non-negative
        least-squares problem (``|L^T k - L^{-1}(b + lam 1)|^2`` with ``A = L L^T``) whose
        solution's sum grows monotonically with ``lam``; ``lam`` is found by root finding,
        then the KKT system on the support is solved exactly and checked.
        ``"nnls"``: Levin's rule, ``k >= 0`` by NNLS, then scaled to sum 1 (a centred
        delta when NNLS returns 0, as :func:`project_kernel`).

    Returns
    -------
    k : (t,) non-negative, summing to 1.
    """
    A = np.asarray(A, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    t = len(b)
    scale = float(np.trace(A)) / t
    L = linalg.cholesky(A + scale * 1e-13 * np.eye(t), lower=True)

    def nnls_for(lam: float) -> np.ndarray:
        rhs = linalg.solve_triangular(L, b + lam, lower=True)
        return optimize.nnls(L.T, rhs, maxiter=50 * t)[0]

    if constraint == "nnls":
        return project_kernel(nnls_for(0.0))
    if constraint != "simplex":
        raise GmmRestoreError(f"unknown kernel constraint '{constraint}'; expected 'simplex' "
                              "or 'nnls'")

    lo = -float(np.max(b))  # b + lo <= 0: k = 0, sum 0 < 1
    step = max(scale, float(np.max(np.abs(b))), 1e-300)
    hi = lo + step
    while nnls_for(hi).sum() < 1.0:
        step *= 2.0
        hi = lo + step
    lam = optimize.brentq(lambda v: nnls_for(v).sum() - 1.0, lo, hi, xtol=1e-14 * step,
                          rtol=4 * np.finfo(float).eps, maxiter=200)
    k = nnls_for(lam)
    polished = _kkt_polish(A, b, k)
    if polished is not None:
        return polished
    return project_kernel(k)


def _kkt_polish(A: np.ndarray, b: np.ndarray, k: np.ndarray) -> np.ndarray | None:
    """Exact simplex-QP solution on the support of ``k`` if it satisfies the KKT
    conditions, else None."""
    tol = 1e-10 * max(k.max(), 1e-300)
    free = k > tol
    if not free.any():
        return None
    Aff = A[np.ix_(free, free)]
    try:
        fac = linalg.cho_factor(Aff, lower=True)
    except linalg.LinAlgError:
        return None
    u = linalg.cho_solve(fac, b[free])
    v = linalg.cho_solve(fac, np.ones(free.sum()))
    tau = (1.0 - u.sum()) / v.sum()
    kf = u + tau * v
    if np.any(kf < 0):
        return None
    out = np.zeros_like(k)
    out[free] = kf
    grad = A @ out - b - tau  # must be >= 0 off the support
    gscale = max(float(np.max(np.abs(A @ out))), float(np.max(np.abs(b))), 1e-300)
    if np.any(grad[~free] < -1e-9 * gscale):
        return None
    return out / out.sum()


def project_simplex(v: np.ndarray) -> np.ndarray:
    """Euclidean projection of v (t,) onto ``{k >= 0, sum k = 1}`` (sort-based)."""
    u = np.sort(v)[::-1]
    css = np.cumsum(u) - 1.0
    ind = np.arange(1, len(v) + 1)
    rho = np.nonzero(u - css / ind > 0)[0][-1]
    return np.maximum(v - css[rho] / (rho + 1), 0.0)


def solve_kernel_simplex_pg(A: np.ndarray, b: np.ndarray, k0: np.ndarray,
                            n_iter: int = 300, tol: float = 1e-10) -> np.ndarray:
    """``min k^T A k - 2 b^T k`` on the simplex by monotone FISTA (Beck & Teboulle's MFISTA)
    from ``k0``: every iterate's objective is at most that of ``k0`` (so an EM using it
    stays monotone), and it converges to the exact minimiser :func:`solve_kernel_qp` finds.
    Fast for large kernels (matrix-vector products only).  A (t, t), b (t,), k0 (t,).
    """
    with threadpool_limits(1, user_api="blas"):  # small matrix-vector products
        return _mfista(np.asarray(A, dtype=np.float64), np.asarray(b, dtype=np.float64),
                       np.asarray(k0, dtype=np.float64).ravel(), n_iter, tol)


def _mfista(A, b, k0, n_iter, tol):
    x = project_simplex(k0)
    v = np.ones(len(b)) / np.sqrt(len(b))
    for _ in range(30):  # power iteration for the Lipschitz constant 2 * lambda_max(A)
        v = A @ v
        v /= np.linalg.norm(v)
    lip = 2.0 * float(v @ A @ v) * 1.05

    def f(k):
        return float(k @ (A @ k) - 2.0 * b @ k)

    fx = f(x)
    z, yk, t = x.copy(), x.copy(), 1.0
    for _ in range(n_iter):
        z = project_simplex(yk - (2.0 * (A @ yk) - 2.0 * b) / lip)
        fz = f(z)
        t_new = (1.0 + np.sqrt(1.0 + 4.0 * t * t)) / 2.0
        x_old = x
        if fz <= fx:
            x, fx_old, fx = z, fx, fz
        else:
            fx_old = fx
        yk = x + (t / t_new) * (z - x) + ((t - 1.0) / t_new) * (x - x_old)
        t = t_new
        if abs(fx_old - fx) <= tol * max(abs(fx), 1e-300) and fz <= fx_old:
            break
    return x
