"""Stride-1 patch extraction, its adjoint, and overlap-averaging re-assembly.

Patches are m x m windows at every position (maximal overlap): an H x W image has
``(H - m + 1) * (W - m + 1)`` patches, ordered row-major by their top-left corner, each
flattened row-major to a vector of length ``d = m * m``.
"""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from .h5io import GmmRestoreError


def check_patch_size(m: int, image_shape: tuple[int, int]) -> None:
    """Raise a clear error unless 2 <= m <= min(H, W)."""
    h, w = image_shape
    if int(m) != m or m < 2:
        raise GmmRestoreError(f"patch_size m={m}: must be an integer >= 2")
    if m > min(h, w):
        raise GmmRestoreError(f"patch_size m={m} is larger than the images ({h}x{w})")


def n_patches_per_image(image_shape: tuple[int, int], m: int) -> int:
    h, w = image_shape
    return (h - m + 1) * (w - m + 1)


def extract_patches(images: np.ndarray, m: int) -> np.ndarray:
    """All m x m patches of each image.

    images : (n, H, W) or (H, W).  Returns (n, P, m*m) (or (P, m*m)), a copy,
    P = (H - m + 1)(W - m + 1).
    """
    images = np.asarray(images)
    single = images.ndim == 2
    if single:
        images = images[None]
    check_patch_size(m, images.shape[1:])
    n = images.shape[0]
    windows = sliding_window_view(images, (m, m), axis=(1, 2))  # (n, H', W', m, m)
    out = windows.reshape(n, -1, m * m)
    return out[0] if single else out


def accumulate_patches(patches: np.ndarray, image_shape: tuple[int, int], m: int) -> np.ndarray:
    """Adjoint of :func:`extract_patches`: add every patch back at its position.

    patches : (n, P, m*m).  Returns (n, H, W).  One vectorised add per offset inside the
    patch (m² of them), never a loop over patches.
    """
    patches = np.asarray(patches)
    n = patches.shape[0]
    h, w = image_shape
    hp, wp = h - m + 1, w - m + 1
    # one transposing copy, so that each of the m² adds reads contiguous memory (reading
    # grid[..., a, b] in place strides by m² elements: ~2x slower overall)
    grid = np.ascontiguousarray(patches.reshape(n, hp, wp, m, m).transpose(3, 4, 0, 1, 2))
    out = np.zeros((n, h, w), dtype=np.result_type(patches.dtype, np.float32))
    for a in range(m):
        for b in range(m):
            out[:, a:a + hp, b:b + wp] += grid[a, b]
    return out


def patch_counts(image_shape: tuple[int, int], m: int) -> np.ndarray:
    """How many patches cover each pixel: (H, W)."""
    h, w = image_shape
    rows = np.minimum.reduce([np.arange(h) + 1, np.full(h, m), h - np.arange(h),
                              np.full(h, h - m + 1)])
    cols = np.minimum.reduce([np.arange(w) + 1, np.full(w, m), w - np.arange(w),
                              np.full(w, w - m + 1)])
    return np.outer(rows, cols).astype(np.float64)


def average_patches(patches: np.ndarray, image_shape: tuple[int, int], m: int,
                    position_weights: np.ndarray | None = None) -> np.ndarray:
    """Re-assemble images by averaging overlapping patch estimates: (n, P, m*m) -> (n, H, W).

    ``position_weights`` (m*m,), positive: each pixel becomes the weighted mean of its
    estimates, an estimate weighted by its position inside its patch (None: equal weights).
    """
    if position_weights is None:
        return accumulate_patches(patches, image_shape, m) / patch_counts(image_shape, m)
    position_weights = np.asarray(position_weights, dtype=np.float64)
    if position_weights.shape != (m * m,) or not np.all(position_weights > 0):
        raise ValueError(f"position_weights must be {m * m} positive numbers, got shape "
                         f"{position_weights.shape}")
    n_per_image = n_patches_per_image(image_shape, m)
    weight_sum = accumulate_patches(np.broadcast_to(position_weights, (1, n_per_image, m * m)),
                                    image_shape, m)[0]
    return accumulate_patches(patches * position_weights, image_shape, m) / weight_sum


def sample_patches(images: np.ndarray, m: int, max_patches: int | None,
                   rng: np.random.Generator) -> np.ndarray:
    """All patches of ``images`` (n, H, W), or a seeded uniform subset of ``max_patches``.

    Returns (N, m*m) in the dtype of ``images``, N = min(max_patches, n·P).  The subset is
    drawn without replacement and kept in image/position order; only the chosen patches
    are materialised.
    """
    images = np.asarray(images)
    check_patch_size(m, images.shape[1:])
    n, h, w = images.shape
    hp, wp = h - m + 1, w - m + 1
    total = n * hp * wp
    if max_patches is None or max_patches >= total:
        return extract_patches(images, m).reshape(total, m * m)
    chosen = np.sort(rng.choice(total, size=int(max_patches), replace=False))
    img, pos = np.divmod(chosen, hp * wp)
    r, c = np.divmod(pos, wp)
    windows = sliding_window_view(images, (m, m), axis=(1, 2))
    return windows[img, r, c].reshape(len(chosen), m * m)
