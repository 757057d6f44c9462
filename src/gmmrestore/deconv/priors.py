"""Gaussian image priors of the seed's blind EM: the gradient prior and the learned
spectral prior (precision operators, symbols, dense matrices for the tests)."""

from __future__ import annotations

import logging

import numpy as np
from scipy import fft as sfft

from ..h5io import GmmRestoreError
from .model import (
    LOG_2PI,
    _as_batch,
    _full_grid_mean,
    _grad_normal,
    _grad_normal_diag,
    _grad_sq_norm,
    _n_grad_rows,
)

log = logging.getLogger("gmmrestore.deconv")

# --------------------------------------------------------------------------------------
# Image priors
# --------------------------------------------------------------------------------------

class GradientPrior:
    """The seed's prior: independent ``N(0, std^2)`` valid [-1 1] differences.

    Precision ``P = (D_h^T D_h + D_v^T D_v) / std^2`` (improper: constant images are free;
    ``A_x`` is still definite because a kernel summing to 1 sees constants).
    """

    def __init__(self, std: float):
        try:
            std = float(std)
        except (TypeError, ValueError):
            raise GmmRestoreError(f"prior std must be a number, got {std!r}") from None
        if not (np.isfinite(std) and std > 0):
            raise GmmRestoreError(f"prior std must be finite and > 0, got {std}")
        self.std = float(std)

    def __repr__(self) -> str:
        return f"GradientPrior(std={self.std:g})"

    def apply(self, x: np.ndarray) -> np.ndarray:
        """``P x`` for images x (..., H, W)."""
        return _grad_normal(x) / self.std**2

    def diag(self, shape: tuple[int, int]) -> np.ndarray:
        """Diagonal of P, (H, W)."""
        return _grad_normal_diag(shape) / self.std**2

    def fft_grid(self, shape: tuple[int, int], kernel_size: int) -> tuple[int, int]:
        """FFT grid for preconditioner and stationary covariance: image plus kernel."""
        return (sfft.next_fast_len(shape[0] + kernel_size),
                sfft.next_fast_len(shape[1] + kernel_size))

    def symbol(self, grid: tuple[int, int]) -> np.ndarray:
        """Fourier symbol of the periodic version of P on ``grid`` (rfft layout)."""
        fh = np.zeros(grid)
        fh[0, 0], fh[0, 1] = -1.0, 1.0
        Fh = sfft.rfft2(fh)
        Fv = sfft.rfft2(fh.T.copy(), s=grid)
        return (np.abs(Fh) ** 2 + np.abs(Fv) ** 2) / self.std**2

    def energy(self, mu: np.ndarray) -> float:
        """``sum_images mu^T P mu``."""
        return _grad_sq_norm(mu) / self.std**2

    def log_normaliser(self, shape: tuple[int, int]) -> float:
        """Log normalising constant per image (that of the difference rows)."""
        return -_n_grad_rows(shape) / 2 * (LOG_2PI + 2 * np.log(self.std))

    def dense(self, shape: tuple[int, int]) -> np.ndarray:
        """Dense P, (H*W, H*W)."""
        dh, dv = finite_difference_matrices(shape)
        return (dh.T @ dh + dv.T @ dv) / self.std**2


