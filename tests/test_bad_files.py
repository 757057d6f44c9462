"""Bad files fail loudly and cleanly: a one-line message naming the file and the problem, a
non-zero exit, and no output left behind.  The table in docs/errors.md (linked from the
README) lists every case tried here, the message a user sees and the test behind it; bad
configurations are in tests/test_bad_config.py.

Files go through the stage scripts' ``main`` via ``cli.run``, exactly as on the command line
(exit status 2 for user errors).
"""

from __future__ import annotations

import os
import re

import h5py
import numpy as np
import pytest
import skimage.io
from conftest import ROOT, random_gmm

from gmmrestore import datasets
from gmmrestore import operators as op
from gmmrestore.gmm import GaussianMixture, save_gmm
from gmmrestore.h5io import read_h5, write_h5
from gmmrestore.patches import extract_patches

# -------------------------------------------------------------------------------------- files

def set_attr(path, **attrs):
    with h5py.File(path, "a") as fh:
        fh.attrs.update(attrs)


def truncate(path, fraction=0.5):
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * fraction)])


def damage_first_chunk(path, name):
    """Overwrite the first stored (gzip) chunk of dataset ``name`` with zeros: the file opens,
    reading the data fails."""
    with h5py.File(path, "r") as fh:
        info = fh[name].id.get_chunk_info(0)
    with open(path, "r+b") as fh:
        fh.seek(info.byte_offset)
        fh.write(b"\0" * info.size)


@pytest.fixture
def files(tmp_path):
    """Small valid inputs of every stage (12x12 images, 4x4 patches, K = 3), in ``tmp_path``."""
    rng = np.random.default_rng(0)
    f = {}
    images = {s: rng.random((n, 12, 12)).astype(np.float32)
              for s, n in (("train", 6), ("validation", 2), ("test", 3))}
    f["dataset"] = tmp_path / "dataset.h5"
    datasets.write_dataset_file(f["dataset"], images, {"dataset": "toy", "source": "test"})
    f["patches"] = tmp_path / "patches.h5"
    write_h5(f["patches"], "patches", {"patches": extract_patches(
        images["train"], 4).reshape(-1, 16).astype(np.float32)}, attrs={"patch_size": 4})
    f["gmm"] = tmp_path / "gmm.h5"
    w, mu, cov = random_gmm(rng, 3, 16)
    save_gmm(f["gmm"], GaussianMixture(w, mu, cov), None)
    kernel = op.gaussian_kernel(3, 1.0)
    clean = images["test"].astype(np.float64)
    f["corrupted"] = tmp_path / "corrupted.h5"
    write_h5(f["corrupted"], "corrupted",
             {"clean": clean, "corrupted": op.blur(clean, kernel) + 0.05 * rng.standard_normal(
                 clean.shape), "val_clean": images["validation"], "kernel": kernel},
             attrs={"noise_sigma": 0.05, "blur": "g3"})
    f["W"] = tmp_path / "W.npy"
    np.save(f["W"], op.patch_blur_matrix(kernel, 4))
    f["out"] = tmp_path / "out" / "result.h5"
    return f


def train(f, *extra):
    return "train_gmm", ["--patches", f["patches"], "--out", f["out"], "-K", 2, *extra]


def restore(f, *extra):
    return "restore_images", ["--corrupted", f["corrupted"], "--gmm", f["gmm"], "--method",
                              "mapk", "--out", f["out"], *extra]


def corrupt(f, *extra):
    return "corrupt_images", ["--dataset", f["dataset"], "--out", f["out"], "--blur-name", "w",
                              "--sigma", 0.1, *extra]


def extract(f, *extra):
    return "extract_patches", ["--dataset", f["dataset"], "--out", f["out"], *extra]


def with_matrix(f, W):
    np.save(f["W"], W)
    return corrupt(f, "--blur-type", "matrix", "--patch-matrix", f["W"])


def with_kernel_file(f, kernel):
    path = f["out"].parent.parent / "kernel.h5"
    write_h5(path, "kernel", {"kernel": kernel})
    return restore(f, "--kernel-file", path)


def case_truncated_patches(f):
    truncate(f["patches"])
    return (*train(f), r"patches\.h5: not a readable HDF5 file \(truncated or corrupt\?\)")


