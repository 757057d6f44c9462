"""Natural-image sets Train400 and BSD68 (dataset source ``bsd``): pinned, verified files.

The two standard sets of natural-image denoising work, 8-bit grayscale PNGs of Berkeley
Segmentation Dataset images (non-commercial research and educational use only, see
:data:`LICENCE`):

``Train400``
    400 crops of 180 x 180 pixels, the usual training set of natural-image denoisers.
``BSD68``
    the 68 test images (321 x 481 or 481 x 321) of the published denoising tables.

Every file's size, SHA-256 (and MD5) is pinned in ``gmmrestore/data/natural_manifest.tsv``
(:func:`load_manifest`), the manifest of the public repository ``cszn/DnCNN`` at commit
:data:`BSD_COMMIT`.  Files are fetched with :func:`gmmrestore.datasets.fetch_file` (mirrors
tried in order, retries, verification of size and digests before an atomic rename into the
cache, a second run reads the cache only) and decoded (8-bit, gray, the expected size) before
they are accepted.

Mirrors
-------
The default mirror is the commit-pinned repository (:data:`UPSTREAM`), whose layout is the
repository's own (``<mirror>/<repository_path>``).  Any other mirror is a URL (``http://``,
``https://``, ``file://``) or a plain folder holding a copy of the sets' layout,
``<mirror>/Train400/test_001.png`` and ``<mirror>/BSD68/test001.png``.

Orientation
-----------
The workflow stores images as an (n, H, W) stack.  BSD68 holds landscape (321 x 481) and
portrait (481 x 321) images, so portrait images are stored **transposed** to landscape, with
a per-image flag (``test_transposed`` in the dataset file, ``transposed`` in the corrupted
file); :func:`original_orientation` turns an image back for figures and exports.  Pixel-wise
metrics (PSNR, SSIM) do not change under a transposition; a patch prior trained on
transpose-augmented patches makes the restoration itself neutral to it.
"""

from __future__ import annotations

import csv
import importlib.resources
import io
import logging
import os
import pathlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..h5io import GmmRestoreError
from ..imageio import open_image
from .download import FileDigest, fetch_file
from .pools import Pools

log = logging.getLogger("gmmrestore.bsd")

BSD_COMMIT = "e93b27812d3ff523a3a79d19e5e50d233d7a8d0a"
REPOSITORY_PREFIX = "https://raw.githubusercontent.com/cszn/DnCNN/"
UPSTREAM = f"{REPOSITORY_PREFIX}{BSD_COMMIT}/"
MANIFEST_RESOURCE = "data/natural_manifest.tsv"
LICENCE = ("Berkeley Segmentation Dataset images: for non-commercial research and "
           "educational use only")
#: Allowed (H, W) of every set's images, as stored in the files.
SET_SHAPES = {"Train400": ((180, 180),), "BSD68": ((321, 481), (481, 321))}
#: Published mean PSNR (dB) of Gaussian denoising on the 68 whole BSD68 images, by method and
#: noise sigma on the 0-255 scale: the DnCNN paper's table (Zhang et al., IEEE TIP 2017,
#: Table II), the reference table of natural-image denoising.
PUBLISHED_PSNR = {
    "bsd68_denoising": {
        "epll": {15: 31.21, 25: 28.68, 50: 25.67},
        "bm3d": {15: 31.07, 25: 28.57, 50: 25.62},
    },
}


def published_psnr(table: str, method: str, sigma: float) -> float | None:
    """The published PSNR of ``method`` at noise ``sigma`` (on the [0, 1] scale) in
    :data:`PUBLISHED_PSNR` ``[table]``; None when not listed.  ``sigma`` matches an entry
    when ``255 sigma`` is within 1e-3 of it."""
    if table not in PUBLISHED_PSNR:
        raise GmmRestoreError(f"unknown table of published values {table!r}; known: "
                              f"{', '.join(sorted(PUBLISHED_PSNR))}")
    for level, value in PUBLISHED_PSNR[table].get(method, {}).items():
        if abs(255 * sigma - level) < 1e-3:
            return value
    return None


