import numpy as np
import pytest
from scipy import optimize
from skimage import restoration

from gmmrestore.h5io import GmmRestoreError
from gmmrestore.metrics import psnr
from gmmrestore.operators import blur, extend_frame, frame_centre, gaussian_kernel
from gmmrestore.restore import baselines as bl
from gmmrestore.restore.baselines import BASELINES, restore_baseline, tune_baseline

GAUSS = gaussian_kernel(5, 1.0)
IDENTITY = np.ones((1, 1))
NAMES = sorted(BASELINES)


def shapes(rng, n=2, size=28):
    """MNIST-like test images: a few bright rectangles on a black background, in [0, 1]."""
    x = np.zeros((n, size, size))
    for img in x:
        for _ in range(3):
            r, c = rng.integers(3, size - 10, size=2)
            h, w = rng.integers(3, 8, size=2)
            img[r:r + h, c:c + w] = rng.uniform(0.5, 1.0)
    return x


def corrupt(rng, x, kernel, sigma):
    return blur(x, kernel) + sigma * rng.standard_normal(x.shape)


@pytest.mark.parametrize("kernel", [GAUSS, IDENTITY], ids=["gauss5", "identity"])
@pytest.mark.parametrize("name", NAMES)
def test_every_baseline_runs_on_tiny_images(rng, name, kernel):
    y = corrupt(rng, shapes(rng), kernel, 0.1)
    out = restore_baseline(name, y, kernel, 0.1)
    assert out.shape == y.shape and out.dtype == np.float64
    assert np.all(np.isfinite(out)) and out.min() >= 0 and out.max() <= 1


# Every baseline, at its default parameter, beats the corrupted input on blurred + noisy
# shapes; on pure denoising every one except richardson_lucy (whose identity-kernel fixed
# point is the input clipped at 0, only a little better than the input) gains clearly.
CASES = [(name, "gauss5", 1.0) for name in NAMES] + [
    (name, "identity", 1.0 if name != "richardson_lucy" else 0.2) for name in NAMES]


@pytest.mark.parametrize(("name", "kernel_name", "min_gain_db"), CASES)
def test_baseline_improves_psnr_over_corrupted(name, kernel_name, min_gain_db):
    rng = np.random.default_rng(7)
    kernel = {"gauss5": GAUSS, "identity": IDENTITY}[kernel_name]
    x = shapes(rng)
    y = corrupt(rng, x, kernel, 0.1)
    out = restore_baseline(name, y, kernel, 0.1)
    gain = psnr(x, out) - psnr(x, y)
    assert np.all(gain > min_gain_db), gain


@pytest.mark.parametrize("name", NAMES)
def test_sigma_zero_pure_deblurring(rng, name):
    x = shapes(rng)
    y = blur(x, GAUSS)
    out = restore_baseline(name, y, GAUSS, 0.0)
    assert np.all(np.isfinite(out))
    if name != "tv":  # tv only denoises: nothing to gain on noise-free blur
        assert np.mean(psnr(x, out)) > np.mean(psnr(x, y))


def test_unknown_name_lists_the_valid_ones(rng):
    with pytest.raises(GmmRestoreError) as err:
        restore_baseline("wienr", np.zeros((1, 8, 8)), GAUSS, 0.1)
    for name in NAMES:
        assert name in str(err.value)
    with pytest.raises(GmmRestoreError, match="wienr"):
        tune_baseline("wienr", np.zeros((1, 8, 8)), np.zeros((1, 8, 8)), GAUSS, 0.1)


def test_bad_inputs_are_user_errors():
    with pytest.raises(GmmRestoreError, match=r"\(n, H, W\)"):
        restore_baseline("wiener", np.zeros((8, 8)), GAUSS, 0.1)
    with pytest.raises(GmmRestoreError, match="sigma"):
        restore_baseline("wiener", np.zeros((1, 8, 8)), GAUSS, -0.1)
    with pytest.raises(GmmRestoreError, match="NaN"):
        restore_baseline("wiener", np.full((1, 8, 8), np.nan), GAUSS, 0.1)
    with pytest.raises(GmmRestoreError, match="num_iter"):
        restore_baseline("richardson_lucy", np.zeros((1, 8, 8)), GAUSS, 0.1, param=0)
    with pytest.raises(GmmRestoreError, match="same"):
        tune_baseline("wiener", np.zeros((2, 8, 8)), np.zeros((1, 8, 8)), GAUSS, 0.1)


@pytest.mark.parametrize(("name", "grid"), [("wiener", [0.3, 0.003, 0.03, 0.01, 1.0]),
                                            ("richardson_lucy", [1, 30, 4, 8]),
                                            ("tv", None)])
