"""Kernel utilities and evaluation scores of blind deconvolution."""

from __future__ import annotations

import logging

import numpy as np
from scipy import signal

from ..h5io import GmmRestoreError

log = logging.getLogger("gmmrestore.deconv")

# --------------------------------------------------------------------------------------
# Kernel utilities and evaluation
# --------------------------------------------------------------------------------------

def _recentring_shift(mass: np.ndarray, max_lost: float) -> int:
    """Whole-pixel shift along one axis towards putting the centre of ``mass`` (n,) (sums
    to 1) on the middle index, stopped before more than ``max_lost`` of it leaves."""
    n = mass.size
    want = int(np.round(n // 2 - np.arange(n) @ mass))
    if want == 0:
        return 0
    # mass lost by a shift of d = 1, 2, ..., |want| pixels: the first (last) d entries
    leaving = np.cumsum(mass if want < 0 else mass[::-1])[:abs(want)]
    steps = int(np.count_nonzero(leaving <= max_lost + 1e-12))
    return steps if want > 0 else -steps


def recenter_kernel(kernel: np.ndarray, max_lost: float = 1.0) -> np.ndarray:
    """Shift ``kernel`` by whole pixels so its centre of mass is nearest the middle pixel.

    Mass shifted out of the support is dropped; along each axis the shift stops before
    more than ``max_lost`` of the mass would leave (1: never stops; 0: no tap is lost, so a
    kernel that fills its support, such as a curved camera-shake path whose centre of mass
    is off the middle, is never cut).  The result is non-negative and sums to 1.
    """
    k = np.maximum(np.asarray(kernel, dtype=np.float64), 0.0)
    total = k.sum()
    if not total > 0:
        raise GmmRestoreError("cannot re-center a kernel with no positive mass")
    if not 0 <= max_lost <= 1:
        raise GmmRestoreError(f"max_lost must be in [0, 1], got {max_lost}")
    s0, s1 = k.shape
    dr = _recentring_shift(k.sum(axis=1) / total, max_lost)
    dc = _recentring_shift(k.sum(axis=0) / total, max_lost)
    out = np.zeros_like(k)
    src_r = slice(max(0, -dr), min(s0, s0 - dr))
    dst_r = slice(max(0, dr), min(s0, s0 + dr))
    src_c = slice(max(0, -dc), min(s1, s1 - dc))
    dst_c = slice(max(0, dc), min(s1, s1 + dc))
    out[dst_r, dst_c] = k[src_r, src_c]
    if not out.sum() > 0:
        return k / total
    return out / out.sum()


def kernel_error(k_est: np.ndarray, k_true: np.ndarray) -> float:
    """Relative L2 kernel error after the best integer shift.

    Both kernels are normalised to sum 1; ``min_shift |shift(k_est) - k_true| / |k_true|``
    over all integer shifts (zero fill, no wrap; kernels of different sizes allowed).
    """
    a = np.asarray(k_est, dtype=np.float64)
    b = np.asarray(k_true, dtype=np.float64)
    if a.ndim != 2 or b.ndim != 2:
        raise GmmRestoreError(f"kernel_error: expected 2-D kernels, got {a.shape} and {b.shape}")
    if not (a.sum() != 0 and b.sum() != 0):
        raise GmmRestoreError("kernel_error: a kernel sums to 0")
    a = a / a.sum()
    b = b / b.sum()
    cross = signal.correlate(b, a, mode="full", method="direct").max()
    sq = max(float(np.sum(a**2) + np.sum(b**2) - 2.0 * cross), 0.0)
    return float(np.sqrt(sq / np.sum(b**2)))


#: Smallest image side scored by :func:`shifted_error_ratio` in :func:`blind_scores`: the
#: default border (10) and shifts (3) leave at least a 38 x 38 inner part.
MIN_SHIFTED_SIZE = 64


def error_ratio(restored_est: np.ndarray, restored_true: np.ndarray,
                clean: np.ndarray, per_image: bool = False) -> float | np.ndarray:
    """Levin's error ratio ``SSD(restored_est, clean) / SSD(restored_true, clean)``.

    restored_est : restoration with the estimated kernel; restored_true : the same method
    with the true kernel; all (..., H, W) of equal shape.  ``per_image=False``: the sums of
    squared differences run over everything (one ratio, e.g. pooled over a batch);
    ``per_image=True``: one ratio per (H, W) image, an array of shape ``clean.shape[:-2]``.
    A zero denominator gives ``inf`` (or 1 when the numerator is zero too).
    """
    clean = np.asarray(clean, dtype=np.float64)
    est = np.asarray(restored_est, dtype=np.float64)
    true = np.asarray(restored_true, dtype=np.float64)
    if not (est.shape == true.shape == clean.shape) or clean.ndim < 2:
        raise GmmRestoreError(
            f"error_ratio: expected images (..., H, W) of one shape, got {est.shape}, "
            f"{true.shape} and {clean.shape}")
    axes = (-2, -1) if per_image else None
    ssd_est = np.sum((est - clean) ** 2, axis=axes)
    ssd_true = np.sum((true - clean) ** 2, axis=axes)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(ssd_true > 0, ssd_est / np.where(ssd_true > 0, ssd_true, 1.0),
                         np.where(ssd_est > 0, np.inf, 1.0))
    return ratio if per_image else float(ratio)


def blind_scores(clean: np.ndarray, restored_est: np.ndarray, restored_true: np.ndarray,
                 batch_kernels: np.ndarray, batch_index: np.ndarray,
                 true_kernel: np.ndarray) -> dict[str, np.ndarray]:
    """Per-image scores of a blind restoration whose images were restored with the kernel
    estimated from their own batch.

    clean, restored_est, restored_true : (n, H, W) (the same method with the estimated and
    with the true kernel); batch_kernels : (n_batches, s, s); batch_index : (n,) the batch
    (row of ``batch_kernels``) of every image; true_kernel : the true blur.

    Returns (n,) arrays: ``kernel_batch`` (= batch_index), ``kernel_error`` (of the image's
    batch kernel, :func:`kernel_error`), ``error_ratio`` (of the image,
    :func:`error_ratio` with ``per_image=True``), ``batch_error_ratio`` (SSDs pooled over
    all images of the image's batch, :func:`error_ratio`) and ``shifted_error_ratio`` (the
    field's ratio after the best shift, :func:`shifted_error_ratio`; NaN for images of
    under :data:`MIN_SHIFTED_SIZE` pixels a side, e.g. digits).
    """
    clean = np.asarray(clean, dtype=np.float64)
    batch_kernels = np.asarray(batch_kernels, dtype=np.float64)
    batch_index = np.asarray(batch_index)
    if batch_kernels.ndim != 3:
        raise GmmRestoreError(f"blind_scores: batch_kernels has shape {batch_kernels.shape}, "
                              "expected (n_batches, s, s)")
    if batch_index.shape != clean.shape[:1] or clean.ndim != 3:
        raise GmmRestoreError(f"blind_scores: batch_index has shape {batch_index.shape} for "
                              f"images {clean.shape}; expected one batch per image")
    if batch_index.dtype.kind not in "iu" or batch_index.size and (
            batch_index.min() < 0 or batch_index.max() >= len(batch_kernels)):
        raise GmmRestoreError(f"blind_scores: batch_index must hold integers in "
                              f"[0, {len(batch_kernels)}), got {np.unique(batch_index)}")
    per_batch_error = np.array([kernel_error(k, true_kernel) for k in batch_kernels])
    ratio = error_ratio(restored_est, restored_true, clean, per_image=True)
    pooled = np.full(len(clean), np.nan)
    for b in np.unique(batch_index):
        members = batch_index == b
        pooled[members] = error_ratio(np.asarray(restored_est)[members],
                                      np.asarray(restored_true)[members], clean[members])
    shifted = np.full(len(clean), np.nan)
    if min(clean.shape[-2:]) >= MIN_SHIFTED_SIZE:
        shifted = np.array([shifted_error_ratio(e, t, c) for e, t, c in
                            zip(restored_est, restored_true, clean, strict=True)])
    return {"kernel_batch": batch_index.astype(np.int64),
            "kernel_error": per_batch_error[batch_index], "error_ratio": ratio,
            "batch_error_ratio": pooled, "shifted_error_ratio": shifted}


def ssd_upto_shift(restored: np.ndarray, clean: np.ndarray, max_shift: int = 3,
                   border: int = 10) -> tuple[float, tuple[int, int]]:
    """Smallest sum of squared differences over integer shifts of a restoration.

    restored, clean : (H, W).  For every shift ``(dr, dc)`` with ``|dr|, |dc| <=
    max_shift`` the inner part ``clean[m:-m, m:-m]`` (``m = border + max_shift``) is
    compared with ``restored`` shifted by ``(dr, dc)``; returns the smallest SSD and its
    shift.  (A blind estimate is determined up to a translation, and restorations near the
    border are unreliable: the field's error ratio compares them this way.)
    """
    est = np.asarray(restored, dtype=np.float64)
    ref = np.asarray(clean, dtype=np.float64)
    if est.shape != ref.shape or est.ndim != 2:
        raise GmmRestoreError(f"ssd_upto_shift: expected two (H, W) images of one shape, got "
                              f"{est.shape} and {ref.shape}")
    m = int(border) + int(max_shift)
    h, w = ref.shape
    if h <= 2 * m or w <= 2 * m:
        raise GmmRestoreError(f"ssd_upto_shift: images {h}x{w} too small for border {border} "
                              f"and max_shift {max_shift}")
    inner = ref[m:h - m, m:w - m]
    best = (np.inf, (0, 0))
    for dr in range(-max_shift, max_shift + 1):
        for dc in range(-max_shift, max_shift + 1):
            cand = est[m + dr:h - m + dr, m + dc:w - m + dc]
            ssd = float(np.sum((cand - inner) ** 2))
            if ssd < best[0]:
                best = (ssd, (dr, dc))
    return best


def shifted_error_ratio(restored_est: np.ndarray, restored_true: np.ndarray,
                        clean: np.ndarray, max_shift: int = 3, border: int = 10) -> float:
    """Error ratio as the field computes it: ``ssd_upto_shift(restored_est) /
    ssd_upto_shift(restored_true)`` (:func:`ssd_upto_shift`, each at its best shift).
    All (H, W)."""
    num, _ = ssd_upto_shift(restored_est, clean, max_shift, border)
    den, _ = ssd_upto_shift(restored_true, clean, max_shift, border)
    if den == 0:
        return 1.0 if num == 0 else float("inf")
    return num / den


def success_rates(ratios: np.ndarray, thresholds: tuple[float, ...] = (2.0, 3.0)
                  ) -> dict[str, float]:
    """Fraction of error ratios at or below each threshold: ``{"le2": ..., "le3": ...}``."""
    r = np.asarray(ratios, dtype=np.float64).ravel()
    if r.size == 0:
        raise GmmRestoreError("success_rates: no error ratios")
    return {f"le{t:g}": float(np.mean(r <= t)) for t in thresholds}
