"""Sparse gradient prior and the variational E-step of blind deconvolution (Levin et al. 2011).

Derivative images
-----------------
For a photograph ``y`` (H, W) and each derivative filter f (``[-1 1]`` horizontal and
vertical), ``y_f = f * y = k * x_f + n_f`` with the valid model of :mod:`.valid`; both
derivative images are cropped to (H-1, W-1) so that they form one (2, H-1, W-1) batch, and
``x_f`` is (2, H+s-2, W+s-2).  Every pixel of ``x_f`` has the i.i.d. zero-mean scale
mixture prior ``p(z) = sum_j pi_j N(z; 0, sigma_j^2)`` (:class:`ScaleMixture`).

Variational E-step
------------------
``q(x_f, z) = prod_i N(x_i; mu_i, c_i) q(z_i)`` with hidden mixture labels ``z_i``.  The free
energy (negative evidence lower bound, to be minimised)

    F = E_q|T_k x - y|^2 / (2 eta^2) + N_y/2 log(2 pi eta^2)
        + sum_ij w_ij [log w_ij - log pi_j + log sigma_j + 1/2 log 2 pi + E[x_i^2]/(2 sigma_j^2)]
        - 1/2 sum_i log(2 pi e c_i)

with ``E|T_k x - y|^2 = |T_k mu - y|^2 + sum_i c_i diag(T_k^T T_k)_i`` and
``E[x_i^2] = mu_i^2 + c_i``.  Coordinate updates, each minimising F exactly (or decreasing it):

* ``w_ij ∝ pi_j / sigma_j exp(-E[x_i^2] / (2 sigma_j^2))`` (at this optimum the label terms
  equal ``-log sum_j pi_j N(sqrt(E[x_i^2]); 0, sigma_j^2)``: :func:`free_energy`);
* ``mu = A^{-1} T_k^T y / eta^2`` with ``A = T_k^T T_k / eta^2 + diag(sum_j w_ij /
  sigma_j^2)``, by Jacobi-preconditioned CG from the previous ``mu`` (CG iterates decrease
  the quadratic monotonically);
* ``c_i = 1 / A_ii`` (the mean-field optimum).

M-step: ``min_k E_q|T_k x - y|^2`` under ``k >= 0, sum k = 1`` (the covariance term keeps k
from collapsing to a delta): :func:`.valid.valid_mstep_system` and
:func:`.mstep.solve_kernel_qp`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..h5io import GmmRestoreError
from .valid import FFT_MIN_TAPS, ValidConvolution, conv_valid, corr_full, valid_tap_counts

LOG_2PI = float(np.log(2.0 * np.pi))


@dataclass(frozen=True)
class ScaleMixture:
    """Zero-mean 1-D Gaussian mixture ``sum_j weights_j N(0, stds_j^2)``."""

    weights: tuple[float, ...]
    stds: tuple[float, ...]

    def __post_init__(self):
        w = np.asarray(self.weights, dtype=np.float64)
        s = np.asarray(self.stds, dtype=np.float64)
        if w.ndim != 1 or w.shape != s.shape or len(w) == 0:
            raise GmmRestoreError(f"scale mixture: weights {w.shape} and stds {s.shape} must "
                                  "be non-empty 1-D arrays of one length")
        if not (np.all(w > 0) and abs(w.sum() - 1) < 1e-6 and np.all(s > 0)
                and np.all(np.isfinite(s))):
            raise GmmRestoreError(f"scale mixture: weights must be > 0 and sum to 1, stds > 0; "
                                  f"got {list(w)}, {list(s)}")

    @property
    def w(self) -> np.ndarray:
        return np.asarray(self.weights, dtype=np.float64)

    @property
    def s(self) -> np.ndarray:
        return np.asarray(self.stds, dtype=np.float64)

    def log_pdf(self, z: np.ndarray) -> np.ndarray:
        """``log p(z)`` elementwise."""
        return _log_mix(np.asarray(z, dtype=np.float64) ** 2, self)


def _log_mix(ex2: np.ndarray, mix: ScaleMixture) -> np.ndarray:
    """``log sum_j pi_j N(sqrt(ex2); 0, sigma_j^2)`` elementwise (stable)."""
    w, s = mix.w, mix.s
    terms = (np.log(w) - np.log(s) - 0.5 * LOG_2PI)[:, None] \
        - ex2.reshape(1, -1) / (2 * s[:, None] ** 2)
    top = terms.max(axis=0)
    out = top + np.log(np.exp(terms - top).sum(axis=0))
    return out.reshape(ex2.shape)


def responsibilities(ex2: np.ndarray, mix: ScaleMixture) -> np.ndarray:
    """``w_ij ∝ pi_j / sigma_j exp(-E[x_i^2] / (2 sigma_j^2))``; ex2 (...) -> (J, ...)."""
    w, s = mix.w, mix.s
    flat = ex2.reshape(1, -1)
    terms = (np.log(w) - np.log(s))[:, None] - flat / (2 * s[:, None] ** 2)
    terms -= terms.max(axis=0)
    r = np.exp(terms)
    r /= r.sum(axis=0)
    return r.reshape((len(w),) + ex2.shape)


def prior_precision(ex2: np.ndarray, mix: ScaleMixture) -> np.ndarray:
    """``sum_j w_ij / sigma_j^2`` at the optimal responsibilities, like ex2."""
    r = responsibilities(ex2, mix)
    return np.tensordot(1.0 / mix.s**2, r, axes=(0, 0))


def fit_scale_mixture(samples: np.ndarray, n_components: int = 4, n_iter: int = 300,
                      tol: float = 1e-9) -> ScaleMixture:
    """Maximum-likelihood zero-mean scale mixture of 1-D samples by EM.

    Initial stds are spread geometrically between 0.1 and 3 times the samples' std, equal
    weights; deterministic.  samples : (n,) e.g. image derivatives.
    """
    z2 = np.asarray(samples, dtype=np.float64).ravel() ** 2
    if len(z2) < n_components or not np.all(np.isfinite(z2)) or not z2.mean() > 0:
        raise GmmRestoreError(f"fit_scale_mixture: need at least {n_components} finite, not "
                              f"all zero samples, got {len(z2)}")
    sd = np.sqrt(z2.mean())
    mix = ScaleMixture(tuple(np.full(n_components, 1.0 / n_components)),
                       tuple(sd * np.geomspace(0.1, 3.0, n_components)))
    prev = -np.inf
    floor = 1e-6 * sd
    for _ in range(n_iter):
        r = responsibilities(z2, mix)  # (J, n)
        nk = r.sum(axis=1) + 1e-300
        stds = np.maximum(np.sqrt(r @ z2 / nk), floor)
        weights = np.maximum(nk / nk.sum(), 1e-12)
        mix = ScaleMixture(tuple(weights / weights.sum()), tuple(stds))
        ll = float(np.mean(_log_mix(z2, mix)))
        if ll - prev < tol * max(abs(ll), 1.0):
            break
        prev = ll
    return mix


#: Learned by :func:`fit_scale_mixture` (4 components) from the [-1 1] horizontal and
#: vertical derivatives of the 400 Train400 images (intensities in [0, 1]; a seeded
#: subsample of 10^6 of the 2.6e7 values): ``bench/blind_natural.py --fit-prior`` refits it.
DEFAULT_MIXTURE = ScaleMixture(weights=(0.1849, 0.3666, 0.3368, 0.1117),
                               stds=(0.00422, 0.01824, 0.06318, 0.19854))


def derivative_images(y: np.ndarray) -> np.ndarray:
    """Horizontal and vertical ``[-1 1]`` derivatives cropped to one size.

    y : (H, W) -> (2, H-1, W-1): ``y[:-1, 1:] - y[:-1, :-1]`` and ``y[1:, :-1] - y[:-1, :-1]``.
    """
    y = np.asarray(y, dtype=np.float64)
    return np.stack([y[:-1, 1:] - y[:-1, :-1], y[1:, :-1] - y[:-1, :-1]])


@dataclass
class VariationalState:
    """Moments of q: ``mu``, ``var`` (n, H+s-1, W+s-1) and the prior precisions ``prec``
    (``sum_j w_ij / sigma_j^2``, same shape)."""

    mu: np.ndarray
    var: np.ndarray
    prec: np.ndarray


def initial_state(x_shape: tuple[int, ...], mix: ScaleMixture) -> VariationalState:
    """``mu = 0`` and ``var`` the prior variance ``sum_j pi_j sigma_j^2``."""
    v = float(np.sum(mix.w * mix.s**2))
    mu = np.zeros(x_shape)
    var = np.full(x_shape, v)
    return VariationalState(mu, var, prior_precision(mu**2 + var, mix))


def sparse_estep(yf: np.ndarray, kernel: np.ndarray, state: VariationalState, eta: float,
                 mix: ScaleMixture, cg_iter: int = 20, cg_tol: float = 1e-6
                 ) -> tuple[VariationalState, int]:
    """One variational E-step: responsibilities, then ``mu`` by CG, then ``var``.

    yf : (n, H, W) derivative images;  state : moments of (n, H+s-1, W+s-1).
    Returns the new state and the CG iterations run.
    """
    kernel = np.asarray(kernel, dtype=np.float64)
    prec = prior_precision(state.mu**2 + state.var, mix)
    inv_eta2 = 1.0 / eta**2
    t = valid_tap_counts(kernel, yf.shape[-2:])
    diag = t * inv_eta2 + prec
    normal = _normal_operator(kernel, state.mu.shape[-2:])
    b = corr_full(yf, kernel) * inv_eta2

    def apply_A(x):
        return normal(x) * inv_eta2 + prec * x

    mu, it = _pcg(apply_A, b, 1.0 / diag, state.mu, cg_iter, cg_tol)
    return VariationalState(mu, 1.0 / diag, prec), it


def _normal_operator(kernel: np.ndarray, x_shape: tuple[int, int]):
    """``x -> T_k^T T_k x``: cached-FFT :class:`.valid.ValidConvolution` for large kernels,
    direct convolutions for small ones."""
    if kernel.size >= FFT_MIN_TAPS:
        return ValidConvolution(kernel, x_shape).normal
    return lambda x: corr_full(conv_valid(x, kernel), kernel)


def _pcg(apply_A, b, inv_diag, x0, maxiter, tol):
    """Jacobi-preconditioned CG on the whole array (one system), warm started at x0."""
    x = np.array(x0, dtype=np.float64)
    r = b - apply_A(x)
    z = inv_diag * r
    p = z.copy()
    rz = float(np.sum(r * z))
    bnorm = float(np.sqrt(np.sum(b * b))) or 1.0
    it = 0
    while it < maxiter and np.sqrt(np.sum(r * r)) > tol * bnorm and rz > 0:
        Ap = apply_A(p)
        pAp = float(np.sum(p * Ap))
        if not pAp > 0:
            break
        alpha = rz / pAp
        x += alpha * p
        r -= alpha * Ap
        z = inv_diag * r
        rz_new = float(np.sum(r * z))
        p = z + (rz_new / rz) * p
        rz = rz_new
        it += 1
    return x, it


def free_energy(yf: np.ndarray, kernel: np.ndarray, mu: np.ndarray, var: np.ndarray,
                eta: float, mix: ScaleMixture) -> float:
    """The free energy F (module docstring) at the optimal responsibilities for
    ``q(x) = N(mu, diag(var))``; lower is better.  yf (n, H, W), mu, var (n, H+s-1, W+s-1).
    """
    kernel = np.asarray(kernel, dtype=np.float64)
    t = valid_tap_counts(kernel, yf.shape[-2:])
    data = float(np.sum((conv_valid(mu, kernel) - yf) ** 2) + np.sum(var * t))
    labels = -float(np.sum(_log_mix(mu**2 + var, mix)))
    entropy = 0.5 * float(np.sum(np.log(2 * np.pi * np.e * var)))
    return data / (2 * eta**2) + yf.size / 2 * np.log(2 * np.pi * eta**2) + labels - entropy


def reference_sparse_estep(yf: np.ndarray, kernel: np.ndarray, prec: np.ndarray,
                           eta: float) -> tuple[np.ndarray, np.ndarray]:
    """Dense oracle of the mean and mean-field variance at fixed prior precisions.

    yf : (H, W);  prec : (H+s-1, W+s-1).  Returns ``mu = A^{-1} T^T y / eta^2`` and
    ``1 / diag(A)`` with ``A = T^T T / eta^2 + diag(prec)``, both (H+s-1, W+s-1).
    """
    from .valid import valid_conv_matrix

    T = valid_conv_matrix(kernel, prec.shape)
    A = T.T @ T / eta**2 + np.diag(prec.ravel())
    mu = np.linalg.solve(A, T.T @ yf.ravel() / eta**2)
    return mu.reshape(prec.shape), (1.0 / np.diag(A)).reshape(prec.shape)
