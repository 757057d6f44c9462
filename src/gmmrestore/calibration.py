"""Per-image gain and offset and the noise level of a paired set, from the data and the prior.

A paired set's corrupted images are often saved rescaled, ``c_i = a_i y_i + b_i`` with an
unknown gain ``a_i`` and offset ``b_i`` per image (the seed's author min-max rescaled every
image), where ``y_i = W z_i + n_i`` is the observation on the originals' scale and the
noise ``n`` has an unknown std ``sigma``.  This module estimates ``(a_i, b_i)`` and one
``sigma`` for the set by maximising the marginal likelihood of the observed patches under
the patch prior (a Gaussian mixture over clean patches ``z``) and the known patch blur
``W``; the clean originals are never used.

Model (derivation in docs/model.md, "Paired sets: per-image gain, offset and noise
level").  Write ``alpha = 1 / a`` and ``beta = -b / a``, so that ``y = alpha c + beta``.
Under component k an observed patch ``y`` is ``N(W mu_k, C_k)``, ``C_k = W Sigma_k W^T + E +
sigma^2 I`` (``E``: the optional boundary term of
:func:`~gmmrestore.restore.mapk.boundary_noise_covariance`).  With ``G_k = W Sigma_k W^T
+ E = U_k diag(lambda_k) U_k^T`` every ``C_k`` shares the eigenvectors ``U_k`` for all
sigma, so the log-likelihood of the patches ``c_p`` of image i,

    sum_p log sum_k pi_k N(alpha_i c_p + beta_i; W mu_k, C_k) + P d log alpha_i

(the last term: the Jacobian of ``c -> y``, P patches of d pixels), is maximised by EM in
the eigenbases.  The E-step gives responsibilities and, per image and component, the
moments of the projected patches ``U_k^T c_p``; the M-step then has a closed form for
``(alpha_i, beta_i)`` (a quadratic in alpha) and a one-dimensional maximisation for
``sigma^2``.  Each step cannot lower the likelihood (generalised EM).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
from scipy import optimize
from scipy.special import logsumexp

from .h5io import GmmRestoreError
from .patches import check_patch_size

log = logging.getLogger("gmmrestore.calibration")

LOG_2PI = float(np.log(2 * np.pi))


@dataclass(frozen=True)
class CalibrationSettings:
    """Settings of :func:`estimate_calibration`.

    max_iter : EM iterations at most.
    tol : stop when the mean log-likelihood per pixel rises by less than this.
    stride : patch stride (1: every patch; 2: a quarter of them, about 4x faster).
    images_per_chunk : images whose patches are projected at once (memory: about
        ``images_per_chunk * P * K * d * 8`` bytes).
    sigma_bounds : the noise std is searched in this interval (y units).
    """

    max_iter: int = 200
    tol: float = 1e-7
    stride: int = 1
    images_per_chunk: int = 16
    sigma_bounds: tuple[float, float] = (1e-4, 1.0)


@dataclass(frozen=True)
class ObservationModel:
    """The prior seen through W, in the eigenbases of ``G_k = W Sigma_k W^T + E``.

    log_weights : (K,);  eigvals : (K, d) ``lambda_k``;  eigvecs : (K, d, d) ``U_k``
    (columns);  proj_ones : (K, d) ``U_k^T 1``;  proj_means : (K, d) ``U_k^T W mu_k``.
    """

    log_weights: np.ndarray
    eigvals: np.ndarray
    eigvecs: np.ndarray
    proj_ones: np.ndarray
    proj_means: np.ndarray

    @classmethod
    def build(cls, weights: np.ndarray, means: np.ndarray, covariances: np.ndarray,
              W: np.ndarray, extra_cov: np.ndarray | None = None) -> ObservationModel:
        """weights (K,), means (K, d), covariances (K, d, d): the clean-patch prior;
        W (d, d); extra_cov (d, d) or None."""
        W = np.asarray(W, dtype=np.float64)
        G = W @ np.asarray(covariances, dtype=np.float64) @ W.T
        if extra_cov is not None:
            G = G + np.asarray(extra_cov, dtype=np.float64)
        G = 0.5 * (G + G.transpose(0, 2, 1))
        eigvals, eigvecs = np.linalg.eigh(G)
        eigvals = np.maximum(eigvals, 0.0)
        blurred = np.asarray(means, dtype=np.float64) @ W.T
        with np.errstate(divide="ignore"):
            log_weights = np.log(np.asarray(weights, dtype=np.float64))
        return cls(log_weights, eigvals, eigvecs, eigvecs.sum(axis=1),
                   np.einsum("kdj,kd->kj", eigvecs, blurred))

    @property
    def d(self) -> int:
        return int(self.eigvals.shape[1])


@dataclass(frozen=True)
class Calibration:
    """Result of :func:`estimate_calibration`: ``c_i ≈ gain_i y_i + offset_i``.

    gain, offset : (n,);  sigma : noise std in y units;  log_likelihood : mean per pixel
    of the observed (c) patches;  history : (n_iter,) that value per iteration.
    """

    gain: np.ndarray
    offset: np.ndarray
    sigma: float
    log_likelihood: float
    n_iter: int
    converged: bool
    history: np.ndarray

    def apply(self, corrupted: np.ndarray) -> np.ndarray:
        """Observations y (n, H, W) = (c - offset) / gain of corrupted images c (n, H, W)."""
        c = np.asarray(corrupted, dtype=np.float64)
        return (c - self.offset[:, None, None]) / self.gain[:, None, None]


def image_patches(images: np.ndarray, m: int, stride: int = 1) -> np.ndarray:
    """m x m patches of each image at the given stride: (n, P, m*m)."""
    from numpy.lib.stride_tricks import sliding_window_view

    x = np.asarray(images, dtype=np.float64)
    check_patch_size(m, x.shape[1:])
    windows = sliding_window_view(x, (m, m), axis=(1, 2))[:, ::stride, ::stride]
    return windows.reshape(len(x), -1, m * m)


@dataclass
class _Moments:
    """Per image i and component k: R (n, K) = sum_p r_pk, M1 (n, K, d) = sum_p r_pk zc_pk,
    M2 (n, K, d) = sum_p r_pk zc_pk**2 (zc = U_k^T c_p); loglik (n,) of the c patches."""

    R: np.ndarray
    M1: np.ndarray
    M2: np.ndarray
    loglik: np.ndarray


def _e_step(patches: np.ndarray, alpha: np.ndarray, beta: np.ndarray, s2: float,
            model: ObservationModel, images_per_chunk: int) -> _Moments:
    """Responsibilities under the current (alpha, beta, s2) and the moments they weight.

    patches : (n, P, d) observed c patches; alpha, beta : (n,)."""
    n, P, d = patches.shape
    K = len(model.log_weights)
    var = model.eigvals + s2  # (K, d)
    w = 1.0 / var
    const = model.log_weights - 0.5 * (np.log(var).sum(axis=1) + d * LOG_2PI)  # (K,)
    basis = model.eigvecs.transpose(1, 0, 2).reshape(d, K * d)
    R, M1, M2 = np.empty((n, K)), np.empty((n, K, d)), np.empty((n, K, d))
    loglik = np.empty(n)
    for lo in range(0, n, images_per_chunk):
        hi = min(lo + images_per_chunk, n)
        zc = (patches[lo:hi].reshape(-1, d) @ basis).reshape(hi - lo, P, K, d)
        z = (alpha[lo:hi, None, None, None] * zc + beta[lo:hi, None, None, None]
             * model.proj_ones - model.proj_means)
        scores = const - 0.5 * np.einsum("ipkj,kj->ipk", z * z, w)  # (i, P, K)
        total = logsumexp(scores, axis=2)
        r = np.exp(scores - total[..., None])
        R[lo:hi] = r.sum(axis=1)
        M1[lo:hi] = np.einsum("ipk,ipkj->ikj", r, zc)
        M2[lo:hi] = np.einsum("ipk,ipkj->ikj", r, zc * zc)
        loglik[lo:hi] = total.sum(axis=1) + P * d * np.log(alpha[lo:hi])
    return _Moments(R, M1, M2, loglik)


def update_gain_offset(mom: _Moments, s2: float, model: ObservationModel, n_pixels: int
                       ) -> tuple[np.ndarray, np.ndarray]:
    """Closed-form M-step for (alpha_i, beta_i) at fixed responsibilities and s2.

    Maximises ``-1/2 (alpha^2 A - 2 alpha D + 2 alpha beta B + beta^2 C - 2 beta E) +
    n_pixels log alpha``: ``beta = (E - alpha B) / C`` and ``alpha`` the positive root of
    ``Q alpha^2 - S alpha - n_pixels = 0``, ``Q = A - B^2/C``, ``S = D - E B / C``.
    n_pixels : P d, the pixels of one image's patches.  Returns alpha, beta (n,)."""
    w = 1.0 / (model.eigvals + s2)
    u, v = model.proj_ones, model.proj_means
    A = np.einsum("ikj,kj->i", mom.M2, w)
    B = np.einsum("ikj,kj->i", mom.M1, w * u)
    D = np.einsum("ikj,kj->i", mom.M1, w * v)
    C = mom.R @ (w * u * u).sum(axis=1)
    E = mom.R @ (w * u * v).sum(axis=1)
    Q = A - B * B / C
    S = D - E * B / C
    alpha = (S + np.sqrt(S * S + 4.0 * Q * n_pixels)) / (2.0 * Q)
    return alpha, (E - alpha * B) / C


