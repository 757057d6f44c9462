"""MAP-k and EPLL against explicit formulas evaluated one patch / one image at a time."""

from dataclasses import replace

import numpy as np
import pytest
from conftest import random_gmm
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.stats import multivariate_normal

from gmmrestore import operators as op
from gmmrestore.gmm import GaussianMixture
from gmmrestore.patches import extract_patches
from gmmrestore.restore.epll import (
    ImagePrior,
    _epll_restore,
    epll_energy,
    epll_image_step,
    epll_restore,
    unsharp_mask,
)
from gmmrestore.restore.mapk import (
    PatchPosterior,
    _map_k_patches,
    map_k_patch_rows,
    map_k_patches,
    map_k_restore,
    quadratic_features,
    quadratic_form_coefficients,
)
from gmmrestore.restore.settings import EpllSettings, MapkSettings


def one_patch_map_k(y, weights, means, covs, W, s2):
    """The seed's rule for one patch, straight from the formulas."""
    d = len(y)
    scores = [np.log(weights[k]) + multivariate_normal(W @ means[k],
              W @ covs[k] @ W.T + s2 * np.eye(d)).logpdf(y) for k in range(len(weights))]
    k = int(np.argmax(scores))
    C = W @ covs[k] @ W.T + s2 * np.eye(d)
    return k, means[k] + covs[k] @ W.T @ np.linalg.solve(C, y - W @ means[k])


@pytest.mark.parametrize("d", [1, 3, 4, 5, 9, 11, 16])
def test_quadratic_features_form(rng, d):
    Y = rng.normal(size=(7, d))
    A = rng.normal(size=(d, d))
    P = A @ A.T
    b = rng.normal(size=d)
    expected = np.einsum("ni,ij,nj->n", Y - b, P, Y - b)
    np.testing.assert_allclose(quadratic_features(Y) @ quadratic_form_coefficients(P, b),
                               expected, rtol=1e-10)


def test_quadratic_features_rejects_a_wrong_buffer(rng):
    Y = rng.normal(size=(5, 4))
    n_features = len(quadratic_features(Y)[0])
    with pytest.raises(ValueError, match="C-contiguous"):
        quadratic_features(Y, out=np.empty((n_features, 6))[:, :5])  # a strided view
    with pytest.raises(ValueError, match="C-contiguous"):
        quadratic_features(Y, out=np.empty((n_features, 4)))


@pytest.mark.parametrize(("blurred", "n_threads"), [(False, 1), (True, 1), (True, 2)])
def test_batched_map_k_equals_one_patch_formula(rng, blurred, n_threads, monkeypatch):
    K, m = 6, 4
    d = m * m
    weights, means, covs = random_gmm(rng, K, d)
    W = op.patch_blur_matrix(op.gaussian_kernel(3, 1.0), m) if blurred else np.eye(d)
    s2 = 0.02
    Y = rng.normal(size=(40, d)) * 0.5
    post = PatchPosterior.build(weights, means, covs, W, s2)
    # several worker tasks, the last one shorter, each with several score chunks
    monkeypatch.setattr("gmmrestore.restore.mapk.TASK_PATCHES", 15)
    Z, labels = map_k_patches(Y, post, chunk_size=7, n_threads=n_threads)
    for n in range(len(Y)):
        k, z = one_patch_map_k(Y[n], weights, means, covs, W, s2)
        assert labels[n] == k
        np.testing.assert_allclose(Z[n], z, atol=1e-9)
    assert len(set(labels.tolist())) > 1  # the choice depends on y


def test_map_k_patch_rows_is_map_k_of_the_columns(rng):
    """The column layout gives the same estimates and choices; a (d, N) view of a wider
    array (rows not contiguous with each other) works too."""
    K, d = 5, 9
    weights, means, covs = random_gmm(rng, K, d)
    post = PatchPosterior.build(weights, means, covs, None, 0.05)
    wide = rng.normal(size=(d, 50)) * 0.5
    Zt, labels = map_k_patch_rows(wide[:, 3:40], post, chunk_size=8)
    Z, expected = map_k_patches(np.ascontiguousarray(wide[:, 3:40].T), post)
    np.testing.assert_array_equal(labels, expected)
    np.testing.assert_allclose(Zt, Z.T, rtol=0, atol=1e-12)
    with pytest.raises(ValueError, match="patches have 8 pixels"):
        map_k_patch_rows(wide[:8], post)


