"""The EM driver :func:`fit_gmm`: restarts, iterations, convergence, checkpoints.

One *iteration* is an M-step followed by the E-step of the new parameters, so
``history.loglik_train[i]`` is the mean log-likelihood of the model after ``i + 1`` iterations
and ``history.loglik_train[-1]`` is that of the returned model (``history.loglik_init`` is the
initial model's).
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any

import h5py
import numpy as np

from ..h5io import GmmRestoreError
from ..threads import default_threads
from .blocks import Blocks, describe, in_memory_if_fits
from .checkpoint import CheckpointStore, FitState, fingerprint
from .history import FitHistory
from .init import check_components, initialise
from .model import GaussianMixture, cholesky_ok, valid_weights
from .mstep import m_step
from .passes import PassResult, Prepared, mean_loglik, run_pass
from .settings import EMSettings, check_count

log = logging.getLogger("gmmrestore.gmm")

Callback = Callable[[int, int, GaussianMixture, float], None]


@dataclass(frozen=True)
class _Problem:
    """The checked inputs of one fit."""

    blocks: Blocks                 # training patches (N, d)
    held: Blocks | None            # held-out patches (N_held, d)
    K: int
    settings: EMSettings           # n_init is 1 when starting from given parameters
    start: GaussianMixture | None  # given initial parameters
    record: dict[str, Any]         # FitHistory.settings
    n_threads: int
    streamed: bool                 # training patches streamed from an HDF5 file


def fit_gmm(X: Any, n_components: int, settings: EMSettings | None = None, *,
            heldout: Any = None, init_params: Any = None,
            checkpoint_path: str | os.PathLike | None = None,
            callback: Callback | None = None, n_threads: int | None = None,
            **overrides: Any) -> tuple[GaussianMixture, FitHistory]:
    """Fit a full-covariance Gaussian mixture by EM.

    Parameters
    ----------
    X : (n_samples, n_features) array or h5py.Dataset
        Training patches.  An HDF5 dataset is streamed block by block unless it fits in
        ``settings.memory_budget_mb`` (then it is loaded once).
    n_components : int
        K, at most ``n_samples``.
    settings : EMSettings, optional
        Iterations, tolerance, regularisation, initialisation, restarts, seed, precision,
        block size, DC removal, memory budget (default: ``EMSettings()``).
    heldout : (n_heldout, n_features) array or h5py.Dataset, optional
        Scored after every iteration.
    init_params : GaussianMixture, mapping or (weights, means, covariances), optional
        Start from these parameters instead of ``settings.init`` (then ``n_init`` is 1).
    checkpoint_path : path, optional
        State written atomically after every iteration; a later call with the same arguments
        and data resumes from it and returns the same result as an uninterrupted fit.
    callback : callable(run, iteration, gmm, loglik_train), optional
        Called after every iteration (after the checkpoint).
    n_threads : int, optional
        Worker threads of the passes over the data, each with a single-threaded BLAS
        (default: the BLAS thread count, see :func:`~gmmrestore.threads.default_threads`).
        The result does not depend on it.
    **overrides
        Fields of :class:`EMSettings` replacing those of ``settings``
        (``fit_gmm(X, K, max_iter=5)`` is ``fit_gmm(X, K, EMSettings(max_iter=5))``).

    Returns
    -------
    gmm : GaussianMixture
        K components of dimension n_features.
    history : FitHistory
    """
    t_start = time.perf_counter()
    p = _problem(X, n_components, EMSettings.of(settings, overrides), heldout, init_params,
                 n_threads)
    store = _checkpoint_store(p, checkpoint_path)
    resumed = store.load()
    state = resumed or FitState()
    first_run = 0
    if resumed is not None:
        first_run = resumed.run + (1 if resumed.hist.done(p.settings.max_iter) else 0)
    for run in range(first_run, p.settings.n_init):
        resume = resumed is not None and resumed.run == run
        _fit_run(p, state, store, run, resume, callback)
    return state.best, _final_history(p, state, t_start)


def _problem(X: Any, n_components: int, settings: EMSettings, heldout: Any,
             init_params: Any, n_threads: int | None) -> _Problem:
    """Check the inputs of :func:`fit_gmm`; the patches as blocks (loaded if they fit)."""
    check_count("n_components", n_components)
    K = int(n_components)
    dtype = settings.np_dtype
    source = describe(X)
    X = in_memory_if_fits(X, dtype, settings.memory_budget_mb, "training patches")
    blocks = Blocks(X, dtype, settings.remove_dc, settings.chunk_size, name="training patches")
    check_components(K, blocks)
    streamed = isinstance(X, h5py.Dataset)
    if not streamed:
        bad = int(np.count_nonzero(~np.isfinite(blocks.data)))
        if bad:
            raise GmmRestoreError(f"training patches ({source}) contain {bad} NaN/Inf "
                                  "value(s)")
    held = None
    if heldout is not None:
        heldout = in_memory_if_fits(heldout, dtype, settings.memory_budget_mb,
                                    "held-out patches")
        held = Blocks(heldout, dtype, settings.remove_dc, settings.chunk_size,
                      name="held-out patches")
        if held.n_features != blocks.n_features:
            raise GmmRestoreError(f"held-out patches have {held.n_features} features, "
                                  f"training patches {blocks.n_features}")
    start = None
    if init_params is not None:
        start = _as_mixture(init_params, K, blocks.n_features)
        if settings.remove_dc and np.any(start.means != 0):
            raise GmmRestoreError("init_params: remove_dc=True needs zero means")
        settings = replace(settings, n_init=1)
    return _Problem(blocks, held, K, settings, start, settings.record(K, start is not None),
                    int(n_threads) if n_threads else default_threads(), streamed)


def _as_mixture(init_params: Any, K: int, d: int) -> GaussianMixture:
    """``init_params`` (a mixture, a mapping or a triplet) as a float64 mixture of K
    components of dimension d, checked."""
    if isinstance(init_params, GaussianMixture):
        gmm = init_params
    elif isinstance(init_params, Mapping):
        try:
            gmm = GaussianMixture(*(np.asarray(init_params[k], dtype=np.float64)
                                    for k in ("weights", "means", "covariances")))
        except KeyError as err:
            raise GmmRestoreError(f"init_params: missing key {err}; expected weights, means, "
                                  "covariances") from None
    else:
        gmm = GaussianMixture(*(np.asarray(a, dtype=np.float64) for a in init_params))
    if gmm.n_components != K or gmm.n_features != d:
        raise GmmRestoreError(f"init_params: {gmm.n_components} components of dimension "
                              f"{gmm.n_features}, expected K={K}, d={d}")
    if not valid_weights(gmm.weights):
        raise GmmRestoreError("init_params: weights must be non-negative and sum to 1")
    if not np.all(cholesky_ok(gmm.covariances)):
        raise GmmRestoreError("init_params: covariances must be symmetric positive definite")
    return GaussianMixture(gmm.weights.astype(np.float64), gmm.means.astype(np.float64),
                           gmm.covariances.astype(np.float64))


def _checkpoint_store(p: _Problem, path: str | os.PathLike | None) -> CheckpointStore:
    """The checkpoint of this fit (its fingerprint: settings, data, starting mixture)."""
    if path is None:
        return CheckpointStore(None, "")
    return CheckpointStore(path, fingerprint(
        p.record, p.blocks.signature(), p.held.signature() if p.held is not None else None,
        p.start))


def _fit_run(p: _Problem, state: FitState, store: CheckpointStore, run: int, resume: bool,
             callback: Callback | None) -> None:
    """Restart ``run``, from its initial mixture (or where ``state`` left it) to its end."""
    t_run = time.perf_counter()
    s = p.settings
    if resume:
        gmm, hist = state.current, state.hist
        log.info("restart %d/%d: resumed after %d iterations", run + 1, s.n_init, hist.n_iter)
    else:
        gmm, hist = _initial_mixture(p, run), FitHistory()
    state.run, state.current, state.hist = run, gmm, hist
    prep = Prepared(gmm, s.np_dtype)
    res = run_pass(p.blocks, prep, stats=True, n_worst=p.K, n_threads=p.n_threads)
    if not resume:
        _record_start(p, hist, res, prep, t_run, run)
        store.save(state)
    while not hist.done(s.max_iter):
        gmm, prep, res = _iteration(p, hist, prep, res)
        state.current = gmm
        if hist.done(s.max_iter):
            state.end_run()
        store.save(state)
        if callback is not None:
            callback(run, hist.n_iter, gmm, hist.last_loglik)
    if hist.converged:
        log.info("restart %d/%d converged after %d iterations", run + 1, s.n_init, hist.n_iter)


def _initial_mixture(p: _Problem, run: int) -> GaussianMixture:
    """The given parameters, or the initialisation of restart ``run``."""
    if p.start is not None:
        return p.start
    s = p.settings
    rng = np.random.default_rng([int(s.seed), run])
    return initialise(p.blocks, p.K, s.init, s.reg_covar, rng, s.remove_dc)


def _record_start(p: _Problem, hist: FitHistory, res: PassResult, prep: Prepared,
                  t_run: float, run: int) -> None:
    """The initial model's log-likelihoods (from ``res`` and the held-out patches)."""
    hist.loglik_init = res.mean_loglik
    if p.held is not None:
        hist.loglik_init_heldout = mean_loglik(p.held, prep, p.n_threads)
    hist.timing["init_seconds"] = time.perf_counter() - t_run
    log.info("restart %d/%d: initial mean log-likelihood %.6f%s (%.2f s)", run + 1,
             p.settings.n_init, hist.loglik_init, _held_msg(hist.loglik_init_heldout),
             hist.timing["init_seconds"])


