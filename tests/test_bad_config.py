"""Bad configurations fail loudly and cleanly: a one-line message naming the key, the value
and what is allowed.  The table in docs/errors.md (linked from the README) lists every case
tried here, the message a user sees and the test behind it; bad files are in
tests/test_bad_files.py.

Configurations are checked the way the Snakefile checks them (the schema, then
gmmrestore.configcheck.check_settings), in this process; tests/test_workflow.py shows a few of
them through a real ``snakemake -n``.
"""

from __future__ import annotations

import copy
import itertools
import os
import re
from collections import namedtuple

import jsonschema
import numpy as np
import pytest
import yaml
from conftest import ROOT

from gmmrestore import operators as op
from gmmrestore.configcheck import ConfigError, check_settings, schema_error_message

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
    "epll_weighting_misspelled": (
        "restore: {methods: [epll], epll: {weighting: averge}}", (),
        "config: restore.epll.weighting = 'averge' is not allowed; allowed values: 'average', "
        "'exact'"),
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
    "blur_size_even": (
        "blurs: {gauss5: {type: gaussian, size: 4, std: 1.0}}", (),
        "config: blurs.gauss5.size = 4: a blur kernel's size must be odd (e.g. 3 or 5)"),
    "blind_kernel_size_even": (
        "blurs: {gauss5: {type: gaussian, size: 5, blind: true, kernel_size: 6}}", (),
        "config: blurs.gauss5.kernel_size = 6: the estimated kernel's size must be odd"),
    "blur_std_nan": (
        "blurs: {gauss5: {type: gaussian, size: 5, std: .nan}}", (),
        "config: blurs.gauss5: gaussian blur: std must be > 0, got nan"),
    "sigma_nan": (
        sweep(sigma="[0.1, .nan]"), (),
        "config: sweep lists noise_sigma nan; allowed: a finite number from 0 to 1"),
    "sigma_infinite": (
        sweep(sigma="[.inf]"), (),
        "config: sweep lists noise_sigma inf; allowed: a finite number from 0 to 1"),
    "sigma_above_1": (
        sweep(sigma="[2.5]"), (),
        "config: sweep lists noise_sigma 2.5; allowed: a finite number from 0 to 1"),
    "results_dir_empty": (
        'results_dir: ""', (),
        "config: results_dir = '': expected a folder name such as 'results' (an empty path "
        "would put outputs under the root folder)"),
    "results_dir_above_working_directory": (
        "results_dir: ..", (),
        "config: results_dir = '..' is the working directory"),
    "cache_dir_is_a_file": (
        "dataset: {cache_dir: README.md/cache}", (),
        "config: dataset.cache_dir = 'README.md/cache': "),
    "folder_empty": (
        'dataset: {source: folder, folder: ""}', (),
        "config: dataset.folder = '': expected the path of a folder of images"),
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


def test_matrix_blur_not_summing_to_one_is_refused(tmp_path):
    """A user W whose kernel sums to 0.9 (a convolution, so usable) is refused when the
    workflow loads, naming the file and the sum; the same W scaled to sum 1 is accepted."""
    kernel = op.gaussian_kernel(3, 1.0)
    path = tmp_path / "W.npy"
    np.save(path, op.patch_blur_matrix(0.9 * kernel, 4))
    override = f"blurs: {{user: {{type: matrix, path: '{path}'}}}}\n" + sweep(blur="[user]")
    problem = config_problem(override)
    assert problem == (f"config: blurs.user.path '{path}': the kernel of W sums to 0.9; a blur "
                       "kernel must sum to 1 (it would change the images' brightness)"), problem
    np.save(path, op.patch_blur_matrix(kernel, 4))
    assert config_problem(override) is None


def test_read_only_results_dir_is_refused(tmp_path):
    """A results folder that cannot be written is named before any job (a read-only tmpfs
    when root, where permissions do not apply; else a folder without write permission)."""
    import subprocess

    folder = tmp_path / "ro"
    folder.mkdir()
    mounted = False
    if os.geteuid() == 0:
        mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs",
                                  str(folder)], capture_output=True).returncode == 0
        if not mounted:
            pytest.skip("root, but cannot mount a read-only tmpfs")
    else:
        folder.chmod(0o555)
    try:
        problem = config_problem(f"results_dir: '{folder}/results'")
        assert problem == (f"config: results_dir = '{folder}/results' cannot be created "
                           f"({folder} is not writable)"), problem
    finally:
        if mounted:
            subprocess.run(["umount", str(folder)], check=True)
        folder.chmod(0o755)



def test_every_config_case_is_in_the_errors_table():
    """docs/errors.md names exactly the configuration cases tested here."""
    with open(os.path.join(ROOT, "docs", "errors.md"), encoding="utf-8") as fh:
        text = fh.read()
    assert set(re.findall(r"`config\[(\w+)\]`", text)) == set(CONFIG_CASES)
