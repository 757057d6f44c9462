"""Paired sets in the format of the first seed's public implementation, and the intensity
maps that undo a rescaled observation (from training images only)."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping

import numpy as np

from ..h5io import GmmRestoreError
from ..imageio import read_image
from ..operators import blur, load_patch_matrix
from .folder import list_image_files

log = logging.getLogger("gmmrestore.datasets")


def _id_key(stem: str) -> tuple:
    return (0, int(stem), stem) if stem.isdigit() else (1, 0, stem)


def paired_stems(folder: str | os.PathLike) -> dict[str, dict[str, str]]:
    """``{"original": {id: file name}, "corrupted": {...}}`` of a paired set's folders."""
    folder = os.fspath(folder)
    stems = {}
    for key in ("original", "corrupted"):
        path = os.path.join(folder, key)
        if not os.path.isdir(path):
            raise GmmRestoreError(
                f"{path}: folder not found (a paired set needs original/, corrupted/ "
                f"and W.npy)")
        found = {}
        for f in list_image_files(path):
            stem, ext = os.path.splitext(f)
            if ext.lower() != ".png":
                raise GmmRestoreError(
                    f"{os.path.join(path, f)}: expected <id>.png files only in {path}")
            found[stem] = f
        stems[key] = found
    return stems


def unmatched_paired_ids(stems: Mapping[str, Mapping[str, str]]) -> tuple[list, list]:
    """Ids only in original/ and only in corrupted/ (sorted), from the stems per folder."""
    return (sorted(set(stems["original"]) - set(stems["corrupted"]), key=_id_key),
            sorted(set(stems["corrupted"]) - set(stems["original"]), key=_id_key))


def load_paired(folder: str | os.PathLike, unmatched: str = "error"
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[str]]:
    """Load a paired set: ``original/<id>.png``, ``corrupted/<id>.png`` and ``W.npy``.

    ``unmatched``: ``"error"`` (ids present in only one of the folders are an error) or
    ``"skip"`` (they are left out with a warning naming them; see
    :func:`unmatched_paired_ids` of :func:`paired_stems` for the lists).

    Intensity mapping (the assumption this loader makes)
        Both the original and the corrupted PNGs are read like any image
        (:func:`read_image`: gray, integer values divided by the dtype maximum, so 8-bit
        PNGs map ``v -> v / 255``).  The corrupted image is then *taken to be* the
        observation y = W z + n on the same [0, 1] scale as the originals.  This is
        exact only if the files were saved without rescaling.  The seed's author
        min-max rescaled each corrupted PNG, so for that set y ≈ a·c + b with an unknown
        gain a and offset b per image; the loader does not guess them from the
        originals (that would use the answer at restore time).  A caller who wants a
        correction uses training data only: :func:`undo_minmax` with the typical range
        of y from :func:`observation_range` (``scripts/import_paired.py --intensity
        minmax``, the workflow's default) or :func:`match_mean_std` with
        :func:`observation_stats` (``--intensity match_stats``).  On 200 MNIST test
        digits (5×5 Gaussian std 1 or 7×7 std 2, σ = 0.05 to 0.1) min-max rescaled to 8
        bits, the RMSE to the true y was 0.13-0.26 with the plain assumption, 0.05-0.06
        after ``match_stats`` and 0.03-0.06 after ``minmax``.

    Returns
    -------
    originals : (n, H, W) float64 in [0, 1]
    corrupted : (n, H, W) float64 in [0, 1]
    W : (d, d) float64, d = m²
    ids : list of n str, sorted (numerically when all ids are integers)
    """
    folder = os.fspath(folder)
    stems = paired_stems(folder)
    _drop_unmatched(folder, stems, unmatched)
    ids = sorted(stems["original"], key=_id_key)
    if not ids:
        raise GmmRestoreError(f"{folder}: no id is in both original/ and corrupted/")
    W = load_patch_matrix(os.path.join(folder, "W.npy"))
    originals, corrupted = _read_pairs(folder, stems, ids, int(round(np.sqrt(W.shape[0]))))
    return originals, corrupted, W, ids


