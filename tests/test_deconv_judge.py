"""Choosing a photograph's kernel among candidates by a natural-patch GMM: the patch
likelihood against scipy, the choice on a synthetic photograph, and the judged TV estimate."""

from dataclasses import replace

import numpy as np
import pytest
from scipy import stats
from scipy.special import logsumexp
from test_deconv_sparse import blocky_image, blurred_blocks, curved_kernel

from gmmrestore.deconv import judge, l0map, tvmap
from gmmrestore.gmm import GaussianMixture, fit_gmm
from gmmrestore.gmm.settings import EMSettings
from gmmrestore.h5io import GmmRestoreError
from gmmrestore.operators import blur_valid, gaussian_kernel, quantize


@pytest.fixture
def rng():
    return np.random.default_rng(26)


def random_gmm(rng, K, d) -> GaussianMixture:
    A = rng.standard_normal((K, d, d))
    cov = A @ A.transpose(0, 2, 1) / d + 0.1 * np.eye(d)
    w = rng.random(K) + 0.5
    return GaussianMixture(w / w.sum(), 0.3 * rng.standard_normal((K, d)), cov)


@pytest.mark.parametrize("remove_dc", [False, True])
def test_patch_log_likelihood_matches_scipy(rng, remove_dc):
    gmm = random_gmm(rng, 3, 9)
    x = rng.random((10, 11))
    logp = []
    for i in range(0, 8, 2):          # top-left corners at stride 2 (10 - 3 + 1 = 8 rows)
        for j in range(0, 9, 2):
            p = x[i:i + 3, j:j + 3].ravel()
            p = p - p.mean() if remove_dc else p
            logp.append(logsumexp([np.log(w) + stats.multivariate_normal(mu, c).logpdf(p)
                                   for w, mu, c in zip(gmm.weights, gmm.means,
                                                       gmm.covariances, strict=True)]))
    assert judge.patch_log_likelihood(x, gmm, 2, remove_dc) == pytest.approx(np.mean(logp),
                                                                            rel=1e-10)


def test_sharpness_score_is_the_change_under_the_small_blur(rng):
    gmm = random_gmm(rng, 2, 16)
    x = rng.random((20, 20))
    st = judge.JudgeSettings(blur_std=0.7, stride=3)
    # gaussian_filter's default boundary: reflection about the edge (x[-1], x[0], x[1], ...)
    r = int(4 * 0.7 + 0.5)
    t = np.arange(-r, r + 1)
    g = np.exp(-t**2 / (2 * 0.7**2))
    g /= g.sum()
    padded = np.pad(x, r, mode="symmetric")
    blurred = sum(g[a] * g[b] * padded[a:a + 20, b:b + 20]
                  for a in range(2 * r + 1) for b in range(2 * r + 1))
    expected = (judge.patch_log_likelihood(x, gmm, 3, True)
                - judge.patch_log_likelihood(blurred, gmm, 3, True))
    assert judge.sharpness_score(x, gmm, st) == pytest.approx(expected, rel=1e-10)


@pytest.fixture(scope="module")
def blocky_prior():
    """A zero-mean 5x5 patch GMM of photograph-like (piecewise-constant) scenes."""
    rng = np.random.default_rng(3)
    scenes = [blocky_image(rng, (60, 60), n_rect=50) for _ in range(6)]
    patches = np.concatenate([np.lib.stride_tricks.sliding_window_view(s, (5, 5))
                              .reshape(-1, 25)[::3] for s in scenes])
    gmm, _ = fit_gmm(patches, 6, EMSettings(max_iter=30, reg_covar=1e-6, remove_dc=True,
                                            seed=0))
    return gmm


def test_choose_kernel_prefers_the_true_kernel_to_wrong_ones(rng, blocky_prior):
    y, k_true = blurred_blocks(rng)
    wrong = [k_true.T, gaussian_kernel(9, 2.0), np.rot90(k_true)]
    for k_wrong in wrong:
        for order in ([k_true, k_wrong], [k_wrong, k_true]):
            chosen, scores = judge.choose_kernel(y, order, blocky_prior)
            assert order[chosen] is k_true, scores
            assert len(scores) == 2 and scores[chosen] > scores[1 - chosen]


def test_judged_estimate_keeps_the_best_scored_growth(rng, blocky_prior):
    k_true = curved_kernel(5)
    y = quantize(blur_valid(blocky_image(rng, (52, 52), n_rect=30), k_true), 8)
    tv = tvmap.TVSettings(n_iter=40, refine_iter=1)
    st = judge.JudgeSettings(lam_factors=(1.9, 1.3))
    kernel, info = judge.estimate_kernel_tv_judged(y, 5, blocky_prior, tv, st)
    assert info["labels"] == ["tv growth 1.9", "tv growth 1.3", "l0"]
    for f, candidate in zip(st.lam_factors, info["candidates"][:2], strict=True):
        np.testing.assert_array_equal(
            candidate, tvmap.estimate_kernel_tv(y, 5, replace(tv, lam_factor=f))[0])
    np.testing.assert_array_equal(info["candidates"][2], l0map.estimate_kernel_l0(y, 5)[0])
    chosen, scores = judge.choose_kernel(y, list(info["candidates"]), blocky_prior, st)
    assert info["chosen"] == chosen and info["scores"] == scores
    np.testing.assert_array_equal(kernel, info["candidates"][chosen])
    assert info["lam_factors"] == [1.9, 1.3]
    # the candidates in two processes: the same numbers
    two, info2 = judge.estimate_kernel_tv_judged(y, 5, blocky_prior, tv,
                                                 replace(st, n_workers=2))
    np.testing.assert_array_equal(two, kernel)
    np.testing.assert_array_equal(info2["candidates"], info["candidates"])
    # without the L0 candidate: the TV runs only
    tv_only, info3 = judge.estimate_kernel_tv_judged(y, 5, blocky_prior, tv,
                                                     replace(st, l0_candidate=False))
    assert info3["labels"] == ["tv growth 1.9", "tv growth 1.3"]
    np.testing.assert_array_equal(info3["candidates"], info["candidates"][:2])
    assert info3["scores"] == info["scores"][:2]


def test_judge_rejects_bad_settings_and_priors(rng):
    for bad in ({"lam_factors": ()}, {"lam_factors": (1.9, 1.0)}, {"blur_std": 0.0},
                {"stride": 0}, {"n_workers": 0}):
        with pytest.raises(GmmRestoreError, match="out of range"):
            judge.JudgeSettings(**bad)
    with pytest.raises(GmmRestoreError, match="10 features, not an m x m patch"):
        judge.patch_log_likelihood(rng.random((12, 12)), random_gmm(rng, 2, 10), 1, True)
    with pytest.raises(GmmRestoreError, match="patch"):
        judge.patch_log_likelihood(rng.random((3, 12)), random_gmm(rng, 2, 16), 1, True)
