"""Blur kernels and the linear operators of the forward model.

Forward model (image level)
---------------------------
``y = k * x + n``,  ``n ~ N(0, sigma^2 I)``, where ``*`` is the 2-D convolution
``(k * x)[i, j] = sum_{a, b} k[a, b] x[i - a + c_r, j - b + c_c]`` with the kernel
centre ``(c_r, c_c) = (kh // 2, kw // 2)``, output the same size as ``x`` and pixels
outside the image taken as zero ("same" size, zero boundary).  Kernels have odd sizes,
non-negative finite entries and sum 1 (the identity kernel ``[[1]]`` is pure denoising).

Photographs ("valid" boundary)
------------------------------
A camera records the full convolution of a scene larger than the frame:
``y = valid(k * x)`` with ``x`` larger than ``y`` by ``kh - 1`` rows and ``kw - 1``
columns (:func:`blur_valid`), so nothing outside the frame is assumed zero.  Random
camera-shake kernels follow Boracchi & Foi's trajectory model (:func:`camera_shake_kernel`).

Patch level
-----------
MAP-k works on m x m patches: the patch matrix ``W`` (m² x m²) is the same convolution
applied to the row-major flattened patch with zeros outside the *patch*
(:func:`patch_blur_matrix`), the format of the seed's public implementation.  It ignores
the pixels just outside a patch that blur into it (the approximation docs/results.md measures).
"""

from __future__ import annotations

import os

import numpy as np
from scipy import ndimage, signal

from .h5io import GmmRestoreError

#: Observation boundaries, the corrupted file's ``boundary`` attribute: "zero" (y = k * x,
#: 'same'-size convolution with zeros outside the frame, x and y of one size) or "valid" (a
#: camera's frame: y is the valid centre of the scene x blurred, x larger by the kernel size
#: minus one, nothing outside the frame assumed).
BOUNDARIES = ("zero", "valid")

KERNEL_TYPES = ("identity", "gaussian", "box", "motion", "disk", "camera_shake")
# camera_shake: smallest ratio of a path's extent to its length that is kept (about one
# draw in four of Boracchi & Foi's model passes)
MIN_SHAKE_EXTENT = 0.35


def gaussian_kernel(size: int, std: float) -> np.ndarray:
    """Isotropic Gaussian kernel, (size, size), normalised to sum 1."""
    _check_size(size)
    if not std > 0:
        raise GmmRestoreError(f"gaussian blur: std must be > 0, got {std}")
    r = np.arange(size) - size // 2
    g = np.exp(-0.5 * (r / std) ** 2)
    k = np.outer(g, g)
    return k / k.sum()


def box_kernel(size: int) -> np.ndarray:
    """Uniform (size, size) kernel."""
    _check_size(size)
    return np.full((size, size), 1.0 / size**2)


def disk_kernel(size: int) -> np.ndarray:
    """Uniform disk of diameter ``size`` (out-of-focus blur)."""
    _check_size(size)
    r = np.arange(size) - size // 2
    k = (r[:, None] ** 2 + r[None, :] ** 2 <= (size / 2) ** 2).astype(float)
    return k / k.sum()


def motion_kernel(length: float, angle: float, size: int | None = None,
                  supersample: int = 16) -> np.ndarray:
    """Linear motion blur of ``length`` pixels at ``angle`` degrees (counter-clockwise).

    The segment is rasterised with ``supersample`` points per pixel and bilinear
    splatting, so lengths need not be integers.  ``size`` (odd) defaults to the
    smallest odd size holding the segment.
    """
    if not length >= 1:
        raise GmmRestoreError(f"motion blur: length must be >= 1 pixel, got {length}")
    if size is None:
        size = int(np.ceil(length)) | 1
    _check_size(size)
    c = size // 2
    t = np.linspace(-0.5, 0.5, int(np.ceil(length * supersample)) + 1) * (length - 1)
    theta = np.deg2rad(angle)
    rows = c - t * np.sin(theta)
    cols = c + t * np.cos(theta)
    k = np.zeros((size, size))
    r0, c0 = np.floor(rows).astype(int), np.floor(cols).astype(int)
    fr, fc = rows - r0, cols - c0
    for dr, dc, w in ((0, 0, (1 - fr) * (1 - fc)), (1, 0, fr * (1 - fc)),
                      (0, 1, (1 - fr) * fc), (1, 1, fr * fc)):
        rr, cc = r0 + dr, c0 + dc
        ok = (rr >= 0) & (rr < size) & (cc >= 0) & (cc < size)
        np.add.at(k, (rr[ok], cc[ok]), w[ok])
    return k / k.sum()


