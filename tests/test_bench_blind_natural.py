"""The blind photograph bench's command line: options a set would ignore, and a method
without the file it needs, are usage errors."""

import argparse
import os
import subprocess
import sys

import pytest
from conftest import ROOT

BENCH = os.path.join(ROOT, "bench", "blind_natural.py")


def bench_module():
    """bench/blind_natural.py imported as a module (bench/ is not a package)."""
    sys.path.insert(0, os.path.join(ROOT, "bench"))
    try:
        import blind_natural
    finally:
        sys.path.remove(os.path.join(ROOT, "bench"))
    return blind_natural


@pytest.mark.parametrize("argv, message", [
    (["--set", "train", "--offset", "2"], "--offset 2 applies to --set train-wide only"),
    (["--set", "train-hard", "--offset", "1"], "--offset 1 applies to --set train-wide only"),
    (["--set", "train-wide", "--scenes", "test_001.png"],
     "--scenes applies to --set train-hard only, not train-wide"),
    (["--set", "test", "--scenes", "test_001.png"],
     "--scenes applies to --set train-hard only, not test"),
    (["--set", "test", "--methods", "tv,tv_judged"],
     "method tv_judged needs --judge-gmm"),
    (["--set", "workflow"], "--set workflow and --workflow DIR go together"),
    (["--set", "test", "--workflow", "results"], "--set workflow and --workflow DIR go together"),
])
def test_an_option_the_set_ignores_is_a_usage_error(argv, message):
    result = subprocess.run([sys.executable, BENCH, *argv], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 2
    assert message in result.stderr
    assert result.stdout == ""


def test_the_options_of_their_own_sets_pass_the_check():
    blind_natural = bench_module()
    ap = argparse.ArgumentParser()
    for set_name, offset, scenes, methods, gmm in (
            ("train-wide", 3, None, "tv", None), ("train-hard", 0, "a.png", "tv,l0", None),
            ("test", 0, None, "tv_judged", "gmm.h5"), ("workflow", 0, None, "blob", None)):
        args = argparse.Namespace(set=set_name, offset=offset, scenes=scenes, methods=methods,
                                  judge_gmm=gmm, workflow="wf" if set_name == "workflow" else None)
        blind_natural.check_set_options(ap, args)  # raises SystemExit on an error


def test_epll_scoring_runs_the_workflow_configs_epll(tmp_path):
    """--epll-gmm restores as configs/blind_natural.yaml's workflow: its beta schedule, start,
    clipping and the GMM's remove_dc, valid boundary; the result clipped as scored."""
    import numpy as np
    import yaml

    from gmmrestore.gmm import GaussianMixture, save_gmm
    from gmmrestore.restore.epll import epll_restore
    from gmmrestore.restore.settings import EpllSettings

    blind_natural = bench_module()
    rng = np.random.default_rng(3)
    d = 16
    a = rng.standard_normal((2, d, d))
    gmm = GaussianMixture(np.array([0.4, 0.6]), np.zeros((2, d)),
                          0.01 * a @ a.transpose(0, 2, 1) / d + 1e-4 * np.eye(d))
    save_gmm(tmp_path / "gmm.h5", gmm, None, {"remove_dc": True})
    config = os.path.join(ROOT, "configs", "blind_natural.yaml")
    restore = blind_natural.workflow_epll(str(tmp_path / "gmm.h5"), config)
    y, kernel = rng.random((14, 15)), np.full((3, 3), 1 / 9)
    with open(config, encoding="utf-8") as fh:
        epll = yaml.safe_load(fh)["restore"]["epll"]
    expected = epll_restore(
        y[None], gmm, kernel, blind_natural.SIGMA,
        EpllSettings(beta_factors=tuple(epll["beta_factors"]), init=epll["init"],
                     weighting=epll["weighting"], init_sharpen=epll["init_sharpen"]),
        remove_dc=True, boundary="valid", clip=True)[0]
    np.testing.assert_array_equal(restore(y, kernel), np.clip(expected, 0, 1))
    # another config's schedule gives another restoration
    other = tmp_path / "other.yaml"
    other.write_text(yaml.safe_dump({"restore": {"epll": {"beta_factors": [1, 4],
                                                                "init": "corrupted"}}}))
    assert not np.array_equal(blind_natural.workflow_epll(str(tmp_path / "gmm.h5"),
                                                          str(other))(y, kernel),
                              restore(y, kernel))


def test_workflow_set_reads_the_runs_valid_boundary_photographs(tmp_path):
    """--set workflow: every */corrupted.h5 of a valid boundary, its photographs, clean frames
    and true kernel, by kernel size; other boundaries are left out; a file without image ids
    names its photographs by blur and index."""
    import json

    import numpy as np

    from gmmrestore.h5io import write_h5

    rng = np.random.default_rng(3)

    def corrupted(folder, blur, size, boundary, n, ids=True):
        kernel = rng.random((size, size))
        arrays = {"clean": rng.random((n, 6, 6)), "corrupted": rng.random((n, 6, 6)),
                  "kernel": kernel / kernel.sum()}
        os.makedirs(tmp_path / folder)
        attrs = {"blur": blur, "boundary": boundary, "noise_sigma": 0.01,
                 "blur_spec": json.dumps({"type": "camera_shake", "seed": size})}
        if ids:
            attrs["ids"] = [f"{blur}_{i}" for i in range(n)]
        write_h5(tmp_path / folder / "corrupted.h5", "corrupted", arrays, attrs=attrs)
        return arrays

    big = corrupted("shake5_s0.01", "shake5", 5, "valid", 2)
    small = corrupted("shake3_s0.01", "shake3", 3, "valid", 1)
    corrupted("gauss3_s0.01", "gauss3", 3, "zero", 1)
    corrupted("shake7_s0.01", "shake7", 7, "valid", 2, ids=False)
    args = argparse.Namespace(set="workflow", workflow=str(tmp_path))
    cases = bench_module().make_workflow_cases(args)
    assert [(c["image"], c["size"], c["kernel_seed"]) for c in cases] == [
        ("shake3_0", 3, 3), ("shake5_0", 5, 5), ("shake5_1", 5, 5), ("shake7[0]", 7, 7),
        ("shake7[1]", 7, 7)]
    np.testing.assert_array_equal(cases[0]["y"], small["corrupted"][0])
    np.testing.assert_array_equal(cases[2]["clean"], big["clean"][1])
    np.testing.assert_array_equal(cases[1]["kernel"], big["kernel"])
    with pytest.raises(SystemExit, match="no corrupted.h5 of a valid boundary"):
        bench_module().make_workflow_cases(argparse.Namespace(workflow=str(tmp_path / "none")))
