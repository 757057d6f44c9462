import os
import sys

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPTS = os.path.join(ROOT, "scripts")
# scripts import their sibling _bootstrap; tests load scripts as modules
sys.path.insert(0, SCRIPTS)


@pytest.fixture
def rng():
    return np.random.default_rng(12345)


def random_gmm(rng, K, d, scale=0.3):
    """A random well-conditioned mixture: weights (K,), means (K, d), covariances (K, d, d)."""
    A = rng.normal(size=(K, d, d)) * scale / np.sqrt(d)
    covariances = A @ A.transpose(0, 2, 1) + 0.01 * np.eye(d)
    return rng.dirichlet(np.ones(K)), rng.normal(size=(K, d)) * 0.3, covariances


def python_env():
    """Environment for running scripts in a subprocess with the repo's package importable."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.path.join(ROOT, "src") + os.pathsep + env.get("PYTHONPATH", "")
    env["PATH"] = os.path.dirname(sys.executable) + os.pathsep + env.get("PATH", "")
    return env