def case_truncated_model(f):
    truncate(f["gmm"], 0.9)
    return (*restore(f), r"gmm\.h5: not a readable HDF5 file \(truncated or corrupt\?\)")


def case_damaged_patch_data(f):
    damage_first_chunk(f["patches"], "patches")
    return (*train(f),
            r"patches\.h5: could not read dataset '/patches' \(truncated or corrupt\?\)")


def case_damaged_patch_data_streamed(f):
    damage_first_chunk(f["patches"], "patches")
    return (*train(f, "--memory-budget-mb", 1e-4),
            r"patches\.h5: could not read dataset '/patches' rows 0:\d+ \(truncated or "
            r"corrupt\?\)")


def case_patches_other_version(f):
    set_attr(f["patches"], format_version=0)
    return (*train(f), r"patches\.h5: format_version 0, this gmmrestore reads version 1; "
                       r"re-create the file")


def case_model_other_version(f):
    set_attr(f["gmm"], format_version=2)
    return (*restore(f), r"gmm\.h5: format_version 2, this gmmrestore reads version 1")


def case_patches_missing_dataset(f):
    write_h5(f["patches"], "patches", {"heldout": np.zeros((4, 16))})
    return (*train(f), r"patches\.h5: missing dataset\(s\) patches \(present: heldout\)")


def case_model_missing_dataset(f):
    with h5py.File(f["gmm"], "a") as fh:
        del fh["covariances"]
    return (*restore(f), r"gmm\.h5: missing dataset\(s\) covariances \(present: .*means")


def case_wrong_kind(f):
    return ("train_gmm", ["--patches", f["gmm"], "--out", f["out"], "-K", 2],
            r"gmm\.h5: holds kind 'gmm', expected patches")


def case_nan_in_dataset(f):
    arrays, attrs = datasets.load_dataset_file(f["dataset"])
    arrays["train"][1, 2, 3] = np.nan
    write_h5(f["dataset"], "dataset", arrays, attrs)
    return (*extract(f, "--patch-size", 4), r"dataset\.h5: 'train' holds 1 NaN/Inf value\(s\)")


def case_inf_in_test_images(f):
    arrays, attrs = datasets.load_dataset_file(f["dataset"])
    arrays["test"][0, 0, 0] = np.inf
    write_h5(f["dataset"], "dataset", arrays, attrs)
    return (*corrupt(f, "--blur-type", "gaussian", "--blur-size", 3),
            r"dataset\.h5: 'test' holds 1 NaN/Inf value\(s\)")


def case_nan_in_corrupted_images(f):
    with h5py.File(f["corrupted"], "a") as fh:
        fh["corrupted"][0, 5, 5] = np.nan
    return (*restore(f), r"corrupted\.h5: dataset 'corrupted' contains NaN or Inf")


def case_nan_in_patches(f):
    with h5py.File(f["patches"], "a") as fh:
        fh["patches"][3, 3] = np.nan
    return (*train(f),
            r"training patches \(.*patches\.h5:/patches\) contain 1 NaN/Inf value\(s\)")


def case_inf_pixel_in_image_folder(f):
    folder = f["out"].parent.parent / "img"
    folder.mkdir()
    for name in ("a", "b", "c"):
        skimage.io.imsave(folder / f"{name}.tif", np.full((8, 8), 0.5, np.float32),
                          check_contrast=False)
    bad = np.full((8, 8), 0.5, np.float32)
    bad[2, 3] = np.inf
    skimage.io.imsave(folder / "b.tif", bad, check_contrast=False)
    return ("download_dataset", ["--source", "folder", "--folder", folder, "--out", f["out"],
                                 "--image-size", 4], r"b\.tif: 1 NaN/Inf pixel value\(s\)")


def case_non_image_file_in_image_folder(f):
    folder = f["out"].parent.parent / "img"
    folder.mkdir()
    for name in ("a", "b", "c"):
        skimage.io.imsave(folder / f"{name}.png", np.full((8, 8), 128, np.uint8),
                          check_contrast=False)
    (folder / "b.png").write_bytes(b"\x89PNG not really")
    return ("download_dataset", ["--source", "folder", "--folder", folder, "--out", f["out"],
                                 "--image-size", 4], r"b\.png: cannot read as an image")


