"""The kernel file of ``scripts/estimate_kernel.py``: the kernel each image is restored with."""

from __future__ import annotations

import numpy as np

from ..h5io import GmmRestoreError, read_h5
from ..operators import validate_kernel


def estimated_kernels(kernel_file: str, n: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """(kernel, indices of the images it restores) for every batch of an estimate_kernel.py
    file; a file without `batch_kernels` / `batch_index` gives its `kernel` to all n images.
    """
    arrays, _ = read_h5(kernel_file, "kernel", ["kernel"])
    if "batch_kernels" not in arrays and "batch_index" not in arrays:
        kernel = validate_kernel(arrays["kernel"], name=f"{kernel_file}: kernel")
        return [(kernel, np.arange(n))]
    if "batch_kernels" not in arrays or "batch_index" not in arrays:
        raise GmmRestoreError(f"{kernel_file}: has only one of 'batch_kernels' and "
                              "'batch_index'; both are needed for per-batch kernels")
    kernels, index = arrays["batch_kernels"], np.asarray(arrays["batch_index"])
    if kernels.ndim != 3 or index.shape != (n,) or index.dtype.kind not in "iu":
        raise GmmRestoreError(
            f"{kernel_file}: batch_kernels {kernels.shape} and batch_index {index.shape} "
            f"({index.dtype}) do not fit {n} corrupted images (expected (n_batches, s, s) "
            f"and ({n},) integers); was the kernel estimated from these images?")
    if n and (index.min() < 0 or index.max() >= len(kernels)):
        raise GmmRestoreError(f"{kernel_file}: batch_index refers to batches outside "
                              f"0..{len(kernels) - 1}")
    return [(validate_kernel(kernels[b], name=f"{kernel_file}: batch_kernels[{b}]"),
             np.flatnonzero(index == b))
            for b in range(len(kernels)) if np.any(index == b)]
