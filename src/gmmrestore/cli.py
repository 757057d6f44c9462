"""Shared command-line plumbing for the scripts in ``scripts/``."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from collections.abc import Callable, Sequence

from .h5io import GmmRestoreError

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


def run(main: Callable[[Sequence[str] | None], None], argv: Sequence[str] | None = None) -> int:
    """Run a stage's ``main``; user errors print ``error: ...`` and exit with status 2.

    Ctrl-C exits with 130 and SIGTERM with 143, after the temporary files of unfinished
    outputs are removed (outputs are only ever renamed into place when complete).
    """
    in_main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _terminate) if in_main_thread else None
    try:
        main(argv)
    except GmmRestoreError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; no output was written", file=sys.stderr)
        return 130
    except Terminated:
        print("terminated (SIGTERM); no output was written", file=sys.stderr)
        return 128 + signal.SIGTERM
    finally:
        if in_main_thread:
            signal.signal(signal.SIGTERM, previous)
    return 0