class SpectralPrior:
    """Stationary Gaussian prior with a learned power spectrum, zero outside the image.

    ``x`` embedded in a periodic ``grid`` is Gaussian with power spectrum ``spectrum``
    (so precision ``Circ(1 / spectrum)``), conditioned on the pixels outside the image
    being zero: ``P = E^T Circ(1 / spectrum) E``.

    Parameters
    ----------
    precision : (grid[0], grid[1] // 2 + 1)
        ``1 / spectrum`` in rfft layout, positive.
    grid : (G0, G1)
    shape : (H, W)
        Image size the prior is meant for (``grid >= shape``).
    """

    def __init__(self, precision: np.ndarray, grid: tuple[int, int], shape: tuple[int, int]):
        precision = np.asarray(precision, dtype=np.float64)
        grid = (int(grid[0]), int(grid[1]))
        if precision.shape != (grid[0], grid[1] // 2 + 1):
            raise GmmRestoreError(f"spectral prior: precision shape {precision.shape} does not "
                                  f"match grid {grid}")
        if not np.all(np.isfinite(precision)) or not np.all(precision > 0):
            raise GmmRestoreError("spectral prior: precision must be finite and > 0")
        if grid[0] < shape[0] or grid[1] < shape[1]:
            raise GmmRestoreError(f"spectral prior: grid {grid} smaller than images {shape}")
        self.precision = precision
        self.grid = grid
        self.shape = (int(shape[0]), int(shape[1]))

    def __repr__(self) -> str:
        return f"SpectralPrior(shape={self.shape}, grid={self.grid})"

    @classmethod
    def from_images(cls, images: np.ndarray, grid: tuple[int, int] | None = None,
                    rel_floor: float = 1e-8) -> SpectralPrior:
        """Learn the spectrum from sharp images (n, H, W): the mean periodogram of the
        zero-padded images, ``mean |FFT(x)|^2 / (H W)`` (the spectrum of a stationary
        field seen through the H x W window), floored at ``rel_floor`` times its maximum.
        ``grid`` defaults to about twice the image size (no wrap-around of correlations
        within the image)."""
        x = _as_batch(images, "prior images")
        h, w = x.shape[-2:]
        if grid is None:
            grid = (sfft.next_fast_len(2 * h), sfft.next_fast_len(2 * w))
        power = np.zeros((grid[0], grid[1] // 2 + 1))
        for start in range(0, len(x), 256):
            power += np.sum(np.abs(sfft.rfft2(x[start:start + 256], s=grid)) ** 2, axis=0)
        spectrum = power / (len(x) * h * w)
        spectrum = np.maximum(spectrum, rel_floor * spectrum.max())
        return cls(1.0 / spectrum, grid, (h, w))

    def _check(self, shape: tuple[int, int]) -> None:
        if tuple(shape) != self.shape:
            raise GmmRestoreError(f"spectral prior learned for {self.shape[0]}x{self.shape[1]} "
                                  f"images, used on {shape[0]}x{shape[1]}")

    def apply(self, x: np.ndarray) -> np.ndarray:
        self._check(x.shape[-2:])
        h, w = self.shape
        return sfft.irfft2(sfft.rfft2(x, s=self.grid) * self.precision, s=self.grid)[..., :h, :w]

    def diag(self, shape: tuple[int, int]) -> np.ndarray:
        self._check(shape)
        return np.full(shape, _full_grid_mean(self.precision, self.grid))

    def fft_grid(self, shape: tuple[int, int], kernel_size: int) -> tuple[int, int]:
        self._check(shape)
        return self.grid

    def symbol(self, grid: tuple[int, int]) -> np.ndarray:
        if tuple(grid) != self.grid:
            raise GmmRestoreError(f"spectral prior: grid {grid} requested, learned on "
                                  f"{self.grid}")
        return self.precision

    def energy(self, mu: np.ndarray) -> float:
        return float(np.sum(mu * self.apply(mu)))

    def log_normaliser(self, shape: tuple[int, int]) -> float:
        """``-HW/2 log 2pi + 1/2 log det P`` per image, with ``log det P`` approximated by
        ``HW * mean(log precision)`` (stationary, Szegő); a constant at fixed level."""
        n_pix = shape[0] * shape[1]
        return -n_pix / 2 * LOG_2PI + 0.5 * n_pix * _full_grid_mean(np.log(self.precision),
                                                                    self.grid)

    def dense(self, shape: tuple[int, int]) -> np.ndarray:
        self._check(shape)
        n_pix = shape[0] * shape[1]
        basis = np.eye(n_pix).reshape(n_pix, *shape)
        P = self.apply(basis).reshape(n_pix, n_pix)
        return 0.5 * (P + P.T)


Prior = GradientPrior | SpectralPrior


def _as_prior(prior: float | Prior) -> Prior:
    if isinstance(prior, GradientPrior | SpectralPrior):
        return prior
    return GradientPrior(float(prior))



def finite_difference_matrices(shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Dense valid-difference matrices of the seed.

    Returns ``(D_h, D_v)``: D_h (H*(W-1), H*W) with ``(D_h x)[i, j] = x[i, j+1] - x[i, j]``,
    D_v ((H-1)*W, H*W) with ``(D_v x)[i, j] = x[i+1, j] - x[i, j]`` (row-major flattening).
    """
    h, w = shape
    idx = np.arange(h * w).reshape(h, w)
    dh = np.zeros((h * (w - 1), h * w))
    rows = np.arange(h * (w - 1))
    dh[rows, idx[:, :-1].ravel()] = -1.0
    dh[rows, idx[:, 1:].ravel()] = 1.0
    dv = np.zeros(((h - 1) * w, h * w))
    rows = np.arange((h - 1) * w)
    dv[rows, idx[:-1, :].ravel()] = -1.0
    dv[rows, idx[1:, :].ravel()] = 1.0
    return dh, dv
