"""Self-describing, atomically written HDF5 files.

Every file gmmrestore writes carries the root attributes ``kind`` (what the file
holds: ``dataset``, ``patches``, ``gmm``, ``corrupted``, ``restored``, ``kernel``...),
``format_version`` and ``gmmrestore_version``.  Files are written under a temporary
name in the target folder and renamed on success, so a crash or kill never leaves a
file that looks complete.  Readers check the kind, the version and the datasets
they need, and name the file and the problem when something is off.
"""

from __future__ import annotations

import contextlib
import errno
import glob
import os
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import h5py
import numpy as np

from . import FORMAT_VERSION, __version__

_UMASK = os.umask(0)
os.umask(_UMASK)


class GmmRestoreError(ValueError):
    """A user-facing error: bad input, bad file or bad setting, with a clear message."""


class H5FormatError(GmmRestoreError):
    """An HDF5 input file is missing, unreadable, of the wrong kind or incomplete."""


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[str]:
    """Yield a temporary path next to ``path``; rename it onto ``path`` on success.

    On any exception (including KeyboardInterrupt) the temporary file is removed and
    ``path`` is left untouched; temporary files of ``path`` left by a killed earlier write
    are removed first.
    """
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    prefix = f".{os.path.basename(path)}."
    # a process killed by SIGKILL while writing leaves its temporary file; a file has one
    # writer at a time (one job per output), so the next write of the same path removes it
    for stale in glob.glob(os.path.join(glob.escape(folder), glob.escape(prefix) + "*.tmp")):
        with contextlib.suppress(FileNotFoundError):
            os.remove(stale)
    try:
        fd, tmp = tempfile.mkstemp(prefix=prefix, suffix=".tmp", dir=folder)
    except OSError as err:
        if is_disk_full(err):
            raise DiskFullError(f"{path}: no space left on device; nothing written") from None
        raise GmmRestoreError(f"{path}: cannot be written ({err.strerror or err})") from None
    os.close(fd)
    try:
        yield tmp
        # mkstemp creates 0600; give the result the permissions a plain open() would.
        os.chmod(tmp, 0o666 & ~_UMASK)
        os.replace(tmp, path)
    except BaseException as err:
        with contextlib.suppress(FileNotFoundError):
            os.remove(tmp)
        if is_disk_full(err):
            raise DiskFullError(f"{path}: no space left on device; nothing written") from None
        raise


class DiskFullError(GmmRestoreError):
    """A write failed because the file system is full (or over quota)."""


