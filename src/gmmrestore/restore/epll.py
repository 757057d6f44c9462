"""Expected Patch Log Likelihood (EPLL) restoration by half-quadratic splitting
(Zoran & Weiss, ICCV 2011), with the GMM patch prior.

It minimises ``lam/2 |A x - y|^2 - sum_i log p(P_i x)`` over the image ``x``, where ``A``
is the image-level blur (:func:`gmmrestore.operators.blur`, zero boundary) and ``P_i``
extracts the i-th m x m patch.  Auxiliary patches ``z_i`` split the problem:

* patch step: ``z_i = MAP-k estimate of P_i x`` under the GMM with noise variance
  ``1/beta`` (the same :func:`~gmmrestore.restore.mapk.map_k_patch_rows` as MAP-k, with W = I);
* image step: ``x = argmin lam |A x - y|^2 + beta sum_i |P_i x - z_i|^2``, i.e.
  ``(lam A^T A + beta D) x = lam A^T y + beta sum_i P_i^T z_i`` with ``D`` the number of
  patches covering each pixel.  For pure denoising (A = I) this is a per-pixel division;
  otherwise it is solved by conjugate gradients, all images of a chunk at once.

``beta`` increases along a schedule; the defaults are the published ones:
``lam = d / sigma^2`` and ``beta = [1, 4, 8, 16, 32] / sigma^2``.

Borders (``weighting``): a pixel near the border lies in fewer patches (a corner pixel in
one, an interior pixel in ``d``), so in the exact image step above its prior weight
``beta D`` is up to ``d`` times smaller than an interior pixel's against the same data
weight ``lam``: at ``beta = 1/sigma^2`` a corner pixel keeps 64/65 of its noise.
``weighting="average"`` (the default, as the published code does) gives every pixel the
interior's prior weight: the patch estimates of a pixel are averaged and weighted by ``d``,
``(lam A^T A + beta d I) x = lam A^T y + beta d (sum_i P_i^T z_i) / D``, the minimiser of
the cost with pixel ``j`` of every patch term weighted by ``d / D_j``.
``weighting="exact"`` solves the unweighted system.

The cost has many local minima and where EPLL ends depends on its start: from the smooth
MAP-k estimate it settles in smooth minima.  ``init_sharpen`` applies an unsharp mask to the
start (:func:`unsharp_mask`); on validation digits that ends higher in every setting tried
with the true blur, but with an estimated blur at low noise it can end lower (docs/model.md "Where
EPLL starts").
"""

from __future__ import annotations

import logging

import numpy as np
from scipy import ndimage

from ..gmm import GaussianMixture, patch_size_of, remove_patch_dc, score_samples
from ..operators import (
    BOUNDARIES,
    blur,
    blur_adjoint,
    blur_valid,
    blur_valid_adjoint,
    extend_frame,
    frame_centre,
    patch_blur_matrix,
)
from ..patches import accumulate_patch_rows, extract_patch_rows, extract_patches, patch_counts
from ..solvers import batched_cg
from .mapk import PatchPosterior, _map_k_patch_rows, map_k_patch_rows, map_k_restore
from .settings import DEFAULT_BETA_FACTORS, EPLL_INITS, EpllSettings

log = logging.getLogger("gmmrestore.epll")

#: Image-step weightings of the patch estimates (module docstring).
WEIGHTINGS = ("average", "exact")
# sigma = 0 (pure deblurring) has no finite lam; this floor keeps the problem well posed.
MIN_SIGMA = 1e-3


def epll_parameters(sigma: float, d: int, beta_factors=DEFAULT_BETA_FACTORS,
                    lam_factor: float = 1.0) -> tuple[float, np.ndarray]:
    """``(lam, betas)`` for noise ``sigma`` and patch dimension ``d``; a ``sigma`` below
    :data:`MIN_SIGMA` is raised to it (with a warning)."""
    if sigma < MIN_SIGMA:
        log.warning("EPLL: noise sigma %.3g is below %.3g; lam and beta use sigma = %.3g so "
                    "that the problem stays well posed", sigma, MIN_SIGMA, MIN_SIGMA)
    s2 = max(sigma, MIN_SIGMA) ** 2
    return lam_factor * d / s2, np.asarray(beta_factors, dtype=np.float64) / s2


