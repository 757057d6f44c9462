"""Tests of gmmrestore.datasets beyond downloads (subsets and the dataset file, image
folders, natural tiles, paired sets) and scripts/download_dataset.py's local sources,
scripts/import_paired.py.
"""

from __future__ import annotations

import os
from pathlib import Path

import imageio.v3
import numpy as np
import pytest
import skimage.io
from loopback import run_script

from gmmrestore import datasets
from gmmrestore.h5io import GmmRestoreError, read_h5, write_h5

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "download_dataset.py"
IMPORT_SCRIPT = ROOT / "scripts" / "import_paired.py"


# ---------------------------------------------------------------------------------------
# Subsets and the dataset file
# ---------------------------------------------------------------------------------------

def toy_pools(n_train=50, n_test=20, shape=(6, 5)):
    rng = np.random.default_rng(0)
    return datasets.Pools(
        train=rng.random((n_train, *shape), dtype=np.float32),
        test=rng.random((n_test, *shape), dtype=np.float32),
        train_labels=np.arange(n_train), test_labels=np.arange(n_test) + 1000,
        attrs={"dataset": "toy", "source": "toy", "offline_fallback": False})


def test_make_dataset_subsets_are_disjoint_seeded_and_checked():
    pools = toy_pools()
    arrays, attrs = datasets.make_dataset(pools, n_train=30, n_validation=8, n_test=5, seed=3)
    assert (attrs["n_train"], attrs["n_validation"], attrs["n_test"]) == (30, 8, 5)
    assert (attrs["height"], attrs["width"], attrs["seed"]) == (6, 5, 3)
    tr, va = set(arrays["train_labels"]), set(arrays["validation_labels"])
    assert not tr & va and len(tr) == 30 and len(va) == 8
    np.testing.assert_array_equal(arrays["train"], pools.train[arrays["train_labels"]])
    np.testing.assert_array_equal(arrays["test"], pools.test[arrays["test_labels"] - 1000])
    again, _ = datasets.make_dataset(pools, n_train=30, n_validation=8, n_test=5, seed=3)
    for key in arrays:
        np.testing.assert_array_equal(arrays[key], again[key])
    other, _ = datasets.make_dataset(pools, n_train=10, n_validation=8, n_test=5, seed=3)
    np.testing.assert_array_equal(other["test_labels"], arrays["test_labels"])
    np.testing.assert_array_equal(other["validation_labels"], arrays["validation_labels"])
    seed4, _ = datasets.make_dataset(pools, n_train=30, n_validation=8, n_test=5, seed=4)
    assert not np.array_equal(seed4["test_labels"], arrays["test_labels"])
    defaults, attrs = datasets.make_dataset(pools)
    assert (attrs["n_train"], attrs["n_validation"], attrs["n_test"]) == (45, 5, 20)
    with pytest.raises(GmmRestoreError, match="test: 21 images requested but only 20"):
        datasets.make_dataset(pools, n_test=21)
    with pytest.raises(GmmRestoreError, match=r"train \(after validation\): 46 .* only 45"):
        datasets.make_dataset(pools, n_train=46)


def test_dataset_file_roundtrip_and_checks(tmp_path):
    arrays, attrs = datasets.make_dataset(toy_pools(), n_train=10, n_validation=3, n_test=4)
    path = tmp_path / "d.h5"
    datasets.write_dataset_file(path, arrays, attrs)
    back, battrs = datasets.load_dataset_file(path)
    for key in arrays:
        np.testing.assert_array_equal(back[key], arrays[key])
    assert battrs["kind"] == "dataset" and battrs["value_range"] == "[0, 1]"
    assert battrs["n_train"] == 10 and battrs["offline_fallback"] == 0

    bad = dict(arrays)
    bad["test"] = arrays["test"].copy()
    bad["test"][1, 2, 3] = np.nan
    write_h5(tmp_path / "nan.h5", "dataset", bad, attrs)
    with pytest.raises(GmmRestoreError, match=r"nan.h5: 'test' holds 1 NaN/Inf"):
        datasets.load_dataset_file(tmp_path / "nan.h5")
    with pytest.raises(GmmRestoreError, match="NaN/Inf"):
        datasets.write_dataset_file(tmp_path / "x.h5", bad, attrs)
    assert not (tmp_path / "x.h5").exists()
    bad["test"][1, 2, 3] = 1.5
    write_h5(tmp_path / "range.h5", "dataset", bad, attrs)
    with pytest.raises(GmmRestoreError,
                       match=r"range.h5: 'test' values span \[[0-9.e-]+, 1.5\]; expected \[0, 1\]"):
        datasets.load_dataset_file(tmp_path / "range.h5")
    del bad["validation"]
    write_h5(tmp_path / "missing.h5", "dataset", bad, attrs)
    with pytest.raises(GmmRestoreError, match="missing dataset.*validation"):
        datasets.load_dataset_file(tmp_path / "missing.h5")
    write_h5(tmp_path / "gmm.h5", "gmm", arrays, attrs)
    with pytest.raises(GmmRestoreError, match="kind 'gmm'"):
        datasets.load_dataset_file(tmp_path / "gmm.h5")