def test_float32_scores_choose_the_float64_components(rng):
    """score_dtype float32: the same choices as float64 up to near-ties (score gaps of
    float32 size), and the same float64 posterior means wherever the choice is the same."""
    K, m = 12, 4
    d = m * m
    weights, means, covs = random_gmm(rng, K, d)
    W = op.patch_blur_matrix(op.gaussian_kernel(3, 1.0), m)
    Yt = rng.normal(size=(d, 3000)) * 0.5
    post64 = PatchPosterior.build(weights, means, covs, W, 0.02)
    post32 = PatchPosterior.build(weights, means, covs, W, 0.02, score_dtype=np.float32)
    Z64, labels64 = map_k_patch_rows(Yt, post64)
    Z32, labels32 = map_k_patch_rows(Yt, post32)
    assert Z32.dtype == np.float64 and post32.score_dtype == np.float32
    same = labels32 == labels64
    assert same.mean() > 0.999
    np.testing.assert_allclose(Z32[:, same], Z64[:, same], rtol=0, atol=1e-12)
    scores = quadratic_features(Yt.T) @ post64.score_matrix
    top2 = np.sort(scores, axis=1)[:, -2:]
    gap = top2[:, 1] - top2[:, 0]
    assert np.all(gap[~same] < 1e-4 * np.abs(scores).max())  # only near-ties may differ
    with pytest.raises(ValueError, match="score dtype must be float32 or float64"):
        PatchPosterior.build(weights, means, covs, W, 0.02, score_dtype=np.float16)


def test_map_k_with_given_components_equals_the_formula(rng, monkeypatch):
    """labels= skips the choice: each estimate is mu_k + G_k (y - W mu_k) under the given
    component (the one-patch formula's second half); its own labels reproduce map_k."""
    K, m = 5, 3
    d = m * m
    weights, means, covs = random_gmm(rng, K, d)
    W = op.patch_blur_matrix(op.gaussian_kernel(3, 1.0), m)
    s2 = 0.05
    Y = rng.normal(size=(30, d)) * 0.5
    post = PatchPosterior.build(weights, means, covs, W, s2)
    monkeypatch.setattr("gmmrestore.restore.mapk.TASK_PATCHES", 7)
    given = rng.integers(0, K, size=len(Y))
    Z, labels = _map_k_patches(Y, post, labels=given, n_threads=2)
    np.testing.assert_array_equal(labels, given)
    for n in range(len(Y)):
        k = given[n]
        C = W @ covs[k] @ W.T + s2 * np.eye(d)
        z = means[k] + covs[k] @ W.T @ np.linalg.solve(C, Y[n] - W @ means[k])
        np.testing.assert_allclose(Z[n], z, atol=1e-9)
    Z_chosen, chosen = map_k_patches(Y, post)
    np.testing.assert_array_equal(_map_k_patches(Y, post, labels=chosen)[0], Z_chosen)
    for bad in (given[:-1], given + 0.5, np.full(len(Y), K)):
        with pytest.raises(ValueError, match="labels"):
            _map_k_patches(Y, post, labels=bad)


def test_map_k_threads_do_not_change_the_result(rng, monkeypatch):
    K, m = 8, 4
    weights, means, covs = random_gmm(rng, K, m * m)
    post = PatchPosterior.build(weights, means, covs, None, 0.01)
    Y = rng.normal(size=(1000, m * m)) * 0.5
    monkeypatch.setattr("gmmrestore.restore.mapk.TASK_PATCHES", 64)
    one = map_k_patches(Y, post, n_threads=1)
    for n_threads in (2, 3):
        other = map_k_patches(Y, post, n_threads=n_threads)
        np.testing.assert_array_equal(other[1], one[1])
        np.testing.assert_array_equal(other[0], one[0])


