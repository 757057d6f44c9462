"""Numerical edge cases: degenerate mixture components, constant images and patches, noise
that is tiny or zero relative to the blur.  No NaN or Inf reaches an output, and a warning
says what was done."""

import json
import logging

import numpy as np
import pytest

from gmmrestore import datasets
from gmmrestore import gmm as G
from gmmrestore import operators as op
from gmmrestore.h5io import GmmRestoreError, read_h5
from gmmrestore.patches import extract_patches
from gmmrestore.restore.baselines import restore_baseline
from gmmrestore.restore.epll import MIN_SIGMA, epll_restore
from gmmrestore.restore.mapk import boundary_noise_covariance, map_k_restore, safe_cholesky
from gmmrestore.restore.settings import EpllSettings

M = 4


def smooth_images(rng, n, size=16):
    return op.blur(rng.random((n, size, size)), op.gaussian_kernel(3, 1.0))


@pytest.fixture(scope="module")
def prior():
    """A small mixture trained on patches of smooth random images."""
    X = extract_patches(smooth_images(np.random.default_rng(0), 30), M).reshape(-1, M * M)
    gmm, _ = G.fit_gmm(X, 4, max_iter=8, tol=0, seed=0)
    return gmm


# ------------------------------------------------------------------------ degenerate components


def test_collapsing_cluster_and_component_are_handled_with_warnings(rng, caplog):
    """reg_covar = 0 and 200 identical patches: the initial cluster of those patches has a zero
    covariance, the component later collapses onto them again; both are re-started, said in a
    warning, and the fit ends finite and positive definite."""
    X = np.vstack([np.tile(rng.normal(size=9), (200, 1)), rng.normal(size=(800, 9)) + 3])
    with caplog.at_level(logging.WARNING, logger="gmmrestore"):
        gmm, hist = G.fit_gmm(X, 3, max_iter=6, tol=0, reg_covar=0.0, seed=0)
    assert "initialisation: cluster" in caplog.text and "singular covariance" in caplog.text
    assert "collapsed (covariance not positive definite); re-seeded" in caplog.text
    assert hist.reseeded
    assert np.all(np.isfinite(gmm.covariances)) and np.all(np.isfinite(hist.loglik_train))
    assert np.linalg.eigvalsh(gmm.covariances).min() > 0


def test_constant_patches(caplog):
    """All-black training patches: with reg_covar > 0 the extra components lose their
    responsibility and are re-seeded (warned); with reg_covar = 0 there is no density, a clear
    error says so."""
    X = np.zeros((500, 9))
    with caplog.at_level(logging.WARNING, logger="gmmrestore"):
        gmm, hist = G.fit_gmm(X, 3, max_iter=3, tol=0, reg_covar=1e-4)
    assert "lost its responsibility" in caplog.text and hist.reseeded
    assert np.all(np.isfinite(gmm.covariances)) and np.all(np.isfinite(hist.loglik_train))
    with pytest.raises(GmmRestoreError, match=r"singular covariance \(constant patches.*"
                                              r"reg_covar=0 .*use reg_covar > 0"):
        G.fit_gmm(X, 3, max_iter=3, reg_covar=0.0)


def test_singular_observation_covariance_gets_jitter_and_a_warning(caplog):
    v = np.arange(1.0, 5.0)
    C = np.outer(v, v)                                   # rank 1
    with caplog.at_level(logging.WARNING, logger="gmmrestore"):
        L, jitter = safe_cholesky(C, what="test matrix")
    assert jitter > 0 and np.all(np.isfinite(L))
    assert "test matrix was not positive definite; added" in caplog.text
    np.testing.assert_allclose(L @ L.T, C + jitter * np.eye(4), atol=1e-12)


# --------------------------------------------------- constant images, tiny or zero noise level

CONSTANT = {"black": 0.0, "gray": 0.5, "white": 1.0}
K7 = op.gaussian_kernel(7, 2.0)                          # the seed's blur: W ill-conditioned


