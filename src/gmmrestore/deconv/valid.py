"""Valid-region observation model for photographs (no zero border).

A camera records only the centre of the full convolution: the sharp scene ``x`` is larger
than the photograph ``y`` by ``s - 1`` pixels in each direction and

    ``y[i, j] = sum_{a, b} k[a, b] x[i + s - 1 - a, j + s - 1 - b]``,   i < H, j < W,

``x : (H + s - 1, W + s - 1)``, ``y : (H, W)`` (``scipy.signal.convolve(x, k, "valid")``).
Nothing is assumed about the scene outside the photograph: the border pixels of ``x`` are
seen by fewer output pixels and constrained by the prior only.  ``T_k`` is this valid
convolution, ``T_k^T`` the full correlation.  FFT-based for large kernels.

Tap ``(a, b)`` of output pixel ``p`` sees ``x[p + (u, v)]`` with ``(u, v) = (s-1-a, s-1-b)``;
the M-step quadratic ``E|T_k x - y|^2 = k^T A k - 2 b^T k + |y|^2`` has
``A[(u,v),(u',v')] = sum_p E[x[p+(u,v)] x[p+(u',v')]]`` (a box sum of the product image
``x[q] x[q + delta]``, ``delta = (u'-u, v'-v)``, over ``q`` in ``[u, u+H) x [v, v+W)``:
the part common to all taps by one FFT correlation, the edge bands directly) and
``b[(u,v)] = sum_p y[p] x[p+(u,v)]``.
"""

from __future__ import annotations

import numpy as np
from scipy import fft as sfft
from scipy import signal

from ..h5io import GmmRestoreError
from ..operators import frame_centre

#: Kernels with more taps than this are applied by FFT.
FFT_MIN_TAPS = 16


def irfft2_rows(spectrum: np.ndarray, shape: tuple[int, int], rows: slice = slice(None)
                ) -> np.ndarray:
    """``scipy.fft.irfft2(spectrum, s=shape)[..., rows, :]``, the same numbers for less work.

    The column transforms run in place (``spectrum`` is overwritten: pass a temporary; the
    fresh array ``irfft2`` allocates for them is much of its time), the row transforms of
    ``rows`` only, and the normalisation comes last, as pocketfft applies it (its factor
    ``1 / N`` in long double, rounded to the output's type).  spectrum : (..., shape[0],
    shape[1] // 2 + 1) complex.
    """
    columns = sfft.ifft(spectrum, axis=-2, norm="forward", overwrite_x=True)
    out = sfft.irfft(columns[..., rows, :], n=shape[1], axis=-1, norm="forward")
    out *= out.dtype.type(1 / np.longdouble(shape[0] * shape[1]))
    return out


def _kernel_nd(kernel: np.ndarray, ndim: int) -> np.ndarray:
    return np.asarray(kernel, dtype=np.float64).reshape((1,) * (ndim - 2) + kernel.shape)


