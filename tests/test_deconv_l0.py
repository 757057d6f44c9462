"""Blind kernel estimation by alternating MAP with an L0 gradient prior: the pieces against
brute-force references, and recovery of a curved kernel from a photograph-like image."""

import numpy as np
import pytest
from scipy import fft as sfft
from scipy import ndimage
from test_deconv_sparse import blocky_image, curved_kernel

from gmmrestore import deconv as D
from gmmrestore.deconv import l0map, tvmap
from gmmrestore.h5io import GmmRestoreError
from gmmrestore.operators import blur_valid, quantize


@pytest.fixture
def rng():
    return np.random.default_rng(25)


def circular_conv(x, k):
    """Centred circular convolution by explicit sums of rolled copies."""
    c0, c1 = k.shape[0] // 2, k.shape[1] // 2
    out = np.zeros_like(x)
    for a in range(k.shape[0]):
        for b in range(k.shape[1]):
            out += k[a, b] * np.roll(x, (a - c0, b - c1), axis=(0, 1))
    return out


def test_kernel_otf_and_differences_are_the_circular_operators(rng):
    x, k = rng.random((9, 11)), rng.random((5, 3))
    got = sfft.irfft2(l0map.kernel_otf(k, x.shape) * sfft.rfft2(x), s=x.shape)
    np.testing.assert_allclose(got, circular_conv(x, k), atol=1e-12)
    gh, gv = l0map.forward_differences(x)
    np.testing.assert_allclose(gh[:, :-1], np.diff(x, axis=1))
    np.testing.assert_allclose(gv[:-1], np.diff(x, axis=0))
    a, b = rng.random((9, 11)), rng.random((9, 11))
    np.testing.assert_allclose(np.sum(l0map.forward_differences_adjoint(a, b) * x),
                               np.sum(a * gh + b * gv))


def circulant(op, shape):
    """Dense matrix of a linear map of (H, W) images, column by column."""
    n = shape[0] * shape[1]
    cols = [op(np.eye(n)[i].reshape(shape)).ravel() for i in range(n)]
    return np.array(cols).T


def test_hqs_image_step_solves_the_normal_equations(rng):
    shape = (6, 7)
    y, k = rng.random(shape), rng.random((3, 3))
    gh, gv, beta = rng.standard_normal(shape), rng.standard_normal(shape), 3.7
    K = circulant(lambda z: circular_conv(z, k), shape)
    Dh = circulant(lambda z: np.roll(z, -1, axis=1) - z, shape)
    Dv = circulant(lambda z: np.roll(z, -1, axis=0) - z, shape)
    A = K.T @ K + beta * (Dh.T @ Dh + Dv.T @ Dv)
    expected = np.linalg.solve(A, K.T @ y.ravel() + beta * (Dh.T @ gh.ravel()
                                                            + Dv.T @ gv.ravel()))
    fk = l0map.kernel_otf(k, shape)
    grad_den = sum(np.abs(l0map.kernel_otf(d, shape)) ** 2
                   for d in (np.array([[1.0, -1.0, 0.0]]), np.array([[1.0], [-1.0], [0.0]])))
    got = l0map.hqs_image_step(np.conj(fk) * sfft.rfft2(y), np.abs(fk) ** 2, grad_den,
                               gh, gv, beta)
    np.testing.assert_allclose(got.ravel(), expected, atol=1e-10)


def test_l0_deconvolve_restores_a_piecewise_constant_image(rng):
    x = blocky_image(rng, (48, 48), n_rect=12)
    k = curved_kernel(7)
    y = circular_conv(x, k)
    est = l0map.l0_deconvolve(y, k, lam=1e-3)
    assert np.abs(est - x).mean() < 0.25 * np.abs(y - x).mean()
    def flat(z):
        return np.mean(np.hypot(np.diff(z, axis=1)[:-1], np.diff(z, axis=0)[:, :-1]) < 1e-3)
    assert flat(est) > 0.6 and flat(est) > flat(y) + 0.3  # L0: most gradients flat