def test_map_k_dc_removed_prior(rng):
    """Zero-mean prior on DC-removed patches: remove the DC, restore, add it back."""
    K, d = 4, 9
    weights, _, covs = random_gmm(rng, K, d)
    means = np.zeros((K, d))
    Y = rng.normal(size=(10, d)) + 3.0
    post = PatchPosterior.build(weights, means, covs, None, 0.05, remove_dc=True)
    Z, _ = map_k_patches(Y, post)
    dc = Y.mean(axis=1)
    for n in range(len(Y)):
        _, z = one_patch_map_k(Y[n] - dc[n], weights, means, covs, np.eye(d), 0.05)
        np.testing.assert_allclose(Z[n], z + dc[n], atol=1e-9)


def position_variance_explicit(weights, covs, W, s2):
    """Mixture-weighted diagonal of the posterior covariance
    Sigma - Sigma W^T (W Sigma W^T + s2 I)^-1 W Sigma, one component at a time."""
    d = len(W)
    post = [np.diag(c - c @ W.T @ np.linalg.inv(W @ c @ W.T + s2 * np.eye(d)) @ W @ c)
            for c in covs]
    return np.average(post, axis=0, weights=weights)


def test_position_variance_is_the_posterior_variance(rng):
    m = 3
    weights, means, covs = random_gmm(rng, 4, m * m)
    W = op.patch_blur_matrix(op.gaussian_kernel(3, 0.8), m)
    post = PatchPosterior.build(weights, means, covs, W, 0.05)
    expected = position_variance_explicit(weights, covs, W, 0.05)
    np.testing.assert_allclose(post.position_variance, expected, rtol=1e-10)
    np.testing.assert_allclose(post.position_weights(2.0), (expected / expected.min())**-2.0,
                               rtol=1e-10)
    np.testing.assert_array_equal(post.position_weights(0.0), np.ones(m * m))
    for bad in (-1.0, float("nan")):
        with pytest.raises(ValueError, match=">= 0"):
            post.position_weights(bad)


@pytest.mark.parametrize(("n_threads", "power"), [(1, 0.0), (2, 0.0), (2, 2.5)])
def test_map_k_restore_averages_patch_estimates(rng, n_threads, power):
    m, K = 3, 3
    weights, means, covs = random_gmm(rng, K, m * m)
    images = rng.random((3, 7, 6))
    k = op.gaussian_kernel(3, 0.8)
    # two image chunks, each a worker task
    out = map_k_restore(images, GaussianMixture(weights, means, covs), op.patch_blur_matrix(k, m),
                        0.1, MapkSettings.published(position_weight_power=power),
                        images_per_chunk=2, n_threads=n_threads)
    P = extract_patches(images, m)
    expected = np.zeros_like(images)
    weight_sums = np.zeros_like(images)
    W = op.patch_blur_matrix(k, m)
    variance = position_variance_explicit(weights, covs, W, 0.01).reshape(m, m)
    position_weight = (variance / variance.min()) ** -power
    for n in range(3):
        for idx, (i, j) in enumerate((i, j) for i in range(5) for j in range(4)):
            _, z = one_patch_map_k(P[n, idx], weights, means, covs, W, 0.01)
            expected[n, i:i + m, j:j + m] += position_weight * z.reshape(m, m)
            weight_sums[n, i:i + m, j:j + m] += position_weight
    np.testing.assert_allclose(out, expected / weight_sums, atol=1e-9)


def test_map_k_zero_noise_is_finite(rng):
    m = 4
    weights, means, covs = random_gmm(rng, 3, m * m)
    W = op.patch_blur_matrix(op.gaussian_kernel(7, 2.0), m)  # condition number ~1e6
    Z, _ = map_k_patches(rng.random((20, m * m)), PatchPosterior.build(weights, means, covs,
                                                                        W, 0.0))
    assert np.all(np.isfinite(Z))


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**31), scale=st.sampled_from([0.0, 1e-6, 1.0, 1e3, 1e6]),
       sigma=st.sampled_from([0.0, 1e-4, 0.1, 10.0]), blurred=st.booleans(),
       remove_dc=st.booleans())