def _iteration(p: _Problem, hist: FitHistory, prep: Prepared, res: PassResult
               ) -> tuple[GaussianMixture, Prepared, PassResult]:
    """One EM iteration from the statistics ``res`` of mixture ``prep``: M-step, then the
    E-step of the new mixture (with statistics unless it is the last), recorded in ``hist``."""
    s = p.settings
    t_it = time.perf_counter()
    it = hist.n_iter + 1
    gmm, bad = m_step(res, prep, s.reg_covar, s.remove_dc, it)
    prep = Prepared(gmm, s.np_dtype)
    last = it >= s.max_iter
    res = run_pass(p.blocks, prep, stats=not last, n_worst=0 if last else p.K,
                   n_threads=p.n_threads)
    ll = res.mean_loglik
    held_ll = mean_loglik(p.held, prep, p.n_threads) if p.held is not None else None
    prev = hist.last_loglik
    change = (ll - prev) / max(abs(prev), 1.0)
    if change < -1e-9 and not bad:
        log.warning("EM iteration %d: mean log-likelihood decreased by %.3g (relative)",
                    it, -change)
    converged = abs(change) < s.tol and not bad
    seconds = time.perf_counter() - t_it
    hist.add_iteration(ll, held_ll, seconds, [(it, k) for k in bad], converged)
    log.info("EM iteration %d/%d: train mean loglik %.6f%s change %+.3e (%.2f s)", it,
             s.max_iter, ll, _held_msg(held_ll), change, seconds)
    return gmm, prep, res


def _final_history(p: _Problem, state: FitState, t_start: float) -> FitHistory:
    """The history of the kept restart, with what the whole call did."""
    h = state.best_hist
    return replace(
        h, n_init=int(p.settings.n_init), best_init=int(state.best_run),
        final_loglik_all_inits=[float(v) for v in state.all_final],
        timing={"init_seconds": float(h.timing["init_seconds"]),
                "iteration_seconds": [float(s) for s in h.timing["iteration_seconds"]],
                "total_seconds": time.perf_counter() - t_start, "streamed": p.streamed},
        settings=p.record)


def _held_msg(value: float | None) -> str:
    return "" if value is None or not math.isfinite(value) else f", held-out {value:.6f}"