def _drop_unmatched(folder: str, stems: dict[str, dict[str, str]], unmatched: str) -> None:
    """Leave out (``"skip"``, with a warning) or refuse (``"error"``) ids in one folder only."""
    only_orig, only_corr = unmatched_paired_ids(stems)
    if unmatched not in ("error", "skip"):
        raise GmmRestoreError(f"unmatched '{unmatched}': expected 'error' or 'skip'")
    if (only_orig or only_corr) and unmatched == "skip":
        log.warning("%s: %d unpaired ids left out (unmatched: skip): only in original/: %s; "
                    "only in corrupted/: %s", folder, len(only_orig) + len(only_corr),
                    ", ".join(only_orig) or "-", ", ".join(only_corr) or "-")
        for gone in only_orig:
            del stems["original"][gone]
    elif only_orig or only_corr:
        parts = []
        if only_orig:
            parts.append(f"only in original/: {', '.join(only_orig[:10])}"
                         + (" ..." if len(only_orig) > 10 else ""))
        if only_corr:
            parts.append(f"only in corrupted/: {', '.join(only_corr[:10])}"
                         + (" ..." if len(only_corr) > 10 else ""))
        raise GmmRestoreError(f"{folder}: unpaired ids ({'; '.join(parts)}); set "
                              "dataset.paired.unmatched: skip to restore the matched pairs")


def _read_pairs(folder: str, stems: Mapping[str, Mapping[str, str]], ids: list[str], m: int
                ) -> tuple[np.ndarray, np.ndarray]:
    """The (n, H, W) originals and corrupted images of ``ids``, all of one size >= m."""
    originals, corrupted = [], []
    shape = None
    for i in ids:
        po = os.path.join(folder, "original", stems["original"][i])
        pc = os.path.join(folder, "corrupted", stems["corrupted"][i])
        xo, xc = read_image(po), read_image(pc)
        if xo.shape != xc.shape:
            raise GmmRestoreError(
                f"{folder}: id {i}: original is {xo.shape[0]}x{xo.shape[1]}, corrupted "
                f"{xc.shape[0]}x{xc.shape[1]}")
        if shape is None:
            shape = xo.shape
            if min(shape) < m:
                raise GmmRestoreError(
                    f"{po}: {shape[0]}x{shape[1]} image smaller than the {m}x{m} patches "
                    f"of W.npy")
        elif xo.shape != shape:
            raise GmmRestoreError(
                f"{po}: {xo.shape[0]}x{xo.shape[1]}, but {ids[0]} is {shape[0]}x{shape[1]}; "
                f"all images of a paired set must have one size")
        originals.append(xo)
        corrupted.append(xc)
    return np.stack(originals), np.stack(corrupted)


