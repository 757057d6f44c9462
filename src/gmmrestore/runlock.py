"""One run at a time per results folder: an advisory lock file held for the whole run.

Snakemake locks its working directory, not the outputs: two working directories (or two
users) writing the same ``results_dir`` would delete each other's files.  :func:`acquire`
takes an exclusive ``flock`` on ``<results_dir>/.gmmrestore.lock`` and keeps it until the
process ends (success, failure, Ctrl-C or kill: the kernel releases it, so a lock left by a
killed run is never stale); the file records who holds it, for the message another run
prints.
"""

from __future__ import annotations

import datetime
import fcntl
import json
import logging
import os
import socket

from .h5io import GmmRestoreError

log = logging.getLogger("gmmrestore.runlock")

LOCK_NAME = ".gmmrestore.lock"
_held: dict[str, int] = {}  # lock path -> open descriptor, kept until the process ends


class ResultsFolderBusy(GmmRestoreError):
    """Another run holds the results folder's lock."""


def _holder(fd: int) -> str:
    try:
        os.lseek(fd, 0, os.SEEK_SET)
        info = json.loads(os.read(fd, 4096).decode() or "{}")
    except (OSError, ValueError):
        info = {}
    if not info:
        return "another run"
    return (f"the run of process {info.get('pid')} on {info.get('host')} (working directory "
            f"{info.get('cwd')}, started {info.get('started')})")


def acquire(results_dir: str) -> str:
    """Lock ``results_dir`` for this process (created if needed); return the lock file's
    path.  Calling it again in the same process is a no-op.

    Raises
    ------
    ResultsFolderBusy
        One line naming the folder and the run that holds it.
    """
    os.makedirs(results_dir, exist_ok=True)
    path = os.path.join(results_dir, LOCK_NAME)
    key = os.path.realpath(path)
    if key in _held:
        return path
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = _holder(fd)
        os.close(fd)
        raise ResultsFolderBusy(
            f"results_dir '{results_dir}' is in use by {holder}; wait for it to finish or "
            "set another results_dir (two runs writing one results folder would delete each "
            "other's files)") from None
    except OSError as err:  # a file system without locks (some network mounts)
        os.close(fd)
        log.warning("%s: cannot lock (%s); running without the results-folder lock", path,
                    err.strerror or err)
        return path
    info = {"pid": os.getpid(), "host": socket.gethostname(), "cwd": os.getcwd(),
            "started": datetime.datetime.now().isoformat(timespec="seconds")}
    os.ftruncate(fd, 0)
    os.pwrite(fd, json.dumps(info).encode(), 0)
    _held[key] = fd
    return path


def release(results_dir: str) -> None:
    """Release this process's lock on ``results_dir`` (process exit does it too)."""
    fd = _held.pop(os.path.realpath(os.path.join(results_dir, LOCK_NAME)), None)
    if fd is not None:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)
