"""Image quality metrics and confidence intervals."""

from __future__ import annotations

import numpy as np
from scipy import stats


def psnr(clean: np.ndarray, restored: np.ndarray, data_range: float = 1.0) -> np.ndarray:
    """Peak signal-to-noise ratio per image, in dB.

    clean, restored : (n, H, W) (or (H, W)).  Returns (n,) (or a scalar array).
    An exact restoration gives ``inf``.
    """
    clean = np.asarray(clean, dtype=np.float64)
    restored = np.asarray(restored, dtype=np.float64)
    mse = np.mean((clean - restored) ** 2, axis=(-2, -1))
    with np.errstate(divide="ignore"):
        return 10.0 * np.log10(data_range**2 / mse)


def ssim(clean: np.ndarray, restored: np.ndarray, data_range: float = 1.0) -> np.ndarray:
    """Structural similarity per image (scikit-image's implementation, Gaussian-free
    7x7 window, the usual constants).  clean, restored : (n, H, W).  Returns (n,)."""
    from skimage.metrics import structural_similarity

    clean = np.asarray(clean, dtype=np.float64)
    restored = np.asarray(restored, dtype=np.float64)
    win = min(7, *clean.shape[-2:]) | 1
    if win > min(clean.shape[-2:]):
        win -= 2
    return np.array([structural_similarity(c, r, data_range=data_range, win_size=win)
                     for c, r in zip(clean.reshape(-1, *clean.shape[-2:]),
                                     restored.reshape(-1, *restored.shape[-2:]), strict=True)])


def mean_ci95(values: np.ndarray) -> tuple[float, float, float]:
    """Mean and the two ends of its 95% Student-t confidence interval.

    With one value the interval is degenerate (both ends equal the mean).
    """
    values = np.asarray(values, dtype=np.float64)
    values = values[np.isfinite(values)]
    if values.size == 0:
        return float("nan"), float("nan"), float("nan")
    mean = float(values.mean())
    if values.size < 2:
        return mean, mean, mean
    half = float(stats.t.ppf(0.975, values.size - 1) * values.std(ddof=1) / np.sqrt(values.size))
    return mean, mean - half, mean + half