def camera_shake_trajectory(rng: np.random.Generator, n_samples: int = 2000,
                            max_length: float = 60.0) -> np.ndarray:
    """A random camera-shake path in the model of Boracchi & Foi (IEEE TIP 2012).

    A particle starts with a velocity of random direction; at every step the velocity gets a
    Gaussian perturbation, an inertial pull back towards the path's start (``centripetal``)
    and, with a small probability, an abrupt jerk that roughly reverses it (pressing the
    button, or over-compensating the shake); the speed is then renormalised so that the path
    has ``max_length`` in all.  The model's own parameters (how anxious the hand is, how
    strong the pull and the jerks) are drawn from ``rng`` too, so every draw is a different
    kind of shake.  Returns (n_samples,) complex positions (x + iy, pixels), starting at 0.
    """
    anxiety = 0.1 * rng.random()
    centripetal = 0.7 * rng.random()
    prob_big_shake = 0.2 * rng.random()
    gaussian_term = 10.0 * rng.random()
    step = max_length / (n_samples - 1)
    v = np.exp(1j * 2.0 * np.pi * rng.random()) * (anxiety if anxiety > 0 else step)
    # all random numbers up front: one draw per step for the jerk, its angle and the noise
    jerk = rng.random(n_samples - 1) < prob_big_shake * anxiety
    jerk_angle = np.pi + (rng.random(n_samples - 1) - 0.5)
    noise = rng.standard_normal(n_samples - 1) + 1j * rng.standard_normal(n_samples - 1)
    path = np.zeros(n_samples, dtype=np.complex128)
    # sequential dynamics (each velocity depends on the last position): a short loop over
    # the path's samples, not over pixels
    for t in range(n_samples - 1):
        big = 2.0 * v * np.exp(1j * jerk_angle[t]) if jerk[t] else 0.0
        dv = big + anxiety * (gaussian_term * noise[t] - centripetal * path[t]) * step
        v = v + dv
        v = v / abs(v) * step
        path[t + 1] = path[t] + v
    return path


def rasterise_path(path: np.ndarray, size: int) -> np.ndarray:
    """Kernel (size, size) of a continuous path: equal exposure per sample, bilinear splats.

    The path (complex, x = column, y = row) is scaled to span ``size - 2`` pixels along its
    longer side and centred, so the kernel's extent is ``size - 1`` pixels in that direction.
    """
    _check_size(size)
    cols, rows = path.real - path.real.min(), path.imag - path.imag.min()
    extent = max(cols.max(), rows.max())
    scale = (size - 2) / extent if extent > 0 else 0.0
    centre = (size - 1) / 2
    cols = cols * scale + centre - cols.max() * scale / 2
    rows = rows * scale + centre - rows.max() * scale / 2
    r0, c0 = np.floor(rows).astype(int), np.floor(cols).astype(int)
    fr, fc = rows - r0, cols - c0
    k = np.zeros((size, size))
    for dr, dc, w in ((0, 0, (1 - fr) * (1 - fc)), (1, 0, fr * (1 - fc)),
                      (0, 1, (1 - fr) * fc), (1, 1, fr * fc)):
        rr, cc = np.clip(r0 + dr, 0, size - 1), np.clip(c0 + dc, 0, size - 1)
        np.add.at(k, (rr, cc), w)
    return k / k.sum()


