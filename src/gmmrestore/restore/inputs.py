"""What a restoration reads of a 'corrupted' file (``scripts/corrupt_images.py``).

Restoring with the true kernel may read the whole file.  A blind restoration, with kernels
estimated from the photographs, reads only :data:`BLIND_DATASETS`: the photographs and the
validation set's clean images, never the test images' clean frames or the true kernel.  Both
restore scripts read through :func:`read_corrupted` and record :func:`corrupted_setting`.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np

from ..h5io import GmmRestoreError, read_h5

#: The datasets of a corrupted file a blind restoration may read.
BLIND_DATASETS = ("corrupted", "val_clean")


def read_corrupted(path: str | os.PathLike, blind: bool = False,
                   required: Sequence[str] = ()) -> tuple[dict, dict]:
    """``(arrays, attrs)`` of a corrupted file: every dataset, ``corrupted`` and ``required``
    among them, or with ``blind`` only :data:`BLIND_DATASETS` (``corrupted`` required).

    Raises :class:`GmmRestoreError` naming the file when a required dataset is missing or
    the photographs (``corrupted``, (n, H, W)) hold NaN or Inf.
    """
    if blind:
        arrays, attrs = read_h5(path, "corrupted", ["corrupted"], only=BLIND_DATASETS)
    else:
        arrays, attrs = read_h5(path, "corrupted", ["corrupted", *required])
    if not np.all(np.isfinite(arrays["corrupted"])):
        raise GmmRestoreError(f"{path}: dataset 'corrupted' contains NaN or Inf")
    return arrays, attrs


def corrupted_setting(attrs: dict) -> dict:
    """The setting a restored file records of its corrupted file's attributes:
    ``noise_sigma``, ``blur``, ``dataset`` and ``boundary`` (``'valid'``: a camera's frame,
    no zero border around it; files written before boundaries existed are ``'zero'``)."""
    return {"noise_sigma": float(attrs["noise_sigma"]), "blur": attrs.get("blur", ""),
            "dataset": attrs.get("dataset", ""), "boundary": attrs.get("boundary", "zero")}
