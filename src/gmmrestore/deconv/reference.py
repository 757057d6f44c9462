"""Dense reference implementation of the Gaussian-prior EM (tiny images only; the test
oracle)."""

from __future__ import annotations

import logging

import numpy as np
from scipy import linalg

from ..operators import blur_dense_matrix
from .model import LOG_2PI, _as_batch, _check_kernel_size
from .mstep import solve_kernel_qp
from .priors import Prior, _as_prior

log = logging.getLogger("gmmrestore.deconv")

# --------------------------------------------------------------------------------------
# Dense reference implementation (tiny images only; the test oracle)
# --------------------------------------------------------------------------------------
def tap_selection_matrices(kernel_size: int, shape: tuple[int, int]) -> np.ndarray:
    """Dense tap selectors, (s*s, H*W, H*W): ``(S_ab x)[p] = x[p - (a, b) + c]`` (zero
    outside), so that the convolution matrix is ``T_k = sum_ab k[a, b] S_ab``."""
    s = _check_kernel_size(kernel_size)
    mats = np.empty((s * s, shape[0] * shape[1], shape[0] * shape[1]))
    for t in range(s * s):
        unit = np.zeros(s * s)
        unit[t] = 1.0
        mats[t] = blur_dense_matrix(unit.reshape(s, s), shape)
    return mats


def reference_precision(kernel: np.ndarray, shape: tuple[int, int], eta: float,
                        prior: float | Prior) -> np.ndarray:
    """Dense posterior precision ``A_x = T_k^T T_k / eta^2 + P`` (H*W, H*W); a float
    ``prior`` is the seed's gradient prior std (``P = (D_h^T D_h + D_v^T D_v) / std^2``)."""
    T = blur_dense_matrix(kernel, shape)
    return T.T @ T / eta**2 + _as_prior(prior).dense(shape)


def reference_estep(y: np.ndarray, kernel: np.ndarray, eta: float,
                    prior: float | Prior) -> tuple[np.ndarray, np.ndarray]:
    """Exact E-step with dense matrices and Cholesky solves.

    y : (n, H, W) or (H, W).  Returns ``mu`` (same shape as y) and ``C = A_x^{-1}``
    (H*W, H*W), shared by all images (it does not depend on y).
    """
    y = np.asarray(y, dtype=np.float64)
    shape = y.shape[-2:]
    A = reference_precision(kernel, shape, eta, prior)
    T = blur_dense_matrix(kernel, shape)
    factor = linalg.cho_factor(A, lower=True)
    rhs = T.T @ y.reshape(-1, shape[0] * shape[1]).T / eta**2  # (N, n)
    mu = linalg.cho_solve(factor, rhs).T.reshape(y.shape)
    C = linalg.cho_solve(factor, np.eye(len(A)))
    return mu, 0.5 * (C + C.T)


def reference_mstep_system(y: np.ndarray, mu: np.ndarray, C: np.ndarray,
                           kernel_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Dense M-step quadratic ``E_q |k * x - y|^2 = k^T A k - 2 b^T k + |y|^2``.

    y, mu : (n, H, W) or (H, W);  C : (H*W, H*W) shared, or (n, H*W, H*W).
    Returns ``A`` (s*s, s*s) and ``b`` (s*s,), taps in row-major order of the kernel, pooled
    over the images.
    """
    y = _as_batch(y, "y")
    mu = _as_batch(mu, "mu")
    shape = y.shape[-2:]
    S = tap_selection_matrices(kernel_size, shape)  # (t, N, N)
    Cs = np.broadcast_to(C, (len(y),) + C.shape[-2:])
    A = np.zeros((len(S), len(S)))
    b = np.zeros(len(S))
    for yi, mi, Ci in zip(y.reshape(len(y), -1), mu.reshape(len(mu), -1), Cs, strict=True):
        X = S @ mi  # (t, N): X[t, p] = tap t's view of pixel p
        A += X @ X.T + np.einsum("tpq,qr,upr->tu", S, Ci, S)
        b += X @ yi
    return A, b


def reference_objective(y: np.ndarray, kernel: np.ndarray, mu: np.ndarray, C: np.ndarray,
                        eta: float, prior: float | Prior) -> float:
    """Evidence lower bound ``E_q[log p(y|x,k) + log p(x)] + H(q)`` for ``q = N(mu, C)``,
    dense, summed over the images.  At the exact E-step it equals ``log p(y | k)`` (the
    prior's normalising constant as in ``prior.log_normaliser``).

    y, mu : (n, H, W) or (H, W);  C : (H*W, H*W) shared by the images.
    """
    y = _as_batch(y, "y")
    mu = _as_batch(mu, "mu")
    prior = _as_prior(prior)
    n = len(y)
    shape = y.shape[-2:]
    N = shape[0] * shape[1]
    T = blur_dense_matrix(kernel, shape)
    P = prior.dense(shape)
    m = mu.reshape(n, N)
    resid = m @ T.T - y.reshape(n, N)
    data = np.sum(resid**2) + n * np.trace(T @ C @ T.T)
    prior_energy = np.einsum("ni,ij,nj->", m, P, m) + n * np.sum(P * C)
    sign, logdet = np.linalg.slogdet(C)
    if sign <= 0:
        raise np.linalg.LinAlgError("covariance C is not positive definite")
    return float(-data / (2 * eta**2) - n * N / 2 * (LOG_2PI + 2 * np.log(eta))
                 - prior_energy / 2 + n * prior.log_normaliser(shape)
                 + n / 2 * (N * (LOG_2PI + 1.0) + logdet))


def reference_em(y: np.ndarray, kernel_init: np.ndarray, eta: float, prior: float | Prior,
                 n_iter: int = 10, constraint: str = "simplex"
                 ) -> tuple[np.ndarray, list[float]]:
    """Exact dense EM at fixed ``eta``: E-step, exact M-step, repeat.

    Returns the kernel and the objective after every E-step (non-decreasing; for the exact
    E-step the objective is the log marginal likelihood ``log p(y | k)``).
    """
    kernel = np.asarray(kernel_init, dtype=np.float64)
    s = kernel.shape[0]
    history = []
    for _ in range(n_iter):
        mu, C = reference_estep(y, kernel, eta, prior)
        history.append(reference_objective(y, kernel, mu, C, eta, prior))
        A, b = reference_mstep_system(y, mu, C, s)
        kernel = solve_kernel_qp(A, b, constraint=constraint).reshape(s, s)
    return kernel, history
