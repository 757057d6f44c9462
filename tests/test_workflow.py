"""The whole Snakefile on a tiny config, in a temporary folder, as a user would run it."""

import csv
import os
import shutil
import subprocess
import sys

import h5py
import numpy as np
import pytest
from conftest import ROOT, snakemake_env

from gmmrestore.h5io import read_h5

SNAKEMAKE = os.path.join(os.path.dirname(sys.executable), "snakemake")
TINY = os.path.join(ROOT, "tests", "configs", "tiny.yaml")


def snakemake(workdir, *args, check=True, timeout=600):
    env = snakemake_env()
    result = subprocess.run(
        [SNAKEMAKE, "-s", os.path.join(ROOT, "Snakefile"), "--directory", str(workdir),
         "--cores", "2", *args], capture_output=True, text=True, env=env, timeout=timeout)
    if check and result.returncode != 0:
        raise AssertionError(f"snakemake failed:\n{result.stdout[-3000:]}\n"
                             f"{result.stderr[-5000:]}")
    return result


def read_csv(path):
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


@pytest.mark.slow
def test_tiny_workflow_outputs(tiny_run):
    results = tiny_run / "results"
    for rel in ("metrics.csv", "summary.csv", "data/tiny.h5", "tiny/patches/m6.h5",
                "tiny/gmm/m6_K3.h5", "tiny/gauss5_s0.1/corrupted.h5",
                "tiny/gauss5_s0.1/m6_K3/mapk.h5", "tiny/gauss5_s0.1/m6_K3/epll.h5",
                "tiny/gmm/images_K4.h5", "tiny/gauss5_s0.1/m6_K3/epll_image_prior.h5",
                "tiny/gauss5_s0.1/baseline/wiener.h5",
                "figures/gmm_tiny_m6_K3.png", "figures/examples_tiny_gauss5_s0.1.png"):
        path = results / rel
        assert path.exists() and path.stat().st_size > 0, rel
    rows = read_csv(results / "metrics.csv")
    for column in ("dataset", "patch_size", "n_components", "noise_sigma", "blur", "method",
                   "image_id", "psnr", "ssim"):
        assert column in rows[0]
    methods = {}
    for row in rows:
        methods.setdefault(row["method"], []).append(row)
    assert set(methods) == {"corrupted", "mapk", "epll", "epll_image_prior", "wiener"}
    assert all(len(v) == 8 for v in methods.values())  # n_test images each
    assert sorted(int(r["image_id"]) for r in methods["mapk"]) == list(range(8))
    assert all(np.isfinite(float(r["psnr"])) for r in rows)
    mean = {m: np.mean([float(r["psnr"]) for r in v]) for m, v in methods.items()}
    assert mean["mapk"] > mean["corrupted"] + 2.0
    summary = read_csv(results / "summary.csv")
    assert {r["method"] for r in summary} == set(methods)
    for r in summary:
        assert float(r["psnr_ci95_low"]) <= float(r["psnr_mean"]) <= float(r["psnr_ci95_high"])
    with h5py.File(results / "tiny/gmm/m6_K3.h5") as fh:
        assert fh["covariances"].shape == (3, 36, 36)
        assert fh.attrs["kind"] == "gmm" and len(fh["loglik_train"]) >= 1
    with h5py.File(results / "tiny/gmm/images_K4.h5") as fh:
        assert fh["covariances"].shape == (4, 784, 784)
        assert fh.attrs["prior"] == "whole images" and list(fh.attrs["image_shape"]) == [28, 28]
    with h5py.File(results / "tiny/gauss5_s0.1/corrupted.h5") as fh:
        assert fh.attrs["noise_sigma"] == 0.1 and fh.attrs["boundary"] == "zero"
        assert "kernel" in fh and fh["corrupted"].shape == (8, 28, 28)


@pytest.mark.slow
def test_rerun_is_a_no_op(tiny_run):
    result = snakemake(tiny_run, "--configfile", TINY, "-n")
    assert "Nothing to be done" in result.stdout + result.stderr