def check_unsharp_parameters(amount: float, std: float) -> None:
    """Raise ValueError unless ``amount >= 0`` and ``std > 0`` (NaN fails both)."""
    if not amount >= 0:
        raise ValueError(f"unsharp mask amount must be >= 0, got {amount}")
    if not std > 0:
        raise ValueError(f"unsharp mask std must be > 0, got {std}")


def unsharp_mask(images: np.ndarray, amount: float, std: float = 1.0) -> np.ndarray:
    """``x + amount * (x - G * x)`` for each image, ``G`` a Gaussian filter of standard
    deviation ``std`` pixels (mirrored boundary, as :func:`scipy.ndimage.gaussian_filter`).

    images : (n, H, W).  Returns (n, H, W) float64; ``amount = 0`` returns a copy.
    """
    check_unsharp_parameters(amount, std)
    images = np.array(images, dtype=np.float64)
    if amount == 0:
        return images
    smooth = ndimage.gaussian_filter(images, sigma=(0.0, std, std))
    return images + amount * (images - smooth)


class ImagePrior:
    """A GMM over whole images (d = H * W pixels) for EPLL's image-level term.

    Each covariance is diagonalised once, ``Sigma_k = U_k diag(l_k) U_k^T``, so the MAP step
    under any isotropic noise variance costs two products per component; MAP-k's
    quadratic-feature route (:class:`~gmmrestore.restore.mapk.PatchPosterior`) would need a
    ``(K, d(d+1)/2)`` score matrix per noise level, too large at image size.

    gmm : the mixture over whole images, d = H * W features.
    """

    def __init__(self, gmm: GaussianMixture):
        self.log_weights = np.log(np.asarray(gmm.weights, dtype=np.float64))
        self.means = np.asarray(gmm.means, dtype=np.float64)
        eigenvalues, self.bases = np.linalg.eigh(np.asarray(gmm.covariances, dtype=np.float64))
        self.eigenvalues = np.maximum(eigenvalues, 0.0)  # round-off below 0

    @property
    def n_features(self) -> int:
        return self.means.shape[1]

    def map_estimate(self, X: np.ndarray, noise_var: float) -> np.ndarray:
        """Posterior mean of clean images under the component of highest posterior
        probability, for ``X = x + n``, ``n ~ N(0, noise_var I)``.

        X : (n, d).  Returns (n, d).  Component score: ``log pi_k + log N(X; mu_k,
        Sigma_k + noise_var I)``; estimate ``mu_k + Sigma_k (Sigma_k + noise_var I)^-1
        (X - mu_k)``.
        """
        X = np.asarray(X, dtype=np.float64)
        K = len(self.log_weights)
        scores = np.empty((K, len(X)))
        for k in range(K):  # K products of (n, d) by (d, d): BLAS, no loop over images
            r = (X - self.means[k]) @ self.bases[k]
            v = self.eigenvalues[k] + noise_var
            scores[k] = self.log_weights[k] - 0.5 * (
                np.sum(np.log(2 * np.pi * v)) + np.sum(r**2 / v, axis=1))
        best = np.argmax(scores, axis=0)
        out = np.empty_like(X)
        for k in np.unique(best):
            rows = best == k
            r = (X[rows] - self.means[k]) @ self.bases[k]
            shrink = self.eigenvalues[k] / (self.eigenvalues[k] + noise_var)
            out[rows] = self.means[k] + (r * shrink) @ self.bases[k].T
        return out