# ---------------------------------------------------------------------------------------
# Own images, natural photographs
# ---------------------------------------------------------------------------------------

def test_tile_image_against_loops():
    image = np.arange(7 * 10, dtype=float).reshape(7, 10)
    tiles = datasets.tile_image(image, 3)
    expected = [image[r:r + 3, c:c + 3] for r in (0, 3) for c in (0, 3, 6)]
    np.testing.assert_array_equal(tiles, np.stack(expected))
    with pytest.raises(GmmRestoreError, match="small.png: 7x10 pixels, smaller than one 8x8"):
        datasets.tile_image(image, 8, "small.png")


def write_image_folder(folder: Path, rng) -> dict[str, np.ndarray]:
    """Gray and colour PNG / TIFF / JPEG files of different sizes; returns expected gray."""
    from skimage.color import rgb2gray

    folder.mkdir()
    gray8 = rng.integers(0, 256, (20, 17), dtype=np.uint8)
    rgb8 = rng.integers(0, 256, (16, 24, 3), dtype=np.uint8)
    rgba8 = rng.integers(0, 256, (12, 12, 4), dtype=np.uint8)
    gray16 = rng.integers(0, 65536, (9, 30), dtype=np.uint16)
    skimage.io.imsave(folder / "a_gray.png", gray8, check_contrast=False)
    skimage.io.imsave(folder / "b_rgb.png", rgb8, check_contrast=False)
    skimage.io.imsave(folder / "c_rgba.png", rgba8, check_contrast=False)
    skimage.io.imsave(folder / "d_gray16.tif", gray16, check_contrast=False)
    imageio.v3.imwrite(folder / "e_photo.jpg", rgb8, quality=95)
    (folder / ".hidden").write_text("ignored")
    (folder / "subdir").mkdir()
    return {
        "a_gray.png": gray8 / 255.0,
        "b_rgb.png": rgb2gray(rgb8),
        "c_rgba.png": rgb2gray(rgba8[:, :, :3]),
        "d_gray16.tif": gray16 / 65535.0,
    }


def test_read_image_formats(tmp_path):
    expected = write_image_folder(tmp_path / "img", np.random.default_rng(13))
    for name, want in expected.items():
        got = datasets.read_image(tmp_path / "img" / name)
        np.testing.assert_allclose(got, want, atol=1e-12, err_msg=name)
    jpg = datasets.read_image(tmp_path / "img" / "e_photo.jpg")
    assert jpg.shape == (16, 24) and 0 <= jpg.min() and jpg.max() <= 1
    # lossy, but close to the gray of the original colours
    assert np.abs(jpg - datasets.read_image(tmp_path / "img" / "b_rgb.png")).mean() < 0.1