@pytest.mark.parametrize("value", CONSTANT.values(), ids=CONSTANT.keys())
@pytest.mark.parametrize("sigma", [0.0, 0.1])
@pytest.mark.parametrize("remove_dc", [False, True])
def test_constant_images_through_map_k_and_epll(prior, value, sigma, remove_dc):
    gmm = prior
    if remove_dc:
        gmm = G.GaussianMixture(gmm.weights, np.zeros_like(gmm.means), gmm.covariances)
    images = np.full((2, 12, 12), value)
    y = op.blur(images, K7) + sigma * np.random.default_rng(1).standard_normal(images.shape)
    x = map_k_restore(y, gmm, op.patch_blur_matrix(K7, M), sigma, remove_dc=remove_dc)
    assert np.all(np.isfinite(x))
    z = epll_restore(y, gmm, K7, sigma, EpllSettings.published(beta_factors=[1, 4]),
                     remove_dc=remove_dc, init=x)
    assert np.all(np.isfinite(z))
    if sigma > 0:
        assert np.abs(z - value).max() < 1.0
    # at sigma = 0 the patch-level W (zero outside the patch) is inverted almost exactly and
    # the blur from outside the patches is amplified (|error| up to ~10 here): finite, but it
    # is what restore_images' boundary model (--boundary-model covariance) is for


@pytest.mark.parametrize("sigma", [0.0, 1e-8, 1e-5])
def test_noise_tiny_relative_to_the_blur(prior, sigma, caplog):
    """sigma = 0 or far below the blur's smallest singular values: the posterior is
    ill-conditioned; MAP-k and EPLL floor the noise level (warned) and stay finite."""
    gmm = prior
    rng = np.random.default_rng(2)
    clean = smooth_images(rng, 3)
    y = op.blur(clean, K7) + sigma * rng.standard_normal(clean.shape)
    W = op.patch_blur_matrix(K7, M)
    extra = boundary_noise_covariance(smooth_images(rng, 3), K7, W, M)
    with caplog.at_level(logging.WARNING, logger="gmmrestore"):
        for cov in (None, extra):
            x = map_k_restore(y, gmm, W, sigma, extra_noise_cov=cov)
            assert np.all(np.isfinite(x))
        z = epll_restore(y, gmm, K7, sigma, EpllSettings.published(beta_factors=[1, 4]), init=x)
    assert np.all(np.isfinite(z))
    assert np.abs(z - clean).mean() < np.abs(y - clean).mean()
    if sigma ** 2 < 1e-8 * np.trace(gmm.covariances, axis1=1, axis2=2).mean() / M**2:
        assert "MAP-k: noise variance" in caplog.text and "using the floor" in caplog.text
    assert f"EPLL: noise sigma {sigma:.3g} is below {MIN_SIGMA:.3g}" in caplog.text


def test_pure_deblurring_of_black_and_white_images_through_the_scripts(tmp_path, run_main):
    """sigma = 0 must work: corrupt_images, then restore_images (MAP-k and EPLL) on all-black
    and all-white test images, finite outputs, the noise floor stated in the log."""
    train = smooth_images(np.random.default_rng(3), 8, 12)
    test = np.stack([np.zeros((12, 12)), np.ones((12, 12))])
    dataset = tmp_path / "dataset.h5"
    datasets.write_dataset_file(dataset, {"train": train.astype(np.float32),
                                          "validation": train[:2].astype(np.float32),
                                          "test": test.astype(np.float32)}, {"source": "test"})
    patches, gmm = tmp_path / "patches.h5", tmp_path / "gmm.h5"
    corrupted = tmp_path / "corrupted.h5"
    for script, args in (
            ("extract_patches", ["--dataset", dataset, "--out", patches, "--patch-size", M]),
            ("train_gmm", ["--patches", patches, "--out", gmm, "-K", 3, "--max-iter", 5]),
            ("corrupt_images", ["--dataset", dataset, "--out", corrupted, "--blur-name", "g7",
                                "--blur-type", "gaussian", "--blur-size", 7, "--blur-std", 2,
                                "--sigma", 0])):
        code, log = run_main(script, *args)
        assert code == 0, log
    for method, warning in (("mapk", "using the floor"), ("epll", "EPLL: noise sigma 0")):
        out = tmp_path / f"{method}.h5"
        code, log = run_main("restore_images", "--corrupted", corrupted,
                             "--gmm", gmm, "--method", method, "--out", out,
                             "--boundary-model", "none")
        assert code == 0, log
        assert warning in log
        restored, _ = read_h5(out, "restored", ["restored"])
        assert np.all(np.isfinite(restored["restored"]))


