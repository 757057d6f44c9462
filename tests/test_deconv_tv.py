"""Blind kernel estimation by total-variation alternating descent (Perrone & Favaro 2014):
the pieces against brute-force references, and recovery of a curved kernel."""

from dataclasses import replace

import numpy as np
import pytest
from test_deconv_sparse import blurred_blocks

from gmmrestore.deconv import kernel_error, tvmap, valid
from gmmrestore.h5io import GmmRestoreError
from gmmrestore.operators import blur_valid, gaussian_kernel


@pytest.fixture
def rng():
    return np.random.default_rng(25)  # the L0 test's photograph (test_deconv_l0.py)


def test_kernel_gradient_and_set_kernel_match_brute_force(rng):
    s, x, y = 5, rng.random((12, 15)), rng.random((8, 11))
    op = valid.ValidConvolution(rng.random((s, s)), x.shape)
    k = rng.random((s, s))
    op.set_kernel(k)
    spectrum = op.spectrum(x)
    np.testing.assert_allclose(op.forward(x, spectrum), blur_valid(x, k), atol=1e-12)
    # <T_k x, y> is linear in k: its gradient at tap a is <T_{e_a} x, y>
    expected = np.array([[np.sum(blur_valid(x, np.eye(1, s * s, a * s + b).reshape(s, s)) * y)
                          for b in range(s)] for a in range(s)])
    np.testing.assert_allclose(op.kernel_gradient(spectrum, y), expected, atol=1e-12)


def test_valid_convolution_reused_grids_give_fresh_results(rng):
    from scipy import fft

    s, x = 7, rng.random((19, 22))
    op = valid.ValidConvolution(rng.random((s, s)), x.shape)
    k = rng.random((s, s))
    op.set_kernel(k)
    np.testing.assert_array_equal(op.K, fft.rfft2(k, s=op.grid))  # rows of the kernel only
    y_shape = (x.shape[0] - s + 1, x.shape[1] - s + 1)
    # alternating shapes and offsets on the cached grids: nothing of a call leaks into the next
    for _ in range(2):
        for img in (x, np.stack([x, 1 - x]), 3 * x):
            np.testing.assert_allclose(op.forward(img), valid.conv_valid(img, k), atol=1e-12)
            out = rng.random(img.shape[:-2] + y_shape)
            np.testing.assert_allclose(op.adjoint(out), valid.corr_full(out, k), atol=1e-12)
            np.testing.assert_array_equal(op.spectrum(img), fft.rfft2(img, s=op.grid))


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize(("x_shape", "lead"), [((19, 22), ()), ((30, 27), (2,)), ((9, 31), ())])
def test_irfft2_rows_is_irfft2(rng, x_shape, lead, dtype):
    from scipy import fft

    s = 5
    op = valid.ValidConvolution(rng.random((s, s)), x_shape, dtype)
    spectrum = op.spectrum(rng.random(lead + x_shape))
    full = fft.irfft2(spectrum, s=op.grid)
    tol = 4 * np.finfo(dtype).eps * np.abs(full).max()
    for rows in (slice(0, op.grid[0]), slice(s - 1, x_shape[0]), slice(0, s)):
        got = valid.irfft2_rows(spectrum.copy(), op.grid, rows)  # overwrites its argument
        assert got.dtype == dtype and got.shape == lead + (rows.stop - rows.start, op.grid[1])
        np.testing.assert_allclose(got, full[..., rows, :], rtol=0, atol=tol)
    odd = fft.rfft2(rng.random((7, 9)))  # an odd last axis, all rows (l0map's x-step)
    np.testing.assert_allclose(valid.irfft2_rows(odd.copy(), (7, 9)),
                               fft.irfft2(odd, s=(7, 9)), rtol=0, atol=tol)


def test_valid_convolution_in_single_precision(rng):
    s, x, y = 6, rng.random((21, 17)), rng.random((16, 12))
    k = rng.random((s, s))
    op, op64 = valid.ValidConvolution(k, x.shape, np.float32), valid.ValidConvolution(k, x.shape)
    spectrum = op.spectrum(x)
    assert spectrum.dtype == np.complex64
    for got, want in ((op.forward(x, spectrum), valid.conv_valid(x, k)),
                      (op.adjoint(y), valid.corr_full(y, k)),
                      (op.kernel_gradient(spectrum, y),  # brute force: the float64 test above
                       op64.kernel_gradient(op64.spectrum(x), y))):
        assert got.dtype == np.float32
        np.testing.assert_allclose(got, want, rtol=0, atol=2e-6 * np.abs(want).max())


