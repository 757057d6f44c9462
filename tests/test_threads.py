"""The worker-thread dispatchers: every task once, results in task order."""

import threading

import pytest

from gmmrestore.threads import run_in_order, run_over_spans


@pytest.mark.parametrize("n_threads", [1, 2, 3])
def test_run_in_order_keeps_task_order(n_threads):
    tasks = ((i, i * i) for i in range(20))  # lazy, as the EM passes give them
    assert list(run_in_order(lambda a, b: a + b, tasks, n_threads)) == [
        i + i * i for i in range(20)]


@pytest.mark.parametrize("n_threads", [None, 1, 2, 3])
@pytest.mark.parametrize(("n_items", "span"), [(0, 4), (3, 4), (8, 4), (10, 4)])
def test_run_over_spans_covers_the_items_in_order(n_items, span, n_threads):
    got = list(run_over_spans(lambda a, b: list(range(a, b)), n_items, span, n_threads))
    assert [(a, b) for a, b, _ in got] == [(s, min(s + span, n_items))
                                          for s in range(0, n_items, span)]
    assert [i for _, _, items in got for i in items] == list(range(n_items))


def test_run_over_spans_runs_a_single_span_in_the_calling_thread():
    caller = threading.get_ident()
    (_, _, ident), = run_over_spans(lambda a, b: threading.get_ident(), 5, 8, n_threads=4)
    assert ident == caller
