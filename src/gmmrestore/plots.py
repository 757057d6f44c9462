"""Figures: example restorations, the trained GMM, sweeps.  Each function returns a
matplotlib Figure; :func:`save_figure` writes it atomically as PNG."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from .h5io import atomic_path  # noqa: E402
from .metrics import psnr  # noqa: E402


def save_figure(fig: plt.Figure, path: str, dpi: int = 110) -> None:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=dpi, format="png", bbox_inches="tight")
    plt.close(fig)


def _tile(ax, image, vmin=0.0, vmax=1.0, title=None):
    ax.imshow(image, cmap="gray", vmin=vmin, vmax=vmax, interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])
    if title:
        ax.set_title(title, fontsize=7)


def plot_examples(clean: np.ndarray, corrupted: np.ndarray, restored: dict[str, np.ndarray],
                  indices: np.ndarray, title: str = "",
                  transposed: np.ndarray | None = None) -> plt.Figure:
    """Grid: one row per chosen test image; columns clean, corrupted, then each method.

    clean, corrupted : (n, H, W);  restored : method -> (n, H, W);  indices : rows to show;
    transposed : (n,) bool, images stored transposed (shown turned back), or None.
    Each tile is titled with its PSNR against the clean image.  Tiles of photographs
    (larger than 64 pixels) are drawn larger than those of small images.
    """
    columns = [("clean", clean), ("corrupted", corrupted)] + list(restored.items())
    side = 1.3 if max(clean.shape[1:]) <= 64 else 2.6
    fig, axes = plt.subplots(len(indices), len(columns), squeeze=False,
                             figsize=(side * len(columns), (side + 0.05) * len(indices) + 0.4))
    for row, i in enumerate(indices):
        for col, (name, images) in enumerate(columns):
            label = name if row == 0 else None
            shown = np.clip(images[i], 0, 1)
            if name != "clean":
                value = float(psnr(clean[i], shown))
                label = f"{name}\n{value:.1f} dB" if row == 0 else f"{value:.1f} dB"
            if transposed is not None and transposed[i]:
                shown = shown.T
            _tile(axes[row, col], shown, title=label)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return fig


def plot_gmm(weights: np.ndarray, means: np.ndarray, covariances: np.ndarray,
             loglik_train: np.ndarray, loglik_heldout: np.ndarray | None, m: int,
             n_show: int = 16, n_eig: int = 4, title: str = "",
             loglik_init: float | None = None,
             loglik_init_heldout: float | None = None) -> plt.Figure:
    """EM log-likelihood per iteration (iteration 0: the initial mixture, when given); the
    heaviest components' means and leading covariance eigenvectors as m x m tiles."""
    order = np.argsort(weights)[::-1][:n_show]
    fig = plt.figure(figsize=(max(8, 0.75 * len(order)), 4.0 + 0.9 * n_eig),
                     layout="constrained")
    grid = fig.add_gridspec(2 + n_eig, len(order), height_ratios=[4, 1] + [1] * n_eig)
    ax = fig.add_subplot(grid[0, :])
    def with_start(curve, start):
        curve = np.asarray(curve, dtype=np.float64)
        it = np.arange(1, len(curve) + 1)
        if start is not None and np.isfinite(start):
            return np.concatenate([[0], it]), np.concatenate([[start], curve])
        return it, curve

    ax.plot(*with_start(loglik_train, loglik_init), "o-", ms=3, label="training patches")
    if loglik_heldout is not None and len(loglik_heldout):
        ax.plot(*with_start(loglik_heldout, loglik_init_heldout), "s--", ms=3,
                label="held-out patches")
    ax.set_xlabel("EM iteration (0: initial mixture)")
    ax.set_ylabel("mean log-likelihood")
    ax.legend(fontsize=8)
    ax.set_title(title or "GMM training", fontsize=9)
    lo, hi = float(means.min()), float(means.max())
    for col, k in enumerate(order):
        _tile(fig.add_subplot(grid[1, col]), means[k].reshape(m, m), lo, hi,
              title=f"π={weights[k]:.3f}")
        vals, vecs = np.linalg.eigh(covariances[k])
        for e in range(n_eig):
            v = vecs[:, -1 - e].reshape(m, m)
            a = float(np.abs(v).max()) or 1.0
            _tile(fig.add_subplot(grid[2 + e, col]), v, -a, a)
    fig.supxlabel(f"rows: component means (heaviest first), then their {n_eig} leading "
                  "covariance eigenvectors", fontsize=8)
    return fig


def plot_sweep(rows: list[dict], x: str) -> plt.Figure:
    """Mean PSNR with 95% CI against the sweep parameter ``x``, one line per method.

    rows : the tidy metrics table (one dict per image x method x setting).  Images of all
    other settings at the same ``x`` are pooled.  Methods without that parameter (blank
    ``x``: baselines for m and K, the corrupted input) are drawn as horizontal lines.
    """
    from collections import defaultdict

    from .metrics import mean_ci95

    fig, ax = plt.subplots(figsize=(6, 4))
    groups: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for r in rows:
        groups[r["method"]][r[x]].append(float(r["psnr"]))
    for method in sorted(groups):
        by_x = groups[method]
        values = {k: v for k, v in by_x.items() if k not in ("", None)}
        if values:
            xs = sorted(values, key=float)
            stats_ = np.array([mean_ci95(np.array(values[k])) for k in xs])
            mean = stats_[:, 0]
            ax.errorbar([float(k) for k in xs], mean,
                        yerr=[mean - stats_[:, 1], stats_[:, 2] - mean],
                        marker="o", capsize=3, label=method)
        else:
            mean = float(np.mean(np.concatenate([np.array(v) for v in by_x.values()])))
            ax.axhline(mean, ls=":", lw=1, label=f"{method} (no {x})",
                       color="gray" if method == "corrupted" else None)
    ax.set_xlabel(x)
    ax.set_ylabel("mean PSNR (dB), 95% CI")
    ax.set_title(f"PSNR against {x}", fontsize=9)
    if x in ("n_components", "noise_sigma") and len(ax.get_lines()):
        ax.set_xscale("log")
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    return fig


def plot_kernels(kernels: dict[str, np.ndarray], title: str = "") -> plt.Figure:
    """Kernels side by side (e.g. true and estimated), each on its own scale."""
    fig, axes = plt.subplots(1, len(kernels), figsize=(2.2 * len(kernels), 2.4), squeeze=False)
    for ax, (name, k) in zip(axes[0], kernels.items(), strict=True):
        _tile(ax, k, 0.0, float(k.max()) or 1.0, title=f"{name} {k.shape[0]}x{k.shape[1]}")
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return fig