def test_tv_alternation_single_precision_follows_double(rng):
    y, _ = blurred_blocks(rng)
    scene = np.pad(y, 4, mode="edge")
    start = gaussian_kernel(9, 1.5)
    st = tvmap.TVSettings(n_iter=30)
    x32, k32 = tvmap.tv_alternation(y, scene, start, 1e-3, replace(st, single_precision=True))
    x64, k64 = tvmap.tv_alternation(y, scene, start, 1e-3, replace(st, single_precision=False))
    assert x32.dtype == x64.dtype == k32.dtype == np.float64
    assert np.abs(k64 - start).max() > 1e-3      # the steps moved the kernel ...
    np.testing.assert_allclose(k32, k64, atol=1e-5)   # ... the same way in both precisions
    np.testing.assert_allclose(x32, x64, atol=1e-4)
    assert k32.min() >= 0 and k32.sum() == pytest.approx(1.0)


@pytest.mark.parametrize("single_precision", [True, False])
def test_tv_estimate_recovers_a_curved_kernel(rng, single_precision):
    y, k_true = blurred_blocks(rng)
    kernel, info = tvmap.estimate_kernel_tv(
        y, 9, tvmap.TVSettings(single_precision=single_precision))
    blob = kernel_error(gaussian_kernel(9, 2.0), k_true)
    assert kernel_error(kernel, k_true) < min(0.35, blob / 2)
    assert info["levels"][-1][:3] == (9, 80, 80)


def test_coarse_levels_take_coarse_iter_steps(rng, monkeypatch):
    y, _ = blurred_blocks(rng)
    steps, alternation = [], tvmap.tv_alternation

    def counted(y, scene, kernel, lam, settings, n_iter=None, single_precision=None):
        steps.append(n_iter)
        return alternation(y, scene, kernel, lam, settings, n_iter, single_precision)

    monkeypatch.setattr(tvmap, "tv_alternation", counted)
    st = tvmap.TVSettings(n_iter=7, coarse_iter=3, refine_iter=0)
    tvmap.estimate_kernel_tv(y, 9, st)
    n_levels = len(tvmap.tv_levels(9, y.shape, st))
    assert n_levels >= 3 and steps == [3] * (n_levels - 1) + [7]
    # the count given to one level overrides the settings' n_iter, and only it
    scene, start = np.pad(y, 4, mode="edge"), gaussian_kernel(9, 1.5)
    by_argument = alternation(y, scene, start, 1e-3, st, 4)
    by_settings = alternation(y, scene, start, 1e-3, replace(st, n_iter=4))
    np.testing.assert_array_equal(by_argument[1], by_settings[1])
    assert not np.array_equal(by_argument[1], alternation(y, scene, start, 1e-3, st)[1])


@pytest.mark.parametrize(("fields", "coarse", "finest"), [
    ({}, np.float64, np.float64),
    ({"coarse_single_precision": True}, np.float32, np.float64),
    ({"single_precision": True}, np.float32, np.float32)])
