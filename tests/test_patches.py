import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gmmrestore import patches as P
from gmmrestore.h5io import GmmRestoreError


def brute_force_patches(image, m):
    h, w = image.shape
    return np.array([image[i:i + m, j:j + m].ravel()
                     for i in range(h - m + 1) for j in range(w - m + 1)])


def test_extract_matches_loops(rng):
    images = rng.random((2, 6, 9))
    out = P.extract_patches(images, 3)
    assert out.shape == (2, 4 * 7, 9)
    for n in range(2):
        np.testing.assert_array_equal(out[n], brute_force_patches(images[n], 3))


def test_accumulate_is_adjoint_of_extract(rng):
    x = rng.normal(size=(2, 7, 5))
    p = rng.normal(size=(2, 5 * 3, 9))
    lhs = np.vdot(P.extract_patches(x, 3), p)
    rhs = np.vdot(x, P.accumulate_patches(p, (7, 5), 3))
    assert lhs == pytest.approx(rhs, rel=1e-12)


def test_patch_rows_are_the_patches_as_columns(rng):
    images = rng.random((3, 6, 9))
    rows = P.extract_patch_rows(images, 3)
    assert rows.shape == (9, 3 * 4 * 7) and rows.flags.c_contiguous
    brute = np.concatenate([brute_force_patches(image, 3) for image in images])
    np.testing.assert_array_equal(rows, brute.T)


def test_accumulate_rows_is_adjoint_of_extract_rows(rng):
    x = rng.normal(size=(2, 7, 5))
    columns = rng.normal(size=(9, 2 * 5 * 3))
    lhs = np.vdot(P.extract_patch_rows(x, 3), columns)
    rhs = np.vdot(x, P.accumulate_patch_rows(columns, (7, 5), 3))
    assert lhs == pytest.approx(rhs, rel=1e-12)
    with pytest.raises(ValueError, match="patch rows must be"):
        P.accumulate_patch_rows(columns[:, 1:], (7, 5), 3)


def test_counts_match_loops():
    h, w, m = 7, 10, 4
    counts = np.zeros((h, w))
    for i in range(h - m + 1):
        for j in range(w - m + 1):
            counts[i:i + m, j:j + m] += 1
    np.testing.assert_array_equal(P.patch_counts((h, w), m), counts)


@settings(max_examples=40, deadline=None)
@given(m=st.integers(2, 6), extra_h=st.integers(0, 8), extra_w=st.integers(0, 8),
       seed=st.integers(0, 2**31))
def test_extract_then_average_is_exact(m, extra_h, extra_w, seed):
    """Any image size H, W >= m (patch sizes up to the image size itself)."""
    h, w = m + extra_h, m + extra_w
    x = np.random.default_rng(seed).normal(size=(2, h, w))
    np.testing.assert_allclose(P.average_patches(P.extract_patches(x, m), (h, w), m), x,
                               atol=1e-12)


def test_weighted_average_matches_loops(rng):
    h, w, m = 6, 7, 3
    patches = rng.normal(size=(2, (h - m + 1) * (w - m + 1), m * m))
    weights = rng.random(m * m) + 0.1
    total = np.zeros((2, h, w))
    weight_sum = np.zeros((h, w))
    for idx, (i, j) in enumerate((i, j) for i in range(h - m + 1) for j in range(w - m + 1)):
        total[:, i:i + m, j:j + m] += (weights * patches[:, idx]).reshape(2, m, m)
        weight_sum[i:i + m, j:j + m] += weights.reshape(m, m)
    np.testing.assert_allclose(P.average_patches(patches, (h, w), m, weights),
                               total / weight_sum, rtol=1e-12)
    np.testing.assert_allclose(P.average_patch_rows(patches.reshape(-1, m * m).T, (h, w), m,
                                                    weights), total / weight_sum, rtol=1e-12)
    with pytest.raises(ValueError, match="positive"):
        P.average_patches(patches, (h, w), m, np.zeros(m * m))


def test_sample_patches_subset_and_seeded(rng):
    images = rng.random((3, 8, 8))
    allp = P.extract_patches(images, 4).reshape(-1, 16)
    a = P.sample_patches(images, 4, 20, np.random.default_rng(1))
    b = P.sample_patches(images, 4, 20, np.random.default_rng(1))
    np.testing.assert_array_equal(a, b)
    assert a.shape == (20, 16)
    # every sampled patch is one of the patches, no repeats
    idx = [int(np.flatnonzero((allp == row).all(axis=1))[0]) for row in a]
    assert len(set(idx)) == 20
    np.testing.assert_array_equal(P.sample_patches(images, 4, None, rng), allp)


@pytest.mark.parametrize("max_patches", [None, 20])
def test_sample_patches_transpose_half(rng, max_patches):
    images = rng.random((3, 8, 9))
    plain = P.sample_patches(images, 4, max_patches, np.random.default_rng(2))
    half = P.sample_patches(images, 4, max_patches, np.random.default_rng(2), transpose_half=True)
    expected = plain.reshape(-1, 4, 4).copy()
    expected[1::2] = expected[1::2].transpose(0, 2, 1)
    np.testing.assert_array_equal(half, expected.reshape(-1, 16))
    assert not np.array_equal(half[1], plain[1])


@pytest.mark.parametrize("m", [1, 9])
def test_patch_size_errors(m):
    with pytest.raises(GmmRestoreError, match="patch_size"):
        P.extract_patches(np.zeros((1, 8, 8)), m)