def camera_shake_kernel(size: int, seed: int = 0) -> np.ndarray:
    """Random camera-shake blur (size, size): a Boracchi-Foi path drawn with ``seed``.

    The same (size, seed) always gives the same kernel; different seeds give different
    paths (straight, curved, with jerks); paths whose extent is under ``MIN_SHAKE_EXTENT``
    of their length (tangled random walks) are drawn again.  Non-negative, sums to 1, spans
    ``size - 1`` pixels along its longer side.
    """
    _check_size(size)
    if size < 3:
        raise GmmRestoreError(f"camera_shake blur: size must be >= 3, got {size}")
    rng = np.random.default_rng([int(seed), size, 0x5AE])
    # Scaled to the kernel's size, a very anxious hand's path (a tight random walk) would
    # become a tangled ball; like real shake kernels, keep paths that move somewhere.
    while True:
        path = camera_shake_trajectory(rng)
        extent = max(np.ptp(path.real), np.ptp(path.imag))
        if extent >= MIN_SHAKE_EXTENT * np.abs(np.diff(path)).sum():
            return rasterise_path(path, size)


def make_kernel(type: str, size: int = 5, std: float = 1.0, length: float = 5.0,
                angle: float = 0.0, seed: int = 0) -> np.ndarray:
    """Build a named blur kernel; see :data:`KERNEL_TYPES` (``seed``: camera_shake only)."""
    if type == "camera_shake":
        return camera_shake_kernel(size, seed)
    if type == "identity":
        return np.ones((1, 1))
    if type == "gaussian":
        return gaussian_kernel(size, std)
    if type == "box":
        return box_kernel(size)
    if type == "disk":
        return disk_kernel(size)
    if type == "motion":
        return motion_kernel(length, angle, size if size and size >= length else None)
    raise GmmRestoreError(f"unknown blur type '{type}'; expected one of {', '.join(KERNEL_TYPES)}")


def _check_size(size: int) -> None:
    if int(size) != size or size < 1 or size % 2 == 0:
        raise GmmRestoreError(f"kernel size must be a positive odd integer, got {size}")


def validate_kernel(kernel: np.ndarray, name: str = "kernel") -> np.ndarray:
    """Check a kernel is 2-D, odd-sized, finite, non-negative-sum; return it as float64."""
    kernel = np.asarray(kernel, dtype=np.float64)
    if kernel.ndim != 2 or kernel.shape[0] % 2 == 0 or kernel.shape[1] % 2 == 0:
        raise GmmRestoreError(f"{name}: expected a 2-D kernel with odd sizes, got shape "
                              f"{kernel.shape}")
    if not np.all(np.isfinite(kernel)):
        raise GmmRestoreError(f"{name}: contains NaN or Inf")
    total = kernel.sum()
    if not abs(total) > 1e-12:
        raise GmmRestoreError(f"{name}: sums to {total:g}; a blur kernel must sum to 1")
    return kernel