@dataclass(frozen=True)
class ManifestEntry:
    """One pinned file: its set, name, digests and path in the upstream repository."""

    set: str
    file: str
    digest: FileDigest
    repository_path: str

    @property
    def stem(self) -> str:
        """The file name without extension, the image's id (``test001``)."""
        return os.path.splitext(self.file)[0]


@dataclass(frozen=True)
class BsdSelection:
    """Which images source ``bsd`` uses.

    ``train_set`` feeds the train pool (training and validation images), ``test_set`` the
    test pool.  ``test_names`` (ids such as ``test001``, or file names) keeps only those test
    images, in the given order's sorted form; None keeps all.  ``crop``: centre crop of every
    test image to ``crop x crop`` pixels (then no image is transposed); None keeps whole
    images.
    """

    train_set: str = "Train400"
    test_set: str = "BSD68"
    test_names: tuple[str, ...] | None = None
    crop: int | None = None


def load_manifest(path: str | os.PathLike | None = None) -> dict[str, list[ManifestEntry]]:
    """The pinned manifest: ``{set: [ManifestEntry, ...]}``, files sorted by name.

    ``path`` defaults to the package's ``data/natural_manifest.tsv``; lines starting with
    ``#`` are comments.  A malformed row is an error naming the file and the row.
    """
    if path is None:
        text = importlib.resources.files("gmmrestore").joinpath(MANIFEST_RESOURCE).read_text(
            encoding="utf-8")
        where = f"gmmrestore/{MANIFEST_RESOURCE}"
    else:
        text = pathlib.Path(path).read_text(encoding="utf-8")
        where = os.fspath(path)
    lines = [ln for ln in text.splitlines() if ln.strip() and not ln.startswith("#")]
    sets: dict[str, list[ManifestEntry]] = {}
    for number, row in enumerate(csv.DictReader(io.StringIO("\n".join(lines)),
                                                delimiter="\t"), start=1):
        try:
            entry = ManifestEntry(
                row["set"], row["file"],
                FileDigest(int(row["bytes"]), row["md5"].lower(), row["sha256"].lower()),
                row["repository_path"])
        except (KeyError, TypeError, ValueError, AttributeError) as err:
            raise GmmRestoreError(f"{where}: row {number} is malformed ({err}); expected "
                                  "set, file, bytes, sha256, md5, repository_path") from None
        sets.setdefault(entry.set, []).append(entry)
    for entries in sets.values():
        entries.sort(key=lambda e: e.file)
    return sets


def is_local_mirror(mirror: str) -> bool:
    """True for a plain folder (no URL scheme)."""
    return "://" not in mirror


def mirror_folder_url(mirror: str, entry: ManifestEntry) -> str:
    """Base URL of the folder holding ``entry`` on ``mirror`` (see the module doc)."""
    if mirror.startswith(REPOSITORY_PREFIX):
        return mirror.rstrip("/") + "/" + os.path.dirname(entry.repository_path)
    if is_local_mirror(mirror):
        return f"{pathlib.Path(mirror).expanduser().resolve().as_uri()}/{entry.set}"
    return mirror.rstrip("/") + "/" + entry.set


def decode_png(path: str | os.PathLike, entry: ManifestEntry) -> np.ndarray:
    """Decode a set's PNG: (H, W) uint8, gray, one of the set's allowed sizes.

    Raises :class:`GmmRestoreError` naming the file otherwise.
    """
    # PNG only: a generic reader would try every other decoder on a damaged file
    with open_image(path, formats=("PNG",), failure="cannot decode as PNG",
                    name=entry.file) as im:
        mode, image = im.mode, np.asarray(im)
    if mode != "L":
        raise GmmRestoreError(f"{entry.file}: PNG of mode {mode} ({image.dtype}, shape "
                              f"{image.shape}); expected 8-bit grayscale (mode L)")
    allowed = SET_SHAPES.get(entry.set)
    if allowed is not None and image.shape not in allowed:
        raise GmmRestoreError(
            f"{entry.file}: {image.shape[0]}x{image.shape[1]} pixels; {entry.set} images are "
            + " or ".join(f"{h}x{w}" for h, w in allowed))
    return image


