"""Verified downloads: a loop over mirrors around ``pooch``, with retries, a deadline, progress.

:func:`fetch_file` returns a verified copy of one file in a cache folder.  ``pooch`` (the
downloader of SciPy and scikit-image) does the cache step of each transfer: it streams into a
temporary file in the cache folder, checks the pinned hash and only then moves the file to its
final name, removing the temporary file on any failure.  Ours around it: the loop over mirrors
(``http(s)://`` and ``file://`` URLs; :mod:`gmmrestore.datasets.bsd` turns a folder into a
``file://`` URL), which failures are worth a retry, the transfer itself (urllib with a timeout
per read, a deadline per file, progress lines and a Content-Length check), the size + MD5 +
SHA-256 check with messages that name the file and both values, and a content check
(``validate``) before a file is accepted.  Why the transfer is not pooch's
``HTTPDownloader``: docs/model.md, "Downloads".
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import logging
import os
import socket
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from ..h5io import GmmRestoreError

log = logging.getLogger("gmmrestore.datasets")


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


class CacheWriteError(GmmRestoreError):
    """The cache folder cannot take a download (permissions, missing disk): no mirror helps."""


@dataclass(frozen=True)
class FileDigest:
    """Expected size in bytes, MD5 and (when known) SHA-256 of a file, as hex strings."""

    size: int
    md5: str
    sha256: str | None = None

    @property
    def pooch_hash(self) -> str:
        """The strongest digest in pooch's ``"algorithm:hex"`` form."""
        return f"sha256:{self.sha256}" if self.sha256 else f"md5:{self.md5}"


# ---------------------------------------------------------------------------------------
# Verification
# ---------------------------------------------------------------------------------------

def file_digests(path: str | os.PathLike, chunk_size: int = 1 << 20) -> FileDigest:
    """Size, MD5 and SHA-256 of a file, read once in chunks."""
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
# One transfer: urllib stream with a deadline and progress lines
# ---------------------------------------------------------------------------------------

class _IncompleteTransfer(OSError):
    pass


class _DeadlineExceeded(OSError):
    """The whole transfer of one file took longer than its deadline (a trickling server)."""


def _join_url(base: str, name: str) -> str:
    return base if base.endswith("/" + name) else base.rstrip("/") + "/" + name


def _fmt_bytes(n: float) -> str:
    return f"{n / 1e6:.1f} MB" if n >= 1e5 else f"{n / 1e3:.1f} kB"


def _progress(name: str, done: int, total: int | None, elapsed: float) -> str:
    rate = done / max(elapsed, 1e-9)
    line = f"{name}: {_fmt_bytes(done)}"
    if total:
        line += f" of {_fmt_bytes(total)} ({100 * done / total:.0f}%)"
    line += f", {_fmt_bytes(rate)}/s"
    if total and rate > 0:
        line += f", about {(total - done) / rate:.0f} s left"
    return line


def _stream(url: str, fh, name: str, timeout: float, progress_interval: float,
            deadline: float | None = None) -> int:
    """Copy ``url`` into the open file ``fh``; return the byte count.

    ``timeout`` bounds each connection / read; ``deadline`` (seconds, optional) bounds the
    whole transfer, so a server that sends a byte every few seconds cannot keep it going
    forever.  A progress line is logged every ``progress_interval`` seconds.
    """
    start = last = time.monotonic()
    if deadline is not None:
        timeout = min(timeout, deadline)
    with urllib.request.urlopen(url, timeout=timeout) as resp:
        length = resp.headers.get("Content-Length")
        total = int(length) if length and length.isdigit() else None
        done = 0
        while chunk := resp.read1(1 << 16):  # what has arrived, not a full chunk
            fh.write(chunk)
            done += len(chunk)
            now = time.monotonic()
            if deadline is not None and now - start > deadline:
                share = f" of {total}" if total else ""
                raise _DeadlineExceeded(
                    f"not complete after the deadline of {deadline:g} s ({done}{share} bytes; "
                    "dataset.download_timeout_s)")
            if now - last >= progress_interval:
                log.info("%s", _progress(name, done, total, now - start))
                last = now
        if total is not None and done != total:
            raise _IncompleteTransfer(
                f"connection closed after {done} of {total} bytes (Content-Length)")
        elapsed = time.monotonic() - start
        if elapsed >= progress_interval:
            log.info("%s: %s in %.1f s (%s/s)", name, _fmt_bytes(done), elapsed,
                     _fmt_bytes(done / elapsed))
    return done