def test_read_image_errors_name_the_file(tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(GmmRestoreError, match="notes.txt: not an image file"):
        datasets.read_image(tmp_path / "notes.txt")
    (tmp_path / "broken.png").write_bytes(b"\x89PNG not really")
    with pytest.raises(GmmRestoreError, match="broken.png: cannot read as an image"):
        datasets.read_image(tmp_path / "broken.png")
    img = np.full((8, 8), 0.5, dtype=np.float32)
    img[2, 3] = np.inf
    skimage.io.imsave(tmp_path / "inf.tif", img, check_contrast=False)
    with pytest.raises(GmmRestoreError, match=r"inf.tif: 1 NaN/Inf"):
        datasets.read_image(tmp_path / "inf.tif")
    skimage.io.imsave(tmp_path / "big.tif", np.full((8, 8), 3.0, np.float32),
                      check_contrast=False)
    with pytest.raises(GmmRestoreError, match=r"big.tif: float image .* \[0, 1\]"):
        datasets.read_image(tmp_path / "big.tif")


def test_load_folder_tiles_and_splits_by_file(tmp_path):
    expected = write_image_folder(tmp_path / "img", np.random.default_rng(14))
    pools = datasets.load_folder(tmp_path / "img", 4, validation=1, test=1, seed=0)
    files = {s: pools.attrs[f"{s}_files"] for s in ("train", "validation", "test")}
    assert sorted(sum(files.values(), [])) == sorted(pools.attrs["source_files"])
    assert len(files["test"]) == 1 and len(files["validation"]) == 1
    assert len(files["train"]) == 3
    assert pools.attrs["source_files"] == ["a_gray.png", "b_rgb.png", "c_rgba.png",
                                           "d_gray16.tif", "e_photo.jpg"]
    n_tiles = {"a_gray.png": 5 * 4, "b_rgb.png": 4 * 6, "c_rgba.png": 9,
               "d_gray16.tif": 2 * 7, "e_photo.jpg": 4 * 6}
    for split in ("train", "validation", "test"):
        pool = getattr(pools, split)
        assert pool.shape == (sum(n_tiles[f] for f in files[split]), 4, 4)
        assert pool.dtype == np.float32
    # the first tile of the first training file is its top-left corner
    first = files["train"][0]
    if first in expected:
        np.testing.assert_allclose(pools.train[0], expected[first][:4, :4], atol=1e-6)
    again = datasets.load_folder(tmp_path / "img", 4, validation=1, test=1, seed=0)
    np.testing.assert_array_equal(again.train, pools.train)
    assert {tuple(datasets.load_folder(tmp_path / "img", 4, validation=1, test=1,
                                       seed=s).attrs["test_files"]) for s in range(8)} != \
        {tuple(files["test"])}
    with pytest.raises(GmmRestoreError, match="d_gray16.tif: 9x30 pixels, smaller than one "
                                              "10x10"):
        datasets.load_folder(tmp_path / "img", 10)
    with pytest.raises(GmmRestoreError, match="cannot give 3 test"):
        datasets.load_folder(tmp_path / "img", 4, validation=2, test=3)
    (tmp_path / "img" / "readme.md").write_text("not an image")
    with pytest.raises(GmmRestoreError, match="readme.md: not an image file"):
        datasets.load_folder(tmp_path / "img", 4)


def test_split_files_fractions_and_counts():
    names = [f"f{i:02d}.png" for i in range(20)]
    parts = datasets.split_files(names, 0.15, 0.2, seed=1)
    assert [len(parts[s]) for s in ("train", "validation", "test")] == [13, 3, 4]
    assert sorted(sum(parts.values(), [])) == names
    assert datasets.split_files(names[::-1], 0.15, 0.2, seed=1) == parts
    assert len(datasets.split_files(names, 0, 2, seed=1)["validation"]) == 0
    with pytest.raises(GmmRestoreError, match="whole number"):
        datasets.split_files(names, 2.5, 2, seed=1)


def test_natural_set_offline():
    pools = datasets.load_natural(128)
    assert pools.test.shape == (2 * 16, 128, 128)  # camera and astronaut, 512x512 each
    assert "skimage.data.camera" in pools.attrs["test_files"]
    assert "skimage.data.camera" not in pools.attrs["train_files"]
    assert len(pools.attrs["train_files"]) >= 5 and len(pools.train) > 40
    assert pools.train.dtype == np.float32 and 0 <= pools.train.min() <= pools.train.max() <= 1
    import skimage.data

    np.testing.assert_allclose(pools.test[0], skimage.data.camera()[:128, :128] / 255, atol=1e-6)


# ---------------------------------------------------------------------------------------
# Paired sets
# ---------------------------------------------------------------------------------------

def gaussian_patch_matrix(m: int, size: int = 3, std: float = 1.0) -> np.ndarray:
    """Dense 'same' zero-padded convolution on an m x m patch, by explicit loops."""
    r = size // 2
    ax = np.arange(-r, r + 1)
    k = np.exp(-(ax[:, None] ** 2 + ax[None, :] ** 2) / (2 * std ** 2))
    k /= k.sum()
    W = np.zeros((m * m, m * m))
    for i in range(m):
        for j in range(m):
            for a in range(-r, r + 1):
                for b in range(-r, r + 1):
                    if 0 <= i + a < m and 0 <= j + b < m:
                        W[i * m + j, (i + a) * m + (j + b)] = k[a + r, b + r]
    return W


def write_paired(folder: Path, ids, shape=(10, 10), m=4, rng=None):
    rng = rng or np.random.default_rng(15)
    (folder / "original").mkdir(parents=True)
    (folder / "corrupted").mkdir()
    orig = {}
    for i in ids:
        o = rng.integers(0, 256, shape, dtype=np.uint8)
        c = rng.integers(0, 256, shape, dtype=np.uint8)
        skimage.io.imsave(folder / "original" / f"{i}.png", o, check_contrast=False)
        skimage.io.imsave(folder / "corrupted" / f"{i}.png", c, check_contrast=False)
        orig[i] = (o, c)
    np.save(folder / "W.npy", gaussian_patch_matrix(m))
    return orig


def test_load_paired(tmp_path):
    written = write_paired(tmp_path / "p", ["10", "2", "1"])
    originals, corrupted, W, ids = datasets.load_paired(tmp_path / "p")
    assert ids == ["1", "2", "10"]  # numeric order
    assert originals.shape == corrupted.shape == (3, 10, 10) and W.shape == (16, 16)
    for k, i in enumerate(ids):
        np.testing.assert_allclose(originals[k], written[i][0] / 255)
        np.testing.assert_allclose(corrupted[k], written[i][1] / 255)


@pytest.mark.parametrize("case, pattern", [
    ("only_original", r"unpaired ids \(only in original/: 3\)"),
    ("only_corrupted", r"unpaired ids \(only in corrupted/: 7\)"),
    ("unreadable", r"corrupted/2.png: cannot read as an image"),
    ("not_png", r"original/1.jpg: expected <id>.png files only"),
    ("no_original", r"original: folder not found \(a paired set needs original/"),
    ("size", r"id 2: original is 10x10, corrupted 10x9"),
    ("W_int", r"W.npy: dtype int64; the patch matrix must be float"),
    ("W_rect", r"W.npy: shape \(16, 15\); expected a square"),
    ("W_not_m2", r"W.npy: shape \(15, 15\): 15 is not m²"),
    ("W_nan", r"W.npy: 1 NaN/Inf"),
    ("no_W", r"W.npy: patch matrix file not found"),
])
def test_load_paired_errors(tmp_path, case, pattern):
    folder = tmp_path / "p"
    write_paired(folder, ["1", "2"])
    W = gaussian_patch_matrix(4)
    if case == "only_original":
        skimage.io.imsave(folder / "original" / "3.png", np.zeros((10, 10), np.uint8),
                          check_contrast=False)
    elif case == "only_corrupted":
        skimage.io.imsave(folder / "corrupted" / "7.png", np.zeros((10, 10), np.uint8),
                          check_contrast=False)
    elif case == "unreadable":
        (folder / "corrupted" / "2.png").write_bytes(b"\x89PNG truncated")
    elif case == "not_png":
        (folder / "original" / "1.png").rename(folder / "original" / "1.jpg")
    elif case == "no_original":
        import shutil

        shutil.rmtree(folder / "original")
    elif case == "size":
        skimage.io.imsave(folder / "corrupted" / "2.png", np.zeros((10, 9), np.uint8),
                          check_contrast=False)
    elif case == "W_int":
        np.save(folder / "W.npy", W.astype(np.int64))
    elif case == "W_rect":
        np.save(folder / "W.npy", W[:, :15])
    elif case == "W_not_m2":
        np.save(folder / "W.npy", W[:15, :15])
    elif case == "W_nan":
        W[3, 3] = np.nan
        np.save(folder / "W.npy", W)
    elif case == "no_W":
        os.remove(folder / "W.npy")
    with pytest.raises(GmmRestoreError, match=pattern):
        datasets.load_paired(folder)


def test_match_mean_std_and_observation_stats():
    rng = np.random.default_rng(16)
    x = rng.random((3, 5, 6))
    mapped, gain, offset = datasets.match_mean_std(x, 0.2, 0.05)
    np.testing.assert_allclose(mapped.mean(axis=(1, 2)), 0.2)
    np.testing.assert_allclose(mapped.std(axis=(1, 2)), 0.05)
    np.testing.assert_allclose(mapped, gain[:, None, None] * x + offset[:, None, None])
    # the prediction equals a zero-padded "same" convolution when W is one (kernel fits)
    from scipy.signal import convolve2d

    clean = rng.random((3, 9, 11))
    W = gaussian_patch_matrix(5)
    r = np.arange(-1, 2)
    k = np.exp(-(r[:, None] ** 2 + r[None, :] ** 2) / 2.0)
    k /= k.sum()
    expected = np.stack([convolve2d(im, k, mode="same") for im in clean])
    np.testing.assert_allclose(datasets.predict_observations(clean, W), expected, atol=1e-14)
    # any W: pixel by pixel with the clipped centred patch
    Wr = rng.standard_normal((16, 16))
    pred = datasets.predict_observations(clean, Wr)
    for n, i, j in [(0, 0, 0), (1, 4, 5), (2, 8, 10), (0, 1, 9), (2, 6, 2)]:
        pi, pj = min(max(i - 2, 0), 9 - 4), min(max(j - 2, 0), 11 - 4)
        want = Wr[(i - pi) * 4 + (j - pj)] @ clean[n, pi:pi + 4, pj:pj + 4].ravel()
        np.testing.assert_allclose(pred[n, i, j], want)
    mean, std = datasets.observation_stats(clean, W, 0.1)
    np.testing.assert_allclose(mean, expected.mean())
    np.testing.assert_allclose(std, np.sqrt(np.mean([e.var() for e in expected]) + 0.01))
    with pytest.raises(GmmRestoreError, match="smaller than the 4x4 patches"):
        datasets.predict_observations(clean[:, :3], Wr)


# ---------------------------------------------------------------------------------------
# Scripts
# ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("script", [SCRIPT, IMPORT_SCRIPT])
def test_scripts_help(script):
    result = run_script(script, "--help")
    assert result.returncode == 0, result.stderr
    assert "--out" in result.stdout



def test_script_folder_and_natural(tmp_path, run_main):
    write_image_folder(tmp_path / "img", np.random.default_rng(18))
    out = tmp_path / "own.h5"
    code, err = run_main(SCRIPT, "--source", "folder", "--folder", tmp_path / "img",
                         "--out", out, "--image-size", 4, "--validation-files", 1,
                         "--test-files", 0.2)
    assert code == 0, err
    arrays, attrs = datasets.load_dataset_file(out)
    assert attrs["dataset"] == "img" and attrs["source"].startswith("folder ")
    assert len(attrs["test_files"]) == 1 and attrs["height"] == attrs["width"] == 4
    assert "train_labels" not in arrays
    (tmp_path / "img" / "data.csv").write_text("1,2,3")
    code, err = run_main(SCRIPT, "--source", "folder", "--folder", tmp_path / "img",
                         "--out", tmp_path / "x.h5", "--image-size", 4)
    assert code == 2 and "data.csv: not an image file" in err
    assert not (tmp_path / "x.h5").exists()

    out = tmp_path / "natural.h5"
    code, err = run_main(SCRIPT, "--source", "natural", "--out", out, "--image-size", 32,
                         "--n-train", 200, "--n-validation", 50, "--n-test", 40)
    assert code == 0, err
    arrays, attrs = datasets.load_dataset_file(out)
    assert arrays["train"].shape == (200, 32, 32) and arrays["test"].shape == (40, 32, 32)
    assert attrs["source"].startswith("scikit-image natural")
    assert "skimage.data.camera" in attrs["test_files"]


def test_import_paired_script(tmp_path, run_main):
    write_paired(tmp_path / "p", ["a", "b"], shape=(12, 12))
    out = tmp_path / "corrupted.h5"
    code, err = run_main(IMPORT_SCRIPT, "--folder", tmp_path / "p", "--out", out,
                         "--sigma", 0.1, "--intensity", "unit")
    assert code == 0, err
    arrays, attrs = read_h5(out, "corrupted", ["clean", "corrupted", "patch_matrix"])
    clean, corrupted, W, ids = datasets.load_paired(tmp_path / "p")
    np.testing.assert_array_equal(arrays["clean"], clean)
    np.testing.assert_array_equal(arrays["corrupted"], corrupted)
    np.testing.assert_array_equal(arrays["patch_matrix"], W)
    assert attrs["blur"] == "paired" and attrs["noise_sigma"] == 0.1
    assert attrs["ids"] == ["a", "b"] and attrs["intensity_mapping"] == "unit"

    ref_arrays, ref_attrs = datasets.make_dataset(toy_pools(shape=(8, 8)), n_train=20,
                                                  n_validation=2, n_test=3)
    ref = tmp_path / "ref.h5"
    datasets.write_dataset_file(ref, ref_arrays, ref_attrs)
    out2 = tmp_path / "matched.h5"
    code, err = run_main(IMPORT_SCRIPT, "--folder", tmp_path / "p", "--out", out2,
                         "--sigma", 0.1, "--intensity", "match_stats", "--reference", ref)
    assert code == 0, err
    arrays2, attrs2 = read_h5(out2, "corrupted")
    np.testing.assert_allclose(arrays2["corrupted"].mean(axis=(1, 2)), attrs2["target_mean"])
    np.testing.assert_allclose(arrays2["corrupted"].std(axis=(1, 2)), attrs2["target_std"])
    code, err = run_main(IMPORT_SCRIPT, "--folder", tmp_path / "p", "--out", out2,
                         "--sigma", -1)
    assert code == 2 and "--sigma -1" in err

