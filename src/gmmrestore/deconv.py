"""Blind kernel estimation by EM under a Gaussian image prior (MAP_k, the second seed).

Model
-----
Observed images ``y_i = k * x_i + n_i`` (i = 1..n, all blurred by the SAME kernel ``k``),
``n_i ~ N(0, eta^2 I)``, with ``*`` exactly :func:`gmmrestore.operators.blur`: "same"-size
2-D convolution with the kernel centre at ``(s // 2, s // 2)`` and ZERO boundary (pixels
outside the image are 0).  The same zero-boundary model is used for the data term of both
implementations below, by the corrupt stage and by the restore stage, so they all agree.

Gaussian priors on the sharp image, ``p(x) ∝ exp(-x^T P x / 2)``:

* :class:`GradientPrior` (the seed's): independent ``N(0, std^2)`` horizontal and vertical
  differences ``[-1 1]`` taken inside the image ("valid" differences, the seed's matrices
  ``f_h``, ``f_v``): ``P = (D_h^T D_h + D_v^T D_v) / std^2``.
* :class:`SpectralPrior`: a stationary Gaussian whose power spectrum is learned from sharp
  training images (the average periodogram of the zero-padded images on an FFT grid about
  twice the image size, divided by the image area), conditioned on the pixels outside the
  image being zero: ``P = E^T Circ(1 / spectrum) E`` (``E`` embeds the image in the grid).
  Digits are not ``1/f``-images; a gradient prior biases the kernel estimate because the
  Gaussian marginal likelihood matches the blur's power spectrum to ``|Y|^2 / spectrum``.

EM for the kernel (maximises the marginal likelihood ``p(y | k)`` = MAP_k of Levin et al.)
------------------------------------------------------------------------------------------
* E-step: ``q(x) = p(x | y, k) = N(mu, C)`` with precision ``A_x = T_k^T T_k / eta^2 + P``
  (the seed's ``A_x`` for the gradient prior), ``mu = A_x^{-1} T_k^T y / eta^2``,
  ``C = A_x^{-1}``.
* M-step: ``k = argmin E_q |k * x - y|^2 = k^T A_k k - 2 b_k^T k + |y|^2`` with
  ``A_k = sum_p E[X_p X_p^T] = sum_p (mu_p mu_p^T + C_p)`` and ``b_k = sum_p y_p mu_p``, where
  ``X_p`` (s^2,) holds the pixels of x that output pixel p sees (tap ``(a, b)`` sees
  ``x[p - (a, b) + c]``, zero outside), pooled over all images of a batch.  Solved under
  ``k >= 0`` and ``sum k = 1`` EXACTLY (a convex QP on the simplex; :func:`solve_kernel_qp`:
  NNLS with a Lagrange multiplier for the sum found by root finding, then a KKT polish).
  Levin's "NNLS then normalise" is available as ``constraint="nnls"``; it is not an exact
  M-step, so it may break the monotonicity of EM.

Two implementations
-------------------
* Dense reference (test oracle, tiny images): ``reference_*`` functions build the N x N
  matrices and use Cholesky factorisations; ``C`` is exact.
* Scalable (what users run): convolutions by :func:`operators.blur` (direct) or FFT with zero
  padding (identical numbers); ``mu`` by preconditioned conjugate gradients batched over all
  images of a batch (one array, per-image step sizes; the preconditioner is the circulant
  approximation of ``A_x`` on a zero-padded grid, applied by FFT); ``C`` approximated for
  the M-step in one of two ways (``covariance=``):

  - ``"meanfield"``: ``C ≈ diag(1 / diag(A_x))`` (Levin 2011).  For a Gaussian posterior
    the mean-field mean is exact and ``1 / diag(A_x)`` is the optimal factorised variance,
    so the algorithm is variational EM: :func:`em_objective` (the evidence lower bound of
    the factorised q) does not decrease at fixed ``eta``.  ``1 / A_ii <= C_ii`` always: it
    underestimates the variance of the poorly determined frequencies, which pulls the
    kernel towards a delta.
  - ``"stationary"`` (default): the full covariance of the periodic model on the padded
    grid, ``IFFT[1 / (|K|^2 / eta^2 + symbol(P))]``, restricted to the image
    (:func:`stationary_covariance`): close to the exact ``A_x^{-1}`` away from the border
    and with its off-diagonal terms, but EM is then not guaranteed monotone.

* On top of EM (:func:`estimate_kernel`): a decreasing schedule of ``eta`` (clipped below at
  a noise floor, estimated from the data by default), coarse-to-fine over a pyramid (images
  scaled by ``1/sqrt(2)`` per level, odd kernel sizes, kernel upsampled between levels; the
  spectral prior is re-learned at every level from the training images scaled the same
  way), the 180-degree flip ambiguity resolved by running both candidates and keeping the
  one whose posterior mean has the sparser gradients (a Gaussian prior sees only the power
  spectrum, so its objective hardly separates them), and a re-centering of the kernel
  (centre of mass to the middle pixel) after every level, since a shift of k against x is
  otherwise undetermined.

Batches must be representative: the spectral prior describes the average digit; a batch of
a single class (e.g. 100 "1"s, whose spectrum is far from the average) biases the kernel.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence

import numpy as np
from scipy import fft as sfft
from scipy import linalg, optimize, signal
from threadpoolctl import threadpool_limits

from .h5io import GmmRestoreError
from .operators import blur, blur_adjoint, blur_dense_matrix

log = logging.getLogger("gmmrestore.deconv")

LOG_2PI = float(np.log(2.0 * np.pi))

# Kernels with more taps than this are applied by FFT instead of direct convolution.
FFT_MIN_TAPS = 64


# --------------------------------------------------------------------------------------
# Small shared helpers
# --------------------------------------------------------------------------------------

def _conv(x: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """``operators.blur`` for (..., H, W) arrays; FFT with zero padding for large kernels."""
    if kernel.size < FFT_MIN_TAPS:
        return blur(x, kernel)
    k = kernel.reshape((1,) * (x.ndim - 2) + kernel.shape)
    return signal.fftconvolve(x, k, mode="same", axes=(-2, -1))


def _corr(x: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """Adjoint of :func:`_conv` (correlation, zero boundary) = ``operators.blur_adjoint``."""
    if kernel.size < FFT_MIN_TAPS:
        return blur_adjoint(x, kernel)
    return _conv(x, kernel[::-1, ::-1])


def _grad_normal(x: np.ndarray) -> np.ndarray:
    """``(D_h^T D_h + D_v^T D_v) x`` for valid [-1 1] differences; x : (..., H, W)."""
    gh = np.diff(x, axis=-1)
    gv = np.diff(x, axis=-2)
    pad_h = [(0, 0)] * (x.ndim - 1) + [(1, 1)]
    pad_v = [(0, 0)] * (x.ndim - 2) + [(1, 1), (0, 0)]
    return -np.diff(np.pad(gh, pad_h), axis=-1) - np.diff(np.pad(gv, pad_v), axis=-2)


def _grad_sq_norm(x: np.ndarray) -> float:
    """``|D_h x|^2 + |D_v x|^2`` summed over everything."""
    return float(np.sum(np.diff(x, axis=-1) ** 2) + np.sum(np.diff(x, axis=-2) ** 2))


def _grad_normal_diag(shape: tuple[int, int]) -> np.ndarray:
    """Diagonal of ``D_h^T D_h + D_v^T D_v``, (H, W): number of differences per pixel."""
    h, w = shape
    dh = np.full(w, 2.0)
    dv = np.full(h, 2.0)
    dh[[0, -1]] = 1.0 if w > 1 else 0.0
    dv[[0, -1]] = 1.0 if h > 1 else 0.0
    return dv[:, None] + dh[None, :]


def _n_grad_rows(shape: tuple[int, int]) -> int:
    h, w = shape
    return h * (w - 1) + (h - 1) * w


def _as_batch(y: np.ndarray, name: str = "images") -> np.ndarray:
    y = np.asarray(y, dtype=np.float64)
    if y.ndim == 2:
        y = y[None]
    if y.ndim != 3:
        raise GmmRestoreError(f"{name}: expected (n, H, W) or (H, W) images, got shape "
                              f"{y.shape}")
    if not np.all(np.isfinite(y)):
        raise GmmRestoreError(f"{name}: contains NaN or Inf")
    return y


def _check_kernel_size(kernel_size: int) -> int:
    if int(kernel_size) != kernel_size or kernel_size < 1 or kernel_size % 2 == 0:
        raise GmmRestoreError(f"kernel size must be a positive odd integer, got {kernel_size}")
    return int(kernel_size)


def _windows(x: np.ndarray, s: int) -> np.ndarray:
    """Tap windows of the zero-padded images, (s*s, n*H*W): row ``a*s + b`` holds
    ``x[p - (a, b) + c]`` for every output pixel p (zero outside), x : (n, H, W)."""
    c = s // 2
    n, h, w = x.shape
    xp = np.pad(x, ((0, 0), (c, c), (c, c)))
    view = np.lib.stride_tricks.sliding_window_view(xp, (h, w), axis=(1, 2))  # (n,s,s,h,w)
    view = view[:, ::-1, ::-1]  # tap a sees offset 2c - a
    return np.ascontiguousarray(np.moveaxis(view, 0, 2)).reshape(s * s, n * h * w)


def _full_grid_mean(half: np.ndarray, grid: tuple[int, int]) -> float:
    """Mean over the full FFT grid of a real, Hermitian-symmetric array given in rfft
    layout (e.g. a power spectrum)."""
    return float(sfft.irfft2(half, s=grid)[0, 0])


# --------------------------------------------------------------------------------------
# Image priors
# --------------------------------------------------------------------------------------

class GradientPrior:
    """The seed's prior: independent ``N(0, std^2)`` valid [-1 1] differences.

    Precision ``P = (D_h^T D_h + D_v^T D_v) / std^2`` (improper: constant images are free;
    ``A_x`` is still definite because a kernel summing to 1 sees constants).
    """

    def __init__(self, std: float):
        try:
            std = float(std)
        except (TypeError, ValueError):
            raise GmmRestoreError(f"prior std must be a number, got {std!r}") from None
        if not (np.isfinite(std) and std > 0):
            raise GmmRestoreError(f"prior std must be finite and > 0, got {std}")
        self.std = float(std)

    def __repr__(self) -> str:
        return f"GradientPrior(std={self.std:g})"

    def apply(self, x: np.ndarray) -> np.ndarray:
        """``P x`` for images x (..., H, W)."""
        return _grad_normal(x) / self.std**2

    def diag(self, shape: tuple[int, int]) -> np.ndarray:
        """Diagonal of P, (H, W)."""
        return _grad_normal_diag(shape) / self.std**2

    def fft_grid(self, shape: tuple[int, int], kernel_size: int) -> tuple[int, int]:
        """FFT grid for preconditioner and stationary covariance: image plus kernel."""
        return (sfft.next_fast_len(shape[0] + kernel_size),
                sfft.next_fast_len(shape[1] + kernel_size))

    def symbol(self, grid: tuple[int, int]) -> np.ndarray:
        """Fourier symbol of the periodic version of P on ``grid`` (rfft layout)."""
        fh = np.zeros(grid)
        fh[0, 0], fh[0, 1] = -1.0, 1.0
        Fh = sfft.rfft2(fh)
        Fv = sfft.rfft2(fh.T.copy(), s=grid)
        return (np.abs(Fh) ** 2 + np.abs(Fv) ** 2) / self.std**2

    def energy(self, mu: np.ndarray) -> float:
        """``sum_images mu^T P mu``."""
        return _grad_sq_norm(mu) / self.std**2

    def log_normaliser(self, shape: tuple[int, int]) -> float:
        """Log normalising constant per image (that of the difference rows)."""
        return -_n_grad_rows(shape) / 2 * (LOG_2PI + 2 * np.log(self.std))

    def dense(self, shape: tuple[int, int]) -> np.ndarray:
        """Dense P, (H*W, H*W)."""
        dh, dv = finite_difference_matrices(shape)
        return (dh.T @ dh + dv.T @ dv) / self.std**2


class SpectralPrior:
    """Stationary Gaussian prior with a learned power spectrum, zero outside the image.

    ``x`` embedded in a periodic ``grid`` is Gaussian with power spectrum ``spectrum``
    (so precision ``Circ(1 / spectrum)``), conditioned on the pixels outside the image
    being zero: ``P = E^T Circ(1 / spectrum) E``.

    Parameters
    ----------
    precision : (grid[0], grid[1] // 2 + 1)
        ``1 / spectrum`` in rfft layout, positive.
    grid : (G0, G1)
    shape : (H, W)
        Image size the prior is meant for (``grid >= shape``).
    """

    def __init__(self, precision: np.ndarray, grid: tuple[int, int], shape: tuple[int, int]):
        precision = np.asarray(precision, dtype=np.float64)
        grid = (int(grid[0]), int(grid[1]))
        if precision.shape != (grid[0], grid[1] // 2 + 1):
            raise GmmRestoreError(f"spectral prior: precision shape {precision.shape} does not "
                                  f"match grid {grid}")
        if not np.all(np.isfinite(precision)) or not np.all(precision > 0):
            raise GmmRestoreError("spectral prior: precision must be finite and > 0")
        if grid[0] < shape[0] or grid[1] < shape[1]:
            raise GmmRestoreError(f"spectral prior: grid {grid} smaller than images {shape}")
        self.precision = precision
        self.grid = grid
        self.shape = (int(shape[0]), int(shape[1]))

    def __repr__(self) -> str:
        return f"SpectralPrior(shape={self.shape}, grid={self.grid})"

    @classmethod
    def from_images(cls, images: np.ndarray, grid: tuple[int, int] | None = None,
                    rel_floor: float = 1e-8) -> SpectralPrior:
        """Learn the spectrum from sharp images (n, H, W): the mean periodogram of the
        zero-padded images, ``mean |FFT(x)|^2 / (H W)`` (the spectrum of a stationary
        field seen through the H x W window), floored at ``rel_floor`` times its maximum.
        ``grid`` defaults to about twice the image size (no wrap-around of correlations
        within the image)."""
        x = _as_batch(images, "prior images")
        h, w = x.shape[-2:]
        if grid is None:
            grid = (sfft.next_fast_len(2 * h), sfft.next_fast_len(2 * w))
        power = np.zeros((grid[0], grid[1] // 2 + 1))
        for start in range(0, len(x), 256):
            power += np.sum(np.abs(sfft.rfft2(x[start:start + 256], s=grid)) ** 2, axis=0)
        spectrum = power / (len(x) * h * w)
        spectrum = np.maximum(spectrum, rel_floor * spectrum.max())
        return cls(1.0 / spectrum, grid, (h, w))

    def _check(self, shape: tuple[int, int]) -> None:
        if tuple(shape) != self.shape:
            raise GmmRestoreError(f"spectral prior learned for {self.shape[0]}x{self.shape[1]} "
                                  f"images, used on {shape[0]}x{shape[1]}")

    def apply(self, x: np.ndarray) -> np.ndarray:
        self._check(x.shape[-2:])
        h, w = self.shape
        return sfft.irfft2(sfft.rfft2(x, s=self.grid) * self.precision, s=self.grid)[..., :h, :w]

    def diag(self, shape: tuple[int, int]) -> np.ndarray:
        self._check(shape)
        return np.full(shape, _full_grid_mean(self.precision, self.grid))

    def fft_grid(self, shape: tuple[int, int], kernel_size: int) -> tuple[int, int]:
        self._check(shape)
        return self.grid

    def symbol(self, grid: tuple[int, int]) -> np.ndarray:
        if tuple(grid) != self.grid:
            raise GmmRestoreError(f"spectral prior: grid {grid} requested, learned on "
                                  f"{self.grid}")
        return self.precision

    def energy(self, mu: np.ndarray) -> float:
        return float(np.sum(mu * self.apply(mu)))

    def log_normaliser(self, shape: tuple[int, int]) -> float:
        """``-HW/2 log 2pi + 1/2 log det P`` per image, with ``log det P`` approximated by
        ``HW * mean(log precision)`` (stationary, Szegő); a constant at fixed level."""
        n_pix = shape[0] * shape[1]
        return -n_pix / 2 * LOG_2PI + 0.5 * n_pix * _full_grid_mean(np.log(self.precision),
                                                                    self.grid)

    def dense(self, shape: tuple[int, int]) -> np.ndarray:
        self._check(shape)
        n_pix = shape[0] * shape[1]
        basis = np.eye(n_pix).reshape(n_pix, *shape)
        P = self.apply(basis).reshape(n_pix, n_pix)
        return 0.5 * (P + P.T)


Prior = GradientPrior | SpectralPrior


def _as_prior(prior: float | Prior) -> Prior:
    if isinstance(prior, GradientPrior | SpectralPrior):
        return prior
    return GradientPrior(float(prior))


# --------------------------------------------------------------------------------------
# Dense reference implementation (tiny images only; the test oracle)
# --------------------------------------------------------------------------------------

def finite_difference_matrices(shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Dense valid-difference matrices of the seed.

    Returns ``(D_h, D_v)``: D_h (H*(W-1), H*W) with ``(D_h x)[i, j] = x[i, j+1] - x[i, j]``,
    D_v ((H-1)*W, H*W) with ``(D_v x)[i, j] = x[i+1, j] - x[i, j]`` (row-major flattening).
    """
    h, w = shape
    idx = np.arange(h * w).reshape(h, w)
    dh = np.zeros((h * (w - 1), h * w))
    rows = np.arange(h * (w - 1))
    dh[rows, idx[:, :-1].ravel()] = -1.0
    dh[rows, idx[:, 1:].ravel()] = 1.0
    dv = np.zeros(((h - 1) * w, h * w))
    rows = np.arange((h - 1) * w)
    dv[rows, idx[:-1, :].ravel()] = -1.0
    dv[rows, idx[1:, :].ravel()] = 1.0
    return dh, dv


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
        ``"nnls"``: Levin's rule, ``k >= 0`` by NNLS, then scaled to sum 1.

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
        k = nnls_for(0.0)
        total = k.sum()
        if not total > 0:
            return np.full(t, 1.0 / t)
        return k / total
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
    k = np.maximum(k, 0.0)
    return k / k.sum()


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


# --------------------------------------------------------------------------------------
# Kernel utilities and evaluation
# --------------------------------------------------------------------------------------

def recenter_kernel(kernel: np.ndarray) -> np.ndarray:
    """Shift ``kernel`` by whole pixels so its centre of mass is nearest the middle pixel.

    Mass shifted out of the support is dropped; the result is non-negative and sums to 1.
    """
    k = np.maximum(np.asarray(kernel, dtype=np.float64), 0.0)
    total = k.sum()
    if not total > 0:
        raise GmmRestoreError("cannot re-center a kernel with no positive mass")
    s0, s1 = k.shape
    r = np.arange(s0) @ k.sum(axis=1) / total
    c = np.arange(s1) @ k.sum(axis=0) / total
    dr = int(np.round(s0 // 2 - r))
    dc = int(np.round(s1 // 2 - c))
    out = np.zeros_like(k)
    src_r = slice(max(0, -dr), min(s0, s0 - dr))
    dst_r = slice(max(0, dr), min(s0, s0 + dr))
    src_c = slice(max(0, -dc), min(s1, s1 - dc))
    dst_c = slice(max(0, dc), min(s1, s1 + dc))
    out[dst_r, dst_c] = k[src_r, src_c]
    if not out.sum() > 0:
        return k / total
    return out / out.sum()


def kernel_error(k_est: np.ndarray, k_true: np.ndarray) -> float:
    """Relative L2 kernel error after the best integer shift.

    Both kernels are normalised to sum 1; ``min_shift |shift(k_est) - k_true| / |k_true|``
    over all integer shifts (zero fill, no wrap; kernels of different sizes allowed).
    """
    a = np.asarray(k_est, dtype=np.float64)
    b = np.asarray(k_true, dtype=np.float64)
    if a.ndim != 2 or b.ndim != 2:
        raise GmmRestoreError(f"kernel_error: expected 2-D kernels, got {a.shape} and {b.shape}")
    if not (a.sum() != 0 and b.sum() != 0):
        raise GmmRestoreError("kernel_error: a kernel sums to 0")
    a = a / a.sum()
    b = b / b.sum()
    cross = signal.correlate(b, a, mode="full", method="direct").max()
    sq = max(float(np.sum(a**2) + np.sum(b**2) - 2.0 * cross), 0.0)
    return float(np.sqrt(sq / np.sum(b**2)))


def error_ratio(restored_est: np.ndarray, restored_true: np.ndarray,
                clean: np.ndarray, per_image: bool = False) -> float | np.ndarray:
    """Levin's error ratio ``SSD(restored_est, clean) / SSD(restored_true, clean)``.

    restored_est : restoration with the estimated kernel; restored_true : the same method
    with the true kernel; all (..., H, W) of equal shape.  ``per_image=False``: the sums of
    squared differences run over everything (one ratio, e.g. pooled over a batch);
    ``per_image=True``: one ratio per (H, W) image, an array of shape ``clean.shape[:-2]``.
    A zero denominator gives ``inf`` (or 1 when the numerator is zero too).
    """
    clean = np.asarray(clean, dtype=np.float64)
    est = np.asarray(restored_est, dtype=np.float64)
    true = np.asarray(restored_true, dtype=np.float64)
    if not (est.shape == true.shape == clean.shape) or clean.ndim < 2:
        raise GmmRestoreError(
            f"error_ratio: expected images (..., H, W) of one shape, got {est.shape}, "
            f"{true.shape} and {clean.shape}")
    axes = (-2, -1) if per_image else None
    ssd_est = np.sum((est - clean) ** 2, axis=axes)
    ssd_true = np.sum((true - clean) ** 2, axis=axes)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(ssd_true > 0, ssd_est / np.where(ssd_true > 0, ssd_true, 1.0),
                         np.where(ssd_est > 0, np.inf, 1.0))
    return ratio if per_image else float(ratio)


def blind_scores(clean: np.ndarray, restored_est: np.ndarray, restored_true: np.ndarray,
                 batch_kernels: np.ndarray, batch_index: np.ndarray,
                 true_kernel: np.ndarray) -> dict[str, np.ndarray]:
    """Per-image scores of a blind restoration whose images were restored with the kernel
    estimated from their own batch.

    clean, restored_est, restored_true : (n, H, W) (the same method with the estimated and
    with the true kernel); batch_kernels : (n_batches, s, s); batch_index : (n,) the batch
    (row of ``batch_kernels``) of every image; true_kernel : the true blur.

    Returns (n,) arrays: ``kernel_batch`` (= batch_index), ``kernel_error`` (of the image's
    batch kernel, :func:`kernel_error`), ``error_ratio`` (of the image,
    :func:`error_ratio` with ``per_image=True``) and ``batch_error_ratio`` (SSDs pooled over
    all images of the image's batch, :func:`error_ratio`).
    """
    clean = np.asarray(clean, dtype=np.float64)
    batch_kernels = np.asarray(batch_kernels, dtype=np.float64)
    batch_index = np.asarray(batch_index)
    if batch_kernels.ndim != 3:
        raise GmmRestoreError(f"blind_scores: batch_kernels has shape {batch_kernels.shape}, "
                              "expected (n_batches, s, s)")
    if batch_index.shape != clean.shape[:1] or clean.ndim != 3:
        raise GmmRestoreError(f"blind_scores: batch_index has shape {batch_index.shape} for "
                              f"images {clean.shape}; expected one batch per image")
    if batch_index.dtype.kind not in "iu" or batch_index.size and (
            batch_index.min() < 0 or batch_index.max() >= len(batch_kernels)):
        raise GmmRestoreError(f"blind_scores: batch_index must hold integers in "
                              f"[0, {len(batch_kernels)}), got {np.unique(batch_index)}")
    per_batch_error = np.array([kernel_error(k, true_kernel) for k in batch_kernels])
    ratio = error_ratio(restored_est, restored_true, clean, per_image=True)
    pooled = np.full(len(clean), np.nan)
    for b in np.unique(batch_index):
        members = batch_index == b
        pooled[members] = error_ratio(np.asarray(restored_est)[members],
                                      np.asarray(restored_true)[members], clean[members])
    return {"kernel_batch": batch_index.astype(np.int64),
            "kernel_error": per_batch_error[batch_index], "error_ratio": ratio,
            "batch_error_ratio": pooled}


def deconvolve_gaussian(y: np.ndarray, kernel: np.ndarray, noise_sigma: float,
                        prior: float | Prior = 0.3, tol: float = 1e-6) -> np.ndarray:
    """Non-blind restoration under the same Gaussian prior: the E-step mean with the kernel
    fixed and ``eta = noise_sigma`` (a Wiener-like deconvolution, zero boundary).

    y : (n, H, W) or (H, W).  Returns an array like y.
    """
    eta = max(float(noise_sigma), 1e-4)
    return estep_mean(y, kernel, eta, prior, tol=tol, maxiter=2000)[0]


def estimate_noise_sigma(y: np.ndarray, flat_fraction: float = 0.25) -> float:
    """White-noise standard deviation from one level of the Haar transform.

    The diagonal (HH) coefficients of pure noise are ``N(0, sigma^2)``; their median absolute
    value / 0.6745 estimates sigma (Donoho).  Blurred edges leak into HH, so only the 2 x 2
    blocks whose horizontal and vertical (LH, HL) energy is in the lowest ``flat_fraction``
    are used: for white noise the Haar coefficients are independent, so the selection does
    not bias the noise part.  Pooled over the images.  y : (n, H, W).
    """
    y = _as_batch(y, "y")
    h, w = (y.shape[1] // 2) * 2, (y.shape[2] // 2) * 2
    if h < 2 or w < 2:
        raise GmmRestoreError(f"images of {y.shape[1]}x{y.shape[2]} are too small to estimate "
                              "the noise level")
    z = y[:, :h, :w]
    a, b, c, d = z[:, 0::2, 0::2], z[:, 0::2, 1::2], z[:, 1::2, 0::2], z[:, 1::2, 1::2]
    hh = np.abs(a - b - c + d).ravel() / 2.0
    energy = ((a + b - c - d) ** 2 + (a - b + c - d) ** 2).ravel()
    flat = energy <= np.quantile(energy, flat_fraction)
    return float(np.median(hh[flat]) / 0.6744897501960817)


# --------------------------------------------------------------------------------------
# Coarse-to-fine blind estimation
# --------------------------------------------------------------------------------------

DEFAULT_NOISE_SCHEDULE = (0.2, 0.1, 0.05, 0.03, 0.02, 0.01)
COVARIANCES = ("stationary", "meanfield")


def _odd(x: float) -> int:
    return int(2 * np.round((x - 1.0) / 2.0) + 1)


def pyramid_levels(kernel_size: int, shape: tuple[int, int], n_levels: int | None = None,
                   min_kernel_size: int = 3) -> list[tuple[int, tuple[int, int]]]:
    """Coarse-to-fine levels ``[(kernel_size, (H, W)), ...]``, coarsest first.

    Level j from the finest scales images by ``(1/sqrt 2)^j`` and the kernel size to the
    nearest odd integer of ``kernel_size (1/sqrt 2)^j`` (at least ``min_kernel_size``);
    by default levels are added until the kernel size reaches ``min_kernel_size``.
    """
    s = _check_kernel_size(kernel_size)
    levels = []
    j = 0
    while True:
        f = 2.0 ** (-j / 2)
        ks = max(_odd(s * f), min(min_kernel_size, s))
        hs = (max(int(round(shape[0] * f)), ks), max(int(round(shape[1] * f)), ks))
        if levels and ks == levels[-1][0] and n_levels is None:
            break
        levels.append((ks, hs))
        j += 1
        if n_levels is not None and j >= n_levels:
            break
        if n_levels is None and ks <= min_kernel_size:
            break
    return levels[::-1]


def _resize_images(y: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    from skimage.transform import resize

    if tuple(y.shape[-2:]) == tuple(shape):
        return y
    moved = np.moveaxis(y, 0, -1)
    out = resize(moved, shape, order=1, mode="constant", cval=0.0, anti_aliasing=True,
                 preserve_range=True)
    return np.ascontiguousarray(np.moveaxis(out, -1, 0))


def _resize_kernel(kernel: np.ndarray, size: int) -> np.ndarray:
    from skimage.transform import resize

    if kernel.shape == (size, size):
        return kernel
    k = resize(kernel, (size, size), order=1, mode="constant", cval=0.0, anti_aliasing=False)
    k = np.maximum(k, 0.0)
    return k / k.sum()


def gradient_sparsity(x: np.ndarray) -> float:
    """Normalised sparsity ``|grad x|_1 / |grad x|_2`` of all [-1 1] differences of the
    images x (..., H, W) (Krishnan et al. 2011): lower means sharper, fewer ringing
    gradients; insensitive to the intensity scale."""
    g = np.concatenate([np.diff(x, axis=-1).ravel(), np.diff(x, axis=-2).ravel()])
    norm = float(np.sqrt(np.sum(g**2)))
    return float(np.sum(np.abs(g)) / norm) if norm > 0 else 0.0


def _em_step(y, kernel, mu, eta, prior, *, covariance, constraint, cg_tol, cg_maxiter):
    """One EM iteration at fixed eta: E-step (``mu`` by CG, covariance approximation),
    exact M-step for the kernel.

    Returns ``(kernel, mu, objective, cg_iterations)``; ``objective`` is
    :func:`em_objective` after the E-step, before the M-step; it does not decrease over
    iterations for ``covariance="meanfield"``.
    """
    s = kernel.shape[0]
    shape = y.shape[-2:]
    mu, cg = estep_mean(y, kernel, eta, prior, x0=mu, tol=cg_tol, maxiter=cg_maxiter)
    var = estep_variance(kernel, shape, eta, prior)
    objective = em_objective(y, kernel, mu, var, eta, prior)
    if covariance == "meanfield":
        A, b = mstep_system(y, mu, var, s)
    elif covariance == "stationary":
        autocov = stationary_covariance(kernel, shape, eta, prior, s - 1)
        A, b = mstep_system(y, mu, None, s, autocov=autocov)
    else:
        raise GmmRestoreError(f"unknown covariance '{covariance}'; expected one of "
                              f"{', '.join(COVARIANCES)}")
    kernel = solve_kernel_qp(A, b, constraint=constraint).reshape(s, s)
    return kernel, mu, objective, cg["iterations"]


def estimate_kernel(
    images: np.ndarray,
    kernel_size: int,
    *,
    noise_schedule: Sequence[float] = DEFAULT_NOISE_SCHEDULE,
    noise_floor: float | str | None = "auto",
    prior_std: float = 0.3,
    prior_images: np.ndarray | None = None,
    n_iter: int = 5,
    n_levels: int | None = None,
    init_std: float | None = None,
    init_kernel: np.ndarray | None = None,
    covariance: str = "stationary",
    constraint: str = "simplex",
    try_flip: bool = True,
    flip_iter: int = 3,
    flip_criterion: str = "sparsity",
    cg_tol: float = 1e-4,
    cg_maxiter: int = 200,
    seed: int = 0,
    callback: Callable[[dict], None] | None = None,
) -> tuple[np.ndarray, dict]:
    """Estimate one blur kernel shared by a batch of blurred images (MAP_k by EM).

    Parameters
    ----------
    images : (n, H, W) or (H, W)
        Blurred, noisy images (zero-boundary "same" convolution, see module docstring).
        All images pool their statistics in every M-step.
    kernel_size : int
        Odd size s of the estimated (s, s) kernel.
    noise_schedule : sequence of float
        Decreasing values of ``eta`` run in turn (``n_iter`` EM iterations each) at every
        pyramid level; values below the noise floor are clipped to it (duplicates dropped).
    noise_floor : float, "auto" or None
        Lower bound for ``eta``: a number, ``"auto"`` (estimated from the images,
        :func:`estimate_noise_sigma`), or None.
    prior_std : float
        Std of the seed's Gaussian prior on image differences (used when
        ``prior_images`` is None).
    prior_images : (m, H', W'), optional
        Sharp training images (never the images being restored): the prior is then a
        :class:`SpectralPrior` learned from them, at every pyramid level from the
        training images resized like the data.  Their size must equal the data's.
    n_iter : int
        EM iterations per value of ``eta``.
    n_levels : int, optional
        Pyramid levels (default: down to a 3 x 3 kernel).
    init_std : float, optional
        Std (pixels) of the Gaussian initial kernel at the coarsest level (default: a
        quarter of its size, at least 0.5).
    init_kernel : (s0, s0), optional
        Initial kernel instead (resized to the coarsest level's size).
    covariance : {"stationary", "meanfield"}
        Posterior covariance used by the M-step (module docstring).
    constraint : {"simplex", "nnls"}
        M-step constraint, see :func:`solve_kernel_qp`.
    try_flip, flip_iter, flip_criterion
        At the end of every level, if the kernel is not centro-symmetric, run it and its
        180-degree rotation for ``flip_iter`` iterations at the last eta each and keep the
        better: ``"sparsity"`` (default), the one whose posterior mean has the sparser
        gradients (:func:`gradient_sparsity`, lower is sharper: a wrongly oriented kernel
        leaves ringing), or ``"objective"``, the higher :func:`em_objective`.  A Gaussian
        prior sees only the power spectrum, so the objective barely tells the two apart.
    cg_tol, cg_maxiter : CG settings of the E-step.
    seed : int
        Recorded for reproducibility; the algorithm itself is deterministic.
    callback : callable, optional
        Called after every M-step with a dict (level, eta, iteration, kernel, objective).

    Returns
    -------
    kernel : (s, s) non-negative, sums to 1, centre of mass at the middle pixel.
    info : dict
        ``objective`` (one record per EM iteration: level, eta, iteration, objective per
        pixel, cg_iterations), ``levels`` ([(kernel_size, H, W)]), ``flips``,
        ``noise_floor``, ``noise_schedule`` (the etas used), ``prior``, ``seconds``,
        ``n_images``, ``seed``.
    """
    t0 = time.perf_counter()
    y = _as_batch(images, "images")
    s = _check_kernel_size(kernel_size)
    if n_iter < 1:
        raise GmmRestoreError(f"n_iter must be >= 1, got {n_iter}")
    if covariance not in COVARIANCES:
        raise GmmRestoreError(f"unknown covariance '{covariance}'; expected one of "
                              f"{', '.join(COVARIANCES)}")
    if flip_criterion not in ("sparsity", "objective"):
        raise GmmRestoreError(f"unknown flip criterion '{flip_criterion}'; expected "
                              "'sparsity' or 'objective'")
    schedule = [float(v) for v in noise_schedule]
    if not schedule or any(not v > 0 for v in schedule):
        raise GmmRestoreError(f"noise schedule must be a non-empty list of positive values, "
                              f"got {list(noise_schedule)}")
    if prior_images is None:
        gradient_prior = GradientPrior(prior_std)
    else:
        prior_images = _as_batch(prior_images, "prior images")
        if prior_images.shape[1:] != y.shape[1:]:
            raise GmmRestoreError(f"prior images are {prior_images.shape[1]}x"
                                  f"{prior_images.shape[2]}, the blurred images "
                                  f"{y.shape[1]}x{y.shape[2]}: sizes must match")
    if noise_floor == "auto":
        floor = estimate_noise_sigma(y)
    elif noise_floor is None:
        floor = 0.0
    else:
        floor = float(noise_floor)
    etas: list[float] = []
    for v in schedule:
        v = max(v, floor)
        if not etas or v < etas[-1] * (1 - 1e-9):
            etas.append(v)
    levels = pyramid_levels(s, y.shape[-2:], n_levels)
    log.info("blind kernel estimation: %d images %dx%d, kernel %dx%d, levels %s, "
             "eta %s (floor %.4g), %s prior", len(y), y.shape[1], y.shape[2], s, s,
             [ks for ks, _ in levels], [round(e, 4) for e in etas], floor,
             "gradient" if prior_images is None else "spectral")
    opts = {"covariance": covariance, "constraint": constraint, "cg_tol": cg_tol,
            "cg_maxiter": cg_maxiter}

    ks0 = levels[0][0]
    if init_kernel is not None:
        kernel = np.maximum(np.asarray(init_kernel, dtype=np.float64), 0.0)
        if kernel.ndim != 2 or not kernel.sum() > 0:
            raise GmmRestoreError("init_kernel: expected a 2-D kernel with positive mass")
        kernel = _resize_kernel(kernel / kernel.sum(), ks0)
    else:
        kernel = _gaussian(ks0, init_std if init_std is not None else max(0.5, ks0 / 4))
    history: list[dict] = []
    flips: list[bool] = []
    mu = None
    for li, (ks, shape) in enumerate(levels):
        yl = _resize_images(y, shape)
        if prior_images is None:
            prior = gradient_prior
        else:
            prior = SpectralPrior.from_images(_resize_images(prior_images, shape))
        kernel = _resize_kernel(kernel, ks)
        mu = None if mu is None else _resize_images(mu, shape)
        npix = yl.size
        for eta in etas:
            for it in range(n_iter):
                kernel, mu, obj, cg_it = _em_step(yl, kernel, mu, eta, prior, **opts)
                record = {"level": li, "eta": eta, "iteration": it, "objective": obj / npix,
                          "cg_iterations": cg_it}
                history.append(record)
                log.debug("level %d eta %.4g iter %d: objective/pixel %.6f, CG %d", li, eta,
                          it, obj / npix, cg_it)
                if callback is not None:
                    callback({**record, "kernel": kernel})
        kernel = recenter_kernel(kernel)
        flipped = False
        if try_flip and kernel_error(kernel, kernel[::-1, ::-1]) > 0.05:
            trials = []
            for cand in (kernel, kernel[::-1, ::-1].copy()):
                k_c, mu_c = cand, None
                for _ in range(flip_iter):
                    k_c, mu_c, _, _ = _em_step(yl, k_c, mu_c, etas[-1], prior, **opts)
                # the score of the final kernel needs one more E-step
                _, mu_c, obj, _ = _em_step(yl, k_c, mu_c, etas[-1], prior, **opts)
                score = -gradient_sparsity(mu_c) if flip_criterion == "sparsity" \
                    else obj / npix
                trials.append((score, k_c, mu_c))
            flipped = trials[1][0] > trials[0][0]
            _, kernel, mu = trials[1] if flipped else trials[0]
            kernel = recenter_kernel(kernel)
            log.info("level %d: flip check (%s), score %.6g as is vs %.6g rotated: %s",
                     li, flip_criterion, trials[0][0], trials[1][0],
                     "rotated" if flipped else "kept")
        flips.append(flipped)
        log.info("level %d/%d: kernel %dx%d on %dx%d images, %.1f s", li + 1, len(levels),
                 ks, ks, shape[0], shape[1], time.perf_counter() - t0)
    info = {
        "objective": history,
        "levels": [(ks, sh[0], sh[1]) for ks, sh in levels],
        "flips": flips,
        "noise_floor": floor,
        "noise_schedule": etas,
        "prior": f"gradient(std={prior_std:g})" if prior_images is None
        else f"spectral({len(prior_images)} images)",
        "seconds": time.perf_counter() - t0,
        "n_images": len(y),
        "seed": seed,
    }
    return kernel, info


def _gaussian(size: int, std: float) -> np.ndarray:
    r = np.arange(size) - size // 2
    g = np.exp(-0.5 * (r / std) ** 2)
    k = np.outer(g, g)
    return k / k.sum()
