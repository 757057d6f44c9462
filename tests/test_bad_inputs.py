"""Bad input fails loudly and cleanly: a one-line message naming the key or file and the
problem, a non-zero exit, and no output left behind.  The table "Errors you may see" in
README.md lists every case tried here, the message a user sees and the test behind it.

Configurations are checked the way the Snakefile checks them (the schema, then
gmmrestore.configcheck.check_settings), in this process; tests/test_workflow.py shows a few of
them through a real ``snakemake -n``.  Files go through the stage scripts' ``main`` via
``cli.run``, exactly as on the command line (exit status 2 for user errors).
"""

from __future__ import annotations

import copy
import itertools
import os
import re
from collections import namedtuple

import h5py
import jsonschema
import numpy as np
import pytest
import skimage.io
import yaml
from conftest import ROOT, random_gmm

from gmmrestore import datasets
from gmmrestore import operators as op
from gmmrestore.configcheck import ConfigError, check_settings, schema_error_message
from gmmrestore.gmm import GaussianMixture, save_gmm
from gmmrestore.h5io import read_h5, write_h5
from gmmrestore.patches import extract_patches

# ------------------------------------------------------------------------------ configuration

with open(os.path.join(ROOT, "schemas", "config.schema.yaml"), encoding="utf-8") as _fh:
    SCHEMA = yaml.safe_load(_fh)
with open(os.path.join(ROOT, "tests", "configs", "tiny.yaml"), encoding="utf-8") as _fh:
    TINY = yaml.safe_load(_fh)
Setting = namedtuple("Setting", "patch_size n_components blur noise_sigma")


def merge(base, override):
    """``override`` merged into ``base`` key by key, as Snakemake merges config files."""
    out = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def config_problem(override=None, drop=()):
    """The message the workflow stops with for the tiny config plus ``override`` (YAML text)
    without the keys in ``drop`` ('section.key'), or None when it is accepted."""
    config = merge(TINY, yaml.safe_load(override or "{}") or {})
    for path in drop:
        *parents, last = path.split(".")
        section = config
        for key in parents:
            section = section[key]
        del section[last]
    error = next(iter(jsonschema.Draft202012Validator(SCHEMA).iter_errors(config)), None)
    if error is not None:
        return schema_error_message(error)
    sweep = config["sweep"]
    settings = [Setting(*s) for s in itertools.product(
        sweep["patch_size"], sweep["n_components"], sweep["blur"], sweep["noise_sigma"])]
    given = []
    if config["dataset"]["source"] == "paired":   # every setting uses the set's given blur
        given = ["paired"]
        settings = [s._replace(blur="paired") for s in settings]
    try:
        check_settings(config, settings, "sweep", given_blurs=given)
    except ConfigError as err:
        return str(err)
    return None


SWEEP = "sweep: {{patch_size: {m}, n_components: {K}, blur: {blur}, noise_sigma: {sigma}}}"


def sweep(m="[6]", K="[3]", blur="[gauss5]", sigma="[0.1]"):
    return SWEEP.format(m=m, K=K, blur=blur, sigma=sigma)


ALLOWED_GMM_KEYS = "allowed keys: max_iter, tol, reg_covar, init, n_init, dtype, remove_dc, " \
                   "memory_budget_mb"
