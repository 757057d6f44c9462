"""Non-blind restoration of a photograph with a known kernel: sparse-derivative (hyper-
Laplacian) deconvolution by IRLS on the valid model (Levin et al. 2007; Krishnan & Fergus
2009 solve the same objective).

Minimises ``|T_k x - y|^2 + weight * sum_f sum_i rho(|(f * x)_i|)`` with ``rho(z) = z^alpha``
over the scene ``x`` (H+s-1, W+s-1), f the ``[-1 1]`` horizontal and vertical differences.
Iteratively reweighted least squares: with ``psi_i = (alpha / 2) max(|g_i|, eps)^(alpha-2)``
from the current gradients ``g``, solve ``(T^T T + weight * sum_f D_f^T Psi_f D_f) x = T^T y``
by CG, warm started.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..h5io import GmmRestoreError
from .sparse import _normal_operator, _pcg
from .valid import corr_full, crop_centre, valid_tap_counts


@dataclass(frozen=True)
class SparseDeconvSettings:
    """weight : regulariser weight (images in [0, 1]);  alpha : exponent of |gradient|;
    n_outer : IRLS re-weightings;  cg_iter : CG iterations per re-weighting;  eps : floor of
    |gradient| in the weights."""

    weight: float = 2e-3
    alpha: float = 0.8
    n_outer: int = 6
    cg_iter: int = 40
    eps: float = 1e-3

    def __post_init__(self):
        if not (self.weight > 0 and 0 < self.alpha <= 2 and self.n_outer >= 1
                and self.cg_iter >= 1 and self.eps > 0):
            raise GmmRestoreError(f"sparse deconvolution: bad settings {self}")


def _dh(x):
    return np.diff(x, axis=-1)


def _dv(x):
    return np.diff(x, axis=-2)


def _dh_t(g):
    pad = [(0, 0)] * (g.ndim - 1) + [(1, 1)]
    return -np.diff(np.pad(g, pad), axis=-1)


def _dv_t(g):
    pad = [(0, 0)] * (g.ndim - 2) + [(1, 1), (0, 0)]
    return -np.diff(np.pad(g, pad), axis=-2)


def deconvolve_sparse(y: np.ndarray, kernel: np.ndarray,
                      settings: SparseDeconvSettings | None = None,
                      crop: bool = True) -> np.ndarray:
    """Restore a photograph blurred by ``kernel`` (valid model, hyper-Laplacian prior).

    y : (H, W);  kernel : (s, s).  Returns the scene under the photograph (H, W) when
    ``crop`` (aligned with y for a centred kernel), else the whole scene (H+s-1, W+s-1).
    """
    st = settings or SparseDeconvSettings()
    y = np.asarray(y, dtype=np.float64)
    kernel = np.asarray(kernel, dtype=np.float64)
    if y.ndim != 2 or kernel.ndim != 2 or kernel.shape[0] % 2 == 0:
        raise GmmRestoreError(f"deconvolve_sparse: expected (H, W) image and odd (s, s) "
                              f"kernel, got {y.shape} and {kernel.shape}")
    s = kernel.shape[0]
    b = corr_full(y, kernel)
    t = valid_tap_counts(kernel, y.shape)
    x = np.pad(y, (((s - 1) // 2, s // 2), ((s - 1) // 2, s // 2)), mode="edge")
    normal = _normal_operator(kernel, x.shape)
    for _ in range(st.n_outer):
        wh = st.weight * st.alpha / 2 * np.maximum(np.abs(_dh(x)), st.eps) ** (st.alpha - 2)
        wv = st.weight * st.alpha / 2 * np.maximum(np.abs(_dv(x)), st.eps) ** (st.alpha - 2)

        def apply_A(z, wh=wh, wv=wv):
            return normal(z) + _dh_t(wh * _dh(z)) + _dv_t(wv * _dv(z))

        diag = t + _diag_reg(wh, wv, x.shape)
        x, _ = _pcg(apply_A, b, 1.0 / diag, x, st.cg_iter, 1e-8)
    return crop_centre(x, s) if crop else x


def _diag_reg(wh: np.ndarray, wv: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Diagonal of ``D_h^T W_h D_h + D_v^T W_v D_v``."""
    d = np.zeros(shape)
    d[:, :-1] += wh
    d[:, 1:] += wh
    d[:-1, :] += wv
    d[1:, :] += wv
    return d
