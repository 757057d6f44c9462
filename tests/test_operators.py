import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gmmrestore import operators as op
from gmmrestore.h5io import GmmRestoreError


def brute_force_blur(x, k):
    """Explicit loops: y[i,j] = sum_ab k[a,b] x[i-a+c, j-b+c], zero outside."""
    h, w = x.shape
    kh, kw = k.shape
    y = np.zeros_like(x)
    for i in range(h):
        for j in range(w):
            for a in range(kh):
                for b in range(kw):
                    r, c = i - a + kh // 2, j - b + kw // 2
                    if 0 <= r < h and 0 <= c < w:
                        y[i, j] += k[a, b] * x[r, c]
    return y


@pytest.mark.parametrize("shape", [(5, 7), (9, 6)])
def test_blur_matches_explicit_convolution(rng, shape):
    k = rng.random((3, 5))
    x = rng.random(shape)
    np.testing.assert_allclose(op.blur(x, k), brute_force_blur(x, k), atol=1e-12)


def test_dense_matrix_matches_operator(rng):
    k = op.motion_kernel(4, 30)
    x = rng.random((3, 6, 8))
    A = op.blur_dense_matrix(k, (6, 8))
    np.testing.assert_allclose(op.blur(x, k).reshape(3, -1), x.reshape(3, -1) @ A.T, atol=1e-12)
    np.testing.assert_allclose(op.blur_adjoint(x, k).reshape(3, -1), x.reshape(3, -1) @ A,
                               atol=1e-12)


@settings(max_examples=30, deadline=None)
@given(h=st.integers(1, 9), w=st.integers(1, 9), kh=st.sampled_from([1, 3, 5]),
       kw=st.sampled_from([1, 3, 7]), seed=st.integers(0, 2**31))
def test_adjoint_identity(h, w, kh, kw, seed):
    rng = np.random.default_rng(seed)
    k = rng.random((kh, kw))
    x, y = rng.normal(size=(h, w)), rng.normal(size=(h, w))
    lhs = np.vdot(op.blur(x, k), y)
    rhs = np.vdot(x, op.blur_adjoint(y, k))
    assert abs(lhs - rhs) <= 1e-10 * (1 + abs(lhs))


def test_kernels_are_normalised_and_shaped():
    g = op.gaussian_kernel(7, 2.0)
    assert g.shape == (7, 7) and g.sum() == pytest.approx(1.0)
    # the seed's W: 7x7 Gaussian, std 2, centre weight 0.0467
    assert g[3, 3] == pytest.approx(0.0467, abs=5e-4)
    for k in (op.box_kernel(5), op.disk_kernel(5), op.motion_kernel(6, 45),
              op.make_kernel("identity")):
        assert k.sum() == pytest.approx(1.0) and np.all(k >= 0)
        assert k.shape[0] % 2 == 1 and k.shape[1] % 2 == 1
    horizontal = op.motion_kernel(5, 0)
    assert np.count_nonzero(horizontal.sum(axis=1) > 1e-9) == 1  # a single row


def test_seed_patch_matrix_properties():
    W = op.patch_blur_matrix(op.gaussian_kernel(7, 2.0), 4)
    assert W.shape == (16, 16)
    # corner rows lose the mass that falls outside the patch (REFERENCES: 0.37)
    assert W[0].sum() == pytest.approx(0.37, abs=0.01)


def test_kernel_recovered_from_patch_matrix(rng):
    k = rng.random((5, 5))
    k /= k.sum()
    W = op.patch_blur_matrix(k, 6)
    np.testing.assert_allclose(op.kernel_from_patch_matrix(W, 6), k, atol=1e-12)
    with pytest.raises(GmmRestoreError, match="not a 2-D convolution"):
        op.kernel_from_patch_matrix(rng.random((36, 36)), 6)


@pytest.mark.parametrize("bad, message", [
    (np.array([[np.nan]]), "NaN"),
    (np.zeros((3, 3)), "sums to 0"),
    (np.ones((2, 2)), "odd"),
])
def test_validate_kernel_errors(bad, message):
    with pytest.raises(GmmRestoreError, match=message):
        op.validate_kernel(bad)


def test_make_kernel_unknown_type():
    with pytest.raises(GmmRestoreError, match="unknown blur type 'blurry'"):
        op.make_kernel("blurry")