def case_W_wrong_dtype(f):
    return (*with_matrix(f, np.eye(16, dtype=np.int64)),
            r"W\.npy: dtype int64; the patch matrix must be float")


def case_W_not_square_of_m(f):
    return (*with_matrix(f, np.eye(15)), r"W\.npy: shape \(15, 15\): 15 is not m²")


def case_W_not_square(f):
    return (*with_matrix(f, np.ones((16, 9))), r"W\.npy: shape \(16, 9\); expected a square")


def case_W_with_nan(f):
    W = op.patch_blur_matrix(op.gaussian_kernel(3, 1.0), 4)
    W[2, 3] = np.nan
    return (*with_matrix(f, W), r"W\.npy: 1 NaN/Inf entries in the patch matrix")


def case_W_not_a_convolution(f):
    return (*with_matrix(f, np.random.default_rng(1).random((16, 16))),
            r"W\.npy: patch matrix W is not a 2-D convolution matrix")


def case_W_kernel_sums_to_zero(f):
    return (*with_matrix(f, np.zeros((16, 16))),
            r"blur 'w': sums to 0; a blur kernel must sum to 1")


def case_W_not_npy(f):
    f["W"].write_text("1 0\n0 1\n")
    return (*corrupt(f, "--blur-type", "matrix", "--patch-matrix", f["W"]),
            r"W\.npy: not a \.npy file \(no NumPy header\); save the matrix with numpy\.save")


def case_W_pickled_objects(f):
    np.save(f["W"], np.array([{"a": 1}], dtype=object), allow_pickle=True)
    return (*corrupt(f, "--blur-type", "matrix", "--patch-matrix", f["W"]),
            r"W\.npy: holds pickled Python objects, not a numeric matrix")


def case_W_truncated(f):
    truncate(f["W"])
    return (*corrupt(f, "--blur-type", "matrix", "--patch-matrix", f["W"]),
            r"W\.npy: not a readable \.npy array \(truncated or corrupt\?\)")


def case_kernel_not_finite(f):
    return (*with_kernel_file(f, np.array([[0.0, 0.5, np.inf]] * 3)),
            r"kernel\.h5: kernel: contains NaN or Inf")


def case_kernel_sums_to_zero(f):
    return (*with_kernel_file(f, np.array([[1.0, 0.0, -1.0]] * 3)),
            r"kernel\.h5: kernel: sums to 0; a blur kernel must sum to 1")


def case_kernel_batches_do_not_fit_images(f):
    path = f["out"].parent.parent / "kernel.h5"
    k = op.gaussian_kernel(3, 1.0)
    write_h5(path, "kernel", {"kernel": k, "batch_kernels": np.stack([k, k]),
                              "batch_index": np.array([0, 1])})
    return (*restore(f, "--kernel-file", path),
            r"kernel\.h5: batch_kernels \(2, 3, 3\) and batch_index \(2,\) \(int64\) do not "
            r"fit 3 corrupted images")


def case_error_ratio_against_another_method(f):
    folder = f["out"].parent.parent
    k = op.gaussian_kernel(3, 1.0)
    write_h5(folder / "kernel.h5", "kernel", {"kernel": k, "batch_kernels": k[None],
                                              "batch_index": np.zeros(3, dtype=np.int64)})
    clean = read_h5(f["corrupted"], "corrupted", ["clean"])[0]["clean"]
    for name, method, source in (("blind", "mapk", "estimated"), ("true", "epll", "true")):
        write_h5(folder / f"{name}.h5", "restored", {"restored": clean},
                 attrs={"method": method, "base_method": method, "kernel_source": source})
    return ("evaluate_restoration",
            ["--corrupted", f["corrupted"], "--restored", folder / "blind.h5",
             "--kernel-estimate", folder / "kernel.h5", "--true-kernel-restored",
             folder / "true.h5", "--out", f["out"]],
            r"error ratio: \S*blind\.h5 is method 'mapk' but \S*true\.h5 is 'epll'; the ratio "
            r"compares the same method with both kernels")


def case_sigma_negative(f):
    return (*corrupt(f, "--blur-type", "identity", "--sigma", -0.1),
            r"noise sigma must be finite and >= 0, got -0.1")


