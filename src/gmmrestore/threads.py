"""Worker threads for the batched numerical passes (EM passes, MAP-k patch blocks).

numpy's element-wise work runs on one core while a multi-threaded BLAS call runs on all, so
the passes split their data into blocks processed by worker threads, each with a
single-threaded BLAS.  Blocks are fixed by the data, never by the thread count, so results
do not depend on it.
"""

from __future__ import annotations

import os

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