def test_map_k_output_finite_for_any_finite_input(seed, scale, sigma, blurred, remove_dc):
    rng = np.random.default_rng(seed)
    m = 3
    weights, means, covs = random_gmm(rng, 3, m * m)
    if remove_dc:
        means = np.zeros_like(means)
    images = rng.normal(size=(2, 6, 6)) * scale
    W = op.patch_blur_matrix(op.gaussian_kernel(3, 1.0), m) if blurred else None
    out = map_k_restore(images, GaussianMixture(weights, means, covs), W, sigma,
                        remove_dc=remove_dc)
    assert np.all(np.isfinite(out))


def dense_patch_operator(shape, m):
    """Stack of patch-extraction matrices P_i: (P * m*m, H*W)."""
    h, w = shape
    eye = np.eye(h * w).reshape(h * w, h, w)
    return extract_patches(eye, m).reshape(h * w, -1).T


def test_image_step_cg_matches_dense_solve(rng):
    h, w, m = 6, 7, 3
    k = op.gaussian_kernel(3, 1.0)
    y = rng.random((2, h, w))
    patch_sum = rng.random((2, h, w)) * 4
    counts = dense_patch_operator((h, w), m).T.sum(axis=1).reshape(h, w)
    lam, beta = 30.0, 7.0
    x = epll_image_step(y, patch_sum, counts, k, lam, beta, cg_rtol=1e-12, cg_maxiter=500)
    A = op.blur_dense_matrix(k, (h, w))
    M = lam * A.T @ A + beta * np.diag(counts.ravel())
    for n in range(2):
        expected = np.linalg.solve(M, lam * A.T @ y[n].ravel() + beta * patch_sum[n].ravel())
        np.testing.assert_allclose(x[n].ravel(), expected, rtol=1e-8, atol=1e-10)


def gaussian_patch_prior_solution(y, k, mean, cov, lam, m):
    """Closed-form minimiser of lam/2 |A x - y|^2 + sum_i 1/2 (P_i x - mu)^T cov^-1 (P_i x - mu)."""
    h, w = y.shape
    Pm = dense_patch_operator((h, w), m)
    n_patches = Pm.shape[0] // (m * m)
    prec = np.linalg.inv(cov)
    A = op.blur_dense_matrix(k, (h, w))
    M = lam * A.T @ A + Pm.T @ np.kron(np.eye(n_patches), prec) @ Pm
    rhs = lam * A.T @ y.ravel() + Pm.T @ np.tile(prec @ mean, n_patches)
    return np.linalg.solve(M, rhs).reshape(h, w)


@pytest.mark.parametrize("blurred", [False, True])
def test_epll_one_gaussian_equals_closed_form_posterior(rng, blurred):
    """With one Gaussian component, EPLL at a fixed beta converges to the Gaussian
    posterior mean under the patch-product prior with covariance Sigma + I/beta (the
    z-step marginalised out), a closed form; as beta grows it approaches the one with
    Sigma itself."""
    h, w, m = 7, 6, 3
    d = m * m
    _, means, covs = random_gmm(rng, 1, d, scale=0.5)
    k = op.gaussian_kernel(3, 1.0) if blurred else np.ones((1, 1))
    sigma = 0.1
    y = op.blur(rng.random((1, h, w)), k) + sigma * rng.normal(size=(1, h, w))
    lam = d / sigma**2
    beta = 1.0 / sigma**2
    # the patch/image alternation converges linearly: many inner iterations on a tiny image
    x = epll_restore(y, GaussianMixture(np.ones(1), means, covs), k, sigma,
                     EpllSettings.published(beta_factors=[1.0], n_inner=2000, weighting="exact"),
                     cg_rtol=1e-13, cg_maxiter=1000)
    fixed_beta = gaussian_patch_prior_solution(y[0], k, means[0], covs[0] + np.eye(d) / beta,
                                               lam, m)
    np.testing.assert_allclose(x[0], fixed_beta, atol=1e-8)
    limit = gaussian_patch_prior_solution(y[0], k, means[0], covs[0], lam, m)
    x = epll_restore(y, GaussianMixture(np.ones(1), means, covs), k, sigma,
                     EpllSettings.published(beta_factors=np.geomspace(1, 1e6, 13), n_inner=100,
                                            weighting="exact"),
                     cg_rtol=1e-12, cg_maxiter=1000)
    assert np.abs(x[0] - limit).max() < 0.02 * np.abs(limit).max()


