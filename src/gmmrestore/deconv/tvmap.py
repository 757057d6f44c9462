"""Blind kernel estimation of a photograph by total-variation alternating descent.

The estimator of Perrone & Favaro (2014, "Total variation blind deconvolution: the devil is
in the details"), on the valid model of :mod:`.valid` (docs/model.md, "Blind deblurring with total
variation, refined by L0"):

    min_{x, k}  |T_k x - y|^2 / 2 + lam TV(x)     k >= 0, sum k = 1,

``TV(x)`` the isotropic total variation of forward differences (none across the frame),
Huber-smoothed below ``tv_eps`` so that its gradient is ``D^T (grad x / max(eps, |grad
x|))``.  Every iteration takes one normalised gradient step in x (the largest pixel moves
by ``image_step`` times the scene's maximum), then one in k (the largest tap moves by
``kernel_step`` times the kernel's maximum), then projects k on the non-negative kernels
and only then normalises it to sum 1.  That delayed normalisation is what keeps the
alternation away from the no-blur solution a convex prior's exact MAP would reach.  Coarse
to fine on a dense pyramid: the kernel shrinks by ``size_factor`` per level while the
weight grows by ``lam_factor``, so the coarse levels see only the strongest edges and the
finest the published weight.

The TV kernel follows the whole camera-shake path but with a faint halo; ``refine_iter``
alternations of the L0 estimator (:func:`.l0map.l0_alternations` at its final weight
``lam_min``) on the photograph, started from it, make the path thin again (docs/model.md).
``refine_iter = 0`` is Perrone & Favaro's estimator alone.
"""

from __future__ import annotations

import functools
import logging
import time
from dataclasses import dataclass

import numpy as np

from ..h5io import GmmRestoreError
from .l0map import L0Settings, l0_alternations
from .mstep import project_kernel
from .pyramid import _resize_kernel
from .sparse_pyramid import check_photograph, resize_photo
from .valid import ValidConvolution

log = logging.getLogger("gmmrestore.deconv")


@dataclass(frozen=True)
class TVSettings:
    """Settings of :func:`estimate_kernel_tv` (intensities in [0, 1]).

    lam : TV weight at the finest level;  lam_factor : its growth per coarser level;
    lam_max : no level with a larger weight;  size_factor : kernel size ratio between
    levels;  n_iter : (x, k) gradient steps at the finest level;  coarse_iter : at every
    coarser level (None: ``n_iter``; fewer is faster, but not the default: docs/results.md,
    "Fewer steps at the coarse TV levels");  image_step, kernel_step : the
    normalised step sizes;  tv_eps : floor of the gradient magnitude in TV;
    refine : the L0 estimator's settings for the refinement (re-centring that loses at
    most 2% of the kernel's mass, see :mod:`.l0map`);  refine_iter : its alternations on
    the photograph (0: none);  single_precision : the alternation's scene and transforms
    in float32 (the kernel, its step and projection stay float64): faster, but not the
    default (docs/results.md, "Single-precision TV alternation");  coarse_single_precision :
    the same at the levels below the finest only (not the default either:
    docs/results.md, "Float32 at the coarse TV levels only").
    """

    lam: float = 6e-4
    lam_factor: float = 1.9
    lam_max: float = 0.11
    size_factor: float = 1.1
    n_iter: int = 1000
    coarse_iter: int | None = None
    image_step: float = 5e-3
    kernel_step: float = 1e-3
    tv_eps: float = 1e-3
    refine: L0Settings = L0Settings(recenter_max_lost=0.02)
    refine_iter: int = 5
    single_precision: bool = False
    coarse_single_precision: bool = False

    def level_run(self, coarse: bool) -> tuple[int, bool]:
        """(steps, float32 or not) of the alternation at a level below the finest
        (``coarse``) or at the finest."""
        steps = self.coarse_iter if coarse and self.coarse_iter is not None else self.n_iter
        return steps, self.single_precision or (coarse and self.coarse_single_precision)

    def __post_init__(self):
        if not (0 < self.lam < self.lam_max and self.lam_factor > 1 and self.size_factor > 1
                and self.n_iter >= 1 and (self.coarse_iter is None or self.coarse_iter >= 1)
                and self.image_step > 0 and self.kernel_step > 0
                and self.tv_eps > 0 and self.refine_iter >= 0):
            raise GmmRestoreError(f"TV settings out of range: {self}")