def update_sigma(mom: _Moments, alpha: np.ndarray, beta: np.ndarray,
                 model: ObservationModel, bounds: tuple[float, float]) -> float:
    """M-step for s2 = sigma^2 at fixed responsibilities and (alpha, beta): maximises
    ``-1/2 sum_kj [R_k log(lambda_kj + s2) + T_kj / (lambda_kj + s2)]`` over
    ``log sigma`` in ``bounds``, with T_kj the responsibility-weighted squared residuals
    in the eigenbases.  Returns s2."""
    u, v = model.proj_ones, model.proj_means
    a, b = alpha[:, None, None], beta[:, None, None]
    T = (a * a * mom.M2 + 2 * a * (b * u - v) * mom.M1
         + mom.R[:, :, None] * (b * u - v) ** 2).sum(axis=0)  # (K, d)
    R = mom.R.sum(axis=0)[:, None]
    lam = model.eigvals

    def negative(log_sigma: float) -> float:
        var = lam + np.exp(2 * log_sigma)
        return float(0.5 * (R * np.log(var) + T / var).sum())

    res = optimize.minimize_scalar(negative, bounds=np.log(bounds), method="bounded",
                                   options={"xatol": 1e-7})
    return float(np.exp(2 * res.x))


def initial_calibration(corrupted: np.ndarray, model: ObservationModel, m: int
                        ) -> tuple[np.ndarray, np.ndarray, float]:
    """Start of EM from moments: each image gets the mean and the pixel variance of y
    that the prior predicts (alpha, beta (n,)); sigma starts at a quarter of the prior's
    rms pixel std.  Uses neither the originals nor a configured sigma."""
    pi = np.exp(model.log_weights)
    u2 = (model.proj_ones ** 2).sum(axis=1)  # d for orthonormal U
    mean_y = float(pi @ ((model.proj_ones * model.proj_means).sum(axis=1) / u2))
    second = float(pi @ ((model.eigvals + model.proj_means ** 2).sum(axis=1))) / model.d
    std_y = np.sqrt(max(second - mean_y ** 2, 1e-12))
    c = np.asarray(corrupted, dtype=np.float64)
    std_c = np.maximum(c.std(axis=(1, 2)), 1e-6)
    alpha = std_y / std_c
    beta = mean_y - alpha * c.mean(axis=(1, 2))
    return alpha, beta, 0.25 * std_y