def epll_image_step(y: np.ndarray, patch_sum: np.ndarray, counts: np.ndarray,
                    kernel: np.ndarray | None, lam: float, beta: float,
                    x0: np.ndarray | None = None, cg_rtol: float = 1e-6,
                    cg_maxiter: int = 200, valid: bool = False) -> np.ndarray:
    """Solve ``(lam A^T A + beta D) x = lam A^T y + beta patch_sum`` for each image.

    y : (n, H, W);  patch_sum : (n, H', W');  counts : (H', W') patches per pixel;
    kernel : (kh, kw) or None for A = I.  ``valid``: A is :func:`~gmmrestore.operators.
    blur_valid` and x is larger than y, H' = H + kh - 1, W' = W + kw - 1 (else H' = H,
    W' = W).  Returns x : (n, H', W').
    """
    if not valid and (kernel is None or kernel.shape == (1, 1) and kernel[0, 0] == 1.0):
        return (lam * y + beta * patch_sum) / (lam + beta * counts)
    forward, adjoint = (blur_valid, blur_valid_adjoint) if valid else (blur, blur_adjoint)
    rhs = lam * adjoint(y, kernel) + beta * patch_sum

    def apply(x: np.ndarray) -> np.ndarray:
        return lam * adjoint(forward(x, kernel), kernel) + beta * counts * x

    x, iters = batched_cg(apply, rhs, x0=x0, rtol=cg_rtol, maxiter=cg_maxiter)
    if np.any(iters >= cg_maxiter):
        log.warning("conjugate gradients hit %d iterations on %d image(s)", cg_maxiter,
                    int(np.sum(iters >= cg_maxiter)))
    return x


def epll_energy(images: np.ndarray, corrupted: np.ndarray, gmm: GaussianMixture,
                kernel: np.ndarray | None, sigma: float, *, lam_factor: float = 1.0,
                remove_dc: bool = False) -> np.ndarray:
    """The cost EPLL minimises, per image: ``lam/2 |A x - y|^2 - sum_i log p(P_i x)``.

    images (the candidate x), corrupted (y) : (n, H, W);  gmm : the prior over m x m
    patches;  kernel : the blur A (None: identity);  ``lam`` as in
    :func:`epll_parameters`.  Returns (n,).  For comparing restorations of the same images
    (e.g. from different starting points): lower is what EPLL prefers, whatever the PSNR.
    """
    images = np.asarray(images, dtype=np.float64)
    n = len(images)
    m = patch_size_of(gmm)
    lam, _ = epll_parameters(sigma, m * m, (1.0,), lam_factor)
    residual = (images if kernel is None else blur(images, kernel)) - corrupted
    patches = extract_patches(images, m).reshape(-1, m * m)
    if remove_dc:
        patches = remove_patch_dc(patches)
    log_prior = score_samples(patches, gmm)
    return 0.5 * lam * np.sum(residual**2, axis=(1, 2)) - log_prior.reshape(n, -1).sum(axis=1)


