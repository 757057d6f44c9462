"""Scalable E-step of the Gaussian-prior EM (the seed's method): posterior mean by
preconditioned CG, mean-field and stationary covariances, the evidence lower bound, and the
non-blind Gaussian deconvolution."""

from __future__ import annotations

import logging

import numpy as np
from scipy import fft as sfft

from ..operators import blur_adjoint
from .model import LOG_2PI, _as_batch, _conv, _corr
from .priors import Prior, _as_prior

log = logging.getLogger("gmmrestore.deconv")

# --------------------------------------------------------------------------------------
# Scalable implementation
# --------------------------------------------------------------------------------------

def _posterior_symbol(kernel: np.ndarray, grid: tuple[int, int], eta: float,
                      prior: Prior) -> np.ndarray:
    """Fourier symbol of the circulant approximation of ``A_x`` on ``grid`` (rfft layout)."""
    K = sfft.rfft2(kernel, s=grid)
    return np.abs(K) ** 2 / eta**2 + prior.symbol(grid)


def estep_mean(y: np.ndarray, kernel: np.ndarray, eta: float, prior: float | Prior,
               x0: np.ndarray | None = None, tol: float = 1e-6, maxiter: int = 500,
               precondition: bool = True) -> tuple[np.ndarray, dict]:
    """Posterior mean ``mu = A_x^{-1} T_k^T y / eta^2`` by conjugate gradients.

    All images of the batch are solved together (one array; per-image step sizes), with
    the operator applied by convolutions (never a dense matrix).

    Parameters
    ----------
    y : (n, H, W) or (H, W)
    kernel : (s, s), odd
    eta : float
        Noise standard deviation.
    prior : float or GradientPrior or SpectralPrior
        A float is the std of the seed's gradient prior.
    x0 : array like y, optional
        Warm start (e.g. the previous EM iteration's mean).
    tol : float
        Stop when every image's residual norm is below ``tol`` times its right-hand side's.
    precondition : bool
        Use the circulant (FFT) approximation of ``A_x`` on a zero-padded grid as
        preconditioner (symmetric positive definite, so CG stays exact).

    Returns
    -------
    mu : array like y
    info : dict with ``iterations`` and ``residual`` (max relative residual).
    """
    y = np.asarray(y, dtype=np.float64)
    single = y.ndim == 2
    yb = y[None] if single else y
    kernel = np.asarray(kernel, dtype=np.float64)
    prior = _as_prior(prior)
    h, w = yb.shape[-2:]
    inv_eta2 = 1.0 / eta**2

    def apply_A(x):
        return _corr(_conv(x, kernel), kernel) * inv_eta2 + prior.apply(x)

    if precondition:
        grid = prior.fft_grid((h, w), kernel.shape[0])
        inv_symbol = 1.0 / _posterior_symbol(kernel, grid, eta, prior)

        def apply_M(r):
            return sfft.irfft2(sfft.rfft2(r, s=grid) * inv_symbol, s=grid)[..., :h, :w]
    else:
        def apply_M(r):
            return r

    def dot(a, b):
        return np.einsum("nij,nij->n", a, b)[:, None, None]

    b = _corr(yb, kernel) * inv_eta2
    x = np.zeros_like(yb) if x0 is None else np.array(x0, dtype=np.float64).reshape(yb.shape)
    r = b - apply_A(x) if x0 is not None else b.copy()
    bnorm = np.sqrt(np.einsum("nij,nij->n", b, b))
    bnorm[bnorm == 0] = 1.0
    z = apply_M(r)
    p = z.copy()
    rz = dot(r, z)
    it = 0
    rel = np.sqrt(np.einsum("nij,nij->n", r, r)) / bnorm
    while it < maxiter and rel.max() > tol:
        Ap = apply_A(p)
        pAp = dot(p, Ap)
        active = (pAp > 0) & (rz > 0)
        alpha = np.where(active, rz / np.where(active, pAp, 1.0), 0.0)
        x += alpha * p
        r -= alpha * Ap
        z = apply_M(r)
        rz_new = dot(r, z)
        beta = np.where(active, rz_new / np.where(rz > 0, rz, 1.0), 0.0)
        p = z + beta * p
        rz = rz_new
        it += 1
        rel = np.sqrt(np.einsum("nij,nij->n", r, r)) / bnorm
    info = {"iterations": it, "residual": float(rel.max())}
    return (x[0] if single else x), info