def estimate_calibration(corrupted: np.ndarray, model: ObservationModel, m: int,
                         settings: CalibrationSettings = CalibrationSettings()
                         ) -> Calibration:
    """Per-image gain and offset and the set's noise std by marginal-likelihood EM.

    corrupted : (n, H, W) the corrupted images as read (e.g. PNG / 255);  model : the
    prior seen through W (:meth:`ObservationModel.build`);  m : patch size, m² = d.
    Returns a :class:`Calibration` (gain a, offset b with c ≈ a y + b; sigma in y units).
    """
    c = np.asarray(corrupted, dtype=np.float64)
    if c.ndim != 3 or len(c) == 0:
        raise GmmRestoreError(f"estimate_calibration: expected (n, H, W) images, got {c.shape}")
    if m * m != model.d:
        raise GmmRestoreError(f"estimate_calibration: patch size {m} does not match the "
                              f"model's dimension {model.d}")
    if not np.all(np.isfinite(c)):
        raise GmmRestoreError("estimate_calibration: corrupted images hold NaN or Inf")
    patches = image_patches(c, m, settings.stride)
    n_pixels = patches.shape[1] * model.d
    alpha, beta, sigma = initial_calibration(c, model, m)
    lo, hi = settings.sigma_bounds
    s2 = float(np.clip(sigma, lo, hi)) ** 2
    history: list[float] = []
    converged = False
    for _ in range(settings.max_iter):
        mom = _e_step(patches, alpha, beta, s2, model, settings.images_per_chunk)
        history.append(float(mom.loglik.sum()) / (len(c) * n_pixels))
        if len(history) > 1 and history[-1] - history[-2] < settings.tol:
            converged = True
            break
        alpha, beta = update_gain_offset(mom, s2, model, n_pixels)
        s2 = update_sigma(mom, alpha, beta, model, settings.sigma_bounds)
    if not converged:
        log.warning("calibration: EM stopped after %d iterations without converging (last "
                    "gain in log-likelihood per pixel %.3g)", settings.max_iter,
                    history[-1] - history[-2] if len(history) > 1 else float("nan"))
    return Calibration(gain=1.0 / alpha, offset=-beta / alpha, sigma=float(np.sqrt(s2)),
                       log_likelihood=history[-1], n_iter=len(history), converged=converged,
                       history=np.asarray(history))