def epll_restore(y: np.ndarray, gmm: GaussianMixture, kernel: np.ndarray | None, sigma: float,
                 settings: EpllSettings | None = None, *, remove_dc: bool = False,
                 init: np.ndarray | None = None, image_prior: ImagePrior | None = None,
                 image_prior_weight: float = 16.0, boundary: str = "zero", clip: bool = False,
                 cg_rtol: float = 1e-6, cg_maxiter: int = 200, images_per_chunk: int = 64,
                 progress=None, score_dtype=np.float64) -> np.ndarray:
    """Restore images by EPLL with a GMM prior over m x m patches.

    y : (n, H, W) corrupted images;  gmm : the prior over m x m patches (m² features);
    kernel : (kh, kw) image-level blur or None for denoising;  sigma : noise std.
    Returns (n, H, W).

    ``settings`` (default :meth:`EpllSettings.published`): the beta schedule, the data
    weight, ``n_inner`` patch/image alternations per beta, the image step's ``weighting``
    ("average" or "exact", module docstring) and the start: ``init`` (n, H, W) if given,
    else ``settings.init`` ("corrupted": the corrupted images; "mapk": their plain-mean
    MAP-k estimate with the patch blur of ``kernel``), sharpened by
    ``unsharp_mask(start, settings.init_sharpen, settings.init_sharpen_std)`` (and clipped
    with ``clip``).  ``remove_dc``: the GMM is over DC-removed patches.

    ``image_prior`` (an :class:`ImagePrior` over H * W pixels) adds a whole-image term: each
    image step also pulls x towards the prior's MAP estimate of x under noise ``1/beta``,
    with ``image_prior_weight`` times the weight of one patch, i.e. the system becomes
    ``(lam A^T A + beta (D + w)) x = lam A^T y + beta (sum_i P_i^T z_i + w z_image)``
    (multi-scale EPLL with the whole image as the coarsest "patch"; docs/results.md, MNIST).
    ``weighting="average"`` replaces ``D`` by ``d`` and ``sum_i P_i^T z_i`` by
    ``d sum_i P_i^T z_i / D``.
    ``boundary="valid"`` (:data:`BOUNDARIES`): the scene x is larger than y by the kernel
    size minus one, patches and image steps are over x (``init`` then has x's shape; by
    default y extended by its edge values) and the returned images are x's centre, aligned
    with y (no ``image_prior`` then).  The image steps' conjugate gradients stop at
    ``cg_rtol`` or ``cg_maxiter``; images are restored ``images_per_chunk`` at a time and
    ``progress(done, n)`` is called after each chunk.  ``score_dtype``: the precision of
    the patch steps' component choice (:class:`~gmmrestore.restore.mapk.PatchPosterior`),
    float32 for a prior trained in float32.
    """
    return _epll_restore(y, gmm, kernel, sigma, settings, remove_dc=remove_dc, init=init,
                         image_prior=image_prior, image_prior_weight=image_prior_weight,
                         boundary=boundary, clip=clip, cg_rtol=cg_rtol,
                         cg_maxiter=cg_maxiter, images_per_chunk=images_per_chunk,
                         progress=progress, score_dtype=score_dtype)


def _epll_restore(y: np.ndarray, gmm: GaussianMixture, kernel: np.ndarray | None,
                  sigma: float, settings: EpllSettings | None = None, *,
                  component_images: np.ndarray | None = None, remove_dc: bool = False,
                  init: np.ndarray | None = None, image_prior: ImagePrior | None = None,
                  image_prior_weight: float = 16.0, boundary: str = "zero",
                  clip: bool = False, cg_rtol: float = 1e-6, cg_maxiter: int = 200,
                  images_per_chunk: int = 64, progress=None,
                  score_dtype=np.float64) -> np.ndarray:
    """:func:`epll_restore`, with a diagnostic: given ``component_images`` (n, H, W), every
    patch step takes each patch's component from the same patch of these images instead of
    the current estimate (the clean images give the oracle choice; docs/results.md, MNIST).
    """
    st = EpllSettings.published() if settings is None else settings
    corrupted = np.asarray(y, dtype=np.float64)
    n, h, w = corrupted.shape
    m = patch_size_of(gmm)
    lam, betas = epll_parameters(sigma, m * m, st.beta_factors, st.lam_factor)
    check_unsharp_parameters(st.init_sharpen, st.init_sharpen_std)
    valid = _check_boundary(boundary, kernel, component_images, image_prior)
    if valid:
        h, w = h + np.shape(kernel)[0] - 1, w + np.shape(kernel)[1] - 1  # the scene
    if init is None:
        init = _start(corrupted, gmm, kernel, sigma, st.init, valid, remove_dc, score_dtype)
    for name, given, shape in (("init", init, (n, h, w)),
                               ("component_images", component_images, corrupted.shape)):
        if given is not None and np.shape(given) != shape:
            raise ValueError(f"{name} must have the shape {shape}, got {np.shape(given)}")
    counts, patch_scale = _prior_weights((h, w), m, st.weighting, image_prior,
                                         image_prior_weight)
    posteriors = [PatchPosterior.build(gmm.weights, gmm.means, gmm.covariances, None,
                                       1.0 / beta, remove_dc, score_dtype=score_dtype)
                  for beta in betas]
    if kernel is not None:
        kernel = np.asarray(kernel, dtype=np.float64)
    out = np.empty_like(corrupted)
    for start in range(0, n, images_per_chunk):
        stop = min(start + images_per_chunk, n)
        yc = corrupted[start:stop]
        if init is not None:
            x = init[start:stop]
        else:
            x = extend_frame(yc, kernel.shape) if valid else yc
        x = unsharp_mask(x, st.init_sharpen, st.init_sharpen_std)
        if clip:
            np.clip(x, 0.0, 1.0, out=x)
        for beta, post in zip(betas, posteriors, strict=True):
            given = None
            if component_images is not None:
                _, given = map_k_patch_rows(
                    extract_patch_rows(component_images[start:stop], m), post)
            for _ in range(st.n_inner):
                Zt, _ = _map_k_patch_rows(extract_patch_rows(x, m), post, labels=given)
                patch_sum = accumulate_patch_rows(Zt, (h, w), m)
                if patch_scale is not None:
                    patch_sum *= patch_scale
                if image_prior is not None:
                    z_image = image_prior.map_estimate(x.reshape(len(x), -1), 1.0 / beta)
                    patch_sum += image_prior_weight * z_image.reshape(x.shape)
                x = epll_image_step(yc, patch_sum, counts, kernel, lam, beta, x0=x,
                                    cg_rtol=cg_rtol, cg_maxiter=cg_maxiter, valid=valid)
                if clip:
                    np.clip(x, 0.0, 1.0, out=x)
        out[start:stop] = frame_centre(x, kernel.shape) if valid else x
        if progress is not None:
            progress(stop, n)
    return out


