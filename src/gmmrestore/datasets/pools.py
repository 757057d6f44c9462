"""Image pools of a source, the seeded train / validation / test subsets, the dataset file.

Every source yields :class:`Pools`; :func:`make_dataset` draws the seeded subsets;
:func:`write_dataset_file` writes them as one HDF5 file of kind ``"dataset"`` and
:func:`load_dataset_file` reads it back with checks.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..h5io import GmmRestoreError, read_h5, write_h5

SPLITS = ("train", "validation", "test")


@dataclass
class Pools:
    """Image pools a source provides, before subsets are drawn.

    ``train`` : (n, H, W) float32 in [0, 1], also the validation pool when
    ``validation`` is None; ``test`` : (n_test, H, W).  Labels are int arrays or None.
    ``attrs`` describes the source (``dataset``, ``source``, ``offline_fallback``, ...).
    Test images may have another size than the train pool's (whole test photographs);
    ``test_ids`` (n_test,) and ``test_transposed`` (n_test,) bool describe them when given.
    """

    train: np.ndarray
    test: np.ndarray
    train_labels: np.ndarray | None = None
    test_labels: np.ndarray | None = None
    validation: np.ndarray | None = None
    validation_labels: np.ndarray | None = None
    attrs: dict[str, Any] = field(default_factory=dict)
    # per test image (source bsd): its id, and whether it is stored transposed
    test_ids: Sequence[str] | None = None
    test_transposed: np.ndarray | None = None


def _take(n_requested: int | None, available: int, what: str, source: str,
          default: int | None = None) -> int:
    n = available if n_requested is None and default is None else (
        default if n_requested is None else n_requested)
    if n < 0:
        raise GmmRestoreError(f"{what}: {n} requested; must be >= 0")
    if n > available:
        raise GmmRestoreError(
            f"{what}: {n} images requested but only {available} available "
            f"(source: {source})")
    return n


def make_dataset(pools: Pools, n_train: int | None = None, n_validation: int | None = None,
                 n_test: int | None = None, seed: int = 0
                 ) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Draw seeded train / validation / test subsets from ``pools``.

    When ``pools.validation`` is None, validation and train are disjoint subsets of the
    train pool: a seeded permutation of it gives validation first (default
    ``n_validation``: 10% of the pool) and train next (default: all the rest).  Otherwise
    each split is drawn from its own pool (default: all of it).  The test subset uses
    an independent random stream, so it does not change with ``n_train``.  Indices are
    kept in pool order within each subset.

    Returns
    -------
    arrays : dict
        ``train``, ``validation``, ``test`` (n, H, W) float32 and ``<split>_labels``
        when the pools have labels.
    attrs : dict
        ``pools.attrs`` plus ``n_train``, ``n_validation``, ``n_test``, ``height``,
        ``width``, ``seed``, ``value_range``.
    """
    source = str(pools.attrs.get("source", "?"))
    rng_trainval, rng_test = (np.random.default_rng(s)
                              for s in np.random.SeedSequence(seed).spawn(2))
    picks: dict[str, tuple[np.ndarray, np.ndarray | None, np.ndarray]] = {}
    n_pool = len(pools.train)
    if pools.validation is None:
        n_val = _take(n_validation, n_pool, "validation", source, default=n_pool // 10)
        n_tr = _take(n_train, n_pool - n_val, "train (after validation)", source,
                     default=n_pool - n_val)
        order = rng_trainval.permutation(n_pool)
        picks["validation"] = (pools.train, pools.train_labels, np.sort(order[:n_val]))
        picks["train"] = (pools.train, pools.train_labels, np.sort(order[n_val:n_val + n_tr]))
    else:
        rng_train, rng_val = (np.random.default_rng(s)
                              for s in np.random.SeedSequence([seed, 1]).spawn(2))
        n_tr = _take(n_train, n_pool, "train", source)
        n_val = _take(n_validation, len(pools.validation), "validation", source)
        picks["train"] = (pools.train, pools.train_labels,
                          np.sort(rng_train.permutation(n_pool)[:n_tr]))
        picks["validation"] = (pools.validation, pools.validation_labels,
                               np.sort(rng_val.permutation(len(pools.validation))[:n_val]))
    n_te = _take(n_test, len(pools.test), "test", source)
    picks["test"] = (pools.test, pools.test_labels,
                     np.sort(rng_test.permutation(len(pools.test))[:n_te]))

    height, width = pools.train.shape[1:]
    arrays: dict[str, np.ndarray] = {}
    for split in SPLITS:
        images, labels, idx = picks[split]
        if split != "test" and images.shape[1:] != (height, width):
            raise GmmRestoreError(
                f"{split} pool holds {images.shape[1]}x{images.shape[2]} images, train pool "
                f"{height}x{width}")
        arrays[split] = np.ascontiguousarray(images[idx], dtype=np.float32)
        if labels is not None:
            arrays[f"{split}_labels"] = np.asarray(labels)[idx].astype(np.int64)
    attrs = dict(pools.attrs)
    test_idx = picks["test"][2]
    if pools.test_ids is not None:
        attrs["test_ids"] = [str(pools.test_ids[i]) for i in test_idx]
    if pools.test_transposed is not None:
        arrays["test_transposed"] = np.asarray(pools.test_transposed, dtype=bool)[test_idx]
    attrs.update(n_train=len(arrays["train"]), n_validation=len(arrays["validation"]),
                 n_test=len(arrays["test"]), height=int(height), width=int(width),
                 test_height=int(arrays["test"].shape[1]),
                 test_width=int(arrays["test"].shape[2]), seed=int(seed),
                 value_range="[0, 1]")
    return arrays, attrs


def check_finite_unit(x: np.ndarray, count_prefix: str, count_unit: str,
                       range_prefix: str, range_hint: str) -> None:
    """Raise GmmRestoreError, worded by the caller, if ``x`` holds NaN/Inf or values
    outside [0, 1]."""
    bad = int(np.count_nonzero(~np.isfinite(x)))
    if bad:
        raise GmmRestoreError(f"{count_prefix} {bad} NaN/Inf {count_unit}")
    if x.size and (x.min() < 0 or x.max() > 1):
        raise GmmRestoreError(f"{range_prefix} [{x.min():.4g}, {x.max():.4g}]; {range_hint}")


def _check_arrays(arrays: Mapping[str, np.ndarray], where: str) -> None:
    shape = None
    for split in SPLITS:
        if split not in arrays:
            raise GmmRestoreError(f"{where}: missing dataset '{split}'")
        x = arrays[split]
        if x.ndim != 3:
            raise GmmRestoreError(f"{where}: '{split}' has shape {x.shape}, expected (n, H, W)")
        if shape is not None and split != "test" and x.shape[1:] != shape:
            raise GmmRestoreError(
                f"{where}: '{split}' images are {x.shape[1]}x{x.shape[2]}, "
                f"'train' images {shape[0]}x{shape[1]}")
        shape = shape or x.shape[1:]
        if split != "validation" and len(x) == 0:
            raise GmmRestoreError(f"{where}: '{split}' holds no image")
        if x.dtype.kind != "f":
            raise GmmRestoreError(f"{where}: '{split}' has dtype {x.dtype}, expected float")
        check_finite_unit(x, f"{where}: '{split}' holds", "value(s)",
                           f"{where}: '{split}' values span", "expected [0, 1]")
        labels = arrays.get(f"{split}_labels")
        if labels is not None and labels.shape != (len(x),):
            raise GmmRestoreError(
                f"{where}: '{split}_labels' has shape {labels.shape}, expected ({len(x)},)")


def write_dataset_file(path: str | os.PathLike, arrays: Mapping[str, np.ndarray],
                       attrs: Mapping[str, Any]) -> None:
    """Check and write a dataset HDF5 file (kind ``"dataset"``) atomically."""
    _check_arrays(arrays, os.fspath(path))
    write_h5(path, "dataset", arrays, attrs, dataset_attrs={
        split: {"axes": "image, row, column", "value_range": "[0, 1]"} for split in SPLITS})


def load_dataset_file(path: str | os.PathLike) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Read a file written by :func:`write_dataset_file` and check it.

    Returns ``(arrays, attrs)``; ``arrays`` holds ``train``, ``validation``, ``test``
    (n, H, W) float and the ``<split>_labels`` present.  Raises
    :class:`GmmRestoreError` naming the file for a wrong kind/version, a missing split,
    inconsistent shapes, NaN/Inf or values outside [0, 1].
    """
    arrays, attrs = read_h5(path, "dataset", list(SPLITS))
    _check_arrays(arrays, os.fspath(path))
    return arrays, attrs
