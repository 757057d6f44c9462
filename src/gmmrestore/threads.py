"""Worker threads for the batched numerical passes (EM passes, MAP-k patch blocks).

numpy's element-wise work runs on one core while a multi-threaded BLAS call runs on all, so
the passes split their data into blocks processed by worker threads, each with a
single-threaded BLAS.  Blocks are fixed by the data, never by the thread count, so results
do not depend on it.
"""

from __future__ import annotations

import collections
import concurrent.futures
import os
from collections.abc import Callable, Iterable, Iterator
from typing import Any

_CONTROLLER: list = []


def _blas_controller():
    """A cached threadpoolctl controller (building one inspects every loaded library)."""
    if not _CONTROLLER:
        from threadpoolctl import ThreadpoolController

        _CONTROLLER.append(ThreadpoolController())
    return _CONTROLLER[0]


def one_blas_thread():
    """Context manager: the BLAS libraries use a single thread inside."""
    return _blas_controller().limit(limits=1, user_api="blas")


def default_threads() -> int:
    """Worker threads for the passes over the data: as many as the BLAS would use (at most
    the CPUs this process may run on)."""
    try:
        n = max((int(i.get("num_threads") or 1) for i in _blas_controller().info()
                 if i.get("user_api") == "blas"), default=1)
    except Exception:  # threadpoolctl confused: no harm in one thread
        n = 1
    try:
        n = min(n, len(os.sched_getaffinity(0)))
    except AttributeError:
        pass
    return max(1, n)


def run_in_order(function: Callable[..., Any], tasks: Iterable[tuple], n_threads: int
                 ) -> Iterator[Any]:
    """Yield ``function(*task)`` for every task, in task order.

    With ``n_threads > 1`` the calls run in that many worker threads, each with a
    single-threaded BLAS, at most ``2 n_threads`` tasks ahead of the consumer (so a lazy
    ``tasks`` iterable, e.g. blocks read from a file, is not all read at once); otherwise
    they run in the calling thread with the BLAS as configured.
    """
    if n_threads <= 1:
        for task in tasks:
            yield function(*task)
        return
    with one_blas_thread(), \
            concurrent.futures.ThreadPoolExecutor(max_workers=n_threads) as pool:
        pending: collections.deque = collections.deque()
        for task in tasks:
            pending.append(pool.submit(function, *task))
            while len(pending) > 2 * n_threads:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()


def run_over_spans(function: Callable[[int, int], Any], n_items: int, span: int,
                   n_threads: int | None = None) -> Iterator[tuple[int, int, Any]]:
    """Yield ``(start, stop, function(start, stop))`` for consecutive spans of ``span``
    items covering ``range(n_items)``, in order, through :func:`run_in_order` with
    ``n_threads`` workers (default :func:`default_threads`).  A single span runs in the
    calling thread, keeping the BLAS's own threads for it.
    """
    spans = [(s, min(s + span, n_items)) for s in range(0, n_items, span)]
    n_threads = int(n_threads) if n_threads else default_threads()
    results = run_in_order(function, spans, n_threads if len(spans) > 1 else 1)
    for (start, stop), result in zip(spans, results, strict=True):
        yield start, stop, result