def test_corrupt_images_valid_boundary_is_a_cameras_blur(tmp_path, run_main):
    """--boundary valid: the corrupted frame is the valid centre of the full convolution,
    cropped by the margin, and the clean reference the same centre of the scene; with
    --quantize-bits 8 the observation is on the 8-bit grid."""
    rng = np.random.default_rng(5)
    test, val = rng.random((2, 30, 26)), rng.random((1, 30, 26))
    dataset, out = tmp_path / "dataset.h5", tmp_path / "corrupted.h5"
    datasets.write_dataset_file(dataset, {"train": test.astype(np.float32),
                                          "validation": val.astype(np.float32),
                                          "test": test.astype(np.float32)}, {"source": "test"})
    code, log = run_main("corrupt_images", "--dataset", dataset, "--out", out,
                         "--blur-name", "shake", "--blur-type", "camera_shake",
                         "--blur-size", 7, "--blur-seed", 4, "--sigma", 0,
                         "--boundary", "valid", "--valid-margin", 10, "--quantize-bits", 8)
    assert code == 0, log
    arrays, attrs = read_h5(out, "corrupted", ["clean", "corrupted", "kernel"])
    k = arrays["kernel"]
    np.testing.assert_array_equal(k, op.camera_shake_kernel(7, 4))
    assert arrays["corrupted"].shape == arrays["clean"].shape == (2, 20, 16)
    x = test.astype(np.float32).astype(np.float64)
    full_valid = op.blur_valid(x, k)  # (2, 24, 20): crop 2 more on each side
    np.testing.assert_allclose(arrays["corrupted"],
                               op.quantize(full_valid[:, 2:-2, 2:-2], 8), atol=1e-12)
    np.testing.assert_array_equal(arrays["clean"], x[:, 5:-5, 5:-5])
    assert attrs["boundary"] == "valid" and attrs["quantize_bits"] == 8
    # the baseline stage restores such a frame without a zero border around it
    code, log = run_main("restore_baseline", "--corrupted", out, "--method", "wiener",
                         "--out", tmp_path / "wiener.h5")
    assert code == 0, log
    restored, rattrs = read_h5(tmp_path / "wiener.h5", "restored", ["restored"])
    assert rattrs["boundary"] == "valid"
    param = json.loads(rattrs["param"])
    np.testing.assert_allclose(restored["restored"], restore_baseline(
        "wiener", arrays["corrupted"], k, 0.0, param, boundary="valid"), atol=1e-12)
    code, log = run_main("corrupt_images", "--dataset", dataset, "--out", tmp_path / "x.h5",
                         "--blur-name", "shake", "--blur-type", "camera_shake",
                         "--blur-size", 7, "--sigma", 0, "--boundary", "valid",
                         "--valid-margin", 4)
    assert code != 0 and "--valid-margin 4: must be at least the kernel's size - 1 = 6" in log
    assert not (tmp_path / "x.h5").exists()


def test_a_float32_prior_chooses_components_in_float32(tmp_path, run_main):
    """train_gmm --dtype float32 -> restore_images scores in float32 (params score_dtype),
    the same restoration as the library call with score_dtype float32; a float64 prior
    keeps float64."""
    rng = np.random.default_rng(4)
    train = smooth_images(rng, 10, 12)
    dataset = tmp_path / "dataset.h5"
    datasets.write_dataset_file(dataset, {"train": train.astype(np.float32),
                                          "validation": train[:2].astype(np.float32),
                                          "test": train[2:5].astype(np.float32)},
                                {"source": "test"})
    patches, corrupted = tmp_path / "patches.h5", tmp_path / "corrupted.h5"
    for script, args in (
            ("extract_patches", ["--dataset", dataset, "--out", patches, "--patch-size", M]),
            ("corrupt_images", ["--dataset", dataset, "--out", corrupted, "--blur-name", "g3",
                                "--blur-type", "gaussian", "--blur-size", 3, "--blur-std", 1,
                                "--sigma", 0.05])):
        code, log = run_main(script, *args)
        assert code == 0, log
    arrays, attrs = read_h5(corrupted, "corrupted", ["corrupted", "kernel"])
    for dtype in ("float32", "float64"):
        gmm_file, out = tmp_path / f"gmm_{dtype}.h5", tmp_path / f"mapk_{dtype}.h5"
        code, log = run_main("train_gmm", "--patches", patches, "--out", gmm_file, "-K", 3,
                             "--max-iter", 5, "--dtype", dtype)
        assert code == 0, log
        code, log = run_main("restore_images", "--corrupted", corrupted, "--gmm", gmm_file,
                             "--method", "mapk", "--out", out, "--boundary-model", "none",
                             "--position-weight-power", 0)
        assert code == 0, log
        restored, rattrs = read_h5(out, "restored", ["restored"])
        assert json.loads(rattrs["params"])["score_dtype"] == dtype
        gmm, _ = G.load_gmm(gmm_file)
        W = op.patch_blur_matrix(arrays["kernel"], M)
        expected = map_k_restore(arrays["corrupted"], gmm, W, 0.05, score_dtype=dtype)
        np.testing.assert_allclose(restored["restored"], np.clip(expected, 0, 1), atol=1e-12)