def select_entries(entries: Sequence[ManifestEntry], names: Sequence[str] | None,
                   set_name: str) -> list[ManifestEntry]:
    """The entries named by ``names`` (ids or file names), in file order; all when None."""
    if names is None:
        return list(entries)
    by_name = {e.stem: e for e in entries} | {e.file: e for e in entries}
    unknown = [n for n in names if n not in by_name]
    if unknown:
        raise GmmRestoreError(
            f"{set_name}: no image named {', '.join(map(repr, unknown))}; ids are "
            f"{entries[0].stem} .. {entries[-1].stem}")
    chosen = {by_name[n].file: by_name[n] for n in names}
    if not chosen:
        raise GmmRestoreError(f"{set_name}: the list of test images is empty")
    return [chosen[f] for f in sorted(chosen)]


def fetch_set(entries: Sequence[ManifestEntry], cache_dir: str | os.PathLike,
              mirrors: Sequence[str], **fetch_kw: Any) -> tuple[list[np.ndarray], list[str]]:
    """Fetch, verify and decode ``entries`` into ``cache_dir/<set>/``.

    Returns the (H, W) uint8 images and, per file, where it came from (URL or cache path).
    The mirror that served a file is tried first for the next ones, so an unreachable
    mirror early in the list costs its retries once, not once per file.  ``fetch_kw`` go to
    :func:`gmmrestore.datasets.fetch_file`.
    """
    for mirror in mirrors:
        if is_local_mirror(mirror) and not os.path.isdir(os.path.expanduser(mirror)):
            log.warning("mirror %s: folder not found (expected a copy of the sets' layout, "
                        "%s/<set>/<file>)", mirror, mirror)
    order = list(mirrors)
    images, origins = [], []
    for entry in entries:
        bases = [mirror_folder_url(m, entry) for m in order]
        result = fetch_file(entry.file, entry.digest, bases,
                            os.path.join(os.fspath(cache_dir), entry.set),
                            validate=lambda path, e=entry: decode_png(path, e), **fetch_kw)
        images.append(result.payload)
        origins.append(result.url or f"cache {result.path}")
        served = [i for i, b in enumerate(bases) if result.url == f"{b}/{entry.file}"]
        if served:
            order.insert(0, order.pop(served[0]))
    return images, origins


def centre_crop(image: np.ndarray, size: int, name: str = "image") -> np.ndarray:
    """The central ``size x size`` part of (H, W) (top-left offset ``(H - size) // 2``)."""
    h, w = image.shape
    if not 1 <= size <= min(h, w):
        raise GmmRestoreError(f"{name}: crop {size} does not fit its {h}x{w} pixels")
    top, left = (h - size) // 2, (w - size) // 2
    return image[top:top + size, left:left + size]