@dataclass
class _Job:
    """One file to fetch and how: what ``fetch_file`` was called with."""

    name: str
    expected: FileDigest
    cache_dir: str
    validate: Callable[[str], Any] | None
    retries: int
    backoff: float
    timeout: float
    progress_interval: float
    deadline: float | None
    sleep: Callable[[float], None]

    @property
    def target(self) -> str:
        return os.path.join(self.cache_dir, self.name)

    def check(self, path: str) -> Any:
        """Verify size and digests, then the content; return ``validate``'s payload."""
        verify_file(path, self.expected, self.name)
        return self.validate(path) if self.validate else None


class _Transfer:
    """A pooch downloader (``downloader(url, output_file, pooch)``): streams the URL into
    pooch's temporary file and checks it before pooch moves it into the cache."""

    def __init__(self, job: _Job):
        self.job = job
        self.started = False
        self.payload: Any = None

    def __call__(self, url: str, output_file: str, pooch: Any) -> None:
        self.started = True
        job = self.job
        with open(output_file, "wb") as fh:
            _stream(url, fh, job.name, job.timeout, job.progress_interval, job.deadline)
        os.chmod(output_file, 0o644)  # mkstemp creates 0600; cached data is not secret
        self.payload = job.check(output_file)


@contextlib.contextmanager
def _quiet_pooch(pooch: Any) -> Iterator[None]:
    """pooch logs every download at INFO to stderr; ours logs the same, with the attempt."""
    logger = pooch.get_logger()
    level = logger.level
    logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        logger.setLevel(level)


def _download(url: str, job: _Job) -> Any:
    """Fetch ``url`` into the cache through pooch; return the payload of ``job.check``."""
    import pooch  # only the data stage needs it (envs/data.yaml)

    transfer = _Transfer(job)
    try:
        with _quiet_pooch(pooch):
            # absolute: pooch would expand a leading ~ that os.makedirs took literally
            pooch.retrieve(url, known_hash=job.expected.pooch_hash, fname=job.name,
                           path=os.path.abspath(job.cache_dir), downloader=transfer)
    except OSError as err:
        if not transfer.started:  # pooch could not create its temporary file
            raise CacheWriteError(f"{job.cache_dir}: cannot store a download there "
                                  f"({err.strerror or err})") from None
        raise
    if not transfer.started:  # another process cached it meanwhile: check it like any cache
        return job.check(job.target)
    return transfer.payload


# ---------------------------------------------------------------------------------------
# The loop over mirrors, with retries
# ---------------------------------------------------------------------------------------

def _describe(err: BaseException) -> str:
    if isinstance(err, urllib.error.HTTPError):
        return f"HTTP {err.code} {err.reason}"
    if isinstance(err, urllib.error.URLError):
        return f"unreachable ({err.reason})"
    return f"{type(err).__name__}: {err}"


def _host_unknown(err: BaseException) -> bool:
    reason = getattr(err, "reason", err)
    return isinstance(reason, socket.gaierror) and reason.errno != socket.EAI_AGAIN


def _classify(err: BaseException) -> tuple[str, str]:
    """``(reason, action)`` of a failed attempt; action ``"integrity"`` (bad content: next
    mirror, no fallback), ``"next"`` (retrying will not help), ``"slow"`` (past the deadline)
    or ``"retry"``.  The order matters: GmmRestoreError is a ValueError, HTTPError an OSError."""
    if isinstance(err, GmmRestoreError):
        return str(err), "integrity"
    if isinstance(err, urllib.error.HTTPError):
        retry = not 400 <= err.code < 500 or err.code in (408, 429)
        return _describe(err), "retry" if retry else "next"
    if isinstance(err, _DeadlineExceeded):
        return str(err), "slow"
    if isinstance(err, ValueError):  # malformed URL, unknown scheme
        return f"invalid URL ({err})", "next"
    return _describe(err), "next" if _host_unknown(err) else "retry"


def _log_given_up(name: str, url: str, reason: str, action: str) -> None:
    if action == "integrity":
        log.error("%s from %s failed verification: %s", name, url, reason)
    elif action == "slow":  # a slow mirror stays slow: try the next one
        log.warning("%s: %s from %s; trying the next mirror", name, reason, url)
    else:
        log.warning("%s: %s from %s%s", name, reason, url,
                    "; giving up on this mirror" if action == "retry" else "")


