"""Shared command-line plumbing for the scripts in ``scripts/``."""

from __future__ import annotations

import argparse
import errno
import logging
import os
import signal
import sys
import threading
import traceback
from collections.abc import Callable, Sequence

from .h5io import GmmRestoreError, is_disk_full

log = logging.getLogger("gmmrestore")


def make_parser(description: str) -> argparse.ArgumentParser:
    """An ArgumentParser with the options every stage shares (``--quiet``)."""
    parser = argparse.ArgumentParser(
        description=description, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--quiet", action="store_true", help="only print warnings and errors")
    return parser


def setup_logging(quiet: bool = False) -> None:
    logging.basicConfig(
        level=logging.WARNING if quiet else logging.INFO,
        format="%(asctime)s %(name)s %(levelname)s: %(message)s",
        datefmt="%H:%M:%S",
        stream=sys.stderr,
        force=True,
    )
    logging.captureWarnings(True)


class Terminated(BaseException):
    """Raised in the main thread when the process receives SIGTERM (as Snakemake sends to the
    jobs it cancels), so that temporary files are removed on the way out."""


def _terminate(signum, frame) -> None:
    raise Terminated(signum)


def one_line(text: str) -> str:
    """``text`` with its lines joined by '; ', so that an ``error:`` line stays the last line
    of a log."""
    return "; ".join(line.strip() for line in str(text).splitlines() if line.strip())


def describe_error(err: BaseException, stage: str) -> str:
    """``<file or stage>: <reason>`` for an exception a stage did not expect: an OSError
    names its file and the system's reason (disk full: 'no space left on device'), an HDF5
    library error its message, anything else the stage and the exception type."""
    if is_disk_full(err):
        where = getattr(err, "filename", None) or stage
        return f"{where}: no space left on device"
    if isinstance(err, OSError):
        where = err.filename or stage
        if err.filename2:
            where = f"{where} -> {err.filename2}"
        reason = err.strerror or (errno.errorcode.get(err.errno or 0)) or str(err)
        return f"{where}: {reason}"
    return f"{stage}: {type(err).__name__}: {err}"


def run(main: Callable[[Sequence[str] | None], None], argv: Sequence[str] | None = None) -> int:
    """Run a stage's ``main``; every error ends the log with one ``error: ...`` line, exit 2.

    User errors (:class:`GmmRestoreError`) print their message; OS errors (disk full,
    permissions, symlink loops) and HDF5 library errors print ``error: <file>: <reason>``;
    any other exception (a bug) prints its traceback first, then ``error: <stage>: ...``.
    Ctrl-C exits with 130 and SIGTERM with 143, after the temporary files of unfinished
    outputs are removed (outputs are only ever renamed into place when complete).
    """
    in_main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _terminate) if in_main_thread else None
    stage = os.path.basename(getattr(sys.modules.get(main.__module__), "__file__", None)
                             or main.__module__)
    try:
        main(argv)
    except GmmRestoreError as err:
        print(f"error: {one_line(err)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; no output was written", file=sys.stderr)
        return 130
    except Terminated:
        print("terminated (SIGTERM); no output was written", file=sys.stderr)
        return 128 + signal.SIGTERM
    except (OSError, RuntimeError, MemoryError) as err:
        # disk full, permissions, symlink loops, h5py's RuntimeErrors: no traceback
        print(f"error: {one_line(describe_error(err, stage))}", file=sys.stderr)
        return 2
    except Exception as err:  # a bug: keep its traceback, end with the error line
        traceback.print_exc(file=sys.stderr)
        print(f"error: {one_line(describe_error(err, stage))}", file=sys.stderr)
        return 2
    finally:
        if in_main_thread:
            signal.signal(signal.SIGTERM, previous)
    return 0