@pytest.mark.parametrize(("amount", "std"), [(1.0, 1.0), (2.5, 0.6), (0.7, 1.7)])
def test_unsharp_mask_equals_explicit_sum(rng, amount, std):
    """x + amount (x - G x) with G written out: a normalised Gaussian of the given std,
    truncated at 4 std, over the image mirrored at its edges (edge pixels repeated)."""
    images = rng.random((2, 5, 7))
    radius = int(4.0 * std + 0.5)
    taps = np.exp(-0.5 * (np.arange(-radius, radius + 1) / std) ** 2)
    taps /= taps.sum()
    expected = np.empty_like(images)
    for n in range(2):
        padded = np.pad(images[n], radius, mode="symmetric")
        for i in range(5):
            for j in range(7):
                window = padded[i:i + 2 * radius + 1, j:j + 2 * radius + 1]
                smooth = taps @ window @ taps
                expected[n, i, j] = images[n, i, j] + amount * (images[n, i, j] - smooth)
    np.testing.assert_allclose(unsharp_mask(images, amount, std), expected, atol=1e-12)
    np.testing.assert_array_equal(unsharp_mask(images, 0.0, std), images)


@pytest.mark.parametrize(("amount", "std"), [(-0.5, 1.0), (1.0, 0.0), (float("nan"), 1.0)])
def test_unsharp_mask_rejects_bad_parameters(amount, std):
    with pytest.raises(ValueError, match="unsharp mask"):
        unsharp_mask(np.zeros((1, 3, 3)), amount, std)
    with pytest.raises(ValueError, match="unsharp mask"):
        epll_restore(np.zeros((1, 4, 4)),
                     GaussianMixture(np.ones(1), np.zeros((1, 4)), np.eye(4)[None]), None,
                     0.1,
                     EpllSettings.published(init_sharpen=amount, init_sharpen_std=std))


@pytest.mark.parametrize("clip", [False, True])
def test_epll_starts_from_the_sharpened_init(rng, clip):
    """init_sharpen replaces the start x0 by unsharp_mask(x0) (clipped to [0, 1] with clip)
    and changes nothing else."""
    h, w, m, K = 9, 8, 3, 3
    weights, means, covs = random_gmm(rng, K, m * m, scale=0.3)
    k = op.gaussian_kernel(3, 1.0)
    y = op.blur(rng.random((3, h, w)), k) + 0.1 * rng.normal(size=(3, h, w))
    init = rng.random((3, h, w)) * 1.4 - 0.2
    gmm = GaussianMixture(weights, means, covs)
    schedule = EpllSettings.published(beta_factors=[1.0, 4.0], n_inner=2)
    kw = dict(clip=clip, images_per_chunk=2)
    sharpened = unsharp_mask(init, 1.5, 0.8)
    x = epll_restore(y, gmm, k, 0.1, replace(schedule, init_sharpen=1.5, init_sharpen_std=0.8),
                     init=init, **kw)
    start = np.clip(sharpened, 0.0, 1.0) if clip else sharpened
    np.testing.assert_array_equal(x, epll_restore(y, gmm, k, 0.1, schedule, init=start, **kw))
    plain = epll_restore(y, gmm, k, 0.1, schedule, init=init, **kw)
    assert np.abs(x - plain).max() > 1e-3
    with pytest.raises(ValueError, match=r"init must have the shape .*\(3, 9, 8\)"):
        epll_restore(y, gmm, k, 0.1, schedule, init=init[:, :, 1:], **kw)