def _start(y: np.ndarray, gmm: GaussianMixture, kernel, sigma: float, how: str, valid: bool,
           remove_dc: bool, score_dtype=np.float64) -> np.ndarray | None:
    """EPLL's start when none is given: None (the corrupted images y, edge-extended with
    ``valid``) for ``how`` "corrupted", or y's plain-mean MAP-k estimate for "mapk"."""
    if how not in EPLL_INITS:
        raise ValueError(f"init must be one of {', '.join(EPLL_INITS)}, got {how!r}")
    if how == "corrupted":
        return None
    if valid:
        raise ValueError("boundary='valid' with init 'mapk': give the start as init")
    W = None if kernel is None else patch_blur_matrix(np.asarray(kernel, dtype=np.float64),
                                                      patch_size_of(gmm))
    return map_k_restore(y, gmm, W, sigma, remove_dc=remove_dc, score_dtype=score_dtype)


def _prior_weights(shape: tuple[int, int], m: int, weighting: str,
                   image_prior: ImagePrior | None, image_prior_weight: float):
    """The image step's prior weight per pixel (H, W) (patch counts, or d everywhere with
    "average", plus the image prior's weight) and the patch sums' scale (H, W) of
    "average" (None with "exact")."""
    if weighting not in WEIGHTINGS:
        raise ValueError(f"weighting must be one of {', '.join(WEIGHTINGS)}, got {weighting!r}")
    h, w = shape
    d = m * m
    counts = patch_counts((h, w), m)
    # "average": each pixel's patch estimates weigh d in total, as an interior pixel's
    patch_scale = d / counts if weighting == "average" else None
    if patch_scale is not None:
        counts = np.full((h, w), float(d))
    if image_prior is not None:
        if image_prior.n_features != h * w:
            raise ValueError(f"image_prior is over {image_prior.n_features} pixels, the "
                             f"images have {h} x {w} = {h * w}")
        if not image_prior_weight > 0:
            raise ValueError(f"image_prior_weight must be > 0, got {image_prior_weight}")
        counts = counts + image_prior_weight
    return counts, patch_scale


def _check_boundary(boundary: str, kernel, component_images, image_prior) -> bool:
    """Whether ``boundary`` is "valid" (ValueError for unknown values or unsupported
    combinations)."""
    if boundary not in BOUNDARIES:
        raise ValueError(f"boundary must be one of {', '.join(BOUNDARIES)}, got {boundary!r}")
    valid = boundary == "valid"
    if valid and kernel is None:
        raise ValueError("boundary='valid' needs a blur kernel")
    if valid and (component_images is not None or image_prior is not None):
        raise ValueError("boundary='valid' works without component_images and image_prior")
    return valid
