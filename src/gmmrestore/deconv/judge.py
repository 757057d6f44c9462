"""Choosing a photograph's kernel among candidates with a natural-patch prior.

The TV estimator's basin depends on its schedule: on development photographs the weight's
growth per level 1.9 (the default) and 1.05 each recover kernels the other misses, and the
L0 estimator (:func:`.l0map.estimate_kernel_l0`, a second of work) others again
(docs/results.md).  These are the candidates.  Energies of the blind model do not tell
which candidate is right, and neither does the plain likelihood of a restoration under a
natural-patch GMM: it prefers the smooth restorations of kernels that are too compact.
What separates them is how that likelihood changes when the restoration is blurred a
little (docs/model.md, "Choosing between kernels"):

    score(k) = mean_p log p(P_p x_k) - mean_p log p(P_p (g * x_k)),

``x_k`` the hyper-Laplacian restoration of the photograph with kernel ``k``
(:func:`.nonblind.deconvolve_sparse`), ``g`` a Gaussian of std ``blur_std`` pixels, ``P_p``
the m x m patches at stride ``stride`` (their mean removed when the GMM is zero-mean), and
``p`` the GMM.  A restoration whose ringing a small blur removes gains much likelihood from
the blur (a low score); the candidate of the highest score is kept.
"""

from __future__ import annotations

import logging
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, replace

import numpy as np
from scipy.ndimage import gaussian_filter

from ..gmm import GaussianMixture, patch_size_of, remove_patch_dc, score_samples
from ..h5io import GmmRestoreError
from ..patches import check_patch_size
from .l0map import L0Settings, estimate_kernel_l0
from .nonblind import deconvolve_sparse
from .tvmap import TVSettings, estimate_kernel_tv

log = logging.getLogger("gmmrestore.deconv")


@dataclass(frozen=True)
class JudgeSettings:
    """Settings of :func:`estimate_kernel_tv_judged`.

    lam_factors : the TV estimator's weight growths per level, one candidate kernel each;
    l0_candidate : the L0 estimator's kernel (default settings) is the last candidate;
    blur_std : std (pixels) of the Gaussian blur in the score;  stride : between the scored
    patches;  n_workers : candidates estimated at once (separate processes).
    """

    lam_factors: tuple[float, ...] = (1.9, 1.05)
    l0_candidate: bool = True
    blur_std: float = 0.5
    stride: int = 2
    n_workers: int = 1

    def candidates(self, tv: TVSettings) -> list[tuple[str, TVSettings | L0Settings]]:
        """``(name, estimator settings)`` per candidate, in order: ``tv growth <f>``, ``tv``
        at each weight growth, then ``l0`` (default settings; a second of work, last so that
        it runs after the shorter TV run)."""
        runs = [(f"tv growth {f:g}", replace(tv, lam_factor=f)) for f in self.lam_factors]
        return runs + [("l0", L0Settings())] * self.l0_candidate

    def candidate_labels(self) -> list[str]:
        """The names of :meth:`candidates`."""
        return [label for label, _ in self.candidates(TVSettings())]

    def __post_init__(self):
        object.__setattr__(self, "lam_factors", tuple(float(f) for f in self.lam_factors))
        if not (len(self.lam_factors) >= 1 and all(f > 1 for f in self.lam_factors)
                and self.blur_std > 0 and self.stride >= 1 and self.n_workers >= 1):
            raise GmmRestoreError(f"kernel judge settings out of range: {self}")


def patch_log_likelihood(x: np.ndarray, gmm: GaussianMixture, stride: int,
                         remove_dc: bool) -> float:
    """Mean log-density under ``gmm`` of the m x m patches of x at ``stride``.

    x : (H, W);  gmm over m * m features.
    """
    try:
        m = patch_size_of(gmm)
    except ValueError as err:
        raise GmmRestoreError(f"the kernel judge's GMM: {err}") from None
    check_patch_size(m, x.shape)
    windows = np.lib.stride_tricks.sliding_window_view(x, (m, m))[::stride, ::stride]
    patches = windows.reshape(-1, m * m)
    if remove_dc:
        patches = remove_patch_dc(patches)
    return float(np.mean(score_samples(patches, gmm, n_threads=1)))


