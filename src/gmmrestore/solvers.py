"""Iterative linear solvers shared by EPLL and blind deconvolution."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np


def batched_cg(apply_A: Callable[[np.ndarray], np.ndarray], b: np.ndarray,
               x0: np.ndarray | None = None, rtol: float = 1e-6, maxiter: int = 200
               ) -> tuple[np.ndarray, np.ndarray]:
    """Conjugate gradients for a batch of independent SPD systems ``A x_i = b_i``.

    Why not ``scipy.sparse.linalg.cg``: it solves one system; the images stacked as one
    block-diagonal system would share step sizes and one stopping test, so an easy image
    would wait for the hardest and none would follow its own CG path.

    Parameters
    ----------
    apply_A : callable
        Maps (n, ...) to (n, ...), applying each system's operator to its own slice
        (e.g. ``lambda x: lam * blur_adjoint(blur(x, k), k) + beta * counts * x``).
    b : (n, ...)
    x0 : (n, ...) or None
    rtol : float
        Stop a system when ``|r_i| <= rtol |b_i|``.

    Returns
    -------
    x : (n, ...) solutions.
    iterations : (n,) iterations each system took.
    """
    b = np.asarray(b, dtype=np.float64)
    n = b.shape[0]
    axes = tuple(range(1, b.ndim))
    shape = (n,) + (1,) * (b.ndim - 1)
    x = np.zeros_like(b) if x0 is None else np.array(x0, dtype=np.float64)
    r = b - apply_A(x)
    p = r.copy()
    rr = np.sum(r * r, axis=axes)
    target = (rtol**2) * np.sum(b * b, axis=axes)
    iterations = np.zeros(n, dtype=np.int64)
    active = rr > target
    for _ in range(maxiter):
        if not active.any():
            break
        Ap = apply_A(p)
        pAp = np.sum(p * Ap, axis=axes)
        alpha = np.where(active & (pAp > 0), rr / np.where(pAp > 0, pAp, 1.0), 0.0)
        x += alpha.reshape(shape) * p
        r -= alpha.reshape(shape) * Ap
        rr_new = np.sum(r * r, axis=axes)
        beta = np.where(active, rr_new / np.where(rr > 0, rr, 1.0), 0.0)
        p = r + beta.reshape(shape) * p
        rr = rr_new
        iterations += active
        active = active & (rr > target)
    return x, iterations
