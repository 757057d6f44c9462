"""The seed's MAP-k rule, batched: per patch, the most probable mixture component given
the observation, then that component's posterior mean.

For an observed patch ``y = W z + n`` (n ~ N(0, s² I)) and a prior
``z ~ sum_k pi_k N(mu_k, Sigma_k)``:

* the marginal of y under component k is ``N(W mu_k, C_k)``, ``C_k = W Sigma_k W^T + s² I``;
* MAP-k picks ``k* = argmax_k log pi_k + log N(y; W mu_k, C_k)`` (a choice that depends on y);
* the estimate is ``z = mu_k* + Sigma_k* W^T C_k*^{-1} (y - W mu_k*)``.

All K scores of a block of patches come from ONE matrix product.  Writing
``P_k = C_k^{-1}`` and ``b_k = W mu_k``, the Mahalanobis term expands to
``y^T P_k y - 2 y^T P_k b_k + b_k^T P_k b_k``: linear in the quadratic features
``phi(y) = [y_i y_j (i <= j), y, 1]`` (about d(d+1)/2 + d + 1 of them), so
``scores = phi(Y) @ S`` with a (n_features, K) matrix ``S`` built once per component
set.  That product has a long inner dimension and a narrow output, the shape the BLAS runs
fastest, and costs about half the flops of whitening every patch for every component.
The estimate then needs only the chosen component: ``mu_k + G_k (y - b_k) = G_k y + o_k``
with the gain ``G_k = Sigma_k W^T C_k^{-1}`` from a Cholesky solve and the offset
``o_k = mu_k - G_k b_k``, both computed once per component.
Patches are processed in tasks of :data:`TASK_PATCHES` by worker threads, each with a
single-threaded BLAS (:mod:`gmmrestore.threads`), so that the feature construction and the
gains run on every core, not only the score product.  Patches travel as columns of a
(d, N) array (:func:`~gmmrestore.patches.extract_patch_rows`): each pixel of the patches is
contiguous, which the feature products, the gather by component and the re-assembly read
without transposing copies (bench/restore_speed.py on an AVX-512 machine: 45-48% -> 49-57%
of the GEMM rate).

For a GMM trained on DC-removed patches (``remove_dc``: zero-mean components), each patch's
DC ``c`` is estimated as ``1^T y / 1^T W 1`` and removed, ``y0 = y - c W 1``, and added back
to the estimate (for W = I this is EPLL's usual mean removal).
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass

import numpy as np
from scipy import linalg

from ..gmm import GaussianMixture, patch_size_of
from ..operators import blur
from ..patches import average_patch_rows, extract_patch_rows, extract_patches
from ..threads import one_blas_thread, run_over_spans
from .settings import MapkSettings

log = logging.getLogger("gmmrestore.mapk")

# Smallest noise variance used in C_k, relative to the mean prior variance: sigma = 0
# (pure deblurring) otherwise gives a singular C_k whenever W is singular.
MIN_RELATIVE_NOISE_VAR = 1e-8
#: Rows of y per block of the quadratic features (see :func:`quadratic_feature_rows`).
FEATURE_BLOCK = 8
#: Patches per task of a worker thread in :func:`map_k_patch_rows` (scores, choice and
#: estimate).
TASK_PATCHES = 8192


def safe_cholesky(C: np.ndarray, what: str = "matrix") -> tuple[np.ndarray, float]:
    """Lower Cholesky factor of a symmetric PSD matrix ``C`` (d, d), adding jitter if needed.

    Returns ``(L, jitter)`` with ``L L^T = C + jitter I``; a non-zero jitter is logged.
    """
    scale = max(float(np.trace(C)) / len(C), np.finfo(float).tiny)
    jitter = 0.0
    for attempt in range(12):
        try:
            L = linalg.cholesky(C + jitter * np.eye(len(C)), lower=True, check_finite=False)
            if jitter:
                log.warning("%s was not positive definite; added %.3g to its diagonal",
                            what, jitter)
            return L, jitter
        except linalg.LinAlgError:
            jitter = scale * 10.0 ** (attempt - 12)
    raise np.linalg.LinAlgError(f"{what} is not positive semi-definite")


def _feature_blocks(d: int) -> list[tuple[int, int]]:
    """Row blocks ``[lo, hi)`` of the quadratic features (see :func:`quadratic_feature_rows`)."""
    edges = list(range(0, d, FEATURE_BLOCK)) + [d]
    return list(zip(edges[:-1], edges[1:], strict=True))


@functools.cache
def _quadratic_pairs(d: int) -> tuple[np.ndarray, np.ndarray]:
    """Index pairs ``(i, j)``, ``i <= j``, of the products in :func:`quadratic_feature_rows`,
    in its order: for each row block ``[lo, hi)``, its rows against the columns after it;
    then inside the diagonal blocks, for each offset ``j - i``, the full blocks, then the
    last, shorter block."""
    pairs = [(i, j) for lo, hi in _feature_blocks(d) for i in range(lo, hi)
             for j in range(hi, d)]
    full = d - d % FEATURE_BLOCK
    for lo_range, size in ((range(0, full, FEATURE_BLOCK), FEATURE_BLOCK),
                           (range(full, d, FEATURE_BLOCK), d - full)):
        for shift in range(size):
            pairs += [(lo + i, lo + i + shift) for lo in lo_range for i in range(size - shift)]
    rows, cols = np.array(pairs, dtype=np.intp).reshape(-1, 2).T
    rows.flags.writeable = cols.flags.writeable = False  # cached: shared by every caller
    return rows, cols


def n_quadratic_features(d: int) -> int:
    """Length of :func:`quadratic_features` rows for patches of dimension ``d``:
    ``d(d+1)/2 + d + 1``."""
    return d * (d + 1) // 2 + d + 1


def quadratic_feature_rows(Yt: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """Quadratic features of patches given as columns: every product ``y_i y_j``
    (``i <= j``) once, then ``y`` and 1, one feature per row.

    Yt : (d, n), each row contiguous (e.g. columns of :func:`~gmmrestore.patches.
    extract_patch_rows`).  out : optional C-contiguous (:func:`n_quadratic_features` (d),
    n) buffer.  Returns (:func:`n_quadratic_features` (d), n): each feature contiguous over
    the patches, so that the products are a few vectorised calls along the patches
    (broadcasting along a patch's own short rows is several times slower).  Order: for each
    block of :data:`FEATURE_BLOCK` rows ``[lo, hi)``, the products with the columns after
    the block (one broadcast call); then the products inside the diagonal blocks (one call
    for all blocks).
    """
    d, n = Yt.shape
    if out is None:
        out = np.empty((n_quadratic_features(d), n), dtype=Yt.dtype)
    elif out.shape != (n_quadratic_features(d), n) or not out.flags.c_contiguous:
        raise ValueError(f"out must be a C-contiguous ({n_quadratic_features(d)}, {n}) "
                         f"array, got shape {out.shape}")
    offset = 0
    for lo, hi in _feature_blocks(d):
        size = (hi - lo) * (d - hi)
        np.multiply(Yt[lo:hi, None, :], Yt[None, hi:, :],
                    out=out[offset:offset + size].reshape(hi - lo, d - hi, n))
        offset += size
    # inside the diagonal blocks: one call per offset j - i, all full blocks at once
    full = d - d % FEATURE_BLOCK
    blocks = Yt[:full].reshape(full // FEATURE_BLOCK, FEATURE_BLOCK, n)
    for shift in range(FEATURE_BLOCK if len(blocks) else 0):
        size = (FEATURE_BLOCK - shift) * len(blocks)
        np.multiply(blocks[:, :FEATURE_BLOCK - shift], blocks[:, shift:],
                    out=out[offset:offset + size].reshape(len(blocks), -1, n))
        offset += size
    for shift in range(d - full):
        size = d - full - shift
        np.multiply(Yt[full:d - shift], Yt[full + shift:], out=out[offset:offset + size])
        offset += size
    out[offset:offset + d] = Yt
    out[-1] = 1.0
    return out


def quadratic_features(Y: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """:func:`quadratic_feature_rows` of patches given as rows.

    Y : (n, d).  out : optional (:func:`n_quadratic_features` (d), n) buffer.  Returns
    (n, :func:`n_quadratic_features` (d)), the transpose of ``out`` (the BLAS reads it at
    no cost).
    """
    return quadratic_feature_rows(np.ascontiguousarray(Y.T), out).T


def quadratic_form_coefficients(P: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Coefficients ``s`` with ``quadratic_features(y) @ s == (y - b)^T P (y - b)``.

    P : (d, d) symmetric;  b : (d,).  Returns (:func:`n_quadratic_features` (d),).
    """
    rows, cols = _quadratic_pairs(len(b))
    Pb = P @ b
    return np.concatenate([np.where(rows == cols, 1.0, 2.0) * P[rows, cols], -2.0 * Pb,
                           [b @ Pb]])


def check_position_weight_power(power: float) -> None:
    """Raise ValueError unless ``power >= 0`` (NaN fails)."""
    if not power >= 0:
        raise ValueError(f"position weight power must be >= 0, got {power}")


@dataclass(frozen=True)
class PatchPosterior:
    """Per-component quantities of MAP-k for one (GMM, W, noise variance).

    Attributes
    ----------
    score_matrix : (n_quadratic_features(d), K)
        ``quadratic_features(Y) @ score_matrix`` is the MAP-k score of every patch and
        component, ``log pi_k + log N(y; W mu_k, C_k)`` (the constants sit in the row of
        the constant feature).
    gain : (K, d, d)
        ``G_k = Sigma_k W^T C_k^{-1}``.
    offset : (K, d)
        ``mu_k - G_k W mu_k``, so that the estimate is ``G_k y + offset_k``.
    dc_response : (d,) or None
        ``W 1`` when the prior is zero-mean on DC-removed patches, else None.
    score_dtype : numpy dtype
        Precision of the score product (:func:`map_k_patch_rows`): float64, or float32 for
        a prior trained in float32, whose scores are no more precise than that (the
        product then runs at the float32 GEMM rate; the estimates stay float64).
    position_variance : (d,)
        Posterior variance of each pixel of a patch, ``diag(Sigma_k - G_k W Sigma_k)``,
        averaged over the components with the mixture weights: how uncertain the estimate
        is at each position inside the patch (larger at the borders, where the blur mixes in
        pixels from outside the patch).  See :meth:`position_weights`.
    """

    score_matrix: np.ndarray
    gain: np.ndarray
    offset: np.ndarray
    dc_response: np.ndarray | None
    position_variance: np.ndarray
    score_dtype: np.dtype = np.dtype(np.float64)

    def position_weights(self, power: float) -> np.ndarray:
        """Weights (d,) for averaging overlapping patch estimates:
        ``(position_variance / min)^-power``.  ``power = 0`` is the plain mean, 1 the
        inverse-variance (precision) weighting; larger powers trust the well-determined
        positions (the patch centre) more."""
        check_position_weight_power(power)
        variance = np.maximum(self.position_variance, np.finfo(float).tiny)
        return (variance / variance.min()) ** -float(power)

    @property
    def n_components(self) -> int:
        return self.gain.shape[0]

    @property
    def n_features(self) -> int:
        return self.gain.shape[1]

    @classmethod
    def build(cls, weights: np.ndarray, means: np.ndarray, covariances: np.ndarray,
              W: np.ndarray | None, noise_var: float, remove_dc: bool = False,
              extra_noise_cov: np.ndarray | None = None,
              score_dtype=np.float64) -> PatchPosterior:
        """Precompute MAP-k for prior (weights (K,), means (K, d), covariances (K, d, d)),
        patch blur ``W`` (d, d) (None for the identity) and noise variance ``noise_var``.

        ``extra_noise_cov`` (d, d) is added to every ``C_k``: e.g. the covariance of what
        the patch-level W misses (blur from pixels outside the patch).  ``score_dtype``:
        float64 or float32, see the class docstring."""
        score_dtype = np.dtype(score_dtype)
        if score_dtype not in (np.float32, np.float64):
            raise ValueError(f"score dtype must be float32 or float64, got {score_dtype}")
        means = np.asarray(means, dtype=np.float64)
        covariances = np.asarray(covariances, dtype=np.float64)
        K, d = means.shape
        W = np.eye(d) if W is None else np.asarray(W, dtype=np.float64)
        floor = MIN_RELATIVE_NOISE_VAR * float(
            np.mean(np.trace(covariances, axis1=1, axis2=2)) / d)
        if noise_var < floor:
            log.warning("MAP-k: noise variance %.3g is below the floor %.3g (%.0e of the mean "
                        "prior variance) that keeps the posterior well defined; using the "
                        "floor", noise_var, floor, MIN_RELATIVE_NOISE_VAR)
            noise_var = floor
        # one contiguous row per component: score_matrix.T is the score product's left
        # operand in map_k_patch_rows, used without a copy
        score_matrix = np.empty((K, n_quadratic_features(d))).T
        gain = np.empty((K, d, d))
        posterior_variance = np.empty((K, d))
        obs_means = means @ W.T
        with np.errstate(divide="ignore"):
            log_weights = np.log(np.asarray(weights, dtype=np.float64))
        with one_blas_thread():  # K small factorisations: BLAS threads only contend
            cls._fill_components(covariances, W, noise_var, extra_noise_cov, obs_means,
                                 log_weights, score_matrix, gain, posterior_variance)
        offset = means - np.einsum("kij,kj->ki", gain, obs_means)
        dc_response = W @ np.ones(d) if remove_dc else None
        weights = np.asarray(weights, dtype=np.float64)
        position_variance = weights @ posterior_variance / weights.sum()
        return cls(score_matrix, gain, offset, dc_response, position_variance, score_dtype)

    @staticmethod
    def _fill_components(covariances, W, noise_var, extra_noise_cov, obs_means, log_weights,
                         score_matrix, gain, posterior_variance) -> None:
        """Per-component part of :meth:`build`, written into the given arrays."""
        K, d = obs_means.shape
        eye = np.eye(d)
        for k in range(K):
            WS = W @ covariances[k]                     # W Sigma_k
            C = WS @ W.T + noise_var * eye
            if extra_noise_cov is not None:
                C = C + extra_noise_cov
            L, _ = safe_cholesky(0.5 * (C + C.T),
                                 what=f"observation covariance of component {k}")
            P = linalg.cho_solve((L, True), eye, check_finite=False)
            score_matrix[:, k] = -0.5 * quadratic_form_coefficients(0.5 * (P + P.T),
                                                                    obs_means[k])
            gain[k] = linalg.cho_solve((L, True), WS, check_finite=False).T
            # diag(Sigma_k - G_k W Sigma_k)
            posterior_variance[k] = (np.diag(covariances[k])
                                     - np.einsum("ij,ji->i", gain[k], WS))
            score_matrix[-1, k] += (log_weights[k] - np.log(np.diag(L)).sum()
                                    - 0.5 * d * np.log(2 * np.pi))


def map_k_patches(Y: np.ndarray, post: PatchPosterior, chunk_size: int = 1024,
                  n_threads: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """MAP-k estimates of clean patches given as rows: :func:`map_k_patch_rows` of ``Y.T``.

    Y : (N, d).  Returns ``Z`` (N, d) (a transposed view) and ``labels`` (N,).
    """
    return _map_k_patches(Y, post, chunk_size, n_threads)


def _map_k_patches(Y: np.ndarray, post: PatchPosterior, chunk_size: int = 1024,
                   n_threads: int | None = None,
                   labels: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """:func:`map_k_patches`, or with the components ``labels`` (N,) given (a diagnostic,
    :func:`_map_k_patch_rows`)."""
    Zt, labels = _map_k_patch_rows(np.ascontiguousarray(np.asarray(Y, dtype=np.float64).T),
                                   post, chunk_size, n_threads, labels)
    return Zt.T, labels


def _checked_labels(labels, N: int, K: int) -> np.ndarray:
    """Given components (N,) as intp; ValueError unless integers in [0, K)."""
    labels = np.asarray(labels)
    if labels.shape != (N,) or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"labels must be ({N},) integers, got {labels.shape} "
                         f"{labels.dtype}")
    if N and not 0 <= labels.min() <= labels.max() < K:
        raise ValueError(f"labels must lie in [0, {K}), got {labels.min()}..{labels.max()}")
    return labels.astype(np.intp)


def _posterior_means(post: PatchPosterior, Yt: np.ndarray, chosen: np.ndarray,
                     out: np.ndarray) -> None:
    """``out[:, i] = gain[k_i] Yt[:, i] + offset[k_i]`` for patches Yt (d, n) and their
    components chosen (n,), written into out (d, n)."""
    # Each component's gain on its own patches: a loop over K, not over patches, on the
    # patches sorted by component (one gather and one scatter per task).
    order = np.argsort(chosen, kind="stable")
    bounds = np.searchsorted(chosen[order], np.arange(post.n_components + 1))
    sorted_patches = np.take(Yt, order, axis=1)
    estimates = np.empty_like(sorted_patches)
    for k in np.flatnonzero(np.diff(bounds)):
        span = slice(bounds[k], bounds[k + 1])
        np.matmul(post.gain[k], sorted_patches[:, span], out=estimates[:, span])
        estimates[:, span] += post.offset[k][:, None]
    # scatter back as a gather by the inverse permutation (np.take is faster than
    # assigning through fancy indices; mode "clip" writes to out without a buffer, and
    # the indices are in range by construction)
    inverse = np.empty_like(order)
    inverse[order] = np.arange(len(order))
    np.take(estimates, inverse, axis=1, out=out, mode="clip")


# chunk_size 1024: 768-1024 ran fastest (50-56% of the GEMM rate; 512 and 2048 slower)
def map_k_patch_rows(Yt: np.ndarray, post: PatchPosterior, chunk_size: int = 1024,
                     n_threads: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """MAP-k estimates of clean patches, one patch per column.

    Parameters
    ----------
    Yt : (d, N)
        Observed patches as columns (:func:`~gmmrestore.patches.extract_patch_rows`), each
        row contiguous.
    post : PatchPosterior
    chunk_size : int
        Patches per score product; bounds the (~d(d+1)/2, chunk_size) feature temporary
        (18 MB per thread at the default for d = 64).
    n_threads : int, optional
        Worker threads, each with a single-threaded BLAS, over tasks of
        :data:`TASK_PATCHES` patches (default: the BLAS thread count).  The result does not
        depend on it.

    Returns
    -------
    Zt : (d, N) posterior means under the chosen components, as columns.
    labels : (N,) chosen component per patch.
    """
    return _map_k_patch_rows(Yt, post, chunk_size, n_threads)


def _map_k_patch_rows(Yt: np.ndarray, post: PatchPosterior, chunk_size: int = 1024,
                      n_threads: int | None = None,
                      labels: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """:func:`map_k_patch_rows`, or with ``labels`` (N,) ints in [0, K) given instead of
    chosen (a diagnostic, e.g. the components the clean patches would choose): the
    estimates are then ``G_k y + offset_k`` under them, and ``labels`` is returned."""
    Yt = np.asarray(Yt, dtype=np.float64)
    d, N = Yt.shape
    K = post.n_components
    if d != post.n_features:
        raise ValueError(f"patches have {d} pixels, the posterior {post.n_features}")
    Zt = np.empty((d, N))
    choose = labels is None
    labels = np.empty(N, dtype=np.intp) if choose else _checked_labels(labels, N, K)
    if post.dc_response is not None:
        dc = Yt.sum(axis=0) / post.dc_response.sum()
        Yt = Yt - post.dc_response[:, None] * dc

    # scores as (K, n_features) @ (n_features, patches): both operands C-contiguous, which
    # the BLAS ran ~1.4x faster than the transposed product on an AVX-512 machine
    score_rows = (np.ascontiguousarray(post.score_matrix.T, dtype=post.score_dtype)
                  if choose else None)

    def choose_components(start: int, stop: int) -> None:
        n_features = post.score_matrix.shape[0]
        features = np.empty((n_features, min(chunk_size, stop - start)), post.score_dtype)
        for s in range(start, stop, chunk_size):
            e = min(s + chunk_size, stop)
            out = features if e - s == features.shape[1] else np.empty((n_features, e - s),
                                                                      post.score_dtype)
            # a compact copy of the chunk: the products ran ~20% faster from it than from
            # rows N apart
            quadratic_feature_rows(np.ascontiguousarray(Yt[:, s:e], dtype=out.dtype), out=out)
            labels[s:e] = np.argmax(score_rows @ out, axis=0)

    def task(start: int, stop: int) -> None:
        if choose:
            choose_components(start, stop)
        _posterior_means(post, Yt[:, start:stop], labels[start:stop], Zt[:, start:stop])

    for _ in run_over_spans(task, N, TASK_PATCHES, n_threads):
        pass
    if post.dc_response is not None:
        Zt += dc
    return Zt, labels


def map_k_flops(n_patches: int, n_components: int, d: int) -> float:
    """Floating-point operations of :func:`map_k_patch_rows`: the score product, the
    d(d+1)/2 products of :func:`quadratic_feature_rows` and the gain products."""
    n_score = n_quadratic_features(d)
    return n_patches * (2.0 * n_score * n_components + d * (d + 1) / 2 + 2.0 * d * d)


def boundary_noise_covariance(clean: np.ndarray, kernel: np.ndarray, W: np.ndarray, m: int
                              ) -> np.ndarray:
    """Second moment of what the patch-level model misses, ``e = P(k * x) - W P x``.

    When the whole image is blurred, an observed patch also holds blur from pixels just
    outside it, which the patch matrix ``W`` (zero outside the patch) does not model.
    Measured on clean example images (never the test images), ``E[e e^T]`` (d, d) can be
    added to every ``C_k`` so that MAP-k treats that part as structured noise.

    clean : (n, H, W) clean images;  kernel : image-level blur;  W : (m², m²).
    """
    clean = np.asarray(clean, dtype=np.float64)
    observed = extract_patches(blur(clean, kernel), m).reshape(-1, m * m)
    residual = observed - extract_patches(clean, m).reshape(-1, m * m) @ W.T
    return residual.T @ residual / max(len(residual), 1)


def map_k_restore(y: np.ndarray, gmm: GaussianMixture, W: np.ndarray | None, sigma: float,
                  settings: MapkSettings | None = None, *, remove_dc: bool = False,
                  extra_noise_cov: np.ndarray | None = None, images_per_chunk: int = 64,
                  n_threads: int | None = None, progress=None,
                  score_dtype=np.float64) -> np.ndarray:
    """Restore images by MAP-k on every stride-1 patch, averaging overlapping estimates.

    y : (n, H, W) corrupted images;  gmm : the prior over m x m patches (m² features);
    W : (m², m²) patch blur (None: identity);  sigma : noise std.  Returns (n, H, W).
    ``settings`` (default :meth:`MapkSettings.published`, the plain mean):
    ``position_weight_power``, overlapping estimates of a pixel are averaged with weights
    :meth:`PatchPosterior.position_weights` of this power (under blur the estimates at a
    patch's borders are the least certain).  ``remove_dc``: the GMM is over DC-removed
    patches.  ``extra_noise_cov`` (m², m²): see :func:`boundary_noise_covariance`.
    Images are processed ``images_per_chunk`` at a time, so memory stays bounded; each
    chunk (patch extraction, MAP-k and averaging) is a task of a worker thread with a
    single-threaded BLAS (``n_threads``, default: the BLAS thread count; the result does
    not depend on it).  ``progress(done, n)`` is called after each chunk.  ``score_dtype``:
    the precision of the component choice (:class:`PatchPosterior`), float32 for a prior
    trained in float32.
    """
    settings = MapkSettings.published() if settings is None else settings
    m = patch_size_of(gmm)
    post = PatchPosterior.build(gmm.weights, gmm.means, gmm.covariances, W, sigma**2,
                                remove_dc, extra_noise_cov, score_dtype)
    power = settings.position_weight_power
    position_weights = None if power == 0 else post.position_weights(power)
    corrupted = np.asarray(y, dtype=np.float64)
    n, h, w = corrupted.shape

    def restore_chunk(start: int, stop: int) -> np.ndarray:
        Zt, _ = map_k_patch_rows(extract_patch_rows(corrupted[start:stop], m), post,
                                 n_threads=1)
        return average_patch_rows(Zt, (h, w), m, position_weights)

    out = np.empty_like(corrupted)
    for start, stop, restored in run_over_spans(restore_chunk, n, images_per_chunk, n_threads):
        out[start:stop] = restored
        if progress is not None:
            progress(stop, n)
    return out