def predict_observations(clean: np.ndarray, W: np.ndarray) -> np.ndarray:
    """Noise-free observations of whole images under a patch blur matrix W.

    Pixel (r, c) is predicted from the m×m patch centred on it, shifted inside the image
    near the borders (top-left corner ``clip(r - m//2, 0, H - m)``, same for columns),
    with the row of W belonging to the pixel's position in that patch.  When W is a
    zero-padded "same" convolution whose kernel fits in the patch (the seed's W), this
    equals the zero-padded "same" convolution of the whole image exactly.

    Parameters
    ----------
    clean : (n, H, W) images with H, W >= m
    W : (m², m²)

    Returns
    -------
    (n, H, W) float64
    """
    from numpy.lib.stride_tricks import sliding_window_view

    x = np.asarray(clean, dtype=np.float64)
    m = int(round(np.sqrt(W.shape[0])))
    n, height, width = x.shape
    if height < m or width < m:
        raise GmmRestoreError(f"{height}x{width} images are smaller than the {m}x{m} patches")
    windows = sliding_window_view(x, (m, m), axis=(1, 2))  # (n, H-m+1, W-m+1, m, m)
    cols = np.arange(width)
    pc = np.clip(cols - m // 2, 0, width - m)
    out = np.empty_like(x)
    for r in range(height):  # one row of pixels at a time, vectorised over images, columns
        pr = min(max(r - m // 2, 0), height - m)
        rows_of_w = W[(r - pr) * m + (cols - pc)]  # (width, m²)
        out[:, r, :] = np.einsum("nwd,wd->nw", windows[:, pr, pc].reshape(n, width, m * m),
                                 rows_of_w)
    return out


def _subsample(clean: np.ndarray, max_images: int, rng: np.random.Generator | None
               ) -> np.ndarray:
    x = np.asarray(clean, dtype=np.float64)
    if len(x) == 0:
        raise GmmRestoreError("no training image given for the intensity statistics")
    if len(x) > max_images:
        rng = np.random.default_rng(0) if rng is None else rng
        x = x[np.sort(rng.choice(len(x), size=max_images, replace=False))]
    return x


def noise_free_observations(clean: np.ndarray, W: np.ndarray,
                            kernel: np.ndarray | None = None) -> np.ndarray:
    """Blurred images W z: the image-level convolution with ``kernel`` when it is known
    (the forward model the restore stage uses), else :func:`predict_observations`."""
    if kernel is not None:
        return blur(np.asarray(clean, dtype=np.float64), kernel)
    return predict_observations(clean, W)


def observation_stats(clean: np.ndarray, W: np.ndarray, sigma: float, *,
                      kernel: np.ndarray | None = None, max_images: int = 1000,
                      rng: np.random.Generator | None = None) -> tuple[float, float]:
    """Target mean and std of an observed image y = W z + n, from clean training images.

    Uses :func:`noise_free_observations` on at most ``max_images`` of ``clean`` (training
    images, never the originals of the set being restored).  The mean is the mean of
    all predicted pixels; the std is ``sqrt(mean over images of the per-image variance
    + sigma**2)``, the typical per-image spread that :func:`match_mean_std` sets.
    """
    pred = noise_free_observations(_subsample(clean, max_images, rng), W, kernel)
    return float(pred.mean()), float(np.sqrt(pred.var(axis=(1, 2)).mean() + sigma ** 2))


def observation_range(clean: np.ndarray, W: np.ndarray, sigma: float, *,
                      kernel: np.ndarray | None = None, max_images: int = 1000,
                      rng: np.random.Generator | None = None) -> tuple[float, float]:
    """Typical minimum and maximum of an observed image y = W z + n (median over images).

    The clean training images (at most ``max_images``, never the originals of the set
    being restored) are blurred (:func:`noise_free_observations`) and given seeded
    Gaussian noise of std ``sigma``; returns the medians of the per-image minimum and
    maximum.  These stand in for the unknown min y and max y of a min-max rescaled
    observation (:func:`undo_minmax`).
    """
    rng = np.random.default_rng(0) if rng is None else rng
    x = _subsample(clean, max_images, rng)
    y = noise_free_observations(x, W, kernel) + sigma * rng.standard_normal(x.shape)
    return float(np.median(y.min(axis=(1, 2)))), float(np.median(y.max(axis=(1, 2))))


def undo_minmax(images: np.ndarray, low: float, high: float) -> np.ndarray:
    """Invert a min-max rescale: ``low + (high - low) * images``.

    A min-max rescaled observation is ``c = (y - min y) / (max y - min y)``; with the
    unknown ``min y`` and ``max y`` replaced by ``low`` and ``high`` (e.g. from
    :func:`observation_range`) this returns the estimate of y.
    """
    if not high > low:
        raise GmmRestoreError(f"undo_minmax: high {high:g} must exceed low {low:g}")
    return low + (high - low) * np.asarray(images, dtype=np.float64)


def match_mean_std(images: np.ndarray, target_mean: float, target_std: float
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-image affine map a·x + b giving each image the target mean and std.

    Parameters
    ----------
    images : (n, H, W)

    Returns
    -------
    mapped : (n, H, W) float64
    gain, offset : (n,) the a and b used; a constant image gets gain 1.
    """
    x = np.asarray(images, dtype=np.float64)
    mean = x.mean(axis=(1, 2))
    std = x.std(axis=(1, 2))
    gain = np.where(std > 0, target_std / np.where(std > 0, std, 1.0), 1.0)
    offset = target_mean - gain * mean
    return gain[:, None, None] * x + offset[:, None, None], gain, offset
