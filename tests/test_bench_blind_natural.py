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
            ("test", 0, None, "tv_judged", "gmm.h5")):
        args = argparse.Namespace(set=set_name, offset=offset, scenes=scenes, methods=methods,
                                  judge_gmm=gmm)
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
