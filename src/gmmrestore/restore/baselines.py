"""Classic non-blind restorations, given the TRUE kernel and sigma, for side-by-side comparison
(``hyper_laplacian``, whose parameter is not tuned, also with an estimated kernel).

Every baseline takes corrupted images ``(n, H, W)`` in [0, 1] produced by the forward model of
:mod:`gmmrestore.operators` (``y = k * x + n``, "same"-size convolution with ZERO boundary,
``n ~ N(0, sigma^2 I)``), the true kernel, sigma and ONE free parameter, and returns
``(n, H, W)`` float64 images, clipped to [0, 1] (the known intensity range; pass
``clip=False`` to :func:`restore_baseline` to get the raw output).

Baselines (:data:`BASELINES`)
-----------------------------
``wiener``
    :func:`skimage.restoration.wiener` (Laplacian regulariser); free parameter ``balance``.
``unsupervised_wiener``
    :func:`skimage.restoration.unsupervised_wiener`, a Gibbs sampler that estimates the
    noise and prior precisions itself (sigma is not used); no free parameter.  Image ``i`` of a
    call samples with ``numpy.random.default_rng([seed, i])``.
``richardson_lucy``
    Richardson-Lucy for OUR zero-boundary operator (:func:`richardson_lucy_deconvolve`,
    vectorised over images); free parameter ``num_iter`` (early stopping is its only
    regularisation).  It is :func:`skimage.restoration.richardson_lucy` (tested equal) plus
    the division by ``A^T 1`` that skimage omits: without it the zero boundary darkens the
    borders of images whose border is not black (docs/model.md, "Baselines").  RL assumes
    non-negative data: negative values of the noisy input are clipped to 0 first.  No
    padding: the iteration uses the zero-boundary model itself.
``tv``
    :func:`skimage.restoration.denoise_tv_chambolle` applied to the corrupted image: a pure
    DENOISER, it ignores the kernel (the issue's "total variation (Chambolle)").  On blurred
    inputs it can only remove noise, not blur.  Free parameter ``weight``.
``tv_deconv``
    Total-variation DEBLURRING with the exact zero-boundary operator:
    ``argmin_{0<=x<=1} 1/2 ||k * x - y||^2 + weight * TV(x)`` (isotropic TV with the forward
    differences of ``denoise_tv_chambolle``), solved by the Chambolle-Pock primal-dual method,
    vectorised over images.  Free parameter ``weight``.  With the identity kernel it solves
    the same problem as ``tv`` (tested).  A fixed :data:`TV_DECONV_ITERATIONS` iterations
    from ``x = y``; at the small weights of a strong blur the iteration is not converged and
    stopping early acts as extra regularisation (docs/model.md, "Baselines").
``hyper_laplacian``
    Sparse-derivative deconvolution on the valid model (no boundary assumed: the scene
    behind the frame is restored and its centre returned), ``|k * x - y|^2 + weight *
    sum |grad x|^0.8`` by IRLS (:func:`gmmrestore.deconv.deconvolve_sparse`; Levin et al.
    2007, the restoration of Levin et al.'s blind-deconvolution error ratio; Krishnan &
    Fergus 2009 solve the same objective).  Its weight is not tuned but set by sigma
    (:func:`sparse_weight`: at 1% noise the weight the kernel judge and the development
    runs use, scaled with sigma^2), so it is the one baseline that also restores with an
    estimated kernel (``blind``): no true kernel enters its parameter.
``bm3d``
    Wiener step then BM3D denoising with the residual noise's exact PSD (package ``bm3d``).
    The Wiener step is ``skimage.restoration.wiener`` with balance ``b`` (the free
    parameter); its transfer function ``G`` turns white noise of std sigma into coloured noise
    with PSD ``sigma^2 N |G|^2`` (N pixels, unnormalised DFT, the PSD convention of
    ``bm3d.bm3d``), which is passed to :func:`bm3d.bm3d`.  For the identity kernel the default
    grid is ``b = 0``: the Wiener step is then the identity and this is plain
    ``bm3d.bm3d(y, sigma_psd=sigma)``.  ``bm3d.bm3d_deblurring`` is not used: in bm3d 4.0.3
    it fails on 2-D inputs (a shape bug) and scored below this path where it ran
    (docs/model.md, "Baselines", with the white-noise alternative that was measured).  A
    coloured PSD makes bm4d call ``np.trapz`` (removed in NumPy 2):
    :func:`numpy_trapz_alias` provides it only around that call.

Boundary handling
-----------------
skimage's Wiener filters (and BM3D's PSD model) are FFT-based, i.e. circular.  Our data have a
zero boundary, so the images are padded with zeros by the kernel radius (BM3D: by the radius
plus :data:`BM3D_EXTRA_PAD`) before, and cropped after: under zero padding by at least the
radius, the circular convolution of the padded image equals the zero-boundary model inside
the image, and the unobserved ring is filled with zeros instead of wrapped-around pixels.
Richardson-Lucy and ``tv_deconv`` use the zero-boundary operator itself and need no padding.
A camera's frame (``boundary="valid"``, :data:`~gmmrestore.operators.BOUNDARIES`) is first
extended by its edge values (:func:`~gmmrestore.operators.extend_frame`) and the restoration
cropped back, so that no baseline sees a false black border; ``hyper_laplacian`` models the
frame itself (``valid_model``) and gets it as observed, under either boundary (a zero border
is one scene the valid model allows).

sigma = 0 (pure deblurring) is allowed: baselines that use sigma (``bm3d``) floor it at
:data:`SIGMA_FLOOR`.  The identity kernel ``[[1.]]`` (pure denoising) is allowed everywhere.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import ndimage

from ..deconv.nonblind import SparseDeconvSettings, deconvolve_sparse
from ..h5io import GmmRestoreError
from ..metrics import psnr
from ..operators import (
    BOUNDARIES,
    blur,
    blur_adjoint,
    extend_frame,
    frame_centre,
    validate_kernel,
)

log = logging.getLogger("gmmrestore.baselines")

#: Smallest noise std used where a baseline needs a positive sigma (bm3d), on the [0, 1] scale.
SIGMA_FLOOR = 1e-3
#: Extra zero padding (pixels, on each side, beyond the kernel radius) before BM3D.
BM3D_EXTRA_PAD = 8
#: Chambolle-Pock iterations of ``tv_deconv``.
TV_DECONV_ITERATIONS = 300
#: ``hyper_laplacian``'s weight is the sparse deconvolution's default at this noise std,
#: scaled with sigma^2 (the data term's precision) at others.
SPARSE_WEIGHT_SIGMA = 0.01


# --------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------
def _radius(kernel: np.ndarray) -> int:
    return max(kernel.shape) // 2


def _is_identity(kernel: np.ndarray) -> bool:
    return kernel.shape == (1, 1)


def _pad(images: np.ndarray, p: int) -> np.ndarray:
    """Zero-pad (n, H, W) by p pixels on each side of H and W."""
    return np.pad(images, ((0, 0), (p, p), (p, p))) if p else images


def _crop(images: np.ndarray, p: int) -> np.ndarray:
    """Inverse of :func:`_pad`."""
    return images[:, p:images.shape[1] - p, p:images.shape[2] - p] if p else images


@contextlib.contextmanager
def numpy_trapz_alias() -> Iterator[None]:
    """Make ``np.trapz`` (removed in NumPy 2) an alias of ``np.trapezoid`` inside the block.

    bm4d 4.x (used by ``bm3d`` 4.0.3) calls ``np.trapz`` when given a coloured noise PSD.
    The alias is set on entry and removed on exit (also on error); if ``np.trapz`` already
    exists (NumPy 1.x, or an enclosing block) nothing is changed.  Not thread-safe: it
    touches the numpy module object for the duration of the block.
    """
    name = "trapz"  # a variable: NumPy-2 linters flag the literal attribute
    if hasattr(np, name) or not hasattr(np, "trapezoid"):
        yield
        return
    setattr(np, name, np.trapezoid)
    try:
        yield
    finally:
        with contextlib.suppress(AttributeError):
            delattr(np, name)


def wiener_transfer(kernel: np.ndarray, shape: tuple[int, int], balance: float) -> np.ndarray:
    """Transfer function of ``skimage.restoration.wiener`` on images of ``shape``.

    ``G = conj(H) / (|H|^2 + balance |D|^2)`` with H the DFT of the kernel centred at the
    origin and D that of skimage's Laplacian regulariser (same construction as skimage).
    Returns the full (H, W) complex array, DC at [0, 0].
    """
    from skimage.restoration import uft

    H = uft.ir2tf(np.asarray(kernel, dtype=np.float64), shape, is_real=False)
    D, _ = uft.laplacian(2, shape, is_real=False)
    return np.conj(H) / (np.abs(H) ** 2 + balance * np.abs(D) ** 2)


# --------------------------------------------------------------------------------------------
# the adapters: (corrupted (n,H,W), kernel, sigma, param, seed) -> (n,H,W), not clipped
# --------------------------------------------------------------------------------------------
def _wiener(corrupted, kernel, sigma, balance, seed):
    from skimage.restoration import wiener

    if not balance > 0 and not _is_identity(kernel):
        raise GmmRestoreError(f"wiener: balance must be > 0 with a blur kernel, got {balance}")
    p = _radius(kernel)
    padded = _pad(corrupted, p)
    out = np.stack([wiener(y, kernel, balance, clip=False) for y in padded])
    return _crop(out, p)


def _unsupervised_wiener(corrupted, kernel, sigma, param, seed):
    from skimage.restoration import unsupervised_wiener

    p = _radius(kernel)
    padded = _pad(corrupted, p)
    out = np.stack([
        unsupervised_wiener(y, kernel, clip=False, rng=np.random.default_rng([seed, i]))[0]
        for i, y in enumerate(padded)])
    return _crop(out, p)


def richardson_lucy_deconvolve(corrupted: np.ndarray, kernel: np.ndarray, num_iter: int,
                               normalize: bool = True) -> np.ndarray:
    """Richardson-Lucy iterations for the zero-boundary blur, all images at once.

    ``x <- x * A^T(y / A x) / A^T 1`` from ``x = 0.5``, with ``A`` =
    :func:`gmmrestore.operators.blur`.  ``normalize=False`` drops the division by ``A^T 1``
    and is then exactly :func:`skimage.restoration.richardson_lucy` (same start, same
    ``1e-12`` guard), which assumes ``A^T 1 = 1``.  With a zero boundary ``A^T 1 < 1`` near
    the borders and the unnormalised update drives border pixels to 0 on images whose
    border is not black (MNIST's is).
    corrupted : (n, H, W), non-negative.  Returns (n, H, W).
    """
    y = np.asarray(corrupted, dtype=np.float64)
    x = np.full(y.shape, 0.5)
    if normalize:
        weights = blur_adjoint(np.ones(y.shape[-2:]), kernel)
        weights = np.where(weights > 1e-12, weights, 1.0)
    for _ in range(int(num_iter)):
        x *= blur_adjoint(y / (blur(x, kernel) + 1e-12), kernel)
        if normalize:
            x /= weights
    return x


def _richardson_lucy(corrupted, kernel, sigma, num_iter, seed):
    if int(num_iter) != num_iter or num_iter < 1:
        raise GmmRestoreError(f"richardson_lucy: num_iter must be a positive integer, "
                              f"got {num_iter}")
    return richardson_lucy_deconvolve(np.clip(corrupted, 0.0, None), kernel, int(num_iter))


def _tv(corrupted, kernel, sigma, weight, seed):
    from skimage.restoration import denoise_tv_chambolle

    if not weight > 0:
        raise GmmRestoreError(f"tv: weight must be > 0, got {weight}")
    return denoise_tv_chambolle(corrupted, weight=weight, channel_axis=0)


def _gradient(x: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """Forward differences of (n, H, W), zero in the last row/column: (2, n, H, W)."""
    g = np.zeros((2, *x.shape)) if out is None else out
    np.subtract(x[:, 1:, :], x[:, :-1, :], out=g[0, :, :-1, :])
    g[0, :, -1, :] = 0.0
    np.subtract(x[:, :, 1:], x[:, :, :-1], out=g[1, :, :, :-1])
    g[1, :, :, -1] = 0.0
    return g


def _divergence(p: np.ndarray) -> np.ndarray:
    """Negative adjoint of :func:`_gradient`: ``<grad x, p> = -<x, div p>``."""
    d = np.zeros(p.shape[1:])
    d[:, :-1, :] += p[0, :, :-1, :]
    d[:, 1:, :] -= p[0, :, :-1, :]
    d[:, :, :-1] += p[1, :, :, :-1]
    d[:, :, 1:] -= p[1, :, :, :-1]
    return d


def blur_operators(kernel: np.ndarray) -> tuple[Callable, Callable]:
    """``(blur, blur_adjoint)`` of :mod:`gmmrestore.operators` for (n, H, W) stacks, through
    two 1-D convolutions when the kernel is separable (rank 1: Gaussian, box), which is
    several times faster and equal up to rounding."""
    kernel = np.asarray(kernel, dtype=np.float64)
    u, s, vt = np.linalg.svd(kernel)
    if kernel.shape == (1, 1) or s[1:].sum() > 1e-12 * s[0]:
        return (lambda x: blur(x, kernel)), (lambda x: blur_adjoint(x, kernel))
    col, row = u[:, 0] * np.sqrt(s[0]), vt[0] * np.sqrt(s[0])

    def forward(x, c=col, r=row):
        x = ndimage.convolve1d(x, c, axis=-2, mode="constant")
        return ndimage.convolve1d(x, r, axis=-1, mode="constant")

    def adjoint(x):
        return forward(x, col[::-1].copy(), row[::-1].copy())

    return forward, adjoint


def tv_deconvolve(corrupted: np.ndarray, kernel: np.ndarray, weight: float,
                  n_iter: int = TV_DECONV_ITERATIONS, box: tuple[float, float] | None = (0, 1),
                  chunk: int = 64) -> np.ndarray:
    """TV-regularised deconvolution by Chambolle-Pock, all images at once.

    Solves ``argmin_x 1/2 ||k * x - y||^2 + weight * sum |grad x|`` (isotropic TV, forward
    differences, zero-boundary blur :func:`gmmrestore.operators.blur`), with ``x`` restricted
    to ``box`` if given.  Both terms are dualised (operator ``[A; grad]``, norm^2 <=
    ``||k||_1^2 + 8``), so every step is explicit; ``n_iter`` iterations from ``x = y``.
    Images are independent; they are processed ``chunk`` at a time so that the ~10 work
    arrays stay in cache.  corrupted : (n, H, W).  Returns (n, H, W).
    """
    y = np.asarray(corrupted, dtype=np.float64)
    kernel = np.asarray(kernel, dtype=np.float64)
    chunk = max(1, int(chunk))
    if len(y) > chunk:
        return np.concatenate([tv_deconvolve(y[i:i + chunk], kernel, weight, n_iter, box, chunk)
                               for i in range(0, len(y), chunk)])
    forward, adjoint = blur_operators(kernel)
    op_norm2 = float(np.abs(kernel).sum()) ** 2 + 8.0
    tau = s = 0.99 / np.sqrt(op_norm2)
    x = y.copy() if box is None else np.clip(y, *box)
    x_bar = x.copy()
    q = np.zeros_like(y)                 # dual of the data term
    p = np.zeros((2, *y.shape))          # dual of the TV term
    g = np.empty_like(p)
    norm = np.empty_like(y)
    for _ in range(n_iter):
        q += s * (forward(x_bar) - y)
        q /= 1.0 + s
        p += s * _gradient(x_bar, out=g)
        np.hypot(p[0], p[1], out=norm)
        norm /= weight
        np.maximum(norm, 1.0, out=norm)
        p /= norm
        x_bar = x - tau * (adjoint(q) - _divergence(p))
        if box is not None:
            np.clip(x_bar, *box, out=x_bar)
        x, x_bar = x_bar, 2.0 * x_bar - x
    return x


def _tv_deconv(corrupted, kernel, sigma, weight, seed):
    if not weight > 0:
        raise GmmRestoreError(f"tv_deconv: weight must be > 0, got {weight}")
    return tv_deconvolve(corrupted, kernel, weight)


def sparse_weight(sigma: float) -> float:
    """``hyper_laplacian``'s weight at noise std ``sigma``: ``SparseDeconvSettings().weight
    * (sigma / SPARSE_WEIGHT_SIGMA)^2``, sigma floored at :data:`SIGMA_FLOOR`."""
    scale = max(float(sigma), SIGMA_FLOOR) / SPARSE_WEIGHT_SIGMA
    return SparseDeconvSettings().weight * scale**2


def _hyper_laplacian(corrupted, kernel, sigma, weight, seed):
    size = max(kernel.shape)  # deconvolve_sparse takes square kernels
    square = np.pad(kernel, [((size - n) // 2,) * 2 for n in kernel.shape])
    settings = SparseDeconvSettings(weight=float(weight))
    return np.stack([deconvolve_sparse(y, square, settings) for y in corrupted])


def _bm3d(corrupted, kernel, sigma, balance, seed):
    import bm3d
    from skimage.restoration import wiener

    # One thread per call: bm4d's default (all cores) made a 28x28 call about twice as
    # slow on the shared 2-core machine; results are the same up to float32 rounding.
    profile = bm3d.BM3DProfile()
    profile.num_threads = 1
    sigma = max(float(sigma), SIGMA_FLOOR)
    if _is_identity(kernel) and balance == 0:
        return np.stack([bm3d.bm3d(y, sigma_psd=sigma, profile=profile) for y in corrupted])
    if not balance > 0:
        raise GmmRestoreError(f"bm3d: the Wiener balance must be > 0 with a blur kernel, "
                              f"got {balance}")
    p = _radius(kernel) + BM3D_EXTRA_PAD
    padded = _pad(corrupted, p)
    shape = padded.shape[1:]
    G = wiener_transfer(kernel, shape, balance)
    psd = sigma**2 * (shape[0] * shape[1]) * np.abs(G) ** 2
    out = np.empty(padded.shape)
    with numpy_trapz_alias():
        for i, y in enumerate(padded):
            out[i] = bm3d.bm3d(wiener(y, kernel, balance, clip=False), sigma_psd=psd,
                               profile=profile)
    return _crop(out, p)


# --------------------------------------------------------------------------------------------
# registry and public API
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class BaselineSpec:
    """A baseline: its adapter, its free parameter, the tuning grid and a description.

    ``function(corrupted (n,H,W), kernel, sigma, param, seed) -> (n,H,W)`` (unclipped);
    ``default_grid(kernel, sigma) -> tuple`` of parameter values tried by
    :func:`tune_baseline`; ``default(kernel, sigma)`` is used when no parameter is given.
    ``param_name`` is None for a baseline without a free parameter (grid ``(None,)``).
    ``valid_model``: the function models a camera's frame itself (no edge extension);
    ``blind``: it may restore with an estimated kernel (its parameter is not tuned with
    the true one).
    """

    function: Callable[..., np.ndarray]
    param_name: str | None
    default_grid: Callable[[np.ndarray, float], tuple]
    description: str
    default: Callable[[np.ndarray, float], Any]
    valid_model: bool = False
    blind: bool = False


BASELINES: dict[str, BaselineSpec] = {
    "wiener": BaselineSpec(
        _wiener, "balance",
        lambda k, s: (1e-4, 3e-4, 1e-3, 3e-3, 0.01, 0.03, 0.1, 0.3, 1.0),
        "skimage.restoration.wiener (Laplacian regulariser) on zero-padded images",
        lambda k, s: 0.03),
    "unsupervised_wiener": BaselineSpec(
        _unsupervised_wiener, None, lambda k, s: (None,),
        "skimage.restoration.unsupervised_wiener (Gibbs sampler, self-tuned; sigma unused)",
        lambda k, s: None),
    "richardson_lucy": BaselineSpec(
        _richardson_lucy, "num_iter",
        lambda k, s: (1, 2, 3, 5, 8, 13, 21, 34, 55),
        "skimage.restoration.richardson_lucy on the input clipped to >= 0",
        lambda k, s: 5),
    "tv": BaselineSpec(
        _tv, "weight",
        lambda k, s: (0.005, 0.01, 0.02, 0.04, 0.08, 0.16, 0.32),
        "skimage.restoration.denoise_tv_chambolle on the corrupted image (denoising only)",
        lambda k, s: 0.04),
    "tv_deconv": BaselineSpec(
        _tv_deconv, "weight",
        lambda k, s: (0.001, 0.002, 0.004, 0.007, 0.012, 0.02, 0.04),
        "TV deblurring with the exact zero-boundary blur (Chambolle-Pock, "
        f"{TV_DECONV_ITERATIONS} iterations)",
        lambda k, s: 0.04),
    "bm3d": BaselineSpec(
        _bm3d, "balance",
        lambda k, s: (0.0,) if _is_identity(k) else (0.003, 0.01, 0.03),
        "Wiener step (skimage, Laplacian) then bm3d.bm3d with the residual noise's exact PSD; "
        "plain bm3d.bm3d for the identity kernel",
        lambda k, s: 0.0 if _is_identity(k) else 0.01),
    "hyper_laplacian": BaselineSpec(
        _hyper_laplacian, "weight",
        lambda k, s: (sparse_weight(s),),
        "sparse-derivative (hyper-Laplacian, exponent 0.8) deconvolution on the valid "
        "model by IRLS, its weight fixed by sigma (Levin et al. 2007)",
        lambda k, s: sparse_weight(s), valid_model=True, blind=True),
}


def get_baseline(name: str) -> BaselineSpec:
    """The spec of baseline ``name``; a :class:`GmmRestoreError` naming the valid ones if
    there is none."""
    try:
        return BASELINES[name]
    except (KeyError, TypeError):
        raise GmmRestoreError(f"unknown baseline method {name!r}; expected one of "
                              f"{', '.join(sorted(BASELINES))}") from None


def _check_images(images: np.ndarray, what: str) -> np.ndarray:
    images = np.asarray(images, dtype=np.float64)
    if images.ndim != 3:
        raise GmmRestoreError(f"{what}: expected images of shape (n, H, W), got {images.shape}")
    if not np.all(np.isfinite(images)):
        raise GmmRestoreError(f"{what}: contains NaN or Inf")
    return images


def _check_sigma(sigma: float) -> float:
    sigma = float(sigma)
    if not (np.isfinite(sigma) and sigma >= 0):
        raise GmmRestoreError(f"noise sigma must be finite and >= 0, got {sigma}")
    return sigma


def restore_baseline(name: str, corrupted: np.ndarray, kernel: np.ndarray, sigma: float,
                     param: Any = None, seed: int = 0, clip: bool = True,
                     boundary: str = "zero") -> np.ndarray:
    """Restore corrupted images with the classic baseline ``name`` (see :data:`BASELINES`).

    Parameters
    ----------
    name : key of :data:`BASELINES`.
    corrupted : (n, H, W) images, ``y = k * x + n`` (zero boundary) on the [0, 1] scale.
    kernel : (kh, kw) the TRUE blur kernel (odd sizes; ``[[1.]]`` for pure denoising).
    sigma : noise std on the [0, 1] scale (0 allowed).
    param : the baseline's free parameter; None uses ``BASELINES[name].default(kernel, sigma)``.
    seed : seed of randomised baselines (``unsupervised_wiener``).
    clip : clip the output to [0, 1].
    boundary : one of :data:`~gmmrestore.operators.BOUNDARIES` ("zero" is
        the baselines' own model); "valid" restores the images extended by
        their edge values (:func:`~gmmrestore.operators.extend_frame`), so the zero-boundary
        baselines see no false edge at the frame's border, and returns the centre
        (:func:`~gmmrestore.operators.frame_centre`), aligned with ``corrupted`` (a
        ``valid_model`` baseline gets the frame as it is).

    Returns
    -------
    (n, H, W) float64.
    """
    spec = get_baseline(name)
    if boundary not in BOUNDARIES:
        raise GmmRestoreError(f"{name}: boundary {boundary!r} is not one of "
                              f"{BOUNDARIES}")
    corrupted = _check_images(corrupted, f"{name}: corrupted")
    kernel = validate_kernel(kernel)
    sigma = _check_sigma(sigma)
    if param is None:
        param = spec.default(kernel, sigma)
    if len(corrupted) == 0:
        return corrupted.copy()
    extend = boundary == "valid" and not spec.valid_model
    observed = extend_frame(corrupted, kernel.shape) if extend else corrupted
    out = np.asarray(spec.function(observed, kernel, sigma, param, int(seed)),
                     dtype=np.float64)
    if extend:
        out = frame_centre(out, kernel.shape)
    if not np.all(np.isfinite(out)):
        raise GmmRestoreError(f"{name} with {spec.param_name}={param}: non-finite output")
    return np.clip(out, 0.0, 1.0) if clip else out


def tune_baseline(name: str, clean_val: np.ndarray, corrupted_val: np.ndarray,
                  kernel: np.ndarray, sigma: float, grid: Sequence | None = None,
                  seed: int = 0, clip: bool = True, boundary: str = "zero"
                  ) -> tuple[Any, dict]:
    """Pick the free parameter of baseline ``name`` maximising the mean PSNR on validation images.

    clean_val, corrupted_val : (n, H, W) validation pairs (never the test images).
    grid : values to try; default ``BASELINES[name].default_grid(kernel, sigma)``.
    Ties go to the first grid value.  ``boundary`` as in :func:`restore_baseline`.

    Returns
    -------
    best : the chosen parameter (a plain Python value, JSON-serialisable).
    table : dict with ``param_name``, ``params`` (the grid), ``mean_psnr`` (one per grid
        value), ``seconds`` (restoration time per grid value), ``best``, ``best_mean_psnr``,
        ``at_grid_edge`` (the best is the first or last of several values: a warning is
        logged, the grid may be too narrow), ``n_images`` and ``seed``.
    """
    spec = get_baseline(name)
    clean_val = _check_images(clean_val, f"{name}: clean validation images")
    corrupted_val = _check_images(corrupted_val, f"{name}: corrupted validation images")
    if clean_val.shape != corrupted_val.shape or len(clean_val) == 0:
        raise GmmRestoreError(f"{name}: clean {clean_val.shape} and corrupted "
                              f"{corrupted_val.shape} validation images must have the same, "
                              f"non-empty shape")
    kernel = validate_kernel(kernel)
    sigma = _check_sigma(sigma)
    grid = list(spec.default_grid(kernel, sigma) if grid is None else grid)
    if not grid:
        raise GmmRestoreError(f"{name}: empty tuning grid")
    grid = [v.item() if isinstance(v, np.generic) else v for v in grid]
    scores, seconds = [], []
    for value in grid:
        t0 = time.perf_counter()
        restored = restore_baseline(name, corrupted_val, kernel, sigma, value, seed, clip,
                                    boundary)
        seconds.append(time.perf_counter() - t0)
        scores.append(float(np.mean(psnr(clean_val, restored))))
        log.info("tune %s: %s=%s mean PSNR %.3f dB (%d images, %.1f s)", name,
                 spec.param_name, value, scores[-1], len(clean_val), seconds[-1])
    best_index = int(np.argmax(scores))
    at_edge = len(grid) > 1 and best_index in (0, len(grid) - 1)
    if at_edge:
        log.warning("tune %s: the best %s=%s is at the edge of the grid %s; the optimum may "
                    "lie outside it", name, spec.param_name, grid[best_index], grid)
    table = {"param_name": spec.param_name, "params": grid, "mean_psnr": scores,
             "seconds": seconds, "best": grid[best_index],
             "best_mean_psnr": scores[best_index], "at_grid_edge": at_edge,
             "n_images": len(clean_val), "seed": int(seed)}
    return grid[best_index], table