def tv_levels(kernel_size: int, shape: tuple[int, int], settings: TVSettings
              ) -> list[tuple[int, tuple[int, int], float]]:
    """Coarse-to-fine levels ``[(kernel_size, (H, W), lam), ...]``, coarsest first.

    From the finest level up, the kernel size is divided by ``size_factor`` (to an odd
    integer, at least 2 smaller, at least 3), the image by the same realised ratio and the
    weight multiplied by ``lam_factor``, while the kernel is larger than 3 and the next
    weight stays below ``lam_max``.
    """
    st = settings
    levels = [(int(kernel_size), (int(shape[0]), int(shape[1])), st.lam)]
    while levels[-1][0] > 3 and levels[-1][2] * st.lam_factor < st.lam_max:
        ks_prev, shape_prev, lam_prev = levels[-1]
        ks = int(round(ks_prev / st.size_factor))
        ks = ks - 1 if ks % 2 == 0 else ks
        ks = max(3, ks - 2 if ks == ks_prev else ks)
        ratio = ks_prev / ks
        levels.append((ks, tuple(int(round(n / ratio)) for n in shape_prev),
                       lam_prev * st.lam_factor))
    return levels[::-1]


def _forward_differences(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``x[i, j+1] - x[i, j]`` and ``x[i+1, j] - x[i, j]``, 0 on the last column / row."""
    gh = np.empty_like(x)
    gv = np.empty_like(x)
    np.subtract(x[:, 1:], x[:, :-1], out=gh[:, :-1])
    np.subtract(x[1:], x[:-1], out=gv[:-1])
    gh[:, -1] = 0.0
    gv[-1] = 0.0
    return gh, gv


def total_variation(x: np.ndarray, eps: float) -> float:
    """Huber-smoothed isotropic TV ``sum_p h(|grad x|_p)``, ``h(t) = t^2 / (2 eps)`` for
    ``t <= eps`` and ``t - eps / 2`` above (forward differences); x (H, W)."""
    gh, gv = _forward_differences(x)
    t = np.sqrt(gh * gh + gv * gv)
    return float(np.sum(np.where(t <= eps, t * t / (2 * eps), t - eps / 2)))


def total_variation_gradient(x: np.ndarray, eps: float) -> np.ndarray:
    """Gradient of :func:`total_variation`: ``D^T (grad x / max(eps, |grad x|))``;
    x (H, W)."""
    gh, gv = _forward_differences(x)
    # in place: the same arithmetic as sqrt(gh*gh + gv*gv) etc., without the temporaries
    norm = np.multiply(gh, gh)
    out = np.multiply(gv, gv)
    norm += out
    np.sqrt(norm, out=norm)
    np.maximum(norm, eps, out=norm)
    gh /= norm
    gv /= norm
    np.add(gh, gv, out=out)
    np.negative(out, out=out)
    out[:, 1:] += gh[:, :-1]
    out[1:] += gv[:-1]
    return out


def _scene_gradient_loop(x, adjoint, lam, eps, out):
    """``out = adjoint + lam * total_variation_gradient(x, eps)`` in one pass over x (H, W),
    the same operations in the same order as the NumPy expressions, so the same numbers bit
    for bit; returns ``(max |out|, max x)`` (for x and out free of NaN).  Compiled by numba
    (:func:`scene_gradient`): the NumPy form makes a dozen passes over the scene, slow once
    its temporaries leave the cache (docs/results.md, "The TV step's scene gradient
    compiled")."""
    n_rows, n_cols = x.shape
    zero = x.dtype.type(0)
    gv_above = np.empty(n_cols, x.dtype)  # the row above's vertical difference / norm
    peak, top = zero, x[0, 0]
    for i in range(n_rows):
        gh_left = zero
        for j in range(n_cols):
            xij = x[i, j]
            gh = x[i, j + 1] - xij if j + 1 < n_cols else zero
            gv = x[i + 1, j] - xij if i + 1 < n_rows else zero
            norm = np.sqrt(gh * gh + gv * gv)
            if not norm >= eps:
                norm = eps
            gh = gh / norm
            gv = gv / norm
            tv = -(gh + gv)
            if j > 0:
                tv = tv + gh_left
            if i > 0:
                tv = tv + gv_above[j]
            gh_left = gh
            gv_above[j] = gv
            g = adjoint[i, j] + lam * tv
            out[i, j] = g
            peak = max(peak, abs(g))
            top = max(top, xij)
    return peak, top


@functools.cache
def _compiled_scene_gradient():
    import numba  # on first use: a quarter second of import for programs that never run TV

    return numba.njit(cache=True, nogil=True)(_scene_gradient_loop)


def scene_gradient(x: np.ndarray, adjoint: np.ndarray, lam: float, eps: float,
                   out: np.ndarray | None = None) -> tuple[np.ndarray, float, float]:
    """The x-step's gradient ``adjoint + lam * total_variation_gradient(x, eps)`` (equal to
    it bit for bit), its largest magnitude and the scene's maximum.

    x, adjoint : (H, W) of one float type;  out : (H, W) of that type to write to.  The
    scalars take x's type, as NumPy's promotion of Python floats gives them.
    """
    out = np.empty_like(x) if out is None else out
    real = x.dtype.type
    peak, top = _compiled_scene_gradient()(x, adjoint, real(lam), real(eps), out)
    return out, float(peak), float(top)


def _normalised_step(values: np.ndarray, gradient: np.ndarray, size: float,
                     peak: float | None = None, top: float | None = None) -> np.ndarray:
    """``values - size * max(values) / max|gradient| * gradient``; ``peak`` and ``top``:
    those two maxima where already known."""
    peak = float(np.abs(gradient).max()) if peak is None else peak
    top = float(values.max()) if top is None else top
    return values - size * top / max(peak, 1e-31) * gradient


def tv_alternation(y: np.ndarray, scene: np.ndarray, kernel: np.ndarray, lam: float,
                   settings: TVSettings, n_iter: int | None = None,
                   single_precision: bool | None = None) -> tuple[np.ndarray, np.ndarray]:
    """``n_iter`` (default ``settings.n_iter``) alternating steps at one level (module
    docstring), in float32 if ``single_precision`` (default ``settings.single_precision``).

    y : (H, W) photograph;  scene : (H + s - 1, W + s - 1) start;  kernel : (s, s) start.
    Returns the scene (float64) and the kernel (non-negative, sum 1).
    """
    st = settings
    steps, single = st.level_run(coarse=False)
    steps = steps if n_iter is None else n_iter
    single = single if single_precision is None else single_precision
    dtype = np.float32 if single else np.float64
    op = ValidConvolution(kernel, scene.shape, dtype)
    x, k, y = np.asarray(scene, dtype=dtype), kernel, np.asarray(y, dtype=dtype)
    spectrum = op.spectrum(x)  # of the current x: the k-step's serves the next x-step
    gradient = np.empty_like(x)
    for _ in range(steps):
        residual = op.forward(x, spectrum) - y
        _, peak, top = scene_gradient(x, op.adjoint(residual), lam, st.tv_eps, gradient)
        x = _normalised_step(x, gradient, st.image_step, peak, top)
        spectrum = op.spectrum(x)
        residual = op.forward(x, spectrum) - y
        k = project_kernel(_normalised_step(k, op.kernel_gradient(spectrum, residual),
                                            st.kernel_step))
        op.set_kernel(k)
    return x.astype(np.float64, copy=False), k


def estimate_kernel_tv(y: np.ndarray, kernel_size: int, settings: TVSettings | None = None
                       ) -> tuple[np.ndarray, dict]:
    """Estimate the blur kernel of one photograph (TV prior, alternating descent).

    y : (H, W) blurred photograph in [0, 1] (valid model: any boundary);  kernel_size :
    odd size s.  Returns the kernel (s, s) (non-negative, sums to 1; centred when refined)
    and an info dict with ``levels`` ((kernel size, H, W, lam) per level) and ``seconds``.
    """
    from skimage.transform import resize

    t0 = time.perf_counter()
    st = settings or TVSettings()
    # the L0 refinement's periodic band needs 2 pixels more than the sparse EM's pyramid
    y, s = check_photograph(y, kernel_size, 2, "estimate_kernel_tv")
    levels = tv_levels(s, y.shape, st)
    ks0, shape0, _ = levels[0]
    scene = np.pad(resize_photo(y, shape0), ks0 // 2, mode="edge")
    kernel = np.full((ks0, ks0), 1.0 / ks0**2)
    for li, (ks, shape, lam) in enumerate(levels):
        scene = resize(scene, (shape[0] + ks - 1, shape[1] + ks - 1), order=3, mode="edge",
                       preserve_range=True)
        kernel = _resize_kernel(kernel, ks)
        n_iter, single = st.level_run(coarse=li < len(levels) - 1)
        scene, kernel = tv_alternation(resize_photo(y, shape), scene, kernel, lam, st, n_iter,
                                       single)
        log.info("TV level %d/%d: kernel %dx%d on %dx%d, lam %.3g, %.1f s", li + 1,
                 len(levels), ks, ks, shape[0], shape[1], lam, time.perf_counter() - t0)
    if st.refine_iter:
        kernel, _ = l0_alternations(y, kernel, st.refine.lam_min, st.refine_iter, st.refine)
        log.info("L0 refinement: %d alternations, %.1f s", st.refine_iter,
                 time.perf_counter() - t0)
    info = {"levels": [(ks, sh[0], sh[1], lam) for ks, sh, lam in levels],
            "seconds": time.perf_counter() - t0}
    return kernel, info
