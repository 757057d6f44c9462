"""The same config run twice from scratch gives identical tables and arrays; an interrupted
stage (training, restoration) leaves nothing that looks complete and a rerun gives the
uninterrupted result; the number of threads does not change the numbers."""

import glob
import os
import signal
import subprocess
import sys
import time

import h5py
import numpy as np
import pytest
from conftest import ROOT, SCRIPTS, python_env, random_gmm

from gmmrestore import datasets
from gmmrestore import operators as op
from gmmrestore.gmm import GaussianMixture, fit_gmm, save_gmm
from gmmrestore.h5io import write_h5
from gmmrestore.patches import extract_patches


def h5_arrays(path):
    with h5py.File(path, "r") as fh:
        return {name: fh[name][()] for name in fh if isinstance(fh[name], h5py.Dataset)}


@pytest.mark.slow
def test_run_twice_gives_identical_outputs(tiny_run, tmp_path):
    second = tmp_path / "second"
    second.mkdir()
    result = subprocess.run(
        [os.path.join(os.path.dirname(sys.executable), "snakemake"), "-s",
         os.path.join(ROOT, "Snakefile"), "--directory", str(second), "--cores", "2",
         "--configfile", os.path.join(ROOT, "tests", "configs", "tiny.yaml")],
        capture_output=True, text=True, env=python_env(), timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    for name in ("metrics.csv", "summary.csv"):
        assert (tiny_run / "results" / name).read_text() == (second / "results" / name).read_text()
    files = sorted(glob.glob(str(tiny_run / "results" / "**" / "*.h5"), recursive=True))
    assert len(files) >= 6
    for path in files:
        other = str(second / os.path.relpath(path, tiny_run))
        a, b = h5_arrays(path), h5_arrays(other)
        assert a.keys() == b.keys(), path
        for key in a:
            np.testing.assert_array_equal(a[key], b[key], err_msg=f"{path}:{key}")


def train(patches, out, extra=()):
    return subprocess.Popen(
        [sys.executable, os.path.join(SCRIPTS, "train_gmm.py"), "--patches", str(patches),
         "--out", str(out), "--components", "8", "--max-iter", "60", "--tol", "0",
         "--seed", "3", *extra], env=python_env(), stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True)


def interrupt_when(proc, ready, sig, timeout=120):
    """Send ``sig`` to the running ``proc`` as soon as ``ready()`` is true; the stage must
    exit non-zero (143 for SIGTERM: cli.run removed its temporary files)."""
    deadline = time.time() + timeout
    while not ready() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.02)
    assert proc.poll() is None, "the stage finished before it could be interrupted"
    proc.send_signal(sig)
    proc.wait(timeout=60)
    assert proc.returncode == (128 + signal.SIGTERM if sig == signal.SIGTERM else -sig)


def temporary_files(folder):
    return [p for p in os.listdir(folder) if p.endswith(".tmp")]


def assert_nothing_looks_complete(folder, out, sig=signal.SIGTERM):
    """No output; no temporary file either, except after SIGKILL (which no process can
    catch: a write it interrupts leaves its hidden temporary file, removed by the rerun)."""
    assert not out.exists()
    leftovers = temporary_files(folder)
    if sig == signal.SIGKILL:
        assert all(p.startswith(".") for p in leftovers), leftovers
    else:
        assert not leftovers, leftovers


def test_next_write_removes_the_temporary_file_of_a_killed_write(tmp_path):
    """What SIGKILL leaves behind (a hidden temporary file of the output) is removed by the
    next write of that output; another output's temporary file is not touched."""
    stale = tmp_path / ".gmm.h5.k1ll3d.tmp"
    other = tmp_path / ".other.h5.k1ll3d.tmp"
    for path in (stale, other):
        path.write_bytes(b"half an HDF5 file")
    write_h5(tmp_path / "gmm.h5", "patches", {"patches": np.zeros((2, 4))})
    assert sorted(os.listdir(tmp_path)) == [".other.h5.k1ll3d.tmp", "gmm.h5"]


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["SIGTERM", "SIGKILL"])
def test_killed_training_leaves_no_output_and_rerun_matches(tmp_path, sig):
    rng = np.random.default_rng(0)
    patches = tmp_path / "patches.h5"
    write_h5(patches, "patches", {"patches": rng.random((40000, 16)).astype(np.float32)},
             attrs={"patch_size": 4, "n_images": 1, "seed": 0, "source": "test"})
    out = tmp_path / "gmm.h5"
    checkpoint = tmp_path / "gmm.checkpoint.h5"
    proc = train(patches, out, ["--checkpoint", str(checkpoint)])
    interrupt_when(proc, checkpoint.exists, sig)
    assert_nothing_looks_complete(tmp_path, out, sig)
    resumed = train(patches, out, ["--checkpoint", str(checkpoint)])
    assert resumed.wait(timeout=600) == 0, resumed.stdout.read()
    assert not temporary_files(tmp_path) and not checkpoint.exists()
    reference = tmp_path / "reference.h5"
    plain = train(patches, reference)
    assert plain.wait(timeout=600) == 0, plain.stdout.read()
    a, b = h5_arrays(out), h5_arrays(reference)
    for key in ("weights", "means", "covariances"):
        np.testing.assert_allclose(a[key], b[key], rtol=1e-10, atol=1e-12)


