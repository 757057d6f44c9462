"""Image files to gray intensities in [0, 1], by what each pixel format means.

:func:`read_image` opens a PNG / JPEG / TIFF file with Pillow and :func:`pil_to_gray` maps
every image mode Pillow can return to (H, W) float64 gray in [0, 1]:

- bilevel ``1``: {0, 1}; 8-bit gray ``L``: / 255;
- unsigned integers ``I;16`` (any byte order) and ``I`` (32-bit, as Pillow opens 16-bit
  PNGs and integer TIFFs): divided by the largest value of the file's bit depth (TIFF
  ``BitsPerSample``, 16 for PNG), so a 12-bit TIFF reaches 1 at 4095; signed integers
  (TIFF ``SampleFormat`` 2, ``I;16S``) by their largest positive value, and negative
  values are an error;
- float ``F``: taken as is; it must be finite and within [0, 1];
- colour (``RGB``, ``RGBX``, palette ``P``, ``CMYK``, ``YCbCr``, ``HSV``): converted to
  RGB by Pillow (palette entries looked up, CMYK and YCbCr by their definitions; Adobe
  CMYK JPEGs are stored inverted and Pillow undoes that), then gray = 0.2125 R + 0.7154 G
  + 0.0721 B (as ``skimage.color.rgb2gray``);
- ``LAB``: the lightness channel L* turned into luminance and sRGB-encoded like the
  other modes' gray;
- alpha (``LA``, ``La``, ``PA``, ``RGBA``, ``RGBa``, palette transparency): dropped, with a
  warning when some pixels are not opaque (the colour under them is kept).

Unreadable files, unknown modes and OS errors (permissions, symlink loops) raise a
:class:`GmmRestoreError` of one line naming the file.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator

import numpy as np

from .h5io import GmmRestoreError

log = logging.getLogger("gmmrestore.imageio")

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".tif", ".tiff")
#: Weights of R, G, B in gray (ITU-R BT.709 luma, as skimage.color.rgb2gray).
RGB_WEIGHTS = np.array([0.2125, 0.7154, 0.0721])
_TIFF_BITS_PER_SAMPLE, _TIFF_SAMPLE_FORMAT = 258, 339
_ALPHA_MODES = {"LA": "L", "La": "L", "PA": "RGB", "RGBA": "RGB", "RGBa": "RGB"}


def _one_line(text: str) -> str:
    return "; ".join(part.strip() for part in str(text).splitlines() if part.strip())


def _integer_depth(im, default_bits: int) -> tuple[int, bool]:
    """(bits, signed) of an integer image: TIFF tags when present, else ``default_bits``
    unsigned (16 for PNG's 16-bit gray)."""
    tags = getattr(im, "tag_v2", None)
    bits, signed = default_bits, im.mode.endswith("S")
    if tags is not None:
        value = tags.get(_TIFF_BITS_PER_SAMPLE, bits)
        bits = int(value[0] if isinstance(value, tuple) else value)
        fmt = tags.get(_TIFF_SAMPLE_FORMAT, 1)
        signed = signed or int(fmt[0] if isinstance(fmt, tuple) else fmt) == 2
    return bits, signed


def _integer_to_unit(x: np.ndarray, bits: int, signed: bool, name: str) -> np.ndarray:
    if signed and x.size and x.min() < 0:
        raise GmmRestoreError(f"{name}: signed integer image with negative values "
                              f"(min {x.min()}); expected intensities >= 0")
    top = 2 ** (bits - 1) - 1 if signed else 2 ** bits - 1
    if x.size and x.max() > top:
        raise GmmRestoreError(f"{name}: pixel value {x.max()} above {top}, the largest of "
                              f"its {bits}-bit {'signed ' if signed else ''}format")
    return x.astype(np.float64) / top


def _float_to_unit(x: np.ndarray, name: str) -> np.ndarray:
    x = x.astype(np.float64)
    bad = int(np.count_nonzero(~np.isfinite(x)))
    if bad:
        raise GmmRestoreError(f"{name}: {bad} NaN/Inf pixel value(s)")
    if x.size and (x.min() < 0 or x.max() > 1):
        raise GmmRestoreError(f"{name}: float image with values in [{x.min():.4g}, "
                              f"{x.max():.4g}]; float images must already lie in [0, 1]")
    return x


def _rgb_to_gray(rgb8: np.ndarray) -> np.ndarray:
    return (rgb8.astype(np.float64) / 255.0) @ RGB_WEIGHTS


def _lab_to_gray(lab8: np.ndarray) -> np.ndarray:
    """Pillow's LAB (L* scaled to 0-255) to sRGB-encoded gray in [0, 1]."""
    lightness = lab8[..., 0].astype(np.float64) * (100.0 / 255.0)
    fy = (lightness + 16.0) / 116.0
    y = np.where(lightness > 8.0, fy ** 3, lightness / (24389.0 / 27.0))
    return np.where(y <= 0.0031308, 12.92 * y, 1.055 * np.power(y, 1 / 2.4) - 0.055)


def _drop_alpha(im, name: str):
    """``im`` without its alpha channel (or palette transparency), warning when some
    pixels are not opaque."""
    if im.mode == "P" and "transparency" in im.info:
        im = im.convert("PA")
    if im.mode not in _ALPHA_MODES:
        return im
    if im.mode in ("La", "RGBa"):
        im = im.convert("LA" if im.mode == "La" else "RGBA")
    alpha = np.asarray(im.getchannel("A"))
    if alpha.size and alpha.min() < 255:
        log.warning("%s: alpha channel dropped; %d of %d pixels are not opaque (their "
                    "colour is used as is)", name, int(np.count_nonzero(alpha < 255)),
                    alpha.size)
    return im.convert(_ALPHA_MODES[im.mode])


def pil_to_gray(im, name: str) -> np.ndarray:
    """A Pillow image as (H, W) float64 gray in [0, 1], by the meaning of its mode (see the
    module docstring).  Raises :class:`GmmRestoreError` naming ``name``."""
    im = _drop_alpha(im, name)
    mode = im.mode
    if mode == "1":
        return np.asarray(im, dtype=bool).astype(np.float64)
    if mode == "L":
        return np.asarray(im, dtype=np.uint8) / 255.0
    if mode.startswith("I;16"):
        bits, signed = _integer_depth(im, 16)
        return _integer_to_unit(np.asarray(im).astype(np.int64), bits, signed, name)
    if mode == "I":
        bits, signed = _integer_depth(im, 16 if im.format == "PNG" else 32)
        if im.format != "PNG" and getattr(im, "tag_v2", None) is None:
            signed = True  # Pillow's "I" holds signed 32-bit values
        return _integer_to_unit(np.asarray(im).astype(np.int64), bits, signed, name)
    if mode == "F":
        return _float_to_unit(np.asarray(im), name)
    if mode == "LAB":
        return _lab_to_gray(np.asarray(im))
    if mode in ("RGB", "RGBX", "P", "CMYK", "YCbCr", "HSV"):
        return _rgb_to_gray(np.asarray(im.convert("RGB")))
    raise GmmRestoreError(f"{name}: unsupported image mode '{mode}' (supported: 1, L, P, "
                          "RGB, RGBA, CMYK, YCbCr, LAB, HSV, I, I;16, F and their alpha forms)")


@contextlib.contextmanager
def open_image(path: str | os.PathLike, formats: tuple[str, ...] | None = None,
               failure: str = "cannot read as an image", name: str | None = None) -> Iterator:
    """Open ``path`` with Pillow (only ``formats`` when given) and load its pixels.

    Yields the loaded ``PIL.Image.Image``.  Decoding and OS errors (permissions, symlink
    loop, truncated or unidentified file) raise :class:`GmmRestoreError` of one line,
    ``"<name or path>: <failure> (<reason>)"``; a :class:`GmmRestoreError` raised by the caller's
    block passes through.
    """
    from PIL import Image, UnidentifiedImageError

    path = os.fspath(path)
    name = path if name is None else name
    try:
        with Image.open(path, formats=formats) as im:
            im.load()
            yield im
    except GmmRestoreError:
        raise
    except (UnidentifiedImageError, SyntaxError, ValueError, EOFError) as err:
        raise GmmRestoreError(f"{name}: {failure} ({type(err).__name__}: "
                              f"{_one_line(err)})") from None
    except OSError as err:
        raise GmmRestoreError(
            f"{name}: {failure} ({err.strerror or _one_line(err)})") from None


def read_image(path: str | os.PathLike) -> np.ndarray:
    """Read a PNG / JPEG / TIFF file as (H, W) float64 gray in [0, 1] (:func:`pil_to_gray`).

    Raises :class:`GmmRestoreError` (one line, naming the file) when it has another
    extension, cannot be opened (permissions, symlink loop) or decoded, or holds several
    pages.
    """
    path = os.fspath(path)
    if not path.lower().endswith(IMAGE_EXTENSIONS):
        raise GmmRestoreError(
            f"{path}: not an image file (supported: {', '.join(IMAGE_EXTENSIONS)})")
    with open_image(path) as im:
        if getattr(im, "n_frames", 1) > 1:
            raise GmmRestoreError(f"{path}: {im.n_frames} pages or frames; give one image "
                                  "per file (multi-page files are not supported)")
        return pil_to_gray(im, path)
