"""The paired-set calibration estimator (gmmrestore.calibration) against brute force and on
synthetic sets with known gain, offset and noise std."""

import numpy as np
import pytest
from scipy import optimize, stats
from scipy.special import logsumexp

from gmmrestore.calibration import (
    CalibrationSettings,
    ObservationModel,
    _e_step,
    estimate_calibration,
    image_patches,
    update_gain_offset,
    update_sigma,
)
from gmmrestore.h5io import GmmRestoreError


def random_prior(rng, K, d):
    weights = rng.dirichlet(np.ones(K) * 3)
    means = rng.normal(0.4, 0.3, size=(K, d))
    covs = []
    for _ in range(K):
        A = rng.normal(size=(d, d)) * 0.1
        covs.append(A @ A.T + 1e-3 * np.eye(d))
    return weights, means, np.array(covs)


def random_blur(rng, d):
    return np.eye(d) * 0.6 + rng.uniform(0, 0.4 / d, size=(d, d))


def synthetic_set(rng, weights, means, covs, W, m, n_images, n_patches, gain, offset,
                  sigma):
    """Images of m x (m * n_patches) pixels made of independent patches side by side:
    with stride m the estimator sees exactly the model's samples.  Returns (c, y)."""
    d = m * m
    labels = rng.choice(len(weights), p=weights, size=(n_images, n_patches))
    L = np.linalg.cholesky(covs)
    z = means[labels] + np.einsum("ipde,ipe->ipd", L[labels],
                                  rng.standard_normal((n_images, n_patches, d)))
    y = z @ W.T + sigma * rng.standard_normal((n_images, n_patches, d))
    images = y.reshape(n_images, n_patches, m, m).transpose(0, 2, 1, 3).reshape(
        n_images, m, m * n_patches)
    return gain[:, None, None] * images + offset[:, None, None], images


def brute_loglik(patches, alpha, beta, s2, weights, means, covs, W, extra=None):
    """log-likelihood of c patches via scipy.stats, image by image, with the Jacobian."""
    d = W.shape[0]
    out = []
    for i, P in enumerate(patches):
        y = alpha[i] * P + beta[i]
        comps = []
        for k in range(len(weights)):
            C = W @ covs[k] @ W.T + s2 * np.eye(d) + (0 if extra is None else extra)
            comps.append(np.log(weights[k])
                         + stats.multivariate_normal(W @ means[k], C).logpdf(y))
        out.append(logsumexp(np.array(comps), axis=0).sum() + P.size * np.log(alpha[i]))
    return np.array(out)


def test_image_patches_matches_sliding_windows():
    x = np.arange(2 * 5 * 7, dtype=float).reshape(2, 5, 7)
    p = image_patches(x, 3, stride=2)
    assert p.shape == (2, 2 * 3, 9)
    np.testing.assert_array_equal(p[1, 4], x[1, 2:5, 2:5].ravel())


def test_e_step_loglik_matches_scipy():
    rng = np.random.default_rng(0)
    d, K = 4, 3
    weights, means, covs = random_prior(rng, K, d)
    W = random_blur(rng, d)
    extra = 0.01 * np.eye(d) + 0.002
    model = ObservationModel.build(weights, means, covs, W, extra)
    patches = rng.normal(0.5, 0.3, size=(3, 7, d))
    alpha, beta = np.array([1.2, 0.8, 1.0]), np.array([-0.1, 0.05, 0.0])
    mom = _e_step(patches, alpha, beta, 0.03, model, images_per_chunk=2)
    ref = brute_loglik(patches, alpha, beta, 0.03, weights, means, covs, W, extra)
    np.testing.assert_allclose(mom.loglik, ref, rtol=1e-10)
    np.testing.assert_allclose(mom.R.sum(axis=1), 7)


def q_function(params, patches, r, s2, weights, means, covs, W):
    """Expected complete log-likelihood in (alpha, beta) of one image, brute force."""
    alpha, beta = params
    d = W.shape[0]
    total = patches.size * np.log(alpha)
    for k in range(len(weights)):
        C = W @ covs[k] @ W.T + s2 * np.eye(d)
        e = alpha * patches + beta - W @ means[k]
        total -= 0.5 * np.sum(r[:, k] * np.einsum("pd,de,pe->p", e, np.linalg.inv(C), e))
    return total