def is_disk_full(err: BaseException) -> bool:
    """Whether ``err`` (an OSError, or the RuntimeError / OSError h5py raises with the HDF5
    library's message) says the file system is full or over quota."""
    if isinstance(err, DiskFullError):
        return True
    if isinstance(err, OSError) and err.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    text = str(err)
    return isinstance(err, (OSError, RuntimeError)) and (
        "No space left on device" in text or f"errno = {errno.ENOSPC}," in text
        or "Disk quota exceeded" in text)


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file and a rename."""
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as fh:
        fh.write(text)


def _clean_attr(value: Any) -> Any:
    if value is None:
        return "none"
    if isinstance(value, (list, tuple)):
        arr = np.asarray(value)
        return arr.astype(str).astype(object) if arr.dtype.kind in "UO" else arr
    if isinstance(value, dict):
        import json

        return json.dumps(value, sort_keys=True)
    return value


def write_h5(
    path: str | os.PathLike,
    kind: str,
    datasets: Mapping[str, np.ndarray],
    attrs: Mapping[str, Any] | None = None,
    dataset_attrs: Mapping[str, Mapping[str, Any]] | None = None,
    compress: bool = True,
) -> None:
    """Write arrays and attributes to ``path`` atomically.

    Parameters
    ----------
    kind : str
        What the file holds; checked by :func:`read_h5`.
    datasets : mapping name -> array
        Arrays of two or more dimensions are chunked and gzip-compressed.
    attrs : mapping
        Root attributes (parameters, seed, source...).  ``None`` values are stored
        as the string ``"none"``, dicts as JSON.
    dataset_attrs : mapping name -> mapping
        Attributes of individual datasets (units, shapes, meaning).
    """
    with atomic_path(path) as tmp, _h5_writing(tmp) as fh:
            fh.attrs["kind"] = kind
            fh.attrs["format_version"] = FORMAT_VERSION
            fh.attrs["gmmrestore_version"] = __version__
            for key, value in (attrs or {}).items():
                fh.attrs[key] = _clean_attr(value)
            for name, array in datasets.items():
                array = np.asarray(array)
                options = {}
                if compress and array.ndim >= 2 and array.size >= 1024:
                    options = {"compression": "gzip", "compression_opts": 4, "shuffle": True,
                               "chunks": True}
                dset = fh.create_dataset(name, data=array, **options)
                dset.attrs["shape"] = np.asarray(array.shape, dtype=np.int64)
                for key, value in ((dataset_attrs or {}).get(name) or {}).items():
                    dset.attrs[key] = _clean_attr(value)
                # write it out now: a write error (disk full) must surface here, not when
                # the dataset object is garbage-collected, where HDF5 cannot recover
                fh.flush()


@contextlib.contextmanager
def _h5_writing(tmp: str) -> Iterator[h5py.File]:
    """``h5py.File(tmp, "w")`` that is closed for good even when a write or the final flush
    fails (disk full): the HDF5 library would otherwise retry the flush when the object is
    garbage-collected, print tracebacks after the error line, and may crash the process."""
    fh = h5py.File(tmp, "w")
    try:
        yield fh
        fh.flush()  # a failed flush can be recovered from; a failed close crashes HDF5 2.0
        fh.close()
    except BaseException:
        _abandon(fh)
        raise


def _abandon(fh: h5py.File) -> None:
    """Close a file whose writes failed, its pending writes sent to an anonymous in-memory
    file (the caller removes the temporary file)."""
    with contextlib.suppress(Exception):
        if not fh.id.valid:
            return
        fd = fh.id.get_vfd_handle()
        # an anonymous in-memory file (sparse; HDF5 may extend it on close) where available
        sink = (os.memfd_create("gmmrestore-abandoned") if hasattr(os, "memfd_create")
                else os.open(os.devnull, os.O_WRONLY))
        try:
            os.dup2(sink, fd)
        finally:
            os.close(sink)
    with contextlib.suppress(Exception):
        fh.close()


def _decode(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.decode()
    if isinstance(value, np.ndarray) and value.dtype.kind in "OS":
        return [v.decode() if isinstance(v, bytes) else v for v in value.tolist()]
    if isinstance(value, np.generic):
        return value.item()
    return value


def open_h5(path: str | os.PathLike, kind: str | Sequence[str],
            required: Sequence[str] = ()) -> h5py.File:
    """Open a gmmrestore HDF5 file for reading after checking kind, version and datasets.

    The caller closes the returned file (use it as a context manager).
    """
    path = os.fspath(path)
    kinds = (kind,) if isinstance(kind, str) else tuple(kind)
    if not os.path.exists(path):
        raise H5FormatError(f"{path}: file not found (expected a '{kinds[0]}' HDF5 file)")
    try:
        fh = h5py.File(path, "r")
    except OSError as err:
        raise H5FormatError(
            f"{path}: not a readable HDF5 file (truncated or corrupt?): {err}") from None
    try:
        found_kind = _decode(fh.attrs.get("kind", "<missing>"))
        if found_kind not in kinds:
            raise H5FormatError(
                f"{path}: holds kind '{found_kind}', expected {' or '.join(kinds)}")
        version = _decode(fh.attrs.get("format_version", -1))
        if version != FORMAT_VERSION:
            raise H5FormatError(
                f"{path}: format_version {version}, this gmmrestore reads version "
                f"{FORMAT_VERSION}; re-create the file with this version")
        missing = [name for name in required if name not in fh]
        if missing:
            raise H5FormatError(
                f"{path}: missing dataset(s) {', '.join(missing)} "
                f"(present: {', '.join(sorted(fh.keys())) or 'none'})")
    except BaseException:
        fh.close()
        raise
    return fh


def read_dataset(dset: h5py.Dataset, selection: Any = ()) -> np.ndarray:
    """``dset[selection]``; a read failure (truncated or corrupt file) becomes an
    :class:`H5FormatError` naming the file, the dataset and the rows."""
    try:
        return dset[selection]
    except (OSError, RuntimeError) as err:
        rows = "" if selection == () else f" rows {_describe_selection(selection)}"
        raise H5FormatError(
            f"{dset.file.filename}: could not read dataset '{dset.name}'{rows} (truncated or "
            f"corrupt?): {err}") from None


def _describe_selection(selection: Any) -> str:
    if isinstance(selection, slice):
        return f"{selection.start or 0}:{selection.stop}"
    return f"{len(selection)} chosen" if hasattr(selection, "__len__") else str(selection)


def read_h5(path: str | os.PathLike, kind: str | Sequence[str],
            required: Sequence[str] = (), only: Sequence[str] | None = None
            ) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Read all datasets (or, with ``only``, just those of ``only`` that exist, plus the
    ``required`` ones) and the root attributes of a gmmrestore HDF5 file.

    Returns ``(arrays, attrs)``; raises :class:`H5FormatError` naming the file and the
    problem when the file is missing, unreadable, of another kind or version, or lacks
    one of the ``required`` datasets.
    """
    wanted = None if only is None else set(only) | set(required)
    with open_h5(path, kind, required) as fh:
        arrays = {name: read_dataset(fh[name]) for name in fh.keys()
                  if isinstance(fh[name], h5py.Dataset)
                  and (wanted is None or name in wanted)}
        attrs = {key: _decode(value) for key, value in fh.attrs.items()}
    return arrays, attrs
