"""Method epll_image_prior through the stage scripts: train_gmm.py --images trains the
whole-image mixture, restore_images.py restores with it exactly as the library does."""

import numpy as np

from gmmrestore import datasets
from gmmrestore import operators as op
from gmmrestore.gmm import load_gmm
from gmmrestore.h5io import read_h5, write_h5
from gmmrestore.restore.epll import ImagePrior, epll_restore
from gmmrestore.restore.mapk import boundary_noise_covariance, map_k_restore
from gmmrestore.restore.settings import EpllSettings, MapkSettings


def smooth(rng, n, size=12):
    return np.clip(op.blur(rng.random((n, size, size)), op.gaussian_kernel(5, 1.5)) * 1.5,
                   0, 1)


def test_image_prior_through_the_scripts(tmp_path, run_main):
    rng = np.random.default_rng(3)
    images = {"train": smooth(rng, 40), "validation": smooth(rng, 4), "test": smooth(rng, 3)}
    dataset = tmp_path / "dataset.h5"
    datasets.write_dataset_file(dataset, {k: v.astype(np.float32) for k, v in images.items()},
                                {"dataset": "toy", "source": "test"})
    train = datasets.load_dataset_file(dataset)[0]["train"].astype(np.float64)

    image_gmm = tmp_path / "images_K3.h5"
    code, err = run_main("train_gmm", "--images", dataset, "--out", image_gmm, "-K", 3,
                         "--reg-covar", 0.01, "--max-iter", 20)
    assert code == 0, err
    mixture, attrs = load_gmm(image_gmm)
    assert attrs["prior"] == "whole images" and list(attrs["image_shape"]) == [12, 12]
    assert attrs["patch_size"] == "none" and mixture.means.shape == (3, 144)
    assert attrs["n_train_images"] == 40 and len(attrs["loglik_heldout"]) == attrs["n_iter"]
    # every M-step keeps sum_k pi_k mu_k at the training images' mean
    np.testing.assert_allclose(mixture.weights @ mixture.means,
                               train.reshape(40, -1).mean(axis=0), atol=1e-8)

    patches = tmp_path / "patches.h5"
    code, err = run_main("extract_patches", "--dataset", dataset, "--out", patches,
                         "--patch-size", 4, "--heldout-patches", 0)
    assert code == 0, err
    patch_gmm = tmp_path / "m4_K2.h5"
    code, err = run_main("train_gmm", "--patches", patches, "--out", patch_gmm, "-K", 2)
    assert code == 0, err
    gmm, _ = load_gmm(patch_gmm)

    kernel, sigma, m = op.gaussian_kernel(3, 1.0), 0.05, 4
    clean = images["test"]
    corrupted = op.blur(clean, kernel) + sigma * rng.standard_normal(clean.shape)
    corrupted_file = tmp_path / "corrupted.h5"
    write_h5(corrupted_file, "corrupted",
             {"clean": clean, "corrupted": corrupted, "val_clean": images["validation"],
              "kernel": kernel}, attrs={"noise_sigma": sigma, "blur": "g3"})

    out = tmp_path / "restored.h5"
    schedule = EpllSettings.published(beta_factors=[1.0, 4.0], lam_factor=0.5, n_inner=2,
                                      init_sharpen=1.0)
    code, err = run_main("restore_images", "--corrupted", corrupted_file, "--gmm", patch_gmm,
                         "--method", "epll_image_prior", "--image-gmm", image_gmm,
                         "--image-prior-weight", 5, "--out", out,
                         "--beta-factors", 1, 4, "--lam-factor", 0.5, "--n-inner", 2)
    assert code == 0, err
    restored, out_attrs = read_h5(out, "restored", ["restored"])
    assert out_attrs["method"] == "epll_image_prior"
    assert '"image_prior_weight": 5.0' in out_attrs["params"]

    W = op.patch_blur_matrix(kernel, m)
    start = map_k_restore(corrupted, gmm, W, sigma, MapkSettings.published(),
                          extra_noise_cov=boundary_noise_covariance(
                              images["validation"], kernel, W, m))
    prior = ImagePrior(mixture)
    expected = epll_restore(corrupted, gmm, kernel, sigma, schedule, init=start, clip=True,
                            image_prior=prior, image_prior_weight=5.0)
    np.testing.assert_allclose(restored["restored"], np.clip(expected, 0, 1), atol=1e-12)
    without = epll_restore(corrupted, gmm, kernel, sigma, schedule, init=start, clip=True)
    assert np.max(np.abs(without - expected)) > 1e-3  # the whole-image term took part
