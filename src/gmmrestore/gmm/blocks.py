"""Data access for EM: row blocks of an in-memory array or an HDF5 dataset (streamed)."""

from __future__ import annotations

import concurrent.futures
import hashlib
import logging
import math
from collections.abc import Iterator
from typing import Any

import h5py
import numpy as np

from ..h5io import GmmRestoreError, read_dataset

log = logging.getLogger("gmmrestore.gmm")


def describe(data: Any) -> str:
    """``file:/dataset`` of an HDF5 dataset, ``array`` otherwise (for messages)."""
    if isinstance(data, h5py.Dataset):
        return f"{data.file.filename}:{data.name}"
    return "array"


class Blocks:
    """Row blocks of an (N, d) array or h5py dataset, cast to ``dtype``, DC removed if asked.

    HDF5 datasets are read in blocks whose row count is a multiple of the dataset's chunk rows,
    the next block being read in a background thread while the current one is processed.
    """

    def __init__(self, data: Any, dtype: np.dtype, remove_dc: bool, chunk_size: int,
                 name: str = "X") -> None:
        self.data = data
        self.is_h5 = isinstance(data, h5py.Dataset)
        if not self.is_h5:
            self.data = data = np.asarray(data)
        if len(data.shape) != 2 or data.shape[0] < 1 or data.shape[1] < 1:
            raise GmmRestoreError(
                f"{name} ({describe(data)}): expected a non-empty (n_samples, n_features) "
                f"array, got shape {tuple(data.shape)}")
        if not np.issubdtype(data.dtype, np.floating) and not np.issubdtype(data.dtype,
                                                                              np.integer):
            raise GmmRestoreError(f"{name} ({describe(data)}): expected numbers, "
                                  f"got dtype {data.dtype}")
        self.n_samples, self.n_features = (int(s) for s in data.shape)
        self.dtype = np.dtype(dtype)
        self.remove_dc = remove_dc
        self.name = name
        rows = max(1, int(chunk_size))
        if self.is_h5 and data.chunks is not None:
            c0 = int(data.chunks[0])
            rows = max(c0, int(round(rows / c0)) * c0)
        self.block_rows = rows

    def _raw(self, start: int, stop: int) -> np.ndarray:
        """Rows ``start:stop`` as stored (HDF5 read errors name the file and the rows)."""
        if self.is_h5:
            return read_dataset(self.data, slice(start, stop))
        return self.data[start:stop]

    def _read(self, start: int, stop: int) -> np.ndarray:
        return self._prepare(self._raw(start, stop))

    def _prepare(self, block: np.ndarray) -> np.ndarray:
        block = np.ascontiguousarray(block, dtype=self.dtype)
        if self.remove_dc:
            block = block - block.mean(axis=1, keepdims=True, dtype=np.float64).astype(
                self.dtype)
        return block

    def __iter__(self) -> Iterator[tuple[int, np.ndarray]]:
        starts = range(0, self.n_samples, self.block_rows)
        if not self.is_h5 or len(starts) == 1:
            for s in starts:
                yield s, self._read(s, min(s + self.block_rows, self.n_samples))
            return
        with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
            future = pool.submit(self._read, 0, min(self.block_rows, self.n_samples))
            for s in starts:
                block = future.result()
                nxt = s + self.block_rows
                if nxt < self.n_samples:
                    future = pool.submit(self._read, nxt,
                                         min(nxt + self.block_rows, self.n_samples))
                yield s, block

    def rows(self, index: np.ndarray) -> np.ndarray:
        """The rows at sorted ``index`` (one pass over the blocks for HDF5), float64."""
        index = np.asarray(index)
        if not self.is_h5:
            return np.asarray(self._prepare(self.data[index]), dtype=np.float64)
        out = np.empty((len(index), self.n_features))
        for s, block in self:
            lo, hi = np.searchsorted(index, [s, s + len(block)])
            if hi > lo:
                out[lo:hi] = block[index[lo:hi] - s]
        return out

    def signature(self) -> str:
        """Shape plus a digest of the first and last block (to tell data sets apart)."""
        first = np.asarray(self._raw(0, min(256, self.n_samples)), dtype=np.float64)
        last = np.asarray(self._raw(max(0, self.n_samples - 256), self.n_samples),
                          dtype=np.float64)
        digest = hashlib.sha256(first.tobytes() + last.tobytes()).hexdigest()[:16]
        return f"{self.n_samples}x{self.n_features}:{digest}"


def in_memory_if_fits(X: Any, dtype: np.dtype, memory_budget_mb: float | None,
                      what: str) -> Any:
    """An HDF5 dataset read into memory (as ``dtype``) when it needs at most
    ``memory_budget_mb``; otherwise (or for arrays) ``X`` itself."""
    if not isinstance(X, h5py.Dataset) or memory_budget_mb is None:
        return X
    need_mb = math.prod(X.shape) * dtype.itemsize / 2**20
    if need_mb > memory_budget_mb:
        log.info("%s %s: %.0f MiB as %s exceed the memory budget of %.0f MiB: streamed from "
                 "the file", what, describe(X), need_mb, dtype.name, memory_budget_mb)
        return X
    log.info("loading %s %s into memory (%.0f MiB as %s <= budget %.0f MiB)", what,
             describe(X), need_mb, dtype.name, memory_budget_mb)
    return np.asarray(read_dataset(X), dtype=dtype)