def blur(images: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """Convolve each image with ``kernel`` ("same" size, zero boundary).

    images : (..., H, W);  kernel : (kh, kw), odd sizes.  Returns (..., H, W).
    """
    kernel = np.asarray(kernel, dtype=np.float64)
    if kernel.shape == (1, 1):
        return images * kernel[0, 0]
    images = np.asarray(images)
    weights = kernel.reshape((1,) * (images.ndim - 2) + kernel.shape)
    return ndimage.convolve(images, weights, mode="constant", cval=0.0)


def blur_adjoint(images: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """Adjoint of :func:`blur`: correlation with ``kernel`` (zero boundary).

    images : (..., H, W).  ``<blur(x), y> == <x, blur_adjoint(y)>`` for odd kernels.
    """
    return blur(images, np.asarray(kernel)[::-1, ::-1])


def blur_valid(images: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """Blur as a camera does: the full convolution's valid centre, nothing assumed outside.

    images : (..., H + kh - 1, W + kw - 1);  kernel : (kh, kw).  Returns (..., H, W), every
    output pixel a complete weighted sum of scene pixels.  Equal to ``blur(x, k)`` cropped
    by ``kh // 2`` rows and ``kw // 2`` columns on each side (odd kernels).
    """
    images = np.asarray(images, dtype=np.float64)
    kernel = np.asarray(kernel, dtype=np.float64)
    kh, kw = kernel.shape
    if images.shape[-2] < kh or images.shape[-1] < kw:
        raise GmmRestoreError(f"blur_valid: images {images.shape[-2]}x{images.shape[-1]} are "
                              f"smaller than the kernel {kh}x{kw}")
    weights = kernel.reshape((1,) * (images.ndim - 2) + kernel.shape)
    return signal.fftconvolve(images, weights, mode="valid", axes=(-2, -1))


def _frame_margins(kernel_shape: tuple[int, int]) -> list[tuple[int, int]]:
    """The scene's rows above and below, columns left and right of a valid frame:
    ``[(top, bottom), (left, right)]`` for a kernel centred at its middle tap."""
    return [((k - 1) // 2, k - 1 - (k - 1) // 2) for k in kernel_shape]


def frame_centre(scenes: np.ndarray, kernel_shape: tuple[int, int]) -> np.ndarray:
    """The part (..., H, W) of scenes (..., H + kh - 1, W + kw - 1) under the frame that
    :func:`blur_valid` makes of them, for a kernel centred at its middle tap."""
    (top, bottom), (left, right) = _frame_margins(kernel_shape)
    return scenes[..., top:scenes.shape[-2] - bottom, left:scenes.shape[-1] - right]


def extend_frame(images: np.ndarray, kernel_shape: tuple[int, int]) -> np.ndarray:
    """Frames (n, H, W) extended by their edge values to a scene's size (n, H + kh - 1,
    W + kw - 1), each frame at the place :func:`frame_centre` takes back out: the plain
    guess of what lies outside a camera's frame (no false zero edge at its border)."""
    pads = [(0, 0)] * (np.ndim(images) - 2) + _frame_margins(kernel_shape)
    return np.pad(images, pads, mode="edge")


def blur_valid_adjoint(images: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """Adjoint of :func:`blur_valid`: full correlation with ``kernel``.

    images : (..., H, W).  Returns (..., H + kh - 1, W + kw - 1);
    ``<blur_valid(x), y> == <x, blur_valid_adjoint(y)>``.
    """
    images = np.asarray(images, dtype=np.float64)
    kernel = np.asarray(kernel, dtype=np.float64)[::-1, ::-1]
    weights = kernel.reshape((1,) * (images.ndim - 2) + kernel.shape)
    return signal.fftconvolve(images, weights, mode="full", axes=(-2, -1))


def quantize(images: np.ndarray, bits: int) -> np.ndarray:
    """What an image file of ``bits`` bits stores: clipped to [0, 1], rounded to its levels."""
    if int(bits) != bits or not 1 <= bits <= 16:
        raise GmmRestoreError(f"quantisation: bits must be an integer in 1..16, got {bits}")
    levels = 2.0 ** int(bits) - 1
    return np.round(np.clip(images, 0.0, 1.0) * levels) / levels


def blur_dense_matrix(kernel: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Dense (H·W, H·W) matrix of :func:`blur` on row-major flattened images.

    Built column by column from unit images; for tests and tiny images only.
    """
    h, w = shape
    basis = np.eye(h * w).reshape(h * w, h, w)
    return blur(basis, kernel).reshape(h * w, h * w).T


def patch_blur_matrix(kernel: np.ndarray, m: int) -> np.ndarray:
    """Patch-level blur ``W`` (m², m²): the blur of a row-major m x m patch, zero outside it."""
    return blur_dense_matrix(kernel, (m, m))


def kernel_from_patch_matrix(W: np.ndarray, m: int, atol: float = 1e-8) -> np.ndarray:
    """Recover the convolution kernel behind a patch matrix ``W`` (m², m²).

    Every entry ``W[p, q]`` of a convolution matrix depends only on the offset between
    output pixel p and input pixel q; offsets span ``-(m-1) .. m-1``, so the kernel comes
    back as a (2m-1, 2m-1) array, trimmed of all-zero outer rings.  Raises a
    ``GmmRestoreError`` if ``W`` is not such a matrix (it is then usable at patch level
    only).
    """
    W = np.asarray(W, dtype=np.float64)
    rows, cols = np.divmod(np.arange(m * m), m)
    # offset of input pixel q relative to output pixel p is (rows[q]-rows[p], cols[q]-cols[p]);
    # the kernel tap is at centre minus that offset (convolution flips).
    dr = rows[:, None] - rows[None, :] + (m - 1)
    dc = cols[:, None] - cols[None, :] + (m - 1)
    size = 2 * m - 1
    total = np.zeros((size, size))
    count = np.zeros((size, size))
    np.add.at(total, (dr, dc), W)
    np.add.at(count, (dr, dc), 1.0)
    kernel = total / count
    if not np.allclose(kernel[dr, dc], W, atol=atol, rtol=1e-6):
        raise GmmRestoreError(
            "patch matrix W is not a 2-D convolution matrix (entries vary along diagonals); "
            "it can only be used at patch level")
    while kernel.shape[0] > 1 and np.allclose(kernel[[0, -1], :], 0, atol=atol) \
            and np.allclose(kernel[:, [0, -1]], 0, atol=atol):
        kernel = kernel[1:-1, 1:-1]
    return kernel


def validate_patch_matrix(W: np.ndarray, m: int | None = None, name: str = "W") -> np.ndarray:
    """Check a user patch matrix: float dtype, (m², m²), finite.  Returns it as float64.

    ``m`` defaults to the square root of the matrix's size.
    """
    W = np.asarray(W)
    if W.dtype.kind != "f":
        raise GmmRestoreError(f"{name}: dtype {W.dtype}; the patch matrix must be float")
    if W.ndim != 2 or W.shape[0] != W.shape[1]:
        raise GmmRestoreError(f"{name}: shape {W.shape}; expected a square (m², m²) matrix")
    if m is None:
        m = int(round(np.sqrt(W.shape[0])))
        if m * m != W.shape[0]:
            raise GmmRestoreError(f"{name}: shape {W.shape}: {W.shape[0]} is not m² for an "
                                  "integer patch size m")
    if W.shape != (m * m, m * m):
        raise GmmRestoreError(f"{name}: shape {W.shape}, expected ({m * m}, {m * m}) for "
                              f"patch size m={m}")
    bad = int(np.count_nonzero(~np.isfinite(W)))
    if bad:
        raise GmmRestoreError(f"{name}: {bad} NaN/Inf entries in the patch matrix")
    return W.astype(np.float64)


def load_patch_matrix(path: str | os.PathLike, m: int | None = None) -> np.ndarray:
    """Load and validate a user-supplied m² x m² patch blur matrix from a .npy file.

    ``m`` defaults to the square root of the matrix's size.  Returns (m², m²) float64.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise GmmRestoreError(f"{path}: patch matrix file not found")
    with open(path, "rb") as fh:
        if fh.read(6) != b"\x93NUMPY":
            raise GmmRestoreError(f"{path}: not a .npy file (no NumPy header); save the matrix "
                                  "with numpy.save")
    try:
        W = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as err:
        if "pickle" in str(err):
            raise GmmRestoreError(f"{path}: holds pickled Python objects, not a numeric "
                                  "matrix") from None
        raise GmmRestoreError(f"{path}: not a readable .npy array (truncated or corrupt?): "
                              f"{err}") from None
    return validate_patch_matrix(W, m, name=path)