def estep_variance(kernel: np.ndarray, shape: tuple[int, int], eta: float,
                   prior: float | Prior) -> np.ndarray:
    """Mean-field diagonal of the posterior covariance, ``1 / diag(A_x)``, (H, W).

    ``diag(T_k^T T_k)`` is the sum of the squared kernel taps that land inside the image
    (zero boundary).  It is a lower bound of the exact marginal variance
    ``diag(A_x^{-1})``, tight only where the posterior correlations are weak.  Shared by
    all images of the same size.
    """
    kernel = np.asarray(kernel, dtype=np.float64)
    t = blur_adjoint(np.ones(shape), kernel**2)
    return 1.0 / (t / eta**2 + _as_prior(prior).diag(shape))


def stationary_covariance(kernel: np.ndarray, shape: tuple[int, int], eta: float,
                          prior: float | Prior, max_offset: int) -> np.ndarray:
    """Posterior auto-covariance of the circulant (periodic) approximation of ``A_x``.

    ``c(delta) = IFFT[1 / (|K|^2 / eta^2 + symbol(P))](delta)`` on the prior's FFT grid
    (the exact posterior covariance of the same model with periodic boundaries on that
    grid).  Returns ``c`` for offsets ``-max_offset..max_offset`` in both axes,
    (2 max_offset + 1, 2 max_offset + 1), centre = zero offset.
    """
    kernel = np.asarray(kernel, dtype=np.float64)
    prior = _as_prior(prior)
    grid = prior.fft_grid(shape, kernel.shape[0])
    cov = sfft.irfft2(1.0 / _posterior_symbol(kernel, grid, eta, prior), s=grid)
    m = int(max_offset)
    idx0 = np.arange(-m, m + 1) % grid[0]
    idx1 = np.arange(-m, m + 1) % grid[1]
    return cov[np.ix_(idx0, idx1)]



def em_objective(y: np.ndarray, kernel: np.ndarray, mu: np.ndarray, var: np.ndarray,
                 eta: float, prior: float | Prior) -> float:
    """Evidence lower bound for the factorised ``q = N(mu, diag(var))``, summed over images.

    ``E_q[log p(y|x,k)] + E_q[log p(x)] + H(q)``: the quantity variational EM increases
    (it does not decrease over iterations at fixed ``eta`` with ``covariance="meanfield"``).
    Identical to :func:`reference_objective` with ``C = diag(var)``.

    y, mu : (n, H, W) or (H, W);  var : (H, W) shared by the images, or (n, H, W).
    """
    y = _as_batch(y, "y")
    mu = _as_batch(mu, "mu")
    prior = _as_prior(prior)
    kernel = np.asarray(kernel, dtype=np.float64)
    var = np.broadcast_to(np.asarray(var, dtype=np.float64), y.shape)
    n = len(y)
    shape = y.shape[-2:]
    N = shape[0] * shape[1]
    t = blur_adjoint(np.ones(shape), kernel**2)
    data = float(np.sum((_conv(mu, kernel) - y) ** 2)) + float(np.sum(var * t))
    prior_energy = prior.energy(mu) + float(np.sum(var * prior.diag(shape)))
    return float(-data / (2 * eta**2) - n * N / 2 * (LOG_2PI + 2 * np.log(eta))
                 - prior_energy / 2 + n * prior.log_normaliser(shape)
                 + 0.5 * (n * N * (LOG_2PI + 1.0) + float(np.sum(np.log(var)))))



def deconvolve_gaussian(y: np.ndarray, kernel: np.ndarray, noise_sigma: float,
                        prior: float | Prior = 0.3, tol: float = 1e-6) -> np.ndarray:
    """Non-blind restoration under the same Gaussian prior: the E-step mean with the kernel
    fixed and ``eta = noise_sigma`` (a Wiener-like deconvolution, zero boundary).

    y : (n, H, W) or (H, W).  Returns an array like y.
    """
    eta = max(float(noise_sigma), 1e-4)
    return estep_mean(y, kernel, eta, prior, tol=tol, maxiter=2000)[0]