def with_override(tmp_path, text):
    """Config files for snakemake: the tiny config, then ``text`` (YAML) merged over it."""
    path = tmp_path / "override.yaml"
    path.write_text(text)
    return ["--configfile", TINY, str(path)]


def test_sweep_plans_one_restore_job_per_setting(tmp_path):
    result = snakemake(tmp_path, "-n", *with_override(
        tmp_path, "sweep: {patch_size: [6], n_components: [3, 5], blur: [gauss5], "
                  "noise_sigma: [0.05, 0.1]}\nrestore: {methods: [mapk]}\n"))
    stats = result.stdout
    line = next(s for s in stats.splitlines() if s.startswith("restore_images "))
    assert int(line.split()[-1]) == 4
    line = next(s for s in stats.splitlines() if s.startswith("train_gmm "))
    assert int(line.split()[-1]) == 2


@pytest.mark.parametrize("override, message", [
    pytest.param("sweep: {patch_size: [], n_components: [3], blur: [gauss5], noise_sigma: [0.1]}",
                 "config: sweep.patch_size is an empty list", id="empty_sweep_list"),
    pytest.param("sweep: {patch_size: [6], n_components: [3], blur: [gauss5], "
                 "noise_sigma: [-0.1]}",
                 "config: sweep.noise_sigma[0] = -0.1: -0.1 is less than the minimum of 0",
                 id="sigma_negative"),
    pytest.param("sweep: {patch_size: [6], n_components: [3], blur: [nope], noise_sigma: [0.1]}",
                 "config: sweep lists blur(s) 'nope', not defined under 'blurs'",
                 id="unknown_blur_name"),
    pytest.param("sweep: {patch_size: [40], n_components: [3], blur: [gauss5], "
                 "noise_sigma: [0.1]}",
                 "config: sweep lists patch_size 40, larger than the 28x28 training images",
                 id="patch_size_larger_than_images"),
    pytest.param("gmm: {max_iters: 3}", "config: unknown key 'max_iters' under 'gmm' (did you "
                 "mean 'max_iter'?); allowed keys: max_iter, tol,", id="misspelled_key"),
    pytest.param("blurs: {gauss5: {type: blurry}}",
                 "config: blurs.gauss5.type = 'blurry' is not allowed", id="unknown_blur_type"),
    pytest.param("sweep: {patch_size: [6], n_components: [3], blur: [gauss5], "
                 "noise_sigma: [.nan]}\nblurs: {gauss5: {type: gaussian, size: 4}}",
                 "config: sweep lists noise_sigma nan; allowed: a finite number from 0 to 1",
                 id="sigma_nan"),
])
def test_bad_config_stops_before_any_job(tmp_path, override, message):
    """What a user sees: one line naming the key and what is allowed, not the schema (every
    case of the README's table is in tests/test_bad_config.py and tests/test_bad_files.py)."""
    result = snakemake(tmp_path, "-n", *with_override(tmp_path, override + "\n"), check=False)
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert message in output, output[-3000:]
    assert "Failed validating" not in output and "On instance" not in output
    assert not (tmp_path / "results").exists() or not any((tmp_path / "results").iterdir())


def test_lint_is_clean():
    env = snakemake_env()
    result = subprocess.run([SNAKEMAKE, "--lint"], cwd=ROOT, capture_output=True, text=True,
                            env=env, timeout=300)
    assert "Congratulations" in result.stdout + result.stderr, result.stdout + result.stderr


