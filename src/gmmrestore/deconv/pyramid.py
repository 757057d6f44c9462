"""Coarse-to-fine driver of the Gaussian-prior blind EM (the seed's method)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from ..h5io import GmmRestoreError
from ..operators import gaussian_kernel
from .gaussian import em_objective, estep_mean, estep_variance, stationary_covariance
from .model import _as_batch, _check_kernel_size, estimate_noise_sigma
from .mstep import mstep_system, project_kernel, solve_kernel_qp
from .priors import GradientPrior, SpectralPrior
from .scores import kernel_error, recenter_kernel

log = logging.getLogger("gmmrestore.deconv")

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
    return project_kernel(k)


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


@dataclass(frozen=True)
class GaussianBlindSettings:
    """Settings of :func:`estimate_kernel` (the Gaussian-prior blind EM).

    noise_schedule : decreasing values of ``eta`` run in turn (``n_iter`` EM iterations
        each) at every pyramid level; values below the noise floor are clipped to it
        (duplicates dropped).
    noise_floor : lower bound for ``eta``: a number, ``"auto"`` (estimated from the images,
        :func:`estimate_noise_sigma`), or None.
    prior_std : std of the seed's Gaussian prior on image differences (used without prior
        images).
    n_iter : EM iterations per value of ``eta``.
    n_levels : pyramid levels (None: down to a 3 x 3 kernel).
    init_std : std (pixels) of the Gaussian initial kernel at the coarsest level (None: a
        quarter of its size, at least 0.5).
    covariance : {"stationary", "meanfield"}, the posterior covariance of the M-step.
    constraint : {"simplex", "nnls"}, the M-step constraint (:func:`solve_kernel_qp`).
    try_flip, flip_iter, flip_criterion : at the end of every level, if the kernel is not
        centro-symmetric, run it and its 180-degree rotation for ``flip_iter`` iterations at
        the last eta each and keep the better: ``"sparsity"``, the one whose posterior mean
        has the sparser gradients (:func:`gradient_sparsity`, lower is sharper: a wrongly
        oriented kernel leaves ringing), or ``"objective"``, the higher
        :func:`em_objective` (a Gaussian prior sees only the power spectrum, so the
        objective barely tells the two apart).
    cg_tol, cg_maxiter : CG settings of the E-step.
    seed : recorded for reproducibility; the algorithm itself is deterministic.
    """

    noise_schedule: tuple[float, ...] = DEFAULT_NOISE_SCHEDULE
    noise_floor: float | str | None = "auto"
    prior_std: float = 0.3
    n_iter: int = 5
    n_levels: int | None = None
    init_std: float | None = None
    covariance: str = "stationary"
    constraint: str = "simplex"
    try_flip: bool = True
    flip_iter: int = 3
    flip_criterion: str = "sparsity"
    cg_tol: float = 1e-4
    cg_maxiter: int = 200
    seed: int = 0


def estimate_kernel(
    images: np.ndarray,
    kernel_size: int,
    settings: GaussianBlindSettings | None = None,
    *,
    prior_images: np.ndarray | None = None,
    init_kernel: np.ndarray | None = None,
    callback: Callable[[dict], None] | None = None,
) -> tuple[np.ndarray, dict]:
    """Estimate one blur kernel shared by a batch of blurred images (MAP_k by EM).

    images : (n, H, W) or (H, W), blurred and noisy (zero-boundary "same" convolution);
        all images pool their statistics in every M-step.
    kernel_size : odd size s of the estimated (s, s) kernel.
    settings : :class:`GaussianBlindSettings` (default: its defaults).
    prior_images : (m, H, W), optional sharp training images (never the images being
        restored): the prior is then a :class:`SpectralPrior` learned from them, at every
        pyramid level from the training images resized like the data.
    init_kernel : (s0, s0), optional initial kernel (resized to the coarsest level's size).
    callback : called after every M-step with a dict (level, eta, iteration, kernel,
        objective).

    Returns the kernel (s, s) (non-negative, sums to 1, centre of mass at the middle pixel)
    and an info dict: ``objective`` (one record per EM iteration: level, eta, iteration,
    objective per pixel, cg_iterations), ``levels`` ([(kernel_size, H, W)]), ``flips``,
    ``noise_floor``, ``noise_schedule`` (the etas used), ``prior``, ``seconds``,
    ``n_images``, ``seed``.
    """
    st = settings or GaussianBlindSettings()
    t0 = time.perf_counter()
    y = _as_batch(images, "images")
    s = _check_kernel_size(kernel_size)
    _check_em_options(st.n_iter, st.covariance, st.flip_criterion)
    etas, floor = _noise_etas(st.noise_schedule, st.noise_floor, y)
    prior_images = _check_prior_images(prior_images, y)
    gradient_prior = GradientPrior(st.prior_std) if prior_images is None else None
    levels = pyramid_levels(s, y.shape[-2:], st.n_levels)
    log.info("blind kernel estimation: %d images %dx%d, kernel %dx%d, levels %s, "
             "eta %s (floor %.4g), %s prior", len(y), y.shape[1], y.shape[2], s, s,
             [ks for ks, _ in levels], [round(e, 4) for e in etas], floor,
             "gradient" if prior_images is None else "spectral")
    opts = {"covariance": st.covariance, "constraint": st.constraint, "cg_tol": st.cg_tol,
            "cg_maxiter": st.cg_maxiter}
    kernel = _initial_kernel(init_kernel, st.init_std, levels[0][0])
    history: list[dict] = []
    flips: list[bool] = []
    mu = None
    for li, (ks, shape) in enumerate(levels):
        yl = _resize_images(y, shape)
        prior = gradient_prior if prior_images is None \
            else SpectralPrior.from_images(_resize_images(prior_images, shape))
        kernel = _resize_kernel(kernel, ks)
        mu = None if mu is None else _resize_images(mu, shape)
        kernel, mu = _em_level(yl, kernel, mu, etas, prior, st.n_iter, opts, li, history,
                               callback)
        kernel = recenter_kernel(kernel)
        flipped = False
        if st.try_flip and kernel_error(kernel, kernel[::-1, ::-1]) > 0.05:
            flipped, kernel, mu = _flip_check(yl, kernel, etas[-1], prior, opts, st.flip_iter,
                                              st.flip_criterion, li)
        flips.append(flipped)
        log.info("level %d/%d: kernel %dx%d on %dx%d images, %.1f s", li + 1, len(levels),
                 ks, ks, shape[0], shape[1], time.perf_counter() - t0)
    info = {
        "objective": history,
        "levels": [(ks, sh[0], sh[1]) for ks, sh in levels],
        "flips": flips,
        "noise_floor": floor,
        "noise_schedule": etas,
        "prior": f"gradient(std={st.prior_std:g})" if prior_images is None
        else f"spectral({len(prior_images)} images)",
        "seconds": time.perf_counter() - t0,
        "n_images": len(y),
        "seed": st.seed,
    }
    return kernel, info


def _em_level(yl, kernel, mu, etas, prior, n_iter, opts, level, history, callback):
    """``n_iter`` EM iterations at every eta of one pyramid level (images yl (n, H, W));
    appends one record per iteration to ``history``; returns (kernel, mu)."""
    for eta in etas:
        for it in range(n_iter):
            kernel, mu, obj, cg_it = _em_step(yl, kernel, mu, eta, prior, **opts)
            record = {"level": level, "eta": eta, "iteration": it,
                      "objective": obj / yl.size, "cg_iterations": cg_it}
            history.append(record)
            log.debug("level %d eta %.4g iter %d: objective/pixel %.6f, CG %d", level, eta,
                      it, obj / yl.size, cg_it)
            if callback is not None:
                callback({**record, "kernel": kernel})
    return kernel, mu


def _check_em_options(n_iter: int, covariance: str, flip_criterion: str) -> None:
    if n_iter < 1:
        raise GmmRestoreError(f"n_iter must be >= 1, got {n_iter}")
    if covariance not in COVARIANCES:
        raise GmmRestoreError(f"unknown covariance '{covariance}'; expected one of "
                              f"{', '.join(COVARIANCES)}")
    if flip_criterion not in ("sparsity", "objective"):
        raise GmmRestoreError(f"unknown flip criterion '{flip_criterion}'; expected "
                              "'sparsity' or 'objective'")


def _noise_etas(noise_schedule: Sequence[float], noise_floor: float | str | None,
                y: np.ndarray) -> tuple[list[float], float]:
    """The schedule's values clipped below at the noise floor, duplicates dropped, and the
    floor (``"auto"``: estimated from the images y (n, H, W))."""
    schedule = [float(v) for v in noise_schedule]
    if not schedule or any(not v > 0 for v in schedule):
        raise GmmRestoreError(f"noise schedule must be a non-empty list of positive values, "
                              f"got {list(noise_schedule)}")
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
    return etas, floor


def _check_prior_images(prior_images: np.ndarray | None, y: np.ndarray) -> np.ndarray | None:
    if prior_images is None:
        return None
    prior_images = _as_batch(prior_images, "prior images")
    if prior_images.shape[1:] != y.shape[1:]:
        raise GmmRestoreError(f"prior images are {prior_images.shape[1]}x"
                              f"{prior_images.shape[2]}, the blurred images "
                              f"{y.shape[1]}x{y.shape[2]}: sizes must match")
    return prior_images


def _initial_kernel(init_kernel: np.ndarray | None, init_std: float | None,
                    size: int) -> np.ndarray:
    """The coarsest level's kernel: ``init_kernel`` resized, or a Gaussian (default std a
    quarter of the size, at least 0.5)."""
    if init_kernel is None:
        return gaussian_kernel(size, init_std if init_std is not None else max(0.5, size / 4))
    kernel = np.maximum(np.asarray(init_kernel, dtype=np.float64), 0.0)
    if kernel.ndim != 2 or not kernel.sum() > 0:
        raise GmmRestoreError("init_kernel: expected a 2-D kernel with positive mass")
    return _resize_kernel(kernel / kernel.sum(), size)


def _flip_check(yl, kernel, eta, prior, opts, flip_iter, flip_criterion, level):
    """Run the kernel and its 180-degree rotation ``flip_iter`` EM iterations at ``eta``
    and keep the better (see :func:`estimate_kernel`); returns (flipped, kernel, mu)."""
    trials = []
    for cand in (kernel, kernel[::-1, ::-1].copy()):
        k_c, mu_c = cand, None
        for _ in range(flip_iter):
            k_c, mu_c, _, _ = _em_step(yl, k_c, mu_c, eta, prior, **opts)
        # the score of the final kernel needs one more E-step
        _, mu_c, obj, _ = _em_step(yl, k_c, mu_c, eta, prior, **opts)
        score = -gradient_sparsity(mu_c) if flip_criterion == "sparsity" else obj / yl.size
        trials.append((score, k_c, mu_c))
    flipped = trials[1][0] > trials[0][0]
    _, kernel, mu = trials[1] if flipped else trials[0]
    log.info("level %d: flip check (%s), score %.6g as is vs %.6g rotated: %s",
             level, flip_criterion, trials[0][0], trials[1][0],
             "rotated" if flipped else "kept")
    return flipped, recenter_kernel(kernel), mu