def sharpness_score(x: np.ndarray, gmm: GaussianMixture, settings: JudgeSettings,
                    remove_dc: bool = True) -> float:
    """``patch_log_likelihood(x) - patch_log_likelihood(g * x)`` (module docstring);
    x : (H, W)."""
    blurred = gaussian_filter(x, settings.blur_std)
    return (patch_log_likelihood(x, gmm, settings.stride, remove_dc)
            - patch_log_likelihood(blurred, gmm, settings.stride, remove_dc))


def choose_kernel(y: np.ndarray, kernels: list[np.ndarray], gmm: GaussianMixture,
                  settings: JudgeSettings | None = None, remove_dc: bool = True
                  ) -> tuple[int, list[float]]:
    """Index of the candidate kernel of highest :func:`sharpness_score`, and every score.

    y : (H, W) photograph;  kernels : candidates (s, s).  Ties go to the first.
    """
    st = settings or JudgeSettings()
    scores = [kernel_score(y, k, gmm, st, remove_dc) for k in kernels]
    return int(np.argmax(scores)), scores


def kernel_score(y: np.ndarray, kernel: np.ndarray, gmm: GaussianMixture,
                 settings: JudgeSettings, remove_dc: bool = True) -> float:
    """:func:`sharpness_score` of the photograph y (H, W) restored with ``kernel`` (s, s)."""
    return sharpness_score(deconvolve_sparse(y, kernel), gmm, settings, remove_dc)


def _estimate_and_score(y: np.ndarray, kernel_size: int, estimator: TVSettings | L0Settings,
                        gmm: GaussianMixture, settings: JudgeSettings, remove_dc: bool
                        ) -> tuple[np.ndarray, float]:
    """One candidate: the kernel of the TV or L0 estimator with settings ``estimator`` and
    its :func:`kernel_score`."""
    estimate = estimate_kernel_l0 if isinstance(estimator, L0Settings) else estimate_kernel_tv
    kernel, _ = estimate(y, kernel_size, estimator)
    return kernel, kernel_score(y, kernel, gmm, settings, remove_dc)


def estimate_kernel_tv_judged(y: np.ndarray, kernel_size: int, gmm: GaussianMixture,
                              tv: TVSettings | None = None,
                              settings: JudgeSettings | None = None, remove_dc: bool = True
                              ) -> tuple[np.ndarray, dict]:
    """The TV estimator run once per weight growth of ``settings.lam_factors`` (and the
    L0 estimator with ``settings.l0_candidate``), the candidate of highest
    :func:`sharpness_score` kept.

    y : (H, W) photograph in [0, 1];  kernel_size : odd s;  gmm : natural-patch prior
    (zero-mean patches when ``remove_dc``).  Returns the kernel (s, s) and an info dict
    (``candidates`` (n, s, s), ``labels`` (:meth:`JudgeSettings.candidate_labels`),
    ``lam_factors``, ``blur_std``, ``stride``, ``scores``, ``chosen``, ``seconds``).
    """
    t0 = time.perf_counter()
    st = settings or JudgeSettings()
    labels, runs = zip(*st.candidates(tv or TVSettings()), strict=True)
    n = len(runs)
    # each worker also restores and scores its kernel: the judge costs one restoration
    args = ([y] * n, [kernel_size] * n, runs, [gmm] * n, [st] * n, [remove_dc] * n)
    if st.n_workers > 1 and n > 1:
        with ProcessPoolExecutor(min(st.n_workers, n)) as pool:
            results = list(pool.map(_estimate_and_score, *args))
    else:
        results = list(map(_estimate_and_score, *args))
    kernels = [k for k, _ in results]
    scores = [v for _, v in results]
    chosen = int(np.argmax(scores))
    log.info("kernel judge: scores %s for %s, kept %s, %.1f s",
             ", ".join(f"{v:.3f}" for v in scores), ", ".join(labels), labels[chosen],
             time.perf_counter() - t0)
    info = {"candidates": np.stack(kernels), "labels": list(labels),
            "lam_factors": list(st.lam_factors), "blur_std": st.blur_std,
            "stride": st.stride, "scores": scores, "chosen": chosen,
            "seconds": time.perf_counter() - t0}
    return kernels[chosen], info
