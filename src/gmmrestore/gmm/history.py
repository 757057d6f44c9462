"""What happened during a fit: :class:`FitHistory`, filled in as EM runs."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np


def _empty() -> np.ndarray:
    return np.empty(0, dtype=np.float64)


@dataclass
class FitHistory:
    """What happened during :func:`~gmmrestore.gmm.fit_gmm` (for the run that was kept).

    Attributes
    ----------
    loglik_train : (n_iter,)
        Mean training log-likelihood of the model after each iteration (last = returned model).
    loglik_heldout : (n_iter,) or (0,)
        The same on the held-out patches (empty when none were given).
    loglik_init, loglik_init_heldout : float
        Mean log-likelihood of the initial model (``nan`` held-out when none given).
    converged : bool
        Whether the relative change fell below ``tol`` before ``max_iter``.
    reseeded : list of (iteration, component)
        Components re-seeded after the M-step of that iteration.
    n_init : int
        Restarts run; ``best_init`` is the index of the one kept (highest final log-likelihood).
    final_loglik_all_inits : list of float
        Final mean training log-likelihood of each restart.
    timing : dict
        ``init_seconds`` (initialisation and first E-step), ``iteration_seconds`` (list, one per
        iteration of the kept run), ``total_seconds`` (whole call), ``streamed``.
    settings : dict
        The fit settings (seed, reg_covar, tol, ...) stored as attributes by
        :func:`~gmmrestore.gmm.save_gmm`.
    """

    loglik_train: np.ndarray = field(default_factory=_empty)
    loglik_heldout: np.ndarray = field(default_factory=_empty)
    loglik_init: float = float("nan")
    loglik_init_heldout: float = float("nan")
    converged: bool = False
    reseeded: list[tuple[int, int]] = field(default_factory=list)
    n_init: int = 1
    best_init: int = 0
    final_loglik_all_inits: list[float] = field(default_factory=list)
    timing: dict[str, Any] = field(default_factory=lambda: {"init_seconds": 0.0,
                                                             "iteration_seconds": []})
    settings: dict[str, Any] = field(default_factory=dict)

    @property
    def n_iter(self) -> int:
        """EM iterations (M-steps) performed."""
        return len(self.loglik_train)

    @property
    def last_loglik(self) -> float:
        """Mean training log-likelihood of the current model (the initial one before any
        iteration)."""
        return float(self.loglik_train[-1]) if self.n_iter else self.loglik_init

    def done(self, max_iter: int) -> bool:
        """Whether this run has ended (converged, or ``max_iter`` iterations run)."""
        return self.converged or self.n_iter >= max_iter

    def add_iteration(self, loglik: float, loglik_heldout: float | None, seconds: float,
                      reseeded: list[tuple[int, int]], converged: bool) -> None:
        """Record one iteration (``loglik_heldout`` None without held-out patches)."""
        self.loglik_train = np.append(self.loglik_train, loglik)
        if loglik_heldout is not None:
            self.loglik_heldout = np.append(self.loglik_heldout, loglik_heldout)
        self.reseeded.extend(reseeded)
        self.converged = converged
        self.timing["iteration_seconds"].append(seconds)

    def to_state(self) -> dict[str, Any]:
        """The progress of a run as JSON-ready values (a checkpoint's ``hist``)."""
        return {"loglik_train": self.loglik_train.tolist(),
                "loglik_heldout": self.loglik_heldout.tolist(),
                "loglik_init": self.loglik_init, "loglik_init_heldout": self.loglik_init_heldout,
                "converged": self.converged, "reseeded": [list(p) for p in self.reseeded],
                "iteration_seconds": list(self.timing["iteration_seconds"]),
                "init_seconds": self.timing["init_seconds"]}

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> FitHistory:
        """The inverse of :meth:`to_state`."""
        return cls(loglik_train=np.asarray(state["loglik_train"], dtype=np.float64),
                   loglik_heldout=np.asarray(state["loglik_heldout"], dtype=np.float64),
                   loglik_init=float(state["loglik_init"]),
                   loglik_init_heldout=float(state["loglik_init_heldout"]),
                   converged=bool(state["converged"]),
                   reseeded=[(int(i), int(k)) for i, k in state["reseeded"]],
                   timing={"init_seconds": float(state["init_seconds"]),
                           "iteration_seconds": [float(s) for s in
                                                 state["iteration_seconds"]]})