def case_position_weight_power_negative(f):
    return (*restore(f, "--position-weight-power", -1),
            r"--position-weight-power: position weight power must be >= 0, got -1\.0")


def case_epll_init_sharpen_negative(f):
    return (*restore(f, "--init-sharpen", -0.5),
            r"--init-sharpen / --init-sharpen-std: unsharp mask amount must be >= 0, got -0\.5")


def case_patch_size_larger_than_images(f):
    return (*extract(f, "--patch-size", 13),
            r"patch_size m=13 is larger than the images \(12x12\)")


def case_patch_size_below_2(f):
    return (*extract(f, "--patch-size", 1), r"patch_size m=1: must be an integer >= 2")


def case_K_larger_than_patches(f):
    return ("train_gmm", ["--patches", f["patches"], "--out", f["out"], "-K", 500],
            r"K=500 larger than the number of training patches N=486 in .*patches\.h5")


def image_gmm(f, image_shape, prior="whole images"):
    """A whole-image mixture file (random, K = 2) over images of ``image_shape``."""
    path = f["out"].parent.parent / "image_gmm.h5"
    w, mu, cov = random_gmm(np.random.default_rng(1), 2, image_shape[0] * image_shape[1])
    save_gmm(path, GaussianMixture(w, mu, cov), None,
             {"prior": prior, "image_shape": list(image_shape), "patch_size": None})
    return path


def case_image_prior_method_without_image_gmm(f):
    return (*restore(f, "--method", "epll_image_prior"),
            r"method epll_image_prior needs --image-gmm \(a whole-image mixture from "
            r"train_gmm\.py --images\)")


def case_image_gmm_of_other_image_size(f):
    return (*restore(f, "--method", "epll_image_prior", "--image-gmm",
                     image_gmm(f, (16, 9))),
            r"--image-gmm \S*image_gmm\.h5 was trained on 16 x 9 images, the corrupted "
            r"images are 12 x 12")


def case_patch_gmm_as_image_gmm(f):
    return (*restore(f, "--method", "epll_image_prior", "--image-gmm", f["gmm"]),
            r"--image-gmm \S*gmm\.h5 is not a whole-image mixture")


def case_image_gmm_as_patch_gmm(f):
    return ("restore_images", ["--corrupted", f["corrupted"], "--gmm",
                               image_gmm(f, (12, 12)), "--method", "epll", "--out", f["out"]],
            r"--gmm \S*image_gmm\.h5 is not a patch prior \(a whole-image mixture goes to "
            r"--image-gmm\)")


def case_images_too_large_for_image_gmm(f):
    path = f["out"].parent.parent / "large.h5"
    images = {s: np.zeros((n, 65, 64), np.float32)
              for s, n in (("train", 3), ("validation", 1), ("test", 1))}
    datasets.write_dataset_file(path, images, {"dataset": "toy", "source": "test"})
    return ("train_gmm", ["--images", path, "--out", f["out"], "-K", 2],
            r"images of 65 x 64 = 4160 pixels; a whole-image mixture is limited to 4096 "
            r"pixels")


def case_K_larger_than_images(f):
    return ("train_gmm", ["--images", f["dataset"], "--out", f["out"], "-K", 7],
            r"K=7 larger than the number of training images N=6 in \S*dataset\.h5")


FILE_CASES = {name[5:]: fn for name, fn in sorted(globals().items())
              if name.startswith("case_")}


@pytest.mark.parametrize("case", FILE_CASES)
def test_bad_file_fails_cleanly(files, run_main, case):
    name, args, pattern = FILE_CASES[case](files)
    code, err = run_main(name, *args)
    assert code == 2, err
    assert re.search(pattern, err), err
    assert "Traceback" not in err
    out = files["out"]
    assert not out.exists()
    assert not (out.parent.exists() and os.listdir(out.parent)), os.listdir(out.parent)


def test_every_file_case_is_in_the_errors_table():
    """docs/errors.md names exactly the file cases tested here."""
    with open(os.path.join(ROOT, "docs", "errors.md"), encoding="utf-8") as fh:
        text = fh.read()
    assert set(re.findall(r"`file\[(\w+)\]`", text)) == set(FILE_CASES)