# ------------------------------------------------------------------------------ restore stage


def write_restore_inputs(folder, n_images, size=28, m=6, K=8, seed=0):
    """A 'corrupted' file (5x5 Gaussian blur, sigma 0.1) of smooth random images and a random
    well-conditioned 'gmm' file for restore_images.py."""
    rng = np.random.default_rng(seed)
    w, mu, cov = random_gmm(rng, K, m * m, scale=0.2)
    gmm = folder / "gmm.h5"
    save_gmm(gmm, GaussianMixture(w, mu * 0.2 + 0.3, cov), None)
    clean = op.blur(rng.random((n_images + 3, size, size)), op.gaussian_kernel(3, 1.0))
    kernel = op.gaussian_kernel(5, 1.0)
    corrupted = folder / "corrupted.h5"
    write_h5(corrupted, "corrupted",
             {"clean": clean[3:], "val_clean": clean[:3], "kernel": kernel,
              "corrupted": op.blur(clean[3:], kernel) + 0.1 * rng.standard_normal(
                  clean[3:].shape)},
             attrs={"noise_sigma": 0.1, "blur": "gauss5"})
    return corrupted, gmm


def restore(corrupted, gmm, out, method="mapk", extra=(), env=None):
    return subprocess.Popen(
        [sys.executable, os.path.join(SCRIPTS, "restore_images.py"), "--corrupted",
         str(corrupted), "--gmm", str(gmm), "--method", method, "--out", str(out), *extra],
        env=env or python_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


@pytest.fixture(scope="module")
def restore_run(tmp_path_factory):
    """Inputs of a MAP-k run of a few seconds (40 images, progress every 4) and its
    uninterrupted result."""
    folder = tmp_path_factory.mktemp("restore")
    corrupted, gmm = write_restore_inputs(folder, 40)
    reference = folder / "reference.h5"
    proc = restore(corrupted, gmm, reference, extra=["--images-per-chunk", "4"])
    assert proc.wait(timeout=600) == 0, proc.stdout.read()
    return corrupted, gmm, h5_arrays(reference)["restored"]


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["SIGTERM", "SIGKILL"])
def test_killed_restore_leaves_no_output_and_rerun_matches(tmp_path, restore_run, sig):
    corrupted, gmm, reference = restore_run
    out = tmp_path / "mapk.h5"
    proc = restore(corrupted, gmm, out, extra=["--images-per-chunk", "4"])
    # interrupted after its first chunk of images, well before the end
    interrupt_when(proc, lambda: "mapk: 4/40 images" in proc.stdout.readline(), sig)
    if sig == signal.SIGTERM:
        assert "terminated (SIGTERM); no output was written" in proc.stdout.read()
    assert_nothing_looks_complete(tmp_path, out)
    rerun = restore(corrupted, gmm, out, extra=["--images-per-chunk", "4"])
    assert rerun.wait(timeout=600) == 0, rerun.stdout.read()
    np.testing.assert_array_equal(h5_arrays(out)["restored"], reference)


# ------------------------------------------------------------------------------- thread count

THREADED_STAGES = """
import sys
from threadpoolctl import threadpool_info
sys.path.insert(0, {scripts!r})
import restore_images, train_gmm
from gmmrestore import cli
print("BLAS threads", [i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"])
for main, argv in {runs!r}:
    assert cli.run({{"train": train_gmm.main, "restore": restore_images.main}}[main], argv) == 0
"""