def orient_landscape(images: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Stack images of one size up to orientation, portrait ones transposed.

    Parameters
    ----------
    images : sequence of (H_i, W_i), each (H, W) or (W, H) for one H <= W

    Returns
    -------
    stack : (n, H, W)
    transposed : (n,) bool, True where the image was transposed
    """
    shapes = {tuple(sorted(x.shape)) for x in images}
    if len(shapes) != 1:
        raise GmmRestoreError(f"images of sizes {sorted(shapes)} cannot share one stack "
                              "even after transposing; crop them to one size")
    transposed = np.array([x.shape[0] > x.shape[1] for x in images], dtype=bool)
    stack = np.stack([x.T if t else x for x, t in zip(images, transposed, strict=True)])
    return stack, transposed


def original_orientation(image: np.ndarray, transposed: bool) -> np.ndarray:
    """Undo :func:`orient_landscape` for one stored (H, W) image."""
    return image.T if transposed else image


def _unit(images: np.ndarray) -> np.ndarray:
    return images.astype(np.float32) / np.float32(255)


def _source_text(origins: Sequence[str], cache_dir: str | os.PathLike) -> str:
    downloaded = sorted({o.rsplit("/", 2)[0] + "/" for o in origins
                         if not o.startswith("cache ")})
    n_cached = sum(o.startswith("cache ") for o in origins)
    if not downloaded:
        return f"bsd cache {os.fspath(cache_dir)}"
    text = f"bsd download from {', '.join(downloaded)}"
    return text + (f" ({n_cached} of {len(origins)} files from cache)" if n_cached else "")


def load_bsd(cache_dir: str | os.PathLike, mirrors: Sequence[str] | None = None,
             selection: BsdSelection = BsdSelection(), *,
             manifest: dict[str, list[ManifestEntry]] | None = None,
             **fetch_kw: Any) -> Pools:
    """Pools of the natural-image sets: train pool ``selection.train_set``, test pool
    ``selection.test_set`` (whole images, portrait ones transposed; or centre crops).

    ``mirrors`` defaults to ``[UPSTREAM]``; ``manifest`` to :func:`load_manifest` (tests
    pass their own).  ``fetch_kw`` go to :func:`gmmrestore.datasets.fetch_file`.
    Raises :class:`gmmrestore.datasets.DownloadError` when a file cannot be obtained.
    """
    manifest = load_manifest() if manifest is None else manifest
    mirrors = [UPSTREAM] if not mirrors else list(mirrors)
    for set_name in (selection.train_set, selection.test_set):
        if set_name not in manifest:
            raise GmmRestoreError(f"bsd: unknown set {set_name!r}; known: "
                                  f"{', '.join(sorted(manifest))}")
    if selection.train_set == selection.test_set:
        raise GmmRestoreError(f"bsd: train_set and test_set are both {selection.train_set!r}")
    train_entries = manifest[selection.train_set]
    test_entries = select_entries(manifest[selection.test_set], selection.test_names,
                                  selection.test_set)
    train, train_origins = fetch_set(train_entries, cache_dir, mirrors, **fetch_kw)
    test, test_origins = fetch_set(test_entries, cache_dir, mirrors, **fetch_kw)
    if selection.crop is not None:
        test = [centre_crop(x, selection.crop, e.file) for x, e in zip(test, test_entries,
                                                                       strict=True)]
    train_stack, _ = orient_landscape(train)
    test_stack, transposed = orient_landscape(test)
    log.info("bsd: %d %s + %d %s images (%d transposed to %dx%d); %s", len(train),
             selection.train_set, len(test), selection.test_set, int(transposed.sum()),
             *test_stack.shape[1:], LICENCE)
    crop = ("whole images" if selection.crop is None
            else f"centre crops of {selection.crop}x{selection.crop}")
    return Pools(
        train=_unit(train_stack), test=_unit(test_stack),
        test_ids=[e.stem for e in test_entries], test_transposed=transposed,
        attrs={"dataset": "bsd", "source": _source_text(train_origins + test_origins,
                                                        cache_dir),
               "offline_fallback": False, "licence": LICENCE,
               "source_commit": BSD_COMMIT,
               "source_files": [f"{e.set}/{e.file}" for e in (*train_entries, *test_entries)],
               "sha256": [e.digest.sha256 for e in (*train_entries, *test_entries)],
               "split": f"{selection.train_set} -> train pool (train + validation), "
                        f"{selection.test_set} -> test pool ({crop}; portrait images "
                        f"stored transposed, flag test_transposed)"},
    )