def test_epll_with_component_images_equals_explicit_step(rng):
    """Denoising, one beta, one pass: x = (lam y + beta sum_i P_i^T z_i) / (lam + beta D)
    with z_i the posterior mean of patch i of the start under the component that patch i of
    component_images chooses, written out one patch at a time."""
    h, w, m, K = 6, 7, 3, 4
    d = m * m
    weights, means, covs = random_gmm(rng, K, d, scale=0.5)
    sigma = 0.1
    y = rng.random((2, h, w))
    guide = rng.random((2, h, w))
    lam_factor, beta_factor = 0.5, 4.0
    lam, beta = lam_factor * d / sigma**2, beta_factor / sigma**2
    exact = EpllSettings.published(beta_factors=[beta_factor], lam_factor=lam_factor,
                                   weighting="exact")
    x = _epll_restore(y, GaussianMixture(weights, means, covs), None, sigma, exact,
                      component_images=guide)
    for n in range(2):
        num = lam * y[n].copy()
        den = np.full((h, w), lam)
        for i in range(h - m + 1):
            for j in range(w - m + 1):
                k, _ = one_patch_map_k(guide[n, i:i + m, j:j + m].ravel(), weights, means,
                                       covs, np.eye(d), 1.0 / beta)
                p = y[n, i:i + m, j:j + m].ravel()
                C = covs[k] + np.eye(d) / beta
                z = means[k] + covs[k] @ np.linalg.solve(C, p - means[k])
                num[i:i + m, j:j + m] += beta * z.reshape(m, m)
                den[i:i + m, j:j + m] += beta
        np.testing.assert_allclose(x[n], num / den, atol=1e-9)
    plain = epll_restore(y, GaussianMixture(weights, means, covs), None, sigma,
                         EpllSettings.published(beta_factors=[beta_factor], lam_factor=lam_factor))
    assert np.abs(x - plain).max() > 1e-3  # the guide's components differ from y's
    with pytest.raises(ValueError, match="component_images"):
        _epll_restore(y, GaussianMixture(weights, means, covs), None, sigma,
                      component_images=guide[:1])


def test_image_prior_map_estimate_equals_formula(rng):
    """The whole-image prior's MAP step is the seed's rule with W = I, image by image."""
    K, d, s2 = 4, 12, 0.05
    weights, means, covs = random_gmm(rng, K, d, scale=0.5)
    covs[1] = covs[1] - 0.0099 * np.eye(d)  # one nearly singular component
    X = rng.normal(size=(9, d)) * 0.5
    prior = ImagePrior(GaussianMixture(weights, means, covs))
    Z = prior.map_estimate(X, s2)
    chosen = set()
    for x, z in zip(X, Z, strict=True):
        k, expected = one_patch_map_k(x, weights, means, covs, np.eye(d), s2)
        chosen.add(k)
        np.testing.assert_allclose(z, expected, atol=1e-10)
    assert len(chosen) > 1  # more than one component was exercised


def test_epll_with_image_prior_equals_explicit_step(rng):
    """Denoising, one beta, one pass: x = (lam y + beta (sum_i P_i^T z_i + w z)) /
    (lam + beta (D + w)), z_i the patches' MAP-k estimates and z the whole-image prior's,
    both under noise 1/beta, written out one patch and one image at a time."""
    h, w, m, K = 5, 6, 3, 3
    d = m * m
    weights, means, covs = random_gmm(rng, K, d, scale=0.5)
    image_weights, image_means, image_covs = random_gmm(rng, 3, h * w, scale=0.5)
    prior = ImagePrior(GaussianMixture(image_weights, image_means, image_covs))
    sigma, lam_factor, beta_factor, strength = 0.1, 0.5, 4.0, 7.0
    lam, beta = lam_factor * d / sigma**2, beta_factor / sigma**2
    y = rng.random((2, h, w))
    exact = EpllSettings.published(beta_factors=[beta_factor], lam_factor=lam_factor,
                                   weighting="exact")
    x = epll_restore(y, GaussianMixture(weights, means, covs), None, sigma, exact,
                     image_prior=prior, image_prior_weight=strength)
    for n in range(2):
        _, z_image = one_patch_map_k(y[n].ravel(), image_weights, image_means, image_covs,
                                     np.eye(h * w), 1.0 / beta)
        num = lam * y[n] + beta * strength * z_image.reshape(h, w)
        den = np.full((h, w), lam + beta * strength)
        for i in range(h - m + 1):
            for j in range(w - m + 1):
                _, z = one_patch_map_k(y[n, i:i + m, j:j + m].ravel(), weights, means, covs,
                                       np.eye(d), 1.0 / beta)
                num[i:i + m, j:j + m] += beta * z.reshape(m, m)
                den[i:i + m, j:j + m] += beta
        np.testing.assert_allclose(x[n], num / den, atol=1e-9)
    with pytest.raises(ValueError, match=r"image_prior is over 30 pixels, the images have "
                                         r"5 x 5 = 25"):
        epll_restore(y[:, :, :5], GaussianMixture(weights, means, covs), None, sigma,
                     image_prior=prior)
    with pytest.raises(ValueError, match="image_prior_weight must be > 0"):
        epll_restore(y, GaussianMixture(weights, means, covs), None, sigma, image_prior=prior,
                     image_prior_weight=0.0)


