"""Blind kernel estimation of a photograph by alternating MAP with an L0 gradient prior.

The estimator of Xu, Zheng & Jia (2013) and Pan et al. (2014, gradient term only), coarse
to fine (docs/model.md, "Blind deblurring of photographs"):

* **x-step**: ``min_x |k * x - y|^2 + lam |grad x|_0`` by half-quadratic splitting: for
  ``beta = 2 lam, 2 kappa lam, ...`` up to ``beta_max``, the auxiliary gradients ``g`` are
  ``grad x`` hard-thresholded where ``|grad x|^2 < lam / beta`` and
  ``x = (K^T K + beta D^T D)^{-1} (K^T y + beta D^T g)``, one division in the Fourier
  domain.  The result is a sharp, piecewise-smooth image whose few strong edges drive the
  kernel step; that is why a MAP estimate with this prior does not collapse to the
  no-blur solution as one with a convex prior does.
* **k-step**: ``min_k sum_f |f * y - k * (f * x)|^2 + ridge |k|^2`` over the simplex
  (``k >= 0, sum k = 1``), with the exact valid model of :mod:`.valid` (nothing outside
  the photograph's frame assumed), then taps under ``kernel_threshold`` of the largest are
  removed and the kernel is re-centred, only as far as at most ``recenter_max_lost`` of
  its mass leaves the support (1, the default: the full shift; the TV estimator's
  refinement uses 0.02, because a camera-shake path can fill the support with its centre
  of mass off the middle, and the full shift cuts its end off at every step).

The Fourier x-step needs a periodic image: the photograph is extended by a smooth
blend of its reflections across the wrap (:func:`periodic_extend`), a band wide enough
for the kernel, so its frame adds no false edges.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import numpy as np
from scipy import fft as sfft

from ..h5io import GmmRestoreError
from ..operators import gaussian_kernel
from .mstep import solve_kernel_simplex_pg
from .pyramid import _resize_kernel, pyramid_levels
from .scores import recenter_kernel
from .sparse import derivative_images
from .sparse_pyramid import check_photograph, clean_kernel, resize_photo
from .valid import irfft2_rows, valid_mstep_system

log = logging.getLogger("gmmrestore.deconv")


@dataclass(frozen=True)
class L0Settings:
    """Settings of :func:`estimate_kernel_l0`.

    lam : L0 weight at the coarsest level (intensities in [0, 1]); divided by ``lam_decay``
        after every (x, k) alternation, down to ``lam_min`` (finer levels see finer edges).
    n_iter : (x-step, k-step) alternations per pyramid level.
    kappa, beta_max : the half-quadratic splitting's schedule of ``beta`` (x-step).
    kernel_ridge : weight of ``|k|^2`` in the k-step (the squared derivatives are summed
        over the image, not averaged).
    kernel_threshold : taps below this fraction of the largest are set to 0 after every
        k-step.
    recenter_max_lost : the re-centring after every k-step stops before more than this
        fraction of the kernel's mass leaves the support (:func:`.scores.recenter_kernel`).
    init_std : std (pixels) of the Gaussian kernel at the coarsest level.
    n_levels : pyramid levels (default: down to a 3 x 3 kernel).
    """

    lam: float = 4e-3
    lam_min: float = 1e-3
    lam_decay: float = 1.1
    n_iter: int = 5
    kappa: float = 2.0
    beta_max: float = 1e5
    kernel_ridge: float = 2.0
    kernel_threshold: float = 0.05
    recenter_max_lost: float = 1.0
    init_std: float = 0.7
    n_levels: int | None = None

    def __post_init__(self):
        if not (self.lam > 0 and 0 < self.lam_min <= self.lam and self.lam_decay >= 1
                and self.n_iter >= 1 and self.kappa > 1 and self.beta_max > 2 * self.lam
                and self.kernel_ridge >= 0 and 0 <= self.kernel_threshold < 1
                and 0 <= self.recenter_max_lost <= 1 and self.init_std > 0):
            raise GmmRestoreError(f"L0 settings out of range: {self}")


def periodic_extend(y: np.ndarray, pad: int | tuple[int, int]) -> np.ndarray:
    """Extend an image by ``pad`` rows at the bottom and columns on the right so it is
    smooth across the periodic wrap.

    Column ``j`` of the band blends the reflection of the right edge (weight 1 at the
    photograph, raised-cosine down to 0) with the reflection of the left edge seen across
    the wrap (rows likewise).  y : (H, W);  pad : int or (rows, columns), each at most
    its axis's size - 2.  Returns (H + rows, W + columns) whose top-left (H, W) block is y.
    """
    y = np.asarray(y, dtype=np.float64)
    rows, cols = (pad, pad) if np.isscalar(pad) else pad
    for band, size in ((rows, y.shape[0]), (cols, y.shape[1])):
        if band < 1 or band > size - 2:
            raise GmmRestoreError(f"periodic_extend: band of {band} pixels for an image of "
                                  f"{y.shape[0]}x{y.shape[1]} (need 1 <= band <= size - 2)")

    def extend_columns(z, band):
        w = z.shape[1]
        j = np.arange(band)
        fade = 0.5 * (1.0 + np.cos(np.pi * (j + 1) / (band + 1)))
        blend = z[:, w - 2 - j] * fade + z[:, band - j] * (1.0 - fade)
        return np.concatenate([z, blend], axis=1)

    return extend_columns(extend_columns(y, cols).T, rows).T


def periodic_band(shape: tuple[int, int], kernel_size: int) -> tuple[int, int]:
    """Band widths for :func:`periodic_extend`: at least twice the kernel size, so the
    extended sizes are fast FFT lengths, at most the image size - 2."""
    return tuple(min(sfft.next_fast_len(n + 2 * kernel_size, real=True) - n, n - 2)
                 for n in shape)


def kernel_otf(kernel: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Real 2-D DFT (``scipy.fft.rfft2`` layout) of ``kernel`` (odd sizes, centre at the
    middle tap) embedded in a periodic grid of ``shape`` with its centre at (0, 0):
    ``irfft2(kernel_otf(k) * rfft2(x))`` is the circular convolution of x with k, centred."""
    k = np.asarray(kernel, dtype=np.float64)
    grid = np.zeros(shape)
    grid[:k.shape[0], :k.shape[1]] = k
    return sfft.rfft2(np.roll(grid, (-(k.shape[0] // 2), -(k.shape[1] // 2)), axis=(0, 1)))


def forward_differences(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Circular ``x[i, j+1] - x[i, j]`` and ``x[i+1, j] - x[i, j]``; x (H, W)."""
    return np.roll(x, -1, axis=1) - x, np.roll(x, -1, axis=0) - x


def forward_differences_adjoint(gh: np.ndarray, gv: np.ndarray) -> np.ndarray:
    """Adjoint of :func:`forward_differences`: ``D_h^T gh + D_v^T gv``."""
    return np.roll(gh, 1, axis=1) - gh + np.roll(gv, 1, axis=0) - gv


def l0_deconvolve(y_periodic: np.ndarray, kernel: np.ndarray, lam: float,
                  kappa: float = 2.0, beta_max: float = 1e5) -> np.ndarray:
    """``argmin_x |k * x - y|^2 + lam |grad x|_0`` (circular model) by half-quadratic
    splitting (module docstring).  y_periodic : (H, W) periodic image; returns (H, W)."""
    y = np.asarray(y_periodic, dtype=np.float64)
    fk = kernel_otf(kernel, y.shape)
    data_num = np.conj(fk) * sfft.rfft2(y)
    data_den = np.abs(fk) ** 2
    grad_den = np.abs(kernel_otf(np.array([[1.0, -1.0, 0.0]]), y.shape)) ** 2 \
        + np.abs(kernel_otf(np.array([[1.0], [-1.0], [0.0]]), y.shape)) ** 2
    x = y.copy()
    beta = 2.0 * lam
    while beta < beta_max:
        gh, gv = forward_differences(x)
        small = gh * gh + gv * gv < lam / beta
        gh[small] = 0.0
        gv[small] = 0.0
        x = hqs_image_step(data_num, data_den, grad_den, gh, gv, beta)
        beta *= kappa
    return x


def hqs_image_step(data_num, data_den, grad_den, gh, gv, beta) -> np.ndarray:
    """``x = (K^T K + beta D^T D)^{-1} (K^T y + beta D^T g)`` in the Fourier domain:
    data_num = conj(K) Y, data_den = |K|^2, grad_den = |Dh|^2 + |Dv|^2 (``rfft2`` layout),
    gh, gv the auxiliary gradients (H, W)."""
    num = data_num + beta * sfft.rfft2(forward_differences_adjoint(gh, gv))
    return irfft2_rows(num / (data_den + beta * grad_den), gh.shape)


def kernel_from_latent(y: np.ndarray, latent: np.ndarray, kernel_size: int,
                       ridge: float, threshold: float, max_lost: float = 1.0,
                       k0: np.ndarray | None = None) -> np.ndarray:
    """The k-step: kernel on the simplex fitting the derivatives of ``y`` from those of
    the latent image (valid model), then thresholded and re-centred (losing at most
    ``max_lost`` of its mass, :func:`.scores.recenter_kernel`).

    y : (H, W) photograph;  latent : (H + s - 1, W + s - 1) scene under it (valid model);
    returns (s, s).
    """
    s = int(kernel_size)
    A, b = valid_mstep_system(derivative_images(y), derivative_images(latent), None, s)
    A[np.diag_indices_from(A)] += ridge
    start = np.full(s * s, 1.0 / (s * s)) if k0 is None else k0.ravel()
    k = solve_kernel_simplex_pg(A, b, start, 300).reshape(s, s)
    return recenter_kernel(clean_kernel(k, threshold), max_lost)


def scene_from_periodic(x_periodic: np.ndarray, image_shape: tuple[int, int],
                        kernel_size: int) -> np.ndarray:
    """The valid model's scene (H + s - 1, W + s - 1) around a photograph held at the
    top-left (H, W) block of a periodic latent image (the band wraps to the left/top)."""
    c = (int(kernel_size) - 1) // 2
    h, w = image_shape
    s = int(kernel_size)
    return np.roll(x_periodic, (c, c), axis=(0, 1))[:h + s - 1, :w + s - 1]


def l0_alternations(y: np.ndarray, kernel: np.ndarray, lam: float, n_iter: int,
                    settings: L0Settings) -> tuple[np.ndarray, float]:
    """``n_iter`` (x-step, k-step) alternations on one photograph, the weight divided by
    ``lam_decay`` after each, down to ``lam_min``.

    y : (H, W) photograph;  kernel : (s, s) start.  Returns the kernel and the weight.
    """
    st = settings
    s = kernel.shape[0]
    yp = periodic_extend(y, periodic_band(y.shape, s))
    for _ in range(n_iter):
        x = l0_deconvolve(yp, kernel, lam, st.kappa, st.beta_max)
        kernel = kernel_from_latent(y, scene_from_periodic(x, y.shape, s), s,
                                    st.kernel_ridge, st.kernel_threshold,
                                    st.recenter_max_lost)
        lam = max(lam / st.lam_decay, st.lam_min)
    return kernel, lam


def estimate_kernel_l0(y: np.ndarray, kernel_size: int, settings: L0Settings | None = None
                       ) -> tuple[np.ndarray, dict]:
    """Estimate the blur kernel of one photograph (L0 gradient prior, alternating MAP).

    y : (H, W) blurred photograph in [0, 1] (valid model: any boundary);  kernel_size :
    odd size s.  Returns the kernel (s, s) (non-negative, sums to 1, centred) and an info
    dict with ``levels``, ``lam`` (the final weight) and ``seconds``.
    """
    t0 = time.perf_counter()
    st = settings or L0Settings()
    # the periodic band needs 2 pixels more than the sparse EM's pyramid
    y, s = check_photograph(y, kernel_size, 2, "estimate_kernel_l0")
    levels = pyramid_levels(s, y.shape, st.n_levels)
    kernel = gaussian_kernel(levels[0][0], st.init_std)
    lam = st.lam
    for li, (ks, shape) in enumerate(levels):
        kernel, lam = l0_alternations(resize_photo(y, shape), _resize_kernel(kernel, ks),
                                      lam, st.n_iter, st)
        log.info("L0 level %d/%d: kernel %dx%d on %dx%d, %.1f s", li + 1, len(levels), ks, ks,
                 shape[0], shape[1], time.perf_counter() - t0)
    info = {"levels": [(ks, sh[0], sh[1]) for ks, sh in levels], "lam": lam,
            "seconds": time.perf_counter() - t0}
    return kernel, info
