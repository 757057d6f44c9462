"""The IDX format of MNIST-style files: parsing and checking gzip-compressed IDX files."""

from __future__ import annotations

import gzip
import os
import zlib

import numpy as np

from ..h5io import GmmRestoreError


class IdxFormatError(GmmRestoreError):
    """A file is not gzip, or its IDX header or payload is wrong."""


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