def test_tuning_picks_the_brute_force_best(rng, name, grid):
    x = shapes(rng, n=3)
    y = corrupt(rng, x, GAUSS, 0.1)
    best, table = tune_baseline(name, x, y, GAUSS, 0.1, grid=grid)
    expected_grid = list(BASELINES[name].default_grid(GAUSS, 0.1)) if grid is None else grid
    brute = [np.mean(psnr(x, restore_baseline(name, y, GAUSS, 0.1, v))) for v in expected_grid]
    assert table["params"] == expected_grid
    np.testing.assert_allclose(table["mean_psnr"], brute, rtol=1e-12)
    assert best == expected_grid[int(np.argmax(brute))] == table["best"]
    assert table["best_mean_psnr"] == max(brute)
    assert table["at_grid_edge"] == (int(np.argmax(brute)) in (0, len(brute) - 1))
    assert table["param_name"] == BASELINES[name].param_name
    assert len(set(np.round(brute, 6))) > 1  # the grid really matters here


def test_tuning_without_free_parameter_has_one_row(rng):
    x = shapes(rng)
    y = corrupt(rng, x, GAUSS, 0.1)
    best, table = tune_baseline("unsupervised_wiener", x, y, GAUSS, 0.1, seed=3)
    assert best is None and table["params"] == [None] and table["seed"] == 3
    assert not table["at_grid_edge"]
    assert table["mean_psnr"][0] == np.mean(psnr(x, restore_baseline(
        "unsupervised_wiener", y, GAUSS, 0.1, seed=3)))


def test_unsupervised_wiener_is_seeded(rng):
    y = corrupt(rng, shapes(rng), GAUSS, 0.1)
    a = restore_baseline("unsupervised_wiener", y, GAUSS, 0.1, seed=1)
    b = restore_baseline("unsupervised_wiener", y, GAUSS, 0.1, seed=1)
    c = restore_baseline("unsupervised_wiener", y, GAUSS, 0.1, seed=2)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_wiener_transfer_reproduces_skimage_wiener(rng):
    kernel = np.zeros((5, 5))
    kernel[1:3, 2:] = np.arange(1.0, 7.0).reshape(2, 3) / 21  # asymmetric: catches a flip
    y = rng.random((20, 24))
    G = bl.wiener_transfer(kernel, y.shape, 0.05)
    ours = np.real(np.fft.ifft2(G * np.fft.fft2(y)))
    np.testing.assert_allclose(ours, restoration.wiener(y, kernel, 0.05, clip=False),
                               atol=1e-10)


def test_wiener_and_rl_use_the_kernel_the_right_way_round(rng):
    """With an asymmetric kernel, the true kernel restores much better than its flip."""
    kernel = np.zeros((7, 7))
    kernel[3, 3:] = 0.25  # one-sided motion: not symmetric under a 180 degree flip
    x = shapes(rng)
    y = blur(x, kernel)
    for name, param in (("wiener", 1e-3), ("richardson_lucy", 30)):
        right = psnr(x, restore_baseline(name, y, kernel, 0.0, param))
        flipped = psnr(x, restore_baseline(name, y, kernel[::-1, ::-1], 0.0, param))
        assert np.all(right > flipped + 3), (name, right, flipped)


def test_zero_padding_helps_the_circular_wiener(rng):
    """Content touching the border: padding removes the wrap-around mismatch."""
    x = np.clip(0.5 + 1.2 * blur(rng.standard_normal((2, 28, 28)), gaussian_kernel(7, 2.0)),
                0, 1)
    y = corrupt(rng, x, GAUSS, 0.01)
    padded = restore_baseline("wiener", y, GAUSS, 0.01, 0.01)
    unpadded = np.clip(np.stack([restoration.wiener(v, GAUSS, 0.01, clip=False) for v in y]),
                       0, 1)
    assert np.all(psnr(x, padded) > psnr(x, unpadded) + 1.0)


def test_richardson_lucy_without_normalisation_is_skimage(rng):
    y = np.clip(corrupt(rng, shapes(rng, n=3), GAUSS, 0.05), 0, None)
    ours = bl.richardson_lucy_deconvolve(y, GAUSS, 7, normalize=False)
    loop = np.stack([restoration.richardson_lucy(v, GAUSS, 7, clip=False) for v in y])
    np.testing.assert_allclose(ours, loop, rtol=1e-9, atol=1e-12)


