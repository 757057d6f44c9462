"""Image files of every Pillow mode decode to the gray their pixels mean (gmmrestore.imageio).

Each case writes one file of one mode, made by the test from a known gray image, and checks
the decoded gray against it: range [0, 1], correlation > 0.99 and a small error.
"""

from __future__ import annotations

import logging
import os

import numpy as np
import pytest
from PIL import Image

from gmmrestore import datasets
from gmmrestore.h5io import GmmRestoreError
from gmmrestore.imageio import RGB_WEIGHTS, open_image, pil_to_gray, read_image

H, W = 24, 32


def source_gray() -> np.ndarray:
    """(H, W) gray in [0.02, 0.98]: a ramp, a disc and seeded texture."""
    rng = np.random.default_rng(7)
    yy, xx = np.mgrid[:H, :W]
    g = 0.1 + 0.6 * xx / W + 0.2 * ((yy - 12) ** 2 + (xx - 16) ** 2 < 40)
    return np.clip(g + 0.08 * rng.random((H, W)), 0.02, 0.98)


def _u8(x):
    return np.round(x * 255).astype(np.uint8)


def _srgb_to_lab_lightness(v):
    """Textbook sRGB-encoded gray -> CIE L* (D65 white, a* = b* = 0)."""
    y = np.where(v <= 0.04045, v / 12.92, ((v + 0.055) / 1.055) ** 2.4)
    f = np.where(y > (6 / 29) ** 3, np.cbrt(y), y / (3 * (6 / 29) ** 2) + 4 / 29)
    return 116 * f - 16


def _tinted_rgb(g):
    """An RGB image whose rgb2gray is ``g`` up to 8-bit rounding, with real colour."""
    r = np.clip(g + 0.05, 0, 1)
    b = np.clip(g - 0.1, 0, 1)
    green = np.clip((g - RGB_WEIGHTS[0] * r - RGB_WEIGHTS[2] * b) / RGB_WEIGHTS[1], 0, 1)
    return np.stack([r, green, b], axis=-1)


def make(mode, g):
    """(Pillow image of ``mode``, the gray its pixels mean) built from gray ``g``."""
    L = Image.fromarray(_u8(g))
    if mode == "1":
        bits = g > 0.5
        return Image.fromarray(bits), bits.astype(float)
    if mode == "L":
        return L, _u8(g) / 255
    if mode in ("LA", "RGBA"):
        alpha = Image.fromarray(np.full((H, W), 255, np.uint8))
        if mode == "LA":
            return Image.merge("LA", (L, alpha)), _u8(g) / 255
        return Image.merge("RGBA", (L, L, L, alpha)), _u8(g) / 255
    if mode in ("RGB", "CMYK", "YCbCr", "RGBX"):
        rgb8 = _u8(_tinted_rgb(g))
        return Image.fromarray(rgb8).convert(mode), (rgb8 / 255) @ RGB_WEIGHTS
    if mode == "P":
        rgb8 = _u8(_tinted_rgb(g))
        im = Image.fromarray(rgb8).convert("P", palette=Image.Palette.ADAPTIVE, colors=256)
        # the palette holds the colours after quantisation: the expected gray is theirs
        return im, (np.asarray(im.convert("RGB")) / 255) @ RGB_WEIGHTS
    if mode == "LAB":
        lightness = np.round(_srgb_to_lab_lightness(g) * 255 / 100).astype(np.uint8)
        neutral = Image.fromarray(np.full((H, W), 128, np.uint8))
        return Image.merge("LAB", (Image.fromarray(lightness), neutral, neutral)), g
    if mode in ("I;16", "I;16B"):
        a = np.round(g * 65535).astype(">u2" if mode == "I;16B" else "<u2")
        return Image.frombytes(mode, (W, H), a.tobytes()), a / 65535
    if mode == "I":   # 32-bit signed TIFF: full scale is 2**31 - 1
        a = np.round(g * (2**31 - 1)).astype(np.int32)
        return Image.fromarray(a), a / (2**31 - 1)
    if mode == "F":
        return Image.fromarray(g.astype(np.float32)), g.astype(np.float32).astype(float)
    raise AssertionError(mode)


# (mode, file type, largest error against the expected gray): lossless files up to float
# rounding, JPEG up to its compression
MODES = [
    ("1", "png", 1e-12), ("1", "tif", 1e-12),
    ("L", "png", 1e-12), ("L", "jpg", 0.08),
    ("LA", "png", 1e-12), ("LA", "tif", 1e-12),
    ("P", "png", 1e-12), ("P", "tif", 1e-12),
    ("RGB", "png", 1e-12), ("RGB", "jpg", 0.1), ("RGBX", "tif", 1e-12),
    ("RGBA", "png", 1e-12), ("RGBA", "tif", 1e-12),
    ("CMYK", "tif", 1e-12), ("CMYK", "jpg", 0.1),
    ("YCbCr", "tif", 3 / 255),   # Pillow's YCbCr -> RGB rounds in 8 bits
    ("LAB", "tif", 3 / 255),     # L* stored in 8 bits
    ("I;16", "png", 1e-12), ("I;16", "tif", 1e-12), ("I;16B", "tif", 1e-12),
    ("I", "tif", 1e-12), ("F", "tif", 1e-7),
]


def write_mode_files(folder, g=None):
    """One file of every mode of :data:`MODES` in ``folder``; returns name -> expected gray."""
    g = source_gray() if g is None else g
    os.makedirs(folder, exist_ok=True)
    expected = {}
    for mode, ext, _ in MODES:
        im, want = make(mode, g)
        name = f"{mode.replace(';', '_')}.{ext}"
        im.save(os.path.join(folder, name), **({"quality": 95} if ext == "jpg" else {}))
        expected[name] = want
    return expected