def test_load_patch_matrix_errors(tmp_path):
    path = tmp_path / "W.npy"
    np.save(path, np.eye(16, dtype=np.int64))
    with pytest.raises(GmmRestoreError, match="dtype int64"):
        op.load_patch_matrix(str(path))
    np.save(path, np.eye(15))
    with pytest.raises(GmmRestoreError, match=r"shape \(15, 15\): 15 is not m²"):
        op.load_patch_matrix(str(path))
    bad = np.eye(16)
    bad[2, 3] = np.nan
    np.save(path, bad)
    with pytest.raises(GmmRestoreError, match="NaN"):
        op.load_patch_matrix(str(path))
    np.save(path, np.eye(16))
    assert op.load_patch_matrix(str(path)).shape == (16, 16)


# --- photographs: camera shake, valid boundary, quantisation ---------------------------

def brute_force_valid_blur(x, k):
    """Explicit loops: y[i,j] = sum_ab k[a,b] x[i + kh-1 - a, j + kw-1 - b] (full
    convolution's valid part: every term inside x)."""
    kh, kw = k.shape
    h, w = x.shape[0] - kh + 1, x.shape[1] - kw + 1
    y = np.zeros((h, w))
    for i in range(h):
        for j in range(w):
            for a in range(kh):
                for b in range(kw):
                    y[i, j] += k[a, b] * x[i + kh - 1 - a, j + kw - 1 - b]
    return y


def test_valid_blur_matches_explicit_sum_and_cropped_same_blur(rng):
    k = rng.random((3, 5))
    x = rng.random((2, 9, 11))
    y = op.blur_valid(x, k)
    assert y.shape == (2, 7, 7)
    for n in range(2):
        np.testing.assert_allclose(y[n], brute_force_valid_blur(x[n], k), atol=1e-12)
    np.testing.assert_allclose(y, op.blur(x, k)[:, 1:-1, 2:-2], atol=1e-12)


def test_valid_blur_adjoint_identity(rng):
    k = op.camera_shake_kernel(7, seed=1)
    x, v = rng.random((3, 20, 17)), rng.random((3, 14, 11))
    lhs = np.sum(op.blur_valid(x, k) * v)
    rhs = np.sum(x * op.blur_valid_adjoint(v, k))
    assert op.blur_valid_adjoint(v, k).shape == x.shape
    np.testing.assert_allclose(lhs, rhs, rtol=1e-12)


def test_valid_blur_refuses_images_smaller_than_the_kernel():
    with pytest.raises(GmmRestoreError, match="smaller than the kernel"):
        op.blur_valid(np.zeros((4, 9)), np.ones((5, 5)) / 25)


def test_camera_shake_trajectory_has_the_requested_length():
    path = op.camera_shake_trajectory(np.random.default_rng(0), n_samples=500, max_length=30)
    assert path[0] == 0 and len(path) == 500
    np.testing.assert_allclose(np.abs(np.diff(path)).sum(), 30, rtol=1e-9)


@pytest.mark.parametrize("size", [13, 19, 27])
def test_camera_shake_kernels_are_seeded_paths_of_the_given_size(size):
    kernels = [op.camera_shake_kernel(size, seed) for seed in range(8)]
    for k in kernels:
        assert k.shape == (size, size) and k.min() >= 0
        np.testing.assert_allclose(k.sum(), 1, rtol=1e-12)
        rows, cols = np.nonzero(k > 1e-12)
        # scaled so that the longer side spans size - 1 pixels (bilinear splats add one)
        assert max(np.ptp(rows), np.ptp(cols)) in (size - 2, size - 1)
        # a path, not a blob: most of the support is empty
        assert np.count_nonzero(k > 1e-3 * k.max()) < 0.6 * size * size
    np.testing.assert_array_equal(kernels[3], op.camera_shake_kernel(size, 3))
    # different seeds, different paths; and paths are not centro-symmetric in general
    assert min(np.abs(a - b).sum() for i, a in enumerate(kernels) for b in kernels[i + 1:]) > 0.2
    assert sum(np.abs(k - k[::-1, ::-1]).sum() > 0.3 for k in kernels) >= 6


def test_camera_shake_is_a_named_blur_type():
    assert "camera_shake" in op.KERNEL_TYPES
    np.testing.assert_array_equal(op.make_kernel("camera_shake", size=15, seed=2),
                                  op.camera_shake_kernel(15, 2))
    with pytest.raises(GmmRestoreError, match="odd"):
        op.make_kernel("camera_shake", size=14)


def test_quantize_clips_and_rounds_to_the_levels():
    x = np.array([-0.2, 0.0, 0.5 / 255, 0.6 / 255, 0.5, 1.0, 1.3])
    q = op.quantize(x, 8)
    np.testing.assert_allclose(q * 255, [0, 0, 0, 1, 128, 255, 255])
    with pytest.raises(GmmRestoreError, match="bits"):
        op.quantize(x, 0)