def test_richardson_lucy_step_conserves_flux(rng):
    """Textbook property of the normalised RL step: sum_j (A^T 1)_j x_j = sum_i y_i."""
    y = rng.random((2, 9, 11))
    x = bl.richardson_lucy_deconvolve(y, GAUSS, 1)
    weights = blur(np.ones((9, 11)), GAUSS[::-1, ::-1])
    np.testing.assert_allclose(np.sum(weights * x, axis=(1, 2)), y.sum(axis=(1, 2)),
                               rtol=1e-10)


def test_normalised_richardson_lucy_keeps_bright_borders(rng):
    """Zero-boundary blur of an image with a bright border: the A^T 1 normalisation keeps
    the borders (skimage's unnormalised update darkens them)."""
    x = np.clip(0.5 + 1.2 * blur(rng.standard_normal((2, 28, 28)), gaussian_kernel(7, 2.0)),
                0.05, 1)
    y = np.clip(corrupt(rng, x, GAUSS, 0.01), 0, None)
    ours = restore_baseline("richardson_lucy", y, GAUSS, 0.01, 10)
    theirs = np.clip(restoration.richardson_lucy(y, GAUSS[None], 10, clip=False), 0, 1)
    assert np.all(psnr(x, ours) > psnr(x, y) + 3)
    assert np.all(psnr(x, ours) > psnr(x, theirs) + 3)


def test_gradient_and_divergence_are_negative_adjoints(rng):
    x = rng.standard_normal((2, 5, 7))
    p = rng.standard_normal((2, 2, 5, 7))
    assert np.isclose(np.sum(bl._gradient(x) * p), -np.sum(x * bl._divergence(p)))


def test_tv_deconv_with_identity_solves_the_same_problem_as_skimage_tv(rng):
    y = corrupt(rng, shapes(rng, n=2, size=16), IDENTITY, 0.1)
    ours = bl.tv_deconvolve(y, IDENTITY, 0.1, n_iter=3000, box=None)
    ref = restoration.denoise_tv_chambolle(y, weight=0.1, eps=1e-10, max_num_iter=20000,
                                           channel_axis=0)
    np.testing.assert_allclose(ours, ref, atol=2e-3)


def _tv_objective(x, y, kernel, weight, eps=0.0):
    g = bl._gradient(x)
    return (0.5 * np.sum((blur(x, kernel) - y) ** 2)
            + weight * np.sum(np.sqrt(g[0] ** 2 + g[1] ** 2 + eps)))


def test_tv_deconv_reaches_the_minimum_of_a_generic_solver(rng):
    """On a 7x7 image, Chambolle-Pock's objective is not above L-BFGS-B's (smoothed TV,
    same box), and the two minimisers agree."""
    kernel = gaussian_kernel(3, 0.8)
    x0 = np.zeros((1, 7, 7))
    x0[0, 2:5, 1:4] = 0.8
    y = corrupt(rng, x0, kernel, 0.05)
    weight = 0.05
    ours = bl.tv_deconvolve(y, kernel, weight, n_iter=1000)

    eps = 1e-8

    def f(v):
        x = v.reshape(y.shape)
        g = bl._gradient(x)
        g /= np.sqrt(g[0] ** 2 + g[1] ** 2 + eps)
        jac = blur(blur(x, kernel) - y, kernel[::-1, ::-1]) - weight * bl._divergence(g)
        return _tv_objective(x, y, kernel, weight, eps), jac.ravel()

    ref = optimize.minimize(f, np.clip(y, 0, 1).ravel(), jac=True, method="L-BFGS-B",
                            bounds=[(0, 1)] * y.size,
                            options={"maxiter": 20000, "maxfun": 10**6, "ftol": 1e-15})
    assert _tv_objective(ours, y, kernel, weight) <= ref.fun + 1e-6
    np.testing.assert_allclose(ours.ravel(), ref.x, atol=5e-3)


def test_numpy_trapz_alias_is_scoped():
    name = "trapz"
    had = hasattr(np, name)
    with bl.numpy_trapz_alias():
        assert getattr(np, name)(np.array([0.0, 1.0, 2.0])) == 2.0
    assert hasattr(np, name) == had
    with pytest.raises(RuntimeError), bl.numpy_trapz_alias():
        raise RuntimeError("boom")
    assert hasattr(np, name) == had


def test_bm3d_identity_is_plain_bm3d(rng):
    import bm3d

    y = corrupt(rng, shapes(rng, n=1), IDENTITY, 0.1)
    ours = restore_baseline("bm3d", y, IDENTITY, 0.1, clip=False)
    # bm3d computes in float32 (and not bit-reproducibly)
    np.testing.assert_allclose(ours[0], bm3d.bm3d(y[0], sigma_psd=0.1), atol=1e-5)