CONFIG_CASES = {
    "patch_size_larger_than_images": (
        sweep(m="[40]"), (),
        "config: sweep lists patch_size 40, larger than the 28x28 training images of source "
        "'mnist'; allowed: 2 to 28"),
    "patch_size_larger_than_folder_tiles": (
        "dataset: {source: folder, folder: img, image_size: 16}\n" + sweep(m="[20]"), (),
        "config: sweep lists patch_size 20, larger than the 16x16 training images of source "
        "'folder'; allowed: 2 to 16"),
    "patch_size_larger_than_paired_training_images": (
        "dataset: {source: paired, image_size: 16, paired: {folder: p, noise_sigma: 0.1, "
        "training_source: natural}}\n" + sweep(m="[20]"), (),
        "config: sweep lists patch_size 20, larger than the 16x16 training images of source "
        "'natural'; allowed: 2 to 16"),
    "patch_size_below_2": (
        sweep(m="[1]"), (), "config: sweep.patch_size[0] = 1: 1 is less than the minimum of 2"),
    "K_larger_than_max_patches": (
        sweep(K="[3, 6000]"), (),
        "config: sweep lists n_components 6000, more than the 5000 training patches of patch "
        "size 6 (dataset.n_train 200, patches.max_patches 5000); allowed: 1 to 5000"),
    "K_larger_than_all_patches": (
        "dataset: {n_train: 1}\npatches: {max_patches: 100000}\n" + sweep(K="[600]"), (),
        "config: sweep lists n_components 600, more than the 529 training patches of patch "
        "size 6"),
    "image_prior_images_too_large": (
        "dataset: {source: folder, folder: img, image_size: 65}", (),
        "config: restore.methods lists epll_image_prior, whose mixture over whole images is "
        "limited to 4096 pixels per image; the training images of source 'folder' are 65x65 "
        "= 4225 (dataset.image_size); leave epll_image_prior out of restore.methods or use "
        "images of at most 64x64"),
    "image_prior_K_larger_than_training_images": (
        "restore: {image_prior: {n_components: 201}}", (),
        "config: restore.image_prior.n_components = 201, more than the 200 training images "
        "(dataset.n_train), each one sample of epll_image_prior's whole-image mixture; "
        "allowed: 1 to 200"),
    "sigma_negative": (
        sweep(sigma="[0.1, -0.1]"), (),
        "config: sweep.noise_sigma[1] = -0.1: -0.1 is less than the minimum of 0"),
    "position_weight_power_negative": (
        "restore: {methods: [mapk], mapk: {position_weight_power: -1}}", (),
        "config: restore.mapk.position_weight_power = -1: -1 is less than the minimum of 0"),
    "epll_init_sharpen_negative": (
        "restore: {methods: [epll], epll: {init_sharpen: -0.5}}", (),
        "config: restore.epll.init_sharpen = -0.5: -0.5 is less than the minimum of 0"),
    "unknown_blur_name": (
        sweep(blur="[gauss5, gauss7]"), (),
        "config: sweep lists blur(s) 'gauss7', not defined under 'blurs' (defined: gauss5)"),
    "unknown_blur_type": (
        "blurs: {gauss5: {type: gausian}}", (),
        "config: blurs.gauss5.type = 'gausian' is not allowed; allowed values: 'identity', "
        "'gaussian', 'box', 'disk', 'motion', 'camera_shake', 'matrix'"),
    "blur_std_zero": (
        "blurs: {gauss5: {type: gaussian, std: 0}}", (),
        "config: blurs.gauss5.std = 0: 0 is less than or equal to the minimum of 0"),
    "matrix_without_path": (
        "blurs: {user: {type: matrix}}\n" + sweep(blur="[user]"), (),
        "config: blurs.user has type 'matrix' but no 'path'"),
    "matrix_path_not_found": (
        "blurs: {user: {type: matrix, path: no/such/W.npy}}\n" + sweep(blur="[user]"), (),
        "config: blurs.user.path 'no/such/W.npy' not found"),
    "empty_sweep_list": (
        sweep(sigma="[]"), (),
        "config: sweep.noise_sigma is an empty list; it needs at least 1 value(s)"),
    "empty_method_list": (
        "restore: {methods: []}", (),
        "config: restore.methods is an empty list; it needs at least 1 value(s)"),
    "misspelled_key": (
        "gmm: {max_iters: 3}", (),
        "config: unknown key 'max_iters' under 'gmm' (did you mean 'max_iter'?); "
        + ALLOWED_GMM_KEYS),
    "misspelled_section": (
        "sweeps: {patch_size: [6]}", (),
        "config: unknown key 'sweeps' at the top level (did you mean 'sweep'?); allowed keys: "
        "results_dir, seed, dataset, sweep, sweep_table, blurs, corruption, patches, gmm, restore, "
        "figures"),
    "missing_key": (
        None, ("dataset.n_test",),
        "config: missing key 'n_test' under 'dataset'; required: name, source, n_train, n_test; "
        "allowed keys: name, source, allow_offline_fallback, mirrors, cache_dir, folder, "
        "image_size, n_train, n_validation, n_test"),
    "missing_section": (
        None, ("restore",),
        "config: missing key 'restore' at the top level; required: dataset, sweep, blurs, "
        "restore"),
    "wrong_type": (
        sweep(K="[three]"), (),
        "config: sweep.n_components[0] = 'three': 'three' is not of type 'integer'"),
}


@pytest.mark.parametrize("case", CONFIG_CASES)
def test_bad_config_names_key_value_and_what_is_allowed(case):
    override, drop, message = CONFIG_CASES[case]
    problem = config_problem(override, drop)
    assert problem is not None and problem.startswith(message), problem
    assert "\n" not in problem


@pytest.mark.parametrize("override", [
    sweep(sigma="[0, 0.1]"),                                    # sigma = 0: pure deblurring
    sweep(m="[28]", K="[3]"),                                   # m equal to the image size
    # one training image: also the whole-image prior's K at most 1
    "dataset: {n_train: 1}\npatches: {max_patches: 100000}\n"
    "restore: {image_prior: {n_components: 1}}\n" + sweep(K="[529]"),
    "dataset: {source: paired, paired: {folder: p, noise_sigma: 0.1}}",  # given blur: paired
    "dataset: {source: folder, folder: img, image_size: 64}",  # whole-image prior's largest
])
def test_edge_configs_are_accepted(override):
    assert config_problem(override) is None


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


def test_every_case_is_in_the_errors_table():
    """docs/errors.md (linked from the README) names exactly the cases tested here."""
    with open(os.path.join(ROOT, "docs", "errors.md"), encoding="utf-8") as fh:
        text = fh.read()
    assert set(re.findall(r"`config\[(\w+)\]`", text)) == set(CONFIG_CASES)
    assert set(re.findall(r"`file\[(\w+)\]`", text)) == set(FILE_CASES)