def test_snakefmt_is_clean():
    snakefmt = shutil.which("snakefmt", path=os.path.dirname(sys.executable))
    if snakefmt is None:
        pytest.skip("snakefmt not installed")
    result = subprocess.run([snakefmt, "--check", "Snakefile", "rules"], cwd=ROOT,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr


BLIND_OVERRIDE = ("blurs: {gauss5: {type: gaussian, size: 5, std: 1.0, blind: true, "
                  "kernel_size: 5, batch_size: 4}}\n"
                  "restore: {methods: [mapk, epll, wiener, hyper_laplacian]}\n")


@pytest.mark.slow
def test_blind_setting_scores_kernel_error_and_error_ratio(tiny_run, tmp_path):
    """The tiny run with its blur marked blind (two batches of 4 test digits): only the
    blind jobs are added (a copy of the finished run is reused), and the tables carry the
    kernel error of each image's batch kernel and the error ratio, equal to their formulas
    recomputed from the HDF5 files; of the baselines only the fixed-parameter
    hyper_laplacian restores blind too."""
    from gmmrestore.deconv import kernel_error

    work = tmp_path / "blind"
    shutil.copytree(tiny_run, work, symlinks=True)
    snakemake(work, *with_override(tmp_path, BLIND_OVERRIDE))
    results = work / "results"
    folder = results / "tiny" / "gauss5_s0.1"
    assert (results / "figures" / "kernels_tiny_gauss5_s0.1.png").stat().st_size > 0
    rows = read_csv(results / "metrics.csv")
    by_method = {}
    for row in rows:
        by_method.setdefault(row["method"], {})[int(row["image_id"])] = row
    assert {"mapk", "epll", "mapk-blind", "epll-blind", "hyper_laplacian-blind"} <= set(
        by_method)
    assert "wiener" in by_method and "wiener-blind" not in by_method
    for method, images in by_method.items():
        blind = method.endswith("-blind")
        for row in images.values():
            for column in ("kernel_batch", "kernel_error", "error_ratio", "batch_error_ratio"):
                assert (row[column] != "") == blind, (method, column)
            assert row["kernel"] == ("estimated" if blind else "true" if method != "corrupted"
                                     else "")
    estimate, _ = read_h5(folder / "kernel_estimate.h5", "kernel",
                          ["batch_kernels", "batch_index"])
    corrupted, _ = read_h5(folder / "corrupted.h5", "corrupted", ["clean", "kernel"])
    clean = corrupted["clean"].astype(np.float64)
    assert np.array_equal(np.bincount(estimate["batch_index"]), [4, 4])
    errors = [kernel_error(k, corrupted["kernel"]) for k in estimate["batch_kernels"]]
    for subfolder, base in (("m6_K3", "mapk"), ("m6_K3", "epll"),
                            ("baseline", "hyper_laplacian")):
        est, _ = read_h5(folder / subfolder / f"{base}-blind.h5", "restored", ["restored"])
        true, _ = read_h5(folder / subfolder / f"{base}.h5", "restored", ["restored"])
        est = np.clip(est["restored"], 0, 1)
        true = np.clip(true["restored"], 0, 1)
        for i, row in by_method[f"{base}-blind"].items():
            b = int(row["kernel_batch"])
            assert b == estimate["batch_index"][i]
            assert float(row["kernel_error"]) == pytest.approx(errors[b], abs=2e-6)
            ratio = np.sum((est[i] - clean[i]) ** 2) / np.sum((true[i] - clean[i]) ** 2)
            assert np.isfinite(ratio) and float(row["error_ratio"]) == pytest.approx(ratio,
                                                                                   rel=1e-5)
            members = estimate["batch_index"] == b
            pooled = (np.sum((est[members] - clean[members]) ** 2)
                      / np.sum((true[members] - clean[members]) ** 2))
            assert float(row["batch_error_ratio"]) == pytest.approx(pooled, rel=1e-5)
    summary = {r["method"]: r for r in read_csv(results / "summary.csv")}
    assert summary["mapk"]["psnr_vs_true_kernel_mean"] == ""
    blind = summary["mapk-blind"]
    diff = np.mean([float(r["psnr"]) - float(by_method["mapk"][i]["psnr"])
                    for i, r in by_method["mapk-blind"].items()])
    assert float(blind["psnr_vs_true_kernel_mean"]) == pytest.approx(diff, abs=1e-3)
    assert float(blind["psnr_true_kernel_mean"]) == pytest.approx(
        float(summary["mapk"]["psnr_mean"]), abs=1e-3)
    assert int(blind["n_kernel_batches"]) == 2
    assert float(blind["kernel_error_max"]) == pytest.approx(max(errors), abs=1e-3)
    assert 0 <= int(blind["kernel_batches_ok"]) <= 2