@pytest.mark.parametrize("mode, ext, tol", MODES, ids=[f"{m}.{e}" for m, e, _ in MODES])
def test_every_mode_decodes_to_its_gray(tmp_path, mode, ext, tol):
    g = source_gray()
    im, want = make(mode, g)
    path = tmp_path / f"image.{ext}"
    im.save(path, **({"quality": 95} if ext == "jpg" else {}))
    with Image.open(path) as check:      # the file holds the mode under test
        assert check.mode == ("RGB" if mode == "RGBX" else mode)
    got = read_image(path)
    assert got.shape == (H, W) and got.dtype == np.float64
    assert 0 <= got.min() and got.max() <= 1
    assert np.abs(got - want).max() <= tol, np.abs(got - want).max()
    reference = want if mode == "1" else g   # a bilevel image holds the thresholded gray
    assert np.corrcoef(got.ravel(), reference.ravel())[0, 1] > 0.99


def test_inverted_and_dark_modes_of_the_old_decoder():
    """The modes skimage.io decoded wrongly (CMYK inverted, palette TIFF as indices, LAB
    and YCbCr as RGB) span the source's range here: max within 0.05 of the source's."""
    g = source_gray()
    for mode in ("CMYK", "LAB", "YCbCr"):
        im, _ = make(mode, g)
        got = pil_to_gray(im, mode)
        assert abs(got.max() - g.max()) < 0.05 and abs(got.min() - g.min()) < 0.05, mode


def test_alpha_is_dropped_with_a_warning(tmp_path, caplog):
    g = source_gray()
    alpha = np.full((H, W), 255, np.uint8)
    alpha[:4] = 0
    im = Image.merge("RGBA", [Image.fromarray(_u8(g))] * 3 + [Image.fromarray(alpha)])
    im.save(tmp_path / "a.png")
    with caplog.at_level(logging.WARNING, logger="gmmrestore"):
        got = read_image(tmp_path / "a.png")
    np.testing.assert_allclose(got, _u8(g) / 255, atol=1e-12)
    assert "a.png: alpha channel dropped; 128 of 768 pixels are not opaque" in caplog.text


def test_12_bit_tiff_and_signed_negative_values(tmp_path):
    """Bit depth from the TIFF tags: 12 bits (BitsPerSample 12, as a camera's TIFF may
    declare; Pillow does not write it, so the tag is set on the opened image) reach 1 at
    4095; a signed image with negative values is refused."""
    a = np.round(source_gray() * 4095).astype(np.uint16)
    im = Image.frombytes("I;16", (W, H), a.tobytes())
    im.tag_v2 = {258: (12,), 339: (1,)}
    np.testing.assert_allclose(pil_to_gray(im, "d12.tif"), a / 4095, atol=1e-12)
    neg = np.zeros((H, W), np.int32)
    neg[0, 0] = -5
    Image.fromarray(neg).save(tmp_path / "neg.tif")
    with pytest.raises(GmmRestoreError, match=r"neg.tif: signed integer image with negative"):
        read_image(tmp_path / "neg.tif")


def test_unreadable_files_give_one_line_naming_the_file(tmp_path):
    folder = tmp_path / "img"
    folder.mkdir()
    data = (tmp_path / "ok.png")
    Image.fromarray(_u8(source_gray())).save(data)
    (folder / "cut.png").write_bytes(data.read_bytes()[:200])
    frames = [Image.fromarray(_u8(source_gray()))] * 2
    frames[0].save(folder / "pages.tif", save_all=True, append_images=frames[1:])
    for name, pattern in (("cut.png", "cut.png: cannot read as an image"),
                          ("pages.tif", "pages.tif: 2 pages or frames")):
        with pytest.raises(GmmRestoreError, match=pattern) as info:
            read_image(folder / name)
        assert "\n" not in str(info.value)
    os.symlink("loop_b.png", folder / "loop_a.png")
    os.symlink("loop_a.png", folder / "loop_b.png")
    with pytest.raises(GmmRestoreError, match=r"loop_[ab].png: cannot be read \(Too many levels "
                                              r"of symbolic links; a symlink loop\?\)"):
        datasets.list_image_files(folder)


def test_open_image_names_the_label_and_lets_the_callers_errors_through(tmp_path):
    good = tmp_path / "good.png"
    Image.fromarray(_u8(source_gray())).save(good)
    cut = tmp_path / "cut.png"
    cut.write_bytes(good.read_bytes()[:200])
    with pytest.raises(GmmRestoreError, match=r"^label.png: cannot decode \(") as info:
        with open_image(cut, failure="cannot decode", name="label.png"):
            pass
    assert "\n" not in str(info.value)
    with pytest.raises(GmmRestoreError, match="^the caller's check$"):
        with open_image(good) as im:
            assert im.size == (source_gray().shape[1], source_gray().shape[0])
            raise GmmRestoreError("the caller's check")
    jpeg = tmp_path / "jpeg.png"
    Image.fromarray(_u8(source_gray())).save(jpeg, format="JPEG")
    with open_image(jpeg) as im:  # any format by default
        assert im.format == "JPEG"
    with pytest.raises(GmmRestoreError, match=r"jpeg.png: cannot read as an image "
                                              r"\(UnidentifiedImageError: "):
        with open_image(jpeg, formats=("PNG",)):
            pass
