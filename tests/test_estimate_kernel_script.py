"""scripts/estimate_kernel.py: help, an end-to-end run that never reads the true kernel,
seeded batches, blind restoration with each batch's kernel, bad input."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
from conftest import SCRIPTS, python_env, random_gmm

from gmmrestore import deconv as D
from gmmrestore.h5io import GmmRestoreError, read_h5, write_h5
from gmmrestore.operators import blur, gaussian_kernel, motion_kernel

SCRIPT = os.path.join(SCRIPTS, "estimate_kernel.py")


def test_script_help():
    result = subprocess.run([sys.executable, SCRIPT, "--help"], capture_output=True,
                            text=True, env=python_env(), timeout=60)
    assert result.returncode == 0
    assert "--kernel-size" in result.stdout and "--batch-size" in result.stdout


def test_script_end_to_end_never_needs_the_true_kernel(tmp_path, rng, digits):
    kernel = gaussian_kernel(3, 0.7)
    clean = digits[:24]
    corrupted = blur(clean, kernel) + 0.01 * rng.standard_normal(clean.shape)
    path = tmp_path / "corrupted.h5"
    # no 'kernel' dataset at all: the script must not need it
    write_h5(path, "corrupted", {"corrupted": corrupted, "clean": clean},
             attrs={"noise_sigma": 0.01, "blur": "g"})
    dataset = tmp_path / "dataset.h5"
    write_h5(dataset, "dataset", {"train": digits[100:300], "validation": digits[300:310],
                                  "test": clean})
    out = tmp_path / "kernel_est.h5"
    result = subprocess.run(
        [sys.executable, SCRIPT, "--corrupted", str(path), "--out", str(out),
         "--kernel-size", "3", "--batch-size", "12", "--noise-schedule", "0.05,0.02",
         "--n-iter", "3", "--prior-dataset", str(dataset), "--prior-max-images", "150"],
        capture_output=True, text=True, env=python_env(), timeout=120)
    assert result.returncode == 0, result.stderr
    arrays, attrs = read_h5(out, "kernel", ["kernel", "batch_kernels", "objective"])
    assert attrs["prior"] == "spectral" and attrs["n_prior_images"] == 150
    assert arrays["kernel"].shape == (3, 3)
    assert arrays["kernel"].sum() == pytest.approx(1.0)
    assert arrays["batch_kernels"].shape == (2, 3, 3)
    # seeded shuffled batches of 12
    assert np.array_equal(np.bincount(arrays["batch_index"]), [12, 12])
    assert attrs["batch_order"] == "shuffled"
    assert attrs["n_images"] == 24 and attrs["n_batches"] == 2 and attrs["kernel_size"] == 3
    assert D.kernel_error(arrays["kernel"], kernel) < 0.5


def test_batches_are_seeded_shuffles_or_file_order():
    import estimate_kernel as script

    shuffled = script.batch_members(240, 100, "shuffled", seed=0)
    # a last batch smaller than half a batch joins the previous one
    assert [len(b) for b in shuffled] == [100, 140]
    assert np.array_equal(np.sort(np.concatenate(shuffled)), np.arange(240))
    assert all(np.all(np.diff(b) > 0) for b in shuffled)
    assert not np.array_equal(shuffled[0], np.arange(100))  # mixes a class-sorted file
    again = script.batch_members(240, 100, "shuffled", seed=0)
    assert all(np.array_equal(a, b) for a, b in zip(shuffled, again, strict=True))
    consecutive = script.batch_members(310, 100, "consecutive")
    assert [b.tolist() for b in consecutive] == [list(range(0, 100)), list(range(100, 200)),
                                                 list(range(200, 310))]
    with pytest.raises(GmmRestoreError, match="batch-size"):
        script.batch_members(10, 0)


def test_blind_restore_uses_each_batch_kernel_and_never_the_true_kernel(tmp_path, rng,
                                                                         digits):
    """restore_images.py --kernel-file restores every image with its own batch's kernel:
    the same as restoring each batch alone with that batch's kernel.  The corrupted file
    holds no true kernel and no clean test images, so neither can be read."""
    import restore_images as script

    from gmmrestore import cli

    m, n = 4, 7
    weights, means, covariances = random_gmm(rng, 3, m * m, scale=0.2)
    gmm = tmp_path / "gmm.h5"
    write_h5(gmm, "gmm", {"weights": weights, "means": means + 0.3,
                          "covariances": covariances}, attrs={"patch_size": m})
    kernels = np.stack([gaussian_kernel(5, 1.0), motion_kernel(5, 30, 5)])
    batch_index = np.array([1, 0, 0, 1, 1, 0, 1])
    clean = digits[:n]
    corrupted = np.stack([blur(x, kernels[b]) for x, b in zip(clean, batch_index, strict=True)])
    corrupted += 0.02 * rng.standard_normal(corrupted.shape)

    def corrupted_file(path, members):
        write_h5(path, "corrupted", {"corrupted": corrupted[members],
                                     "val_clean": digits[200:203]},
                 attrs={"noise_sigma": 0.02, "blur": "mixed"})
        return path

    everything = corrupted_file(tmp_path / "corrupted.h5", np.arange(n))
    estimate = tmp_path / "kernel_estimate.h5"
    write_h5(estimate, "kernel", {"kernel": kernels[0], "batch_kernels": kernels,
                                  "batch_index": batch_index})

    def restore(corrupted_path, kernel_path, method, out):
        argv = ["--quiet", "--corrupted", corrupted_path, "--gmm", gmm, "--method", method,
                "--kernel-file", kernel_path, "--out", out, "--beta-factors", "1", "4"]
        assert cli.run(script.main, [str(a) for a in argv]) in (0, None)
        return read_h5(out, "restored", ["restored"])

    for method in ("mapk", "epll"):
        together, attrs = restore(everything, estimate, method, tmp_path / f"{method}.h5")
        assert attrs["kernel_source"] == "estimated" and attrs["method"] == f"{method}-blind"
        for b in (0, 1):
            members = np.flatnonzero(batch_index == b)
            single = tmp_path / f"kernel_{b}.h5"
            write_h5(single, "kernel", {"kernel": kernels[b]})
            alone, _ = restore(corrupted_file(tmp_path / f"corrupted_{b}.h5", members), single,
                               method, tmp_path / f"{method}_{b}.h5")
            np.testing.assert_allclose(together["restored"][members], alone["restored"],
                                       rtol=1e-9, atol=1e-12)
    # a batch index that does not fit the images is a clear error
    write_h5(estimate, "kernel", {"kernel": kernels[0], "batch_kernels": kernels,
                                  "batch_index": batch_index[:5]})
    with pytest.raises(GmmRestoreError, match="do not fit 7 corrupted images"):
        script.estimated_kernels(str(estimate), n)


def test_blind_baseline_restores_each_image_with_its_estimated_kernel(tmp_path, rng):
    """restore_baseline.py --kernel-file (hyper_laplacian): each image restored with its own
    batch's kernel at the fixed weight, reading nothing but the photographs (the corrupted
    file here has no true kernel and no clean images); a tuned baseline refuses."""
    import restore_baseline as script

    from gmmrestore import cli
    from gmmrestore.operators import blur_valid
    from gmmrestore.restore.baselines import restore_baseline

    kernels = np.stack([gaussian_kernel(5, 1.0), motion_kernel(5, 30, 5)])
    batch_index = np.array([1, 0, 1])
    scenes = rng.random((3, 24, 24))
    corrupted = np.stack([blur_valid(x, kernels[b]) for x, b in zip(scenes, batch_index,
                                                                      strict=True)])
    path = tmp_path / "corrupted.h5"
    write_h5(path, "corrupted", {"corrupted": corrupted},
             attrs={"noise_sigma": 0.01, "blur": "mixed", "boundary": "valid"})
    estimate = tmp_path / "kernel_estimate.h5"
    write_h5(estimate, "kernel", {"kernel": kernels[0], "batch_kernels": kernels,
                                  "batch_index": batch_index})
    out = tmp_path / "hl-blind.h5"
    argv = ["--quiet", "--corrupted", path, "--method", "hyper_laplacian", "--kernel-file",
            estimate, "--out", out]
    assert cli.run(script.main, [str(a) for a in argv]) in (0, None)
    restored, attrs = read_h5(out, "restored", ["restored"])
    assert attrs["method"] == "hyper_laplacian-blind" and attrs["kernel_source"] == "estimated"
    for i, b in enumerate(batch_index):
        np.testing.assert_array_equal(restored["restored"][i], restore_baseline(
            "hyper_laplacian", corrupted[i:i + 1], kernels[b], 0.01, boundary="valid")[0])
    argv[4] = "wiener"
    with pytest.raises(GmmRestoreError, match="wiener tunes its parameter"):
        script.main([str(a) for a in argv[:-1] + [tmp_path / "w.h5"]])
    assert not (tmp_path / "w.h5").exists()


def test_script_reports_bad_input(tmp_path, capsys):
    import estimate_kernel as script

    from gmmrestore import cli

    def run(*argv):
        return cli.run(script.main, ["--quiet", *map(str, argv)])

    bad = tmp_path / "bad.h5"
    write_h5(bad, "corrupted", {"clean": np.zeros((2, 8, 8))})
    out = tmp_path / "k.h5"
    assert run("--corrupted", bad, "--out", out, "--kernel-size", 3) == 2
    assert "missing dataset(s) corrupted" in capsys.readouterr().err
    assert run("--corrupted", bad, "--out", out, "--kernel-size", 4) == 2
    assert "odd" in capsys.readouterr().err
    good = tmp_path / "good.h5"
    write_h5(good, "corrupted", {"corrupted": np.zeros((2, 8, 8))})
    dataset = tmp_path / "dataset.h5"
    write_h5(dataset, "dataset", {"train": np.zeros((3, 9, 9))})
    assert run("--corrupted", good, "--out", out, "--kernel-size", 3,
               "--prior-dataset", dataset) == 2
    assert "sizes must match" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        run("--corrupted", good, "--out", out, "--kernel-size", 3, "--noise-schedule", "0.1,-1")
    assert "expected positive numbers, got '0.1,-1'" in capsys.readouterr().err
    assert not out.exists()
