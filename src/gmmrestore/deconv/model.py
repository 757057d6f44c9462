"""Observation model of blind deconvolution: convolution helpers (zero-boundary "same"
model), shapes and batches, difference operators, noise level estimation."""

from __future__ import annotations

import logging

import numpy as np
from scipy import fft as sfft
from scipy import signal

from ..h5io import GmmRestoreError
from ..operators import blur, blur_adjoint

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
