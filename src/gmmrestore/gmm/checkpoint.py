"""Where a fit is (:class:`FitState`) and the checkpoint file that keeps it between calls.

A checkpoint is an HDF5 file of kind ``gmm_checkpoint``: the mixtures as groups
(``current``, ``best``), everything else JSON in root attributes, and a ``fingerprint`` of
the settings and data it belongs to.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import dataclass, field
from typing import Any

import h5py
import numpy as np

from ..h5io import GmmRestoreError, open_h5, write_h5
from .history import FitHistory
from .model import GaussianMixture

log = logging.getLogger("gmmrestore.gmm")

_CHECKPOINT_KIND = "gmm_checkpoint"


@dataclass
class FitState:
    """The restart ``run`` in progress (its mixture and history) and the restarts ended so far:
    their final log-likelihoods and the best of them."""

    run: int = 0
    current: GaussianMixture | None = None
    hist: FitHistory | None = None
    all_final: list[float] = field(default_factory=list)
    best: GaussianMixture | None = None
    best_hist: FitHistory | None = None
    best_run: int = -1

    def end_run(self) -> None:
        """The current restart has ended: keep it if its final log-likelihood is the best."""
        ll = self.hist.last_loglik
        self.all_final.append(ll)
        if self.best is None or ll > self.best_hist.last_loglik:
            self.best, self.best_hist, self.best_run = self.current, self.hist, self.run

    def to_payload(self) -> dict[str, Any]:
        payload: dict[str, Any] = {"run": self.run, "current": self.current,
                                   "hist": self.hist.to_state(), "all_final": self.all_final}
        if self.best is not None:
            payload.update(best=self.best, best_hist=self.best_hist.to_state(),
                           best_run=self.best_run)
        return payload

    @classmethod
    def from_payload(cls, payload: dict[str, Any]) -> FitState:
        state = cls(run=int(payload["run"]), current=payload["current"],
                    hist=FitHistory.from_state(payload["hist"]),
                    all_final=[float(v) for v in payload["all_final"]])
        if "best" in payload:
            state.best = payload["best"]
            state.best_hist = FitHistory.from_state(payload["best_hist"])
            state.best_run = int(payload["best_run"])
        return state


def fingerprint(record: dict[str, Any], data: str, heldout: str | None,
                start: GaussianMixture | None) -> str:
    """A digest of the recorded settings, the data signatures and the starting mixture."""
    parts = dict(record, data=data, heldout=heldout)
    if start is not None:
        h = hashlib.sha256()
        for a in (start.weights, start.means, start.covariances):
            h.update(np.ascontiguousarray(a).tobytes())
        parts["init_params"] = h.hexdigest()
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()


class CheckpointStore:
    """The checkpoint file of a fit (``path`` None: no checkpoints, nothing written)."""

    def __init__(self, path: str | os.PathLike | None, fingerprint: str) -> None:
        self.path = os.fspath(path) if path is not None else None
        self.fingerprint = fingerprint

    def load(self) -> FitState | None:
        """The state of an earlier call with the same fingerprint, or None."""
        if self.path is None:
            return None
        payload = _read_checkpoint(self.path, self.fingerprint)
        if payload is None:
            return None
        try:
            state = FitState.from_payload(payload)
        except (KeyError, TypeError, ValueError) as err:
            log.warning("checkpoint %s incomplete (%s); starting afresh", self.path, err)
            return None
        log.info("resuming from checkpoint %s (restart %d, iteration %d)", self.path,
                 state.run + 1, state.hist.n_iter)
        return state

    def save(self, state: FitState) -> None:
        """Write ``state`` atomically (replacing the previous checkpoint)."""
        if self.path is not None:
            _write_checkpoint(self.path, self.fingerprint, state.to_payload())


def _write_checkpoint(path: str, fingerprint: str, state: dict[str, Any]) -> None:
    datasets: dict[str, np.ndarray] = {}
    attrs: dict[str, Any] = {"fingerprint": fingerprint}
    for key, value in state.items():
        if isinstance(value, GaussianMixture):
            datasets[f"{key}/weights"] = value.weights
            datasets[f"{key}/means"] = value.means
            datasets[f"{key}/covariances"] = value.covariances
        elif isinstance(value, np.ndarray):
            datasets[key] = value
        else:
            attrs[key] = json.dumps(value)
    write_h5(path, _CHECKPOINT_KIND, datasets, attrs, compress=False)


def _read_checkpoint(path: str, fingerprint: str) -> dict[str, Any] | None:
    if not os.path.exists(path):
        return None
    try:
        with open_h5(path, _CHECKPOINT_KIND) as fh:
            if fh.attrs.get("fingerprint") != fingerprint:
                log.warning("checkpoint %s was written by a fit with other settings or data; "
                            "starting afresh (it will be overwritten)", path)
                return None
            state: dict[str, Any] = {}
            for key, value in fh.attrs.items():
                if key not in ("fingerprint", "kind", "format_version", "gmmrestore_version"):
                    state[key] = json.loads(value)
            for key in fh.keys():
                obj = fh[key]
                if isinstance(obj, h5py.Group):
                    state[key] = GaussianMixture(obj["weights"][()], obj["means"][()],
                                                 obj["covariances"][()])
                else:
                    state[key] = obj[()]
    except (GmmRestoreError, OSError, KeyError, ValueError) as err:
        log.warning("checkpoint %s unreadable (%s); starting afresh", path, err)
        return None
    return state