@pytest.mark.slow
def test_thread_count_does_not_change_results(tmp_path):
    """Training (worker threads, one per BLAS thread) and MAP-k / EPLL (multi-threaded BLAS)
    with OMP_NUM_THREADS = OPENBLAS_NUM_THREADS = 1 and 2, as the rules set them: the same
    numbers to 1e-10 relative."""
    if len(os.sched_getaffinity(0)) < 2:
        pytest.skip("one CPU: the BLAS would not run two threads")
    corrupted, _ = write_restore_inputs(tmp_path, 6, size=20)
    rng = np.random.default_rng(1)
    images = op.blur(rng.random((60, 20, 20)), op.gaussian_kernel(3, 1.0))
    patches = tmp_path / "patches.h5"
    write_h5(patches, "patches", {"patches": extract_patches(images, 6).reshape(-1, 36)},
             attrs={"patch_size": 6})
    outputs = {}
    for threads in (1, 2):
        folder = tmp_path / f"t{threads}"
        gmm = folder / "gmm.h5"
        runs = [("train", ["--patches", str(patches), "--out", str(gmm), "-K", "6",
                           "--max-iter", "6", "--tol", "0", "--chunk-size", "1000"])]
        runs += [("restore", ["--corrupted", str(corrupted), "--gmm", str(gmm), "--method",
                              method, "--out", str(folder / f"{method}.h5"),
                              "--beta-factors", "1", "4"]) for method in ("mapk", "epll")]
        env = python_env()
        env.update(OMP_NUM_THREADS=str(threads), OPENBLAS_NUM_THREADS=str(threads),
                   MKL_NUM_THREADS=str(threads))
        code = THREADED_STAGES.format(scripts=SCRIPTS, runs=runs)
        result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                                text=True, timeout=600)
        assert result.returncode == 0, result.stderr[-3000:]
        assert f"BLAS threads [{threads}" in result.stdout, result.stdout
        outputs[threads] = {name: h5_arrays(folder / f"{name}.h5")
                            for name in ("gmm", "mapk", "epll")}
    for name, keys in (("gmm", ("weights", "means", "covariances", "loglik_train")),
                       ("mapk", ("restored",)), ("epll", ("restored",))):
        for key in keys:
            a, b = outputs[1][name][key], outputs[2][name][key]
            np.testing.assert_allclose(b, a, rtol=1e-10, atol=1e-10 * np.abs(a).max(),
                                       err_msg=f"{name}:{key}")


# ---------------------------------------------------------------------------------- the seed


def test_seed_changes_only_the_random_draws(tmp_path, run_main):
    """Changing only the seed: corrupt_images draws other noise (same clean images, same
    kernel), extract_patches another sample (all patches: the same), EM another start (from
    given parameters: the same fit)."""
    rng = np.random.default_rng(5)
    images = {s: op.blur(rng.random((n, 12, 12)), op.gaussian_kernel(3, 1.0)).astype(np.float32)
              for s, n in (("train", 6), ("validation", 2), ("test", 3))}
    dataset = tmp_path / "dataset.h5"
    datasets.write_dataset_file(dataset, images, {"source": "test"})
    out = {}
    for seed in (0, 1):
        for name, script, args in (
                ("corrupted", "corrupt_images", ["--dataset", dataset, "--blur-name", "g",
                                                 "--blur-type", "gaussian", "--blur-size", 3,
                                                 "--sigma", 0.1]),
                ("all_patches", "extract_patches", ["--dataset", dataset, "--patch-size", 4,
                                                    "--heldout-patches", 10**6]),
                ("some_patches", "extract_patches", ["--dataset", dataset, "--patch-size", 4,
                                                     "--max-patches", 100])):
            path = tmp_path / f"{name}_{seed}.h5"
            code, log = run_main(script, *args, "--out", path, "--seed", seed)
            assert code == 0, log
            out[name, seed] = h5_arrays(path)
    a, b = out["corrupted", 0], out["corrupted", 1]
    for key in ("clean", "val_clean", "kernel"):
        np.testing.assert_array_equal(a[key], b[key])
    noise = [x["corrupted"] - op.blur(x["clean"], x["kernel"]) for x in (a, b)]
    assert not np.allclose(noise[0], noise[1])
    assert all(abs(n.std() - 0.1) < 0.02 for n in noise)
    for key in ("patches", "heldout"):
        np.testing.assert_array_equal(out["all_patches", 0][key], out["all_patches", 1][key])
    assert not np.array_equal(out["some_patches", 0]["patches"],
                              out["some_patches", 1]["patches"])

    X = out["all_patches", 0]["patches"].astype(np.float64)
    fits = {seed: fit_gmm(X, 3, max_iter=4, tol=0, seed=seed) for seed in (0, 1)}
    assert fits[0][1].loglik_init != fits[1][1].loglik_init          # another start
    start = fits[0][0]
    given = [fit_gmm(X, 3, max_iter=4, tol=0, seed=seed, init_params=start)[0]
             for seed in (0, 1)]
    for key in ("weights", "means", "covariances"):
        np.testing.assert_array_equal(getattr(given[0], key), getattr(given[1], key))
