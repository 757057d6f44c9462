"""Source ``folder``: the user's own PNG / JPEG / TIFF images, gray, tiled, split by file.

Top level of the folder only; hidden files and sub-folders ignored; any other file is an
error naming it.  Colour is converted to gray by :mod:`gmmrestore.imageio` (every Pillow
image mode by its meaning: bit depth, palette, CMYK, alpha dropped with a warning); float
images must lie in [0, 1].  Images are cut into non-overlapping ``size x size`` tiles from
the top-left corner; incomplete tiles at the right and bottom borders are dropped; an image
smaller than one tile is an error naming it.  Files (not tiles) are split into train /
validation / test by a seeded permutation, so no photo contributes to two splits.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence

import numpy as np

from ..h5io import GmmRestoreError
from ..imageio import read_image
from .pools import SPLITS, Pools, check_finite_unit

log = logging.getLogger("gmmrestore.datasets")


def to_gray_unit(image: np.ndarray, name: str) -> np.ndarray:
    """Convert an image array to (H, W) float64 gray in [0, 1].

    (H, W) is kept, (H, W, 2) gray+alpha keeps the gray, (H, W, 3) RGB and (H, W, 4)
    RGBA (alpha dropped) go through ``skimage.color.rgb2gray``.  Integer types are
    divided by their dtype's maximum, booleans map to {0, 1}, float images must be
    finite and within [0, 1].
    """
    from skimage.color import rgb2gray

    x = np.asarray(image)
    if x.dtype == bool:
        x = x.astype(np.float64)
    elif x.dtype.kind in "ui":
        if x.dtype.kind == "i" and x.size and x.min() < 0:
            raise GmmRestoreError(f"{name}: signed integer image with negative values")
        x = x.astype(np.float64) / np.iinfo(x.dtype).max
    elif x.dtype.kind == "f":
        x = x.astype(np.float64)
        check_finite_unit(x, f"{name}:", "pixel value(s)",
                           f"{name}: float image with values in",
                           "float images must already lie in [0, 1]")
    else:
        raise GmmRestoreError(f"{name}: unsupported pixel type {x.dtype}")
    if x.ndim == 2:
        gray = x
    elif x.ndim == 3 and x.shape[2] == 2:
        gray = x[:, :, 0]
    elif x.ndim == 3 and x.shape[2] in (3, 4):
        gray = rgb2gray(x[:, :, :3])
    else:
        raise GmmRestoreError(
            f"{name}: image array of shape {x.shape}; expected (H, W) gray, (H, W, 3) RGB "
            f"or (H, W, 4) RGBA (multi-page files are not supported)")
    return np.clip(gray, 0.0, 1.0)


def tile_image(image: np.ndarray, size: int, name: str = "image") -> np.ndarray:
    """Cut (H, W) into non-overlapping (size, size) tiles, row-major from the top-left.

    Incomplete tiles at the right and bottom borders are dropped.

    Returns
    -------
    tiles : (H // size * W // size, size, size)
    """
    if size < 1:
        raise GmmRestoreError(f"tile size {size}: must be >= 1")
    h, w = image.shape
    if h < size or w < size:
        raise GmmRestoreError(
            f"{name}: {h}x{w} pixels, smaller than one {size}x{size} tile "
            f"(lower --image-size or remove the image)")
    nh, nw = h // size, w // size
    tiles = image[:nh * size, :nw * size].reshape(nh, size, nw, size).swapaxes(1, 2)
    return tiles.reshape(nh * nw, size, size)


def _split_count(value: float | int, n: int, what: str) -> int:
    """A float below 1 is a fraction of ``n`` (at least 1 if positive); else a count."""
    if isinstance(value, float) and value < 1:
        if value < 0:
            raise GmmRestoreError(f"{what}: fraction {value} must be in [0, 1)")
        return max(1, round(value * n)) if value > 0 else 0
    if float(value) != int(value) or int(value) < 0:
        raise GmmRestoreError(
            f"{what}: {value}; give a fraction in [0, 1) or a whole number of files")
    return int(value)


def split_files(names: Sequence[str], validation: float | int, test: float | int,
                seed: int) -> dict[str, list[str]]:
    """Seeded split of file names into train / validation / test.

    ``validation`` and ``test`` are fractions when floats below 1 (rounded, at least one
    file if positive) and counts otherwise.  The names are sorted first, so the result
    depends only on the set of names and the seed.
    """
    names = sorted(names)
    n = len(names)
    n_test = _split_count(test, n, "test files")
    n_val = _split_count(validation, n, "validation files")
    if n_test < 1:
        raise GmmRestoreError("the test split needs at least one file")
    if n_test + n_val >= n:
        raise GmmRestoreError(
            f"{n} image file(s) cannot give {n_test} test + {n_val} validation files and "
            f"at least one training file")
    order = np.random.default_rng(np.random.SeedSequence([seed, 2])).permutation(n)
    chosen = [names[i] for i in order]
    return {"test": sorted(chosen[:n_test]), "validation": sorted(chosen[n_test:n_test + n_val]),
            "train": sorted(chosen[n_test + n_val:])}


def _is_file(entry: os.DirEntry) -> bool:
    """Whether a folder entry is a regular file (following symlinks); a symlink loop or an
    entry that cannot be inspected is an error naming it."""
    try:
        return entry.is_file()
    except OSError as err:
        raise GmmRestoreError(f"{entry.path}: cannot be read ({err.strerror}"
                              f"{'; a symlink loop?' if err.errno == 40 else ''})") from None


def list_image_files(folder: str | os.PathLike) -> list[str]:
    """Non-hidden regular files at the top level of ``folder``, sorted."""
    folder = os.fspath(folder)
    if not os.path.isdir(folder):
        raise GmmRestoreError(f"{folder}: image folder not found")
    names = sorted(e.name for e in os.scandir(folder)
                   if not e.name.startswith(".") and _is_file(e))
    if not names:
        raise GmmRestoreError(f"{folder}: no image files found")
    return names


def tile_stack(images: Mapping[str, np.ndarray], names: Sequence[str], size: int
                ) -> np.ndarray:
    tiles = [tile_image(images[n], size, n) for n in names]
    if not tiles:
        return np.zeros((0, size, size), dtype=np.float32)
    return np.concatenate(tiles).astype(np.float32)


def load_folder(folder: str | os.PathLike, image_size: int, *, validation: float | int = 0.15,
                test: float | int = 0.15, seed: int = 0) -> Pools:
    """Pools from a folder of the user's own images, tiled into ``image_size`` squares.

    Every non-hidden file at the top level must be a readable PNG / JPEG / TIFF image
    (else an error names it).  Files are split into train / validation / test by
    :func:`split_files`; each split's pool holds the tiles of its files
    (:func:`tile_image`: non-overlapping, incomplete border tiles dropped).
    """
    folder = os.fspath(folder)
    names = list_image_files(folder)
    images = {n: read_image(os.path.join(folder, n)) for n in names}
    parts = split_files(names, validation, test, seed)
    pools = {split: tile_stack(images, parts[split], image_size) for split in SPLITS}
    log.info("folder %s: %d files -> %s tiles of %dx%d", folder, len(names),
             ", ".join(f"{len(pools[s])} {s}" for s in SPLITS), image_size, image_size)
    return Pools(
        train=pools["train"], validation=pools["validation"], test=pools["test"],
        attrs={"dataset": os.path.basename(os.path.abspath(folder)),
               "source": f"folder {os.path.abspath(folder)}", "offline_fallback": False,
               "source_files": names, "image_size": int(image_size),
               "train_files": parts["train"], "validation_files": parts["validation"],
               "test_files": parts["test"],
               "split": f"files split by seeded permutation (seed {seed}); "
                        f"non-overlapping {image_size}x{image_size} tiles, "
                        f"incomplete border tiles dropped"},
    )