def conv_valid(x: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """Valid convolution ``T_k x``: x (..., H+s-1, W+s-1) -> (..., H, W)."""
    k = _kernel_nd(kernel, x.ndim)
    if kernel.size < FFT_MIN_TAPS:
        return signal.convolve(x, k, mode="valid", method="direct")
    return signal.fftconvolve(x, k, mode="valid", axes=(-2, -1))


def corr_full(y: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """Adjoint ``T_k^T y`` (full correlation): y (..., H, W) -> (..., H+s-1, W+s-1)."""
    k = _kernel_nd(np.asarray(kernel)[::-1, ::-1], y.ndim)
    if kernel.size < FFT_MIN_TAPS:
        return signal.convolve(y, k, mode="full", method="direct")
    return signal.fftconvolve(y, k, mode="full", axes=(-2, -1))


def valid_tap_counts(kernel: np.ndarray, out_shape: tuple[int, int]) -> np.ndarray:
    """``diag(T_k^T T_k)``, (H+s-1, W+s-1): the squared taps that see each scene pixel."""
    return corr_full(np.ones(out_shape), np.asarray(kernel, dtype=np.float64) ** 2)


def valid_conv_matrix(kernel: np.ndarray, x_shape: tuple[int, int]) -> np.ndarray:
    """Dense ``T_k`` ((H*W), (H+s-1)*(W+s-1)), row-major; for tests on tiny images."""
    kernel = np.asarray(kernel, dtype=np.float64)
    n = x_shape[0] * x_shape[1]
    basis = np.eye(n).reshape(n, *x_shape)
    cols = conv_valid(basis, kernel)  # (n, H, W)
    return cols.reshape(n, -1).T


def crop_centre(x: np.ndarray, kernel_size: int) -> np.ndarray:
    """The part of a scene (..., H+s-1, W+s-1) under the photograph, (..., H, W), for a
    kernel centred at its middle pixel."""
    return frame_centre(x, (kernel_size, kernel_size))


def _window_sums(img: np.ndarray, length: int, count: int, axis: int) -> np.ndarray:
    """Sums of ``length`` consecutive entries starting at 0..count-1 along ``axis``."""
    img = np.moveaxis(img, axis, -1)
    first = img[..., :length].sum(axis=-1, keepdims=True)
    delta = img[..., length:length + count - 1] - img[..., :count - 1]
    out = np.concatenate([first, first + np.cumsum(delta, axis=-1)], axis=-1)
    return np.moveaxis(out, -1, axis)


def _box_sums(img: np.ndarray, h: int, w: int, n0: int, n1: int) -> np.ndarray:
    """Sums of ``img[..., u:u+h, v:v+w]`` for u < n0, v < n1 (running window sums);
    img (..., U, V) -> (..., n0, n1)."""
    return _window_sums(_window_sums(img, h, n0, -2), w, n1, -1)


def _core_correlation(mu: np.ndarray, s: int, h: int, w: int) -> np.ndarray:
    """``sum_n sum_q mu[n, q] mu[n, q + (du, dv)]`` over the core ``q`` in ``[s-1, h) x
    [s-1, w)`` (inside every tap's window), du in [0, s), dv in (-s, s): (s, 2s - 1).

    One FFT cross-correlation on a grid of the scene's size: ``q + (du, dv)`` stays inside the
    scene for every core q, so nothing wraps around.
    """
    grid = tuple(sfft.next_fast_len(n, real=True) for n in mu.shape[1:])
    core = np.zeros_like(mu)
    core[:, s - 1:h, s - 1:w] = mu[:, s - 1:h, s - 1:w]
    spectra = np.conj(sfft.rfft2(core, s=grid)) * sfft.rfft2(mu, s=grid)
    corr = sfft.irfft2(spectra.sum(axis=0), s=grid)
    return corr[:s][:, np.arange(-(s - 1), s) % grid[1]]


def _edge_membership(edges: np.ndarray, s: int, length: int) -> np.ndarray:
    """``M[u, i] = 1`` where ``edges[i]`` lies in the window ``[u, u + length)``, u < s."""
    u = np.arange(s)[:, None]
    return ((edges[None, :] >= u) & (edges[None, :] < u + length)).astype(np.float64)


def valid_mstep_system(y: np.ndarray, mu: np.ndarray, var: np.ndarray | None,
                       kernel_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Exact M-step quadratic of the valid model, pooled over images.

    y : (n, H, W);  mu : (n, H+s-1, W+s-1) posterior means;  var : like mu (or
    broadcastable), diagonal posterior variances, or None.
    Returns ``A`` (s*s, s*s) and ``b`` (s*s,) in row-major kernel order, so that
    ``E_q |T_k x - y|^2 = k^T A k - 2 b^T k + |y|^2`` for ``q = N(mu, diag(var))``.

    The window ``[u, u+H) x [v, v+W)`` of tap (u, v) is the core ``[s-1, H) x [s-1, W)``,
    shared by all taps and summed once by FFT (:func:`_core_correlation`), plus edge rows
    and edge columns of at most ``2(s - 1)`` each, whose lag products are formed directly.
    """
    s = int(kernel_size)
    y = np.asarray(y, dtype=np.float64)
    mu = np.asarray(mu, dtype=np.float64)
    n, h, w = y.shape
    if mu.shape != (n, h + s - 1, w + s - 1):
        raise GmmRestoreError(f"valid M-step: means of shape {mu.shape} for images {y.shape} "
                              f"and kernel size {s}; expected {(n, h + s - 1, w + s - 1)}")
    hx, wx = mu.shape[1:]
    core = _core_correlation(mu, s, h, w)  # (du, dv)
    edge_rows = np.r_[0:s - 1, max(h, s - 1):hx]
    edge_cols = (slice(0, s - 1), slice(max(w, s - 1), wx))
    rows_in_window = _edge_membership(edge_rows, s, h)  # (u, edge row)
    cols_in_window = _edge_membership(np.r_[edge_cols[0], edge_cols[1]], s, w)  # (v, edge col)
    pad = np.pad(mu, ((0, 0), (0, s - 1), (s - 1, s - 1)))
    edge_mu = mu[:, edge_rows, :]
    windows = np.lib.stride_tricks.sliding_window_view
    A4 = np.zeros((s, s, s, s))  # [u, v, u', v']
    idx = np.arange(s)
    lags = np.arange(-(s - 1), s)  # dv
    for du in range(s):
        # edge rows, every column: products (dv, edge row, column), summed over [v, v+W)
        shifted = windows(pad[:, edge_rows + du, :], wx, axis=2)  # (n, rows, dv, wx)
        prod = np.einsum("nqj,nqdj->dqj", edge_mu, shifted)
        sums = rows_in_window @ _window_sums(prod, w, s, -1)  # (dv, u, v)
        # core rows, edge columns: products summed over the rows, then over [v, v+W)
        lagged = windows(pad[:, s - 1 + du:h + du, :], 2 * s - 1, axis=2)  # (n, rows, col, dv)
        col_sums = np.concatenate([np.einsum("nqc,nqcd->dc", mu[:, s - 1:h, c], lagged[:, :, c])
                                   for c in edge_cols], axis=1)  # (dv, edge col)
        sums += (col_sums @ cols_in_window.T)[:, None, :] + core[du][:, None, None]
        uu = idx[:s - du]
        for j, dv in enumerate(lags):
            v = np.arange(max(0, -dv), min(s, s - dv))
            A4[uu[:, None], v[None, :], uu[:, None] + du, v[None, :] + dv] = \
                sums[j][np.ix_(uu, v)]
    A_u = A4.reshape(s * s, s * s)
    A_u = np.triu(A_u) + np.triu(A_u, 1).T
    if var is not None:
        v_img = np.broadcast_to(np.asarray(var, dtype=np.float64), mu.shape).sum(axis=0)
        A_u[np.diag_indices_from(A_u)] += _box_sums(v_img, h, w, s, s).ravel()
    b_u = np.zeros((s, s))
    for yi, mi in zip(y, mu, strict=True):
        b_u += signal.fftconvolve(mi, yi[::-1, ::-1], mode="valid")
    # (u, v) order -> kernel order (a, b) = (s-1-u, s-1-v): reverse the flattened index
    return A_u[::-1, ::-1].copy(), b_u.ravel()[::-1].copy()


class ValidConvolution:
    """``T_k`` and ``T_k^T`` of one kernel by FFT with the kernel's transform cached.

    On a periodic grid of at least the scene's size, the circular convolution equals the
    valid convolution on the output rows/columns ``s-1 .. H+s-2`` (no wrap-around reaches
    them), and the adjoint is the circular correlation of the zero-embedded image restricted
    to the scene.  Two FFTs per application instead of ``fftconvolve``'s three on a larger
    grid.  x : (..., H+s-1, W+s-1);  y : (..., H, W).  ``dtype`` : the real type of the
    transforms (float32 halves their cost; the outputs are of this type).
    """

    def __init__(self, kernel: np.ndarray, x_shape: tuple[int, int],
                 dtype: type = np.float64):
        self.dtype = np.dtype(dtype)
        kernel = np.asarray(kernel, dtype=np.float64)
        self.s = kernel.shape[0]
        self.x_shape = (int(x_shape[0]), int(x_shape[1]))
        self.grid = (sfft.next_fast_len(self.x_shape[0], real=True),
                     sfft.next_fast_len(self.x_shape[1], real=True))
        self.K = self._kernel_spectrum(kernel)
        # zero-padded grids reused between calls (the zeros outside the window stay zero)
        self._grids: dict[tuple, np.ndarray] = {}

    def _on_grid(self, a: np.ndarray, r0: int, c0: int) -> np.ndarray:
        """``a`` (..., h, w) written at rows r0.., columns c0.. of a zero grid reused for
        arrays of its shape and offset; the FFT of the result equals that of a fresh one."""
        key = (a.shape, r0, c0)
        grid = self._grids.get(key)
        if grid is None:
            grid = self._grids[key] = np.zeros(a.shape[:-2] + self.grid, dtype=self.dtype)
        grid[..., r0:r0 + a.shape[-2], c0:c0 + a.shape[-1]] = a
        return grid

    def _kernel_spectrum(self, kernel: np.ndarray) -> np.ndarray:
        """``rfft2(kernel, s=grid)``, the rows' transforms taken of the kernel's s rows only
        (the padded rows' are zero): the same numbers for half the work."""
        rows = sfft.rfft(np.asarray(kernel, dtype=self.dtype), n=self.grid[1], axis=1)
        return sfft.fft(rows, n=self.grid[0], axis=0)

    def set_kernel(self, kernel: np.ndarray) -> None:
        """Replace the kernel (same size), keeping the grid."""
        self.K = self._kernel_spectrum(kernel)

    def spectrum(self, x: np.ndarray) -> np.ndarray:
        """The scene's transform on the grid, to share between :meth:`forward` and
        :meth:`kernel_gradient`."""
        return sfft.rfft2(self._on_grid(np.asarray(x, dtype=self.dtype), 0, 0))

    def forward(self, x: np.ndarray, x_spectrum: np.ndarray | None = None) -> np.ndarray:
        X = self.spectrum(x) if x_spectrum is None else x_spectrum
        rows = irfft2_rows(X * self.K, self.grid, slice(self.s - 1, self.x_shape[0]))
        return rows[..., self.s - 1:self.x_shape[1]]

    def _embedded_spectrum(self, y: np.ndarray) -> np.ndarray:
        return sfft.rfft2(self._on_grid(y, self.s - 1, self.s - 1))

    def adjoint(self, y: np.ndarray) -> np.ndarray:
        rows = irfft2_rows(self._embedded_spectrum(y) * np.conj(self.K), self.grid,
                           slice(0, self.x_shape[0]))
        return rows[..., :self.x_shape[1]]

    def kernel_gradient(self, x_spectrum: np.ndarray, y: np.ndarray) -> np.ndarray:
        """``d <T_k x, y> / dk`` (s, s) for one scene x (its :meth:`spectrum`) and one
        image y (H, W): ``sum_p y[p] x[p + s - 1 - a]`` at tap a (no wrap-around reaches
        these taps on the grid)."""
        rows = irfft2_rows(self._embedded_spectrum(y) * np.conj(x_spectrum), self.grid,
                           slice(0, self.s))
        return rows[:, :self.s]

    def normal(self, x: np.ndarray) -> np.ndarray:
        """``T_k^T T_k x``."""
        return self.adjoint(self.forward(x))
