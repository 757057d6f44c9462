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


def extract_patch_rows(images: np.ndarray, m: int) -> np.ndarray:
    """All m x m patches of each image, one patch per column.

    images : (n, H, W).  Returns (m*m, n*P), C-contiguous: column ``i * P + p`` is
    patch ``p`` of image ``i`` (the order of :func:`extract_patches`), row ``a * m + b``
    its pixel (a, b).  The transpose of ``extract_patches(images, m).reshape(-1, m*m)``,
    built with one contiguous copy per offset inside the patch (m² of them): the layout the
    batched passes (MAP-k, EPLL) work in, each pixel of the patches contiguous.
    """
    images = np.asarray(images)
    check_patch_size(m, images.shape[1:])
    n, h, w = images.shape
    hp, wp = h - m + 1, w - m + 1
    rows = np.empty((m, m, n, hp, wp), dtype=images.dtype)
    for a in range(m):
        for b in range(m):
            rows[a, b] = images[:, a:a + hp, b:b + wp]
    return rows.reshape(m * m, n * hp * wp)


def accumulate_patch_rows(rows: np.ndarray, image_shape: tuple[int, int], m: int
                          ) -> np.ndarray:
    """Adjoint of :func:`extract_patch_rows`: add every patch (a column) back at its position.

    rows : (m*m, n*P).  Returns (n, H, W).  One vectorised add per offset inside the patch
    (m² of them), each reading contiguous memory; never a loop over patches.
    """
    rows = np.asarray(rows)
    h, w = image_shape
    hp, wp = h - m + 1, w - m + 1
    if rows.ndim != 2 or rows.shape[0] != m * m or rows.shape[1] % (hp * wp):
        raise ValueError(f"patch rows must be (m*m={m * m}, n*{hp * wp}) for {h}x{w} images, "
                         f"got {rows.shape}")
    grid = rows.reshape(m, m, -1, hp, wp)
    out = np.zeros((grid.shape[2], h, w), dtype=np.result_type(rows.dtype, np.float32))
    for a in range(m):
        for b in range(m):
            out[:, a:a + hp, b:b + wp] += grid[a, b]
    return out


def accumulate_patches(patches: np.ndarray, image_shape: tuple[int, int], m: int) -> np.ndarray:
    """Adjoint of :func:`extract_patches`: add every patch back at its position.

    patches : (n, P, m*m).  Returns (n, H, W).
    """
    patches = np.asarray(patches)
    # one transposing copy, so that each of the m² adds reads contiguous memory (reading
    # the patches in place strides by m² elements: ~2x slower overall)
    return accumulate_patch_rows(np.ascontiguousarray(patches.reshape(-1, m * m).T),
                                 image_shape, m)


def patch_counts(image_shape: tuple[int, int], m: int) -> np.ndarray:
    """How many patches cover each pixel: (H, W)."""
    h, w = image_shape
    rows = np.minimum.reduce([np.arange(h) + 1, np.full(h, m), h - np.arange(h),
                              np.full(h, h - m + 1)])
    cols = np.minimum.reduce([np.arange(w) + 1, np.full(w, m), w - np.arange(w),
                              np.full(w, w - m + 1)])
    return np.outer(rows, cols).astype(np.float64)


def average_patch_rows(rows: np.ndarray, image_shape: tuple[int, int], m: int,
                       position_weights: np.ndarray | None = None) -> np.ndarray:
    """Re-assemble images by averaging overlapping patch estimates given as columns
    (:func:`extract_patch_rows` layout): (m*m, n*P) -> (n, H, W).

    ``position_weights`` (m*m,), positive: each pixel becomes the weighted mean of its
    estimates, an estimate weighted by its position inside its patch (None: equal weights).
    """
    if position_weights is None:
        return accumulate_patch_rows(rows, image_shape, m) / patch_counts(image_shape, m)
    position_weights = np.asarray(position_weights, dtype=np.float64)
    if position_weights.shape != (m * m,) or not np.all(position_weights > 0):
        raise ValueError(f"position_weights must be {m * m} positive numbers, got shape "
                         f"{position_weights.shape}")
    n_per_image = n_patches_per_image(image_shape, m)
    weight_sum = accumulate_patch_rows(
        np.broadcast_to(position_weights[:, None], (m * m, n_per_image)), image_shape, m)[0]
    return accumulate_patch_rows(rows * position_weights[:, None], image_shape, m) / weight_sum


def average_patches(patches: np.ndarray, image_shape: tuple[int, int], m: int,
                    position_weights: np.ndarray | None = None) -> np.ndarray:
    """Re-assemble images by averaging overlapping patch estimates: (n, P, m*m) -> (n, H, W).

    ``position_weights``: see :func:`average_patch_rows`.
    """
    patches = np.asarray(patches)
    return average_patch_rows(np.ascontiguousarray(patches.reshape(-1, m * m).T), image_shape,
                              m, position_weights)


def sample_patches(images: np.ndarray, m: int, max_patches: int | None,
                   rng: np.random.Generator, transpose_half: bool = False) -> np.ndarray:
    """All patches of ``images`` (n, H, W), or a seeded uniform subset of ``max_patches``.

    Returns (N, m*m) in the dtype of ``images``, N = min(max_patches, n·P).  The subset is
    drawn without replacement and kept in image/position order; only the chosen patches
    are materialised.  With ``transpose_half`` every second patch is transposed, which makes
    a prior trained on them symmetric under transposition (natural-image sets store portrait
    images transposed).
    """
    images = np.asarray(images)
    check_patch_size(m, images.shape[1:])
    n, h, w = images.shape
    hp, wp = h - m + 1, w - m + 1
    total = n * hp * wp
    if max_patches is None or max_patches >= total:
        out = extract_patches(images, m).reshape(total, m, m)
    else:
        chosen = np.sort(rng.choice(total, size=int(max_patches), replace=False))
        img, pos = np.divmod(chosen, hp * wp)
        r, c = np.divmod(pos, wp)
        out = sliding_window_view(images, (m, m), axis=(1, 2))[img, r, c]
    if transpose_half:
        out = np.array(out)
        out[1::2] = out[1::2].transpose(0, 2, 1)
    return out.reshape(len(out), m * m)