def test_periodic_extend_keeps_the_image_and_is_smooth_across_the_wrap(rng):
    y = ndimage.gaussian_filter(rng.random((40, 50)), 2.0) + np.linspace(0, 1, 50)
    ext = l0map.periodic_extend(y, 12)
    assert ext.shape == (52, 62)
    np.testing.assert_array_equal(ext[:40, :50], y)
    inner = max(np.abs(np.diff(y, axis=0)).max(), np.abs(np.diff(y, axis=1)).max())
    naive = max(np.abs(y[-1] - y[0]).max(), np.abs(y[:, -1] - y[:, 0]).max())
    wrapped = np.concatenate([ext, ext[:1]], axis=0)
    wrapped = np.concatenate([wrapped, wrapped[:, :1]], axis=1)
    # the band bridges the jump a plain wrap would make, at most at the raised cosine's
    # steepest slope (pi / 2 per band width) on top of the image's own texture
    for axis in (0, 1):
        jump = np.abs(np.diff(wrapped, axis=axis)).max()
        assert jump <= inner + np.pi / 2 * naive / 13 and jump < 0.25 * naive
    with pytest.raises(GmmRestoreError, match="band of 39"):
        l0map.periodic_extend(y, 39)
    assert l0map.periodic_extend(y, (3, 5)).shape == (43, 55)
    rows, cols = l0map.periodic_band((40, 50), 7)
    assert 14 <= rows <= 38 and 14 <= cols <= 48


def test_kernel_from_latent_recovers_the_kernel_from_the_true_scene(rng):
    k_true = curved_kernel(7)
    x = blocky_image(rng, (46, 46))
    y = blur_valid(x, k_true)
    k = l0map.kernel_from_latent(y, x, 7, ridge=0.0, threshold=0.0)
    np.testing.assert_allclose(k, k_true, atol=1e-4)


def test_scene_from_periodic_places_the_photograph_in_the_valid_scene(rng):
    x_periodic = rng.random((30, 32))
    scene = l0map.scene_from_periodic(x_periodic, (20, 22), 5)
    assert scene.shape == (24, 26)
    np.testing.assert_array_equal(scene[2:22, 2:24], x_periodic[:20, :22])
    np.testing.assert_array_equal(scene[0, 0], x_periodic[-2, -2])


@pytest.mark.parametrize("estimator", [l0map.estimate_kernel_l0, tvmap.estimate_kernel_tv],
                         ids=["l0", "tv"])
def test_photograph_estimate_recovers_a_curved_kernel_where_the_gaussian_prior_does_not(
        rng, estimator):
    k_true = curved_kernel(9)
    x = blocky_image(rng, (88, 88), n_rect=60)
    y = quantize(blur_valid(x, k_true) + 0.005 * rng.standard_normal((80, 80)), 8)
    k_est, info = estimator(y, 9)
    k_gauss, _ = D.estimate_kernel(y, 9, D.GaussianBlindSettings(prior_std=0.1, n_iter=3))
    err = D.kernel_error(k_est, k_true)
    assert err < 0.4
    assert D.kernel_error(k_gauss, k_true) > err + 0.25
    assert k_est.shape == (9, 9) and abs(k_est.sum() - 1) < 1e-12 and k_est.min() >= 0
    assert info["levels"][-1][:3] == (9, 80, 80)


def test_l0_rejects_bad_input(rng):
    with pytest.raises(GmmRestoreError, match="too small for a 9x9 kernel"):
        l0map.estimate_kernel_l0(rng.random((15, 40)), 9)
    with pytest.raises(GmmRestoreError, match="out of range"):
        l0map.L0Settings(lam=0.0)
    with pytest.raises(GmmRestoreError, match="out of range"):
        l0map.L0Settings(recenter_max_lost=-0.1)
    with pytest.raises(GmmRestoreError, match="finite"):
        l0map.estimate_kernel_l0(np.full((40, 40), np.nan), 9)
