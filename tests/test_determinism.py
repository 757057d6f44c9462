"""The same config run twice from scratch gives identical tables and arrays; an interrupted
stage leaves nothing that looks complete and a rerun gives the uninterrupted result."""

import glob
import os
import signal
import subprocess
import sys
import time

import h5py
import numpy as np
import pytest
from conftest import ROOT, SCRIPTS, python_env

from gmmrestore.h5io import write_h5


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


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL])
def test_killed_training_leaves_no_output_and_rerun_matches(tmp_path, sig):
    rng = np.random.default_rng(0)
    patches = tmp_path / "patches.h5"
    write_h5(patches, "patches", {"patches": rng.random((40000, 16)).astype(np.float32)},
             attrs={"patch_size": 4, "n_images": 1, "seed": 0, "source": "test"})
    out = tmp_path / "gmm.h5"
    checkpoint = tmp_path / "gmm.checkpoint.h5"
    proc = train(patches, out, ["--checkpoint", str(checkpoint)])
    deadline = time.time() + 120
    while not checkpoint.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    assert proc.poll() is None, "training finished before it could be interrupted"
    proc.send_signal(sig)
    proc.wait(timeout=60)
    assert proc.returncode != 0
    assert not out.exists()
    assert not [p for p in os.listdir(tmp_path) if p.endswith(".tmp")]
    resumed = train(patches, out, ["--checkpoint", str(checkpoint)])
    assert resumed.wait(timeout=600) == 0, resumed.stdout.read()
    reference = tmp_path / "reference.h5"
    plain = train(patches, reference)
    assert plain.wait(timeout=600) == 0, plain.stdout.read()
    a, b = h5_arrays(out), h5_arrays(reference)
    for key in ("weights", "means", "covariances"):
        np.testing.assert_allclose(a[key], b[key], rtol=1e-10, atol=1e-12)
