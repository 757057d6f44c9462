"""Source ``natural``: the photographs shipped inside scikit-image, gray, tiled.

The test pool is the tiles of the whole photos ``camera`` and ``astronaut``; the train pool
(and validation) is the tiles of the others (:data:`NATURAL_TRAIN_IMAGES`).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np

from ..h5io import GmmRestoreError
from .folder import tile_stack, to_gray_unit
from .pools import Pools

log = logging.getLogger("gmmrestore.datasets")


# Natural photographs in scikit-image that load without network access (checked with
# scikit-image 0.26; e.g. eagle, lily and kidney need a pooch download and are left out).
# `clock` (a motion-blurred photograph), synthetic and microscopy images are left out too.
NATURAL_TEST_IMAGES = ("camera", "astronaut")
NATURAL_TRAIN_IMAGES = ("brick", "chelsea", "coffee", "coins", "grass", "gravel", "moon",
                        "page", "rocket", "text")


def _skimage_photo(name: str) -> np.ndarray:
    import skimage.data

    try:
        image = getattr(skimage.data, name)()
    except Exception as err:  # pooch / network / missing file  # noqa: BLE001
        raise GmmRestoreError(
            f"skimage.data.{name}: not available offline ({type(err).__name__}: {err})"
        ) from None
    return to_gray_unit(image, f"skimage.data.{name}")


def load_natural(image_size: int, *, train_images: Sequence[str] = NATURAL_TRAIN_IMAGES,
                 test_images: Sequence[str] = NATURAL_TEST_IMAGES) -> Pools:
    """Pools of scikit-image's natural photographs in gray, tiled into ``image_size`` squares.

    Test pool: the tiles of the whole photos ``test_images`` (default camera and
    astronaut); train pool (validation drawn from it by :func:`make_dataset`): the tiles
    of ``train_images``.  A train photo that cannot be loaded offline is skipped with a
    warning; a missing test photo is an error.
    """
    photos: dict[str, np.ndarray] = {}
    used_train = []
    for name in train_images:
        try:
            photos[name] = _skimage_photo(name)
            used_train.append(name)
        except GmmRestoreError as err:
            log.warning("%s; skipped", err)
    if not used_train:
        raise GmmRestoreError("natural: no training photograph could be loaded")
    for name in test_images:
        photos[name] = _skimage_photo(name)
    import skimage

    return Pools(
        train=tile_stack(photos, used_train, image_size),
        test=tile_stack(photos, list(test_images), image_size),
        attrs={"dataset": "natural",
               "source": f"scikit-image natural (skimage {skimage.__version__})",
               "offline_fallback": False,
               "source_files": [f"skimage.data.{n}" for n in (*used_train, *test_images)],
               "train_files": [f"skimage.data.{n}" for n in used_train],
               "test_files": [f"skimage.data.{n}" for n in test_images],
               "image_size": int(image_size),
               "split": f"test pool = tiles of {', '.join(test_images)}; train pool "
                        f"(incl. validation) = tiles of the other photos; non-overlapping "
                        f"{image_size}x{image_size} tiles, incomplete border tiles dropped"},
    )