@pytest.mark.parametrize("kernel", [GAUSS, np.outer([1.0, 2.0, 4.0], [3.0, 1.0, 0.0, 0.5, 1.0]),
                                    np.arange(9.0).reshape(3, 3), IDENTITY])
def test_blur_operators_equal_the_operators_module(rng, kernel):
    x = rng.standard_normal((2, 9, 11))
    forward, adjoint = bl.blur_operators(kernel)
    np.testing.assert_allclose(forward(x), blur(x, kernel), atol=1e-12)
    np.testing.assert_allclose(adjoint(x), blur(x, kernel[::-1, ::-1]), atol=1e-12)


def test_extend_frame_is_edge_padding_and_frame_centre_inverts_it(rng):
    images = rng.random((2, 5, 6))
    ext = extend_frame(images, (3, 5))
    assert ext.shape == (2, 7, 10)
    np.testing.assert_array_equal(ext[:, 1:-1, 2:-2], images)
    np.testing.assert_array_equal(ext[:, 0, 2:-2], images[:, 0])       # top row repeated
    np.testing.assert_array_equal(ext[:, 1:-1, 0], images[:, :, 0])    # left column
    np.testing.assert_array_equal(frame_centre(ext, (3, 5)), images)


@pytest.mark.parametrize("name", ["wiener", "richardson_lucy", "tv_deconv"])
def test_a_valid_frame_restores_better_at_its_border_than_under_a_zero_boundary(rng, name):
    from scipy import ndimage

    from gmmrestore.operators import blur_valid

    kernel = gaussian_kernel(7, 1.5)
    scene = 0.5 + 3 * (ndimage.gaussian_filter(rng.random((2, 46, 46)), (0, 2, 2)) - 0.5)
    y = blur_valid(scene, kernel) + 0.005 * rng.standard_normal((2, 40, 40))
    clean = scene[:, 3:-3, 3:-3]
    band = np.ones((40, 40), bool)
    band[4:-4, 4:-4] = False

    def border_error(boundary):
        out = restore_baseline(name, y, kernel, 0.005, boundary=boundary)
        assert out.shape == y.shape
        return np.sqrt(np.mean((out - clean)[:, band] ** 2))

    assert border_error("valid") < 0.5 * border_error("zero")


def test_unknown_frame_boundary_is_a_user_error(rng):
    with pytest.raises(GmmRestoreError, match="boundary 'circular'"):
        restore_baseline("wiener", rng.random((1, 8, 8)), gaussian_kernel(3, 1.0), 0.01,
                         boundary="circular")


def test_hyper_laplacian_is_the_sparse_deconvolution_of_each_frame_as_observed(rng):
    """A valid-model baseline gets the frame itself under boundary 'valid' (no edge
    extension), image by image, its weight the sparse deconvolution's default at 1% noise;
    a non-square kernel is centred in a square one."""
    from gmmrestore.deconv import SparseDeconvSettings, deconvolve_sparse
    from gmmrestore.operators import blur_valid

    kernel = np.outer([1.0, 2.0, 1.0], [1.0, 3.0, 2.0, 1.0, 1.0])
    kernel /= kernel.sum()
    y = blur_valid(rng.random((2, 24, 26)), kernel) + 0.01 * rng.standard_normal((2, 22, 22))
    out = restore_baseline("hyper_laplacian", y, kernel, 0.01, clip=False, boundary="valid")
    square = np.pad(kernel, ((1, 1), (0, 0)))
    for image, restored in zip(y, out, strict=True):
        np.testing.assert_array_equal(restored, deconvolve_sparse(image, square))
    assert bl.sparse_weight(0.01) == SparseDeconvSettings().weight
    assert bl.sparse_weight(0.03) == pytest.approx(9 * SparseDeconvSettings().weight)
    heavier = restore_baseline("hyper_laplacian", y, kernel, 0.01, param=0.2, clip=False,
                               boundary="valid")
    assert np.abs(np.diff(heavier, axis=-1)).sum() < np.abs(np.diff(out, axis=-1)).sum()


def test_only_untuned_baselines_restore_blind():
    """'blind' baselines take no parameter from the true kernel: a one-value grid."""
    blind = [n for n, spec in BASELINES.items() if spec.blind]
    assert blind == ["hyper_laplacian"]
    for name in blind:
        for sigma in (0.0, 0.01, 0.1):
            assert len(BASELINES[name].default_grid(GAUSS, sigma)) == 1
