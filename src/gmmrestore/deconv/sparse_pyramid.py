"""Coarse-to-fine blind kernel estimation of a photograph under the sparse gradient prior.

Variational EM (:mod:`.sparse`) on the derivative images of one photograph with the valid
observation model (:mod:`.valid`), over a pyramid (images scaled by ``1/sqrt 2`` per
level, odd kernel sizes, the kernel and the posterior means carried up between levels),
with a decreasing noise schedule at every level clipped below at a robust estimate of the
noise of that level (:func:`estimate_noise_8bit`).  No flip check: the sparse prior sees
the phase of the kernel, so a rotated kernel has a worse free energy.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from ..h5io import GmmRestoreError
from ..operators import gaussian_kernel
from .model import _check_kernel_size
from .mstep import solve_kernel_simplex_pg
from .pyramid import _resize_kernel, pyramid_levels
from .scores import recenter_kernel
from .sparse import (
    DEFAULT_MIXTURE,
    ScaleMixture,
    VariationalState,
    derivative_images,
    free_energy,
    initial_state,
    prior_precision,
    sparse_estep,
)
from .valid import valid_mstep_system

log = logging.getLogger("gmmrestore.deconv")

#: Standard deviation of the rounding error of an 8-bit image, ``1 / (255 sqrt 12)``.
QUANTISATION_STD_8BIT = 1.0 / (255.0 * np.sqrt(12.0))


def estimate_noise_8bit(y: np.ndarray, flat_fraction: float = 0.25,
                        floor: float = QUANTISATION_STD_8BIT) -> float:
    """Noise standard deviation of (possibly 8-bit quantised) images, never below ``floor``.

    Diagonal (HH) coefficients of one Haar level, ``(a - b - c + d) / 2`` per 2 x 2 block,
    are ``N(0, sigma^2)`` for white noise; only the blocks whose LH and HL energy is in the
    lowest ``flat_fraction`` are used (away from edges; for white noise the selection does
    not bias HH).  The variance is the mean of the squared coefficients without their top
    1 % (robust to leaked edges), divided by that trimming's factor for a Gaussian,
    ``1 - 2 q phi(q) / 0.99`` with ``q = Phi^{-1}(0.995)``.  Unlike a median (the seed's
    :func:`.model.estimate_noise_sigma`), this is not biased by the discrete values of
    quantised images and never 0 on flat quantised areas: the rounding error itself is
    noise of std ``1 / (255 sqrt 12)``, the floor.  y : (H, W) or (n, H, W).
    """
    y = np.asarray(y, dtype=np.float64)
    y = y[None] if y.ndim == 2 else y
    h, w = (y.shape[-2] // 2) * 2, (y.shape[-1] // 2) * 2
    if h < 4 or w < 4:
        raise GmmRestoreError(f"images of {y.shape[-2]}x{y.shape[-1]} are too small to "
                              "estimate the noise level")
    z = y[:, :h, :w]
    a, b, c, d = z[:, 0::2, 0::2], z[:, 0::2, 1::2], z[:, 1::2, 0::2], z[:, 1::2, 1::2]
    hh2 = ((a - b - c + d) / 2.0).ravel() ** 2
    energy = ((a + b - c - d) ** 2 + (a - b + c - d) ** 2).ravel()
    sel = hh2[energy <= np.quantile(energy, flat_fraction)]
    kept = sel[sel <= np.quantile(sel, 0.99)]
    q = 2.5758293035489004
    factor = 1.0 - 2.0 * q * np.exp(-q * q / 2) / np.sqrt(2 * np.pi) / 0.99
    return max(float(np.sqrt(kept.mean() / factor)), float(floor))


@dataclass(frozen=True)
class SparseSettings:
    """Settings of :func:`estimate_kernel_sparse`.

    mixture : prior of the derivative pixels.
    eta_factors : noise schedule at every level, as multiples of the level's derivative
        noise floor ``sqrt(2) sigma_level`` (decreasing, ending at 1 or above).
    n_iter : EM iterations per value of eta;  e_iter : E-step updates (responsibilities,
        means, variances) before every M-step;  cg_iter : CG iterations per E-step update;
        qp_iter : iterations of the M-step's simplex solver
        (:func:`.mstep.solve_kernel_simplex_pg`, warm started, monotone).
    n_levels : pyramid levels (default: down to a 3 x 3 kernel).
    noise_sigma : noise std of the photograph (None: :func:`estimate_noise_8bit`).
    level_noise : ``"finest"`` (the photograph's noise std at every level) or
        ``"estimate"`` (estimated again on every downscaled level, lower).
    init_std : std (pixels) of the Gaussian kernel at the coarsest level.
    kernel_threshold : after every level, taps below this fraction of the largest are set
        to 0 (removes the faint halo; 0 keeps the kernel as the EM left it).
    trace : record the free energy per pixel after every M-step (costs a little).
    """

    mixture: ScaleMixture = DEFAULT_MIXTURE
    eta_factors: tuple[float, ...] = (2.0, 1.0)
    n_iter: int = 3
    e_iter: int = 3
    cg_iter: int = 12
    qp_iter: int = 100
    n_levels: int | None = None
    noise_sigma: float | None = None
    init_std: float = 0.7
    level_noise: str = "finest"
    kernel_threshold: float = 0.05
    trace: bool = False

    def __post_init__(self):
        object.__setattr__(self, "eta_factors", tuple(float(v) for v in self.eta_factors))
        f = list(self.eta_factors)
        if not f or any(not v > 0 for v in f) or any(np.diff(f) > 0):
            raise GmmRestoreError(f"sparse settings: eta_factors must be positive and "
                                  f"non-increasing, got {f}")
        if min(self.n_iter, self.e_iter, self.cg_iter) < 1:
            raise GmmRestoreError(f"sparse settings: n_iter and cg_iter must be >= 1, got "
                                  f"{self.n_iter}, {self.cg_iter}")
        if self.level_noise not in ("finest", "estimate"):
            raise GmmRestoreError(f"sparse settings: level_noise must be 'finest' or "
                                  f"'estimate', got {self.level_noise!r}")
        if self.noise_sigma is not None and not self.noise_sigma > 0:
            raise GmmRestoreError(f"sparse settings: noise_sigma must be > 0, got "
                                  f"{self.noise_sigma}")


def check_photograph(y: np.ndarray, kernel_size: int, extra: int, caller: str
                     ) -> tuple[np.ndarray, int]:
    """Check one finite (H, W) photograph of at least ``2 s + extra`` pixels a side for an
    odd kernel size s; return it as float64 and s."""
    y = np.asarray(y, dtype=np.float64)
    if y.ndim != 2 or not np.all(np.isfinite(y)):
        raise GmmRestoreError(f"{caller}: expected one finite (H, W) image, got shape "
                              f"{y.shape}")
    s = _check_kernel_size(kernel_size)
    if min(y.shape) < 2 * s + extra:
        raise GmmRestoreError(f"{caller}: image {y.shape[0]}x{y.shape[1]} is too small for a "
                              f"{s}x{s} kernel (need at least {2 * s + extra} pixels)")
    return y, s


def clean_kernel(kernel: np.ndarray, threshold: float) -> np.ndarray:
    """Set taps below ``threshold * max`` to 0 and renormalise; kernel (s, s)."""
    if threshold <= 0:
        return kernel
    out = np.where(kernel >= threshold * kernel.max(), kernel, 0.0)
    return out / out.sum()


def resize_photo(y: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Resize (..., H, W) images to ``shape`` with anti-aliasing and a reflecting border
    (a zero border would add false edges along the frame of a photograph)."""
    from skimage.transform import resize

    if tuple(y.shape[-2:]) == tuple(shape):
        return y
    moved = np.moveaxis(y.reshape((-1,) + y.shape[-2:]), 0, -1)
    out = resize(moved, shape, order=1, mode="reflect", anti_aliasing=True,
                 preserve_range=True)
    return np.moveaxis(out, -1, 0).reshape(y.shape[:-2] + tuple(shape))


def _carry_state(prev: VariationalState | None, x_shape: tuple[int, ...], factor: float,
                 mix: ScaleMixture) -> VariationalState:
    """Initial moments at a level: the previous level's means resized (derivatives scaled by
    ``factor``), prior variances."""
    state = initial_state(x_shape, mix)
    if prev is not None:
        state.mu = resize_photo(prev.mu, x_shape[1:]) * factor
        state.prec = prior_precision(state.mu**2 + state.var, mix)
    return state


def em_level(yf: np.ndarray, kernel: np.ndarray, state: VariationalState,
             etas: list[float], settings: SparseSettings, record: Callable[[dict], None]
             ) -> tuple[np.ndarray, VariationalState]:
    """Variational EM at one level: for every eta, ``n_iter`` (E-step, M-step) pairs.

    yf : (2, h, w) derivative images;  kernel : (s, s);  state on (2, h+s-1, w+s-1).
    """
    s = kernel.shape[0]
    for eta in etas:
        for it in range(settings.n_iter):
            cg = 0
            for _ in range(settings.e_iter):
                state, c = sparse_estep(yf, kernel, state, eta, settings.mixture,
                                        cg_iter=settings.cg_iter)
                cg += c
            A, b = valid_mstep_system(yf, state.mu, state.var, s)
            kernel = solve_kernel_simplex_pg(A, b, kernel.ravel(),
                                             settings.qp_iter).reshape(s, s)
            rec = {"eta": eta, "iteration": it, "cg_iterations": cg}
            if settings.trace:
                rec["free_energy"] = free_energy(yf, kernel, state.mu, state.var, eta,
                                                 settings.mixture) / yf.size
            record(rec)
    return kernel, state


def estimate_kernel_sparse(y: np.ndarray, kernel_size: int,
                           settings: SparseSettings | None = None,
                           init_kernel: np.ndarray | None = None
                           ) -> tuple[np.ndarray, dict]:
    """Estimate the blur kernel of one photograph (valid model, sparse gradient prior).

    Parameters
    ----------
    y : (H, W)  blurred photograph, intensities in [0, 1] (any boundary: only the valid
        region is modelled).
    kernel_size : odd size s of the estimated kernel.
    settings : :class:`SparseSettings`.
    init_kernel : optional initial kernel (resized to the coarsest level).

    Returns
    -------
    kernel : (s, s) non-negative, sums to 1, centre of mass at the middle pixel.
    info : dict with ``levels``, ``noise_sigma`` (per level), ``history`` (one record per
        EM iteration), ``seconds``.
    """
    t0 = time.perf_counter()
    settings = settings or SparseSettings()
    y, s = check_photograph(y, kernel_size, 0, "estimate_kernel_sparse")
    levels = pyramid_levels(s, y.shape, settings.n_levels)
    if init_kernel is None:
        kernel = gaussian_kernel(levels[0][0], settings.init_std)
    else:
        kernel = _resize_kernel(np.asarray(init_kernel, dtype=np.float64), levels[0][0])
    history: list[dict] = []
    sigmas: list[float] = []
    sigma_fine = settings.noise_sigma if settings.noise_sigma is not None \
        else estimate_noise_8bit(y)
    state = None
    prev_h = None
    for li, (ks, shape) in enumerate(levels):
        yl = resize_photo(y, shape)
        sigma = sigma_fine if settings.level_noise == "finest" else estimate_noise_8bit(yl)
        sigmas.append(sigma)
        yf = derivative_images(yl)
        kernel = _resize_kernel(kernel, ks)
        x_shape = (2, yf.shape[1] + ks - 1, yf.shape[2] + ks - 1)
        factor = 1.0 if prev_h is None else prev_h / shape[0]
        state = _carry_state(state, x_shape, factor, settings.mixture)
        etas = [f * np.sqrt(2.0) * sigma for f in settings.eta_factors]

        def record(rec, li=li, ks=ks):
            history.append({"level": li, "kernel_size": ks, **rec})

        kernel, state = em_level(yf, kernel, state, etas, settings, record)
        kernel = recenter_kernel(clean_kernel(kernel, settings.kernel_threshold))
        prev_h = shape[0]
        log.info("sparse level %d/%d: kernel %dx%d on %dx%d, sigma %.4g, %.1f s", li + 1,
                 len(levels), ks, ks, shape[0], shape[1], sigma, time.perf_counter() - t0)
    info = {"levels": [(ks, sh[0], sh[1]) for ks, sh in levels], "noise_sigma": sigmas,
            "history": history, "seconds": time.perf_counter() - t0}
    return kernel, info