def _try_mirror(url: str, job: _Job, failures: list[tuple[str, str]]
                ) -> tuple[bool, Any, bool]:
    """Up to ``retries + 1`` attempts at ``url``: ``(ok, payload, integrity_failure)``;
    each failure given up on is appended to ``failures`` as ``(url, reason)``."""
    attempts = job.retries + 1
    for attempt in range(attempts):
        log.info("%s: downloading from %s%s", job.name, url,
                 f" (attempt {attempt + 1} of {attempts})" if attempt else "")
        try:
            payload = _download(url, job)
        except CacheWriteError:
            raise
        except (OSError, ValueError, http.client.HTTPException) as err:
            reason, action = _classify(err)
        else:
            log.info("%s: verified (%d bytes, MD5 %s)", job.name, job.expected.size,
                     job.expected.md5)
            return True, payload, False
        if action == "retry" and attempt < job.retries:
            delay = job.backoff * 2 ** attempt
            log.warning("%s: %s from %s; retrying in %.2g s", job.name, reason, url, delay)
            job.sleep(delay)
            continue
        _log_given_up(job.name, url, reason, action)
        if action == "retry":
            reason += f" (after {attempts} attempts)"
        failures.append((url, reason))
        return False, None, action == "integrity"
    return False, None, False  # retries < 0: no attempt


@dataclass
class FetchResult:
    """Where a verified file is (``path``) and where it came from (``url`` or cache)."""

    path: str
    url: str | None
    from_cache: bool
    payload: Any = None


def _from_cache(job: _Job) -> FetchResult | None:
    """The cached file when it passes the checks; a bad one is removed."""
    if not os.path.exists(job.target):
        return None
    try:
        payload = job.check(job.target)
    except GmmRestoreError as err:
        log.warning("cached %s is not valid (%s); removing it and downloading again",
                    job.target, err)
        os.remove(job.target)
        return None
    log.info("%s: using verified cached copy %s", job.name, job.target)
    return FetchResult(job.target, None, True, payload)


def fetch_file(name: str, expected: FileDigest, mirrors: Sequence[str],
               cache_dir: str | os.PathLike, *,
               validate: Callable[[str], Any] | None = None,
               retries: int = 3, backoff: float = 1.0, timeout: float = 30.0,
               progress_interval: float = 2.0, deadline: float | None = None,
               sleep: Callable[[float], None] = time.sleep) -> FetchResult:
    """Return a verified copy of ``name`` in ``cache_dir``, downloading it if needed.

    A cached file is re-verified (size, digests, ``validate``) and used without any
    network access; a bad cached file is removed and fetched again.  Otherwise the
    mirrors are tried in order; each attempt streams into a temporary file in
    ``cache_dir``, which is verified and validated before it is renamed to
    ``cache_dir/name``.  Network errors and HTTP 5xx/408/429 are retried ``retries``
    times with delays ``backoff * 2**attempt``; other HTTP errors, files failing
    verification and transfers longer than ``deadline`` seconds (a trickling server)
    move on to the next mirror at once.

    Parameters
    ----------
    validate : callable(path) -> payload, optional
        Extra content check (e.g. :func:`gmmrestore.datasets.idx.read_idx_gz`); raises a
        :class:`GmmRestoreError` on bad content.  Its return value is ``payload``.

    Raises
    ------
    DownloadError
        Listing every URL tried and why it failed.
    CacheWriteError
        When ``cache_dir`` cannot take a file.
    """
    try:
        os.makedirs(cache_dir, exist_ok=True)
    except OSError as err:
        raise GmmRestoreError(f"{cache_dir}: cannot create the cache folder ({err})") from None
    job = _Job(name, expected, os.fspath(cache_dir), validate, retries, backoff, timeout,
               progress_interval, deadline, sleep)
    cached = _from_cache(job)
    if cached is not None:
        return cached
    failures: list[tuple[str, str]] = []
    integrity = False
    for mirror in mirrors:
        url = _join_url(mirror, name)
        ok, payload, bad_content = _try_mirror(url, job, failures)
        if ok:
            return FetchResult(job.target, url, False, payload)
        integrity = integrity or bad_content
    if not mirrors:
        failures.append(("<none>", "no mirror given"))
    lines = "\n".join(f"  - {url}: {why}" for url, why in failures)
    raise DownloadError(
        f"could not get {name} from any of {len(mirrors)} mirror(s); tried:\n{lines}",
        failures, integrity)