def test_precision_per_level(rng, monkeypatch, fields, coarse, finest):
    y, _ = blurred_blocks(rng)
    dtypes, operator = [], tvmap.ValidConvolution

    def recorded(kernel, x_shape, dtype=np.float64):
        dtypes.append(np.dtype(dtype))
        return operator(kernel, x_shape, dtype)

    monkeypatch.setattr(tvmap, "ValidConvolution", recorded)
    st = tvmap.TVSettings(n_iter=5, refine_iter=0, **fields)
    tvmap.estimate_kernel_tv(y, 9, st)
    n_levels = len(tvmap.tv_levels(9, y.shape, st))
    assert n_levels >= 3 and dtypes == [np.dtype(coarse)] * (n_levels - 1) + [np.dtype(finest)]


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("shape", [(1, 1), (1, 6), (6, 1), (13, 17)])
def test_scene_gradient_is_the_numpy_expression_bit_for_bit(rng, dtype, shape):
    x = rng.random(shape).astype(dtype)
    x[: shape[0] // 2, : shape[1] // 2] = 0.4  # flat: magnitudes below eps
    adjoint = rng.standard_normal((shape[0] + 3, shape[1] + 5)).astype(dtype)[2:-1, 1:-4]
    lam, eps = 6e-4, 1e-3
    expected = adjoint + lam * tvmap.total_variation_gradient(x, eps)
    out, peak, top = tvmap.scene_gradient(x, adjoint, lam, eps)
    assert out.dtype == expected.dtype == dtype
    np.testing.assert_array_equal(out, expected)
    assert peak == float(np.abs(expected).max()) and top == float(x.max())


@pytest.mark.parametrize("single_precision", [False, True])
def test_tv_alternation_equals_its_numpy_form(rng, single_precision):
    """The alternation (compiled scene gradient) against the module docstring's steps
    written in NumPy: the same scene and kernel bit for bit."""
    from gmmrestore.deconv.mstep import project_kernel

    y, _ = blurred_blocks(rng)
    scene, start = np.pad(y, 4, mode="edge"), gaussian_kernel(9, 1.5)
    st = tvmap.TVSettings(n_iter=25, single_precision=single_precision)
    dtype = np.float32 if single_precision else np.float64

    def step(values, gradient, size):
        return values - size * float(values.max()) / float(np.abs(gradient).max()) * gradient

    op = valid.ValidConvolution(start, scene.shape, dtype)
    x, k, yt = scene.astype(dtype), start, y.astype(dtype)
    for _ in range(st.n_iter):
        x = step(x, op.adjoint(op.forward(x) - yt)
                 + 1e-3 * tvmap.total_variation_gradient(x, st.tv_eps), st.image_step)
        spectrum = op.spectrum(x)
        k = project_kernel(step(k, op.kernel_gradient(spectrum, op.forward(x, spectrum) - yt),
                                st.kernel_step))
        op.set_kernel(k)
    x_alt, k_alt = tvmap.tv_alternation(y, scene, start, 1e-3, st)
    assert np.abs(k - start).max() > 1e-3
    np.testing.assert_array_equal(k_alt, k)
    np.testing.assert_array_equal(x_alt, x.astype(np.float64))


def test_total_variation_gradient_matches_finite_differences(rng):
    x = rng.random((7, 9))
    x[2:5, 3:6] = 0.4  # flat patch: magnitudes below eps, the quadratic branch
    eps, h = 1e-2, 1e-6
    grad = tvmap.total_variation_gradient(x, eps)
    numeric = np.zeros_like(x)
    for idx in np.ndindex(x.shape):
        e = np.zeros_like(x)
        e[idx] = h
        numeric[idx] = (tvmap.total_variation(x + e, eps)
                        - tvmap.total_variation(x - e, eps)) / (2 * h)
    np.testing.assert_allclose(grad, numeric, atol=1e-6)
    # far above eps the Huber TV is the plain isotropic TV minus eps / 2 per pixel
    gh, gv = np.diff(x, axis=1)[:-1], np.diff(x, axis=0)[:, :-1]
    assert tvmap.total_variation(x, 1e-9) == pytest.approx(
        np.sum(np.hypot(gh, gv)) + np.sum(np.abs(np.diff(x[-1])))
        + np.sum(np.abs(np.diff(x[:, -1]))), rel=1e-6)


def test_levels_grow_the_weight_and_shrink_the_kernel():
    st = tvmap.TVSettings()
    levels = tvmap.tv_levels(27, (255, 240), st)
    assert levels[-1] == (27, (255, 240), st.lam)
    sizes = [ks for ks, _, _ in levels]
    assert all(ks % 2 == 1 and ks >= 3 for ks in sizes) and sizes == sorted(set(sizes))
    for (k0, sh0, l0), (k1, sh1, l1) in zip(levels, levels[1:], strict=False):
        assert l1 * st.lam_factor == pytest.approx(l0)
        assert sh0[0] == round(sh1[0] * k0 / k1) and sh0[1] == round(sh1[1] * k0 / k1)
    assert levels[0][2] < st.lam_max <= levels[0][2] * st.lam_factor or levels[0][0] == 3
    assert [ks for ks, _, _ in tvmap.tv_levels(5, (40, 40), st)] == [3, 5]


def test_tv_rejects_bad_input(rng):
    with pytest.raises(GmmRestoreError, match="too small for a 9x9 kernel"):
        tvmap.estimate_kernel_tv(rng.random((15, 40)), 9)
    with pytest.raises(GmmRestoreError, match="out of range"):
        tvmap.TVSettings(lam=0.0)
    with pytest.raises(GmmRestoreError, match="out of range"):
        tvmap.TVSettings(coarse_iter=0)
    with pytest.raises(GmmRestoreError, match="finite"):
        tvmap.estimate_kernel_tv(np.full((40, 40), np.nan), 9)
