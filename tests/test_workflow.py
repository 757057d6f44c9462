"""The whole Snakefile on a tiny config, in a temporary folder, as a user would run it."""

import csv
import os
import shutil
import subprocess
import sys

import h5py
import numpy as np
import pytest
from conftest import ROOT

SNAKEMAKE = os.path.join(os.path.dirname(sys.executable), "snakemake")
TINY = os.path.join(ROOT, "tests", "configs", "tiny.yaml")


def snakemake(workdir, *args, check=True, timeout=600):
    env = dict(os.environ)
    env["PATH"] = os.path.dirname(sys.executable) + os.pathsep + env.get("PATH", "")
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
    assert set(methods) == {"corrupted", "mapk", "epll", "wiener"}
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
])
def test_bad_config_stops_before_any_job(tmp_path, override, message):
    """What a user sees: one line naming the key and what is allowed, not the schema (every
    case of the README's table is in tests/test_bad_inputs.py)."""
    result = snakemake(tmp_path, "-n", *with_override(tmp_path, override + "\n"), check=False)
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert message in output, output[-3000:]
    assert "Failed validating" not in output and "On instance" not in output
    assert not (tmp_path / "results").exists() or not any((tmp_path / "results").iterdir())


def test_lint_is_clean():
    env = dict(os.environ)
    env["PATH"] = os.path.dirname(sys.executable) + os.pathsep + env.get("PATH", "")
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