def test_gain_offset_step_maximises_q():
    rng = np.random.default_rng(1)
    d, K = 4, 3
    weights, means, covs = random_prior(rng, K, d)
    W = random_blur(rng, d)
    model = ObservationModel.build(weights, means, covs, W)
    patches = rng.normal(0.5, 0.3, size=(2, 30, d))
    s2 = 0.02
    mom = _e_step(patches, np.ones(2), np.zeros(2), s2, model, 8)
    alpha, beta = update_gain_offset(mom, s2, model, patches.shape[1] * d)
    # responsibilities of the E-step (recomputed by brute force)
    for i in range(2):
        logp = np.stack([np.log(weights[k]) + stats.multivariate_normal(
            W @ means[k], W @ covs[k] @ W.T + s2 * np.eye(d)).logpdf(patches[i])
            for k in range(K)], axis=1)
        r = np.exp(logp - logsumexp(logp, axis=1, keepdims=True))
        res = optimize.minimize(lambda p, i=i, r=r: -q_function(p, patches[i], r, s2,
                                                                weights, means, covs, W),
                                x0=[1.0, 0.0], method="Nelder-Mead",
                                options={"xatol": 1e-10, "fatol": 1e-12, "maxiter": 4000})
        np.testing.assert_allclose([alpha[i], beta[i]], res.x, atol=1e-5)


def test_sigma_step_zeroes_derivative():
    rng = np.random.default_rng(2)
    d, K = 4, 2
    weights, means, covs = random_prior(rng, K, d)
    W = random_blur(rng, d)
    model = ObservationModel.build(weights, means, covs, W)
    patches = rng.normal(0.5, 0.4, size=(2, 50, d))
    alpha, beta = np.array([1.1, 0.9]), np.array([0.0, 0.1])
    mom = _e_step(patches, alpha, beta, 0.01, model, 8)
    s2 = update_sigma(mom, alpha, beta, model, (1e-4, 1.0))

    def q(v):  # brute-force expected complete log-likelihood in s2
        total = 0.0
        for i in range(2):
            logp = np.stack([np.log(weights[k]) + stats.multivariate_normal(
                W @ means[k], W @ covs[k] @ W.T + 0.01 * np.eye(d)).logpdf(
                alpha[i] * patches[i] + beta[i]) for k in range(K)], axis=1)
            r = np.exp(logp - logsumexp(logp, axis=1, keepdims=True))
            for k in range(K):
                total += np.sum(r[:, k] * stats.multivariate_normal(
                    W @ means[k], W @ covs[k] @ W.T + v * np.eye(d)).logpdf(
                    alpha[i] * patches[i] + beta[i]))
        return total

    assert q(s2) >= q(s2 * 1.01) and q(s2) >= q(s2 / 1.01)


@pytest.mark.parametrize("sigma", [0.02, 0.1])
def test_recovers_known_gain_offset_sigma(sigma):
    """Tolerances: sigma within 5 %, gain within 3 %, offset within 0.02 (c units) on 6
    images of 600 independent patches each from a known 4-component prior."""
    rng = np.random.default_rng(3)
    m, d, K = 3, 9, 4
    weights, means, covs = random_prior(rng, K, d)
    W = random_blur(rng, d)
    gain = rng.uniform(0.5, 1.5, size=6)
    offset = rng.uniform(-0.3, 0.3, size=6)
    c, y = synthetic_set(rng, weights, means, covs, W, m, 6, 600, gain, offset, sigma)
    model = ObservationModel.build(weights, means, covs, W)
    cal = estimate_calibration(c, model, m, CalibrationSettings(stride=m, tol=1e-9))
    assert cal.converged
    assert np.all(np.diff(cal.history) > -1e-9)  # EM never lowers the likelihood
    assert abs(cal.sigma / sigma - 1) < 0.05
    np.testing.assert_allclose(cal.gain, gain, rtol=0.03)
    np.testing.assert_allclose(cal.offset, offset, atol=0.02)
    assert np.sqrt(np.mean((cal.apply(c) - y) ** 2)) < 0.3 * sigma + 0.01


def test_bad_inputs():
    rng = np.random.default_rng(4)
    model = ObservationModel.build(*random_prior(rng, 2, 4), np.eye(4))
    with pytest.raises(GmmRestoreError, match="patch size 3"):
        estimate_calibration(np.zeros((1, 5, 5)), model, 3)
    with pytest.raises(GmmRestoreError, match="NaN"):
        estimate_calibration(np.full((1, 5, 5), np.nan), model, 2)