@pytest.mark.parametrize(("blurred", "remove_dc"), [(False, False), (True, False), (True, True)])
def test_epll_energy_equals_explicit_sum(rng, blurred, remove_dc):
    h, w, m, K = 6, 5, 3, 3
    d = m * m
    weights, means, covs = random_gmm(rng, K, d)
    k = op.gaussian_kernel(3, 1.0) if blurred else None
    x = rng.random((2, h, w))
    y = rng.random((2, h, w))
    sigma, lam_factor = 0.2, 0.5
    energy = epll_energy(x, y, GaussianMixture(weights, means, covs), k, sigma,
                         lam_factor=lam_factor, remove_dc=remove_dc)
    A = op.blur_dense_matrix(k, (h, w)) if blurred else np.eye(h * w)
    lam = lam_factor * d / sigma**2
    for n in range(2):
        expected = 0.5 * lam * np.sum((A @ x[n].ravel() - y[n].ravel()) ** 2)
        for i in range(h - m + 1):
            for j in range(w - m + 1):
                p = x[n, i:i + m, j:j + m].ravel()
                if remove_dc:
                    p = p - p.mean()
                expected -= np.log(sum(weights[c] * multivariate_normal(means[c], covs[c]).pdf(p)
                                       for c in range(K)))
        assert energy[n] == pytest.approx(expected, rel=1e-10)


def test_settings_none_is_the_published_algorithm_and_init_mapk_starts_from_map_k(rng):
    """settings=None runs MapkSettings.published() / EpllSettings.published(); an EPLL with
    settings.init 'mapk' and no init starts from the plain-mean MAP-k estimate."""
    h, w, m, K = 8, 9, 3, 3
    gmm = GaussianMixture(*random_gmm(rng, K, m * m, scale=0.3))
    k = op.gaussian_kernel(3, 1.0)
    y = op.blur(rng.random((2, h, w)), k) + 0.1 * rng.normal(size=(2, h, w))
    W = op.patch_blur_matrix(k, m)
    plain = map_k_restore(y, gmm, W, 0.1)
    np.testing.assert_array_equal(plain, map_k_restore(y, gmm, W, 0.1, MapkSettings.published()))
    assert MapkSettings.published() != MapkSettings()
    schedule = EpllSettings.published(beta_factors=[1.0, 4.0])
    assert (schedule.init, schedule.init_sharpen) == ("corrupted", 0.0)
    np.testing.assert_array_equal(epll_restore(y, gmm, None, 0.1),
                                  epll_restore(y, gmm, None, 0.1, EpllSettings.published()))
    from_mapk = epll_restore(y, gmm, k, 0.1, replace(schedule, init="mapk"))
    np.testing.assert_array_equal(from_mapk, epll_restore(y, gmm, k, 0.1, schedule, init=plain))
    with pytest.raises(ValueError, match="init must be one of"):
        epll_restore(y, gmm, k, 0.1, replace(schedule, init="clean"))
    with pytest.raises(ValueError, match="not an m x m patch"):
        map_k_restore(y, GaussianMixture(*random_gmm(rng, 2, 8)), None, 0.1)
