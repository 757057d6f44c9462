"""The blind photograph bench's command line: options a set would ignore, and a method
without the file it needs, are usage errors."""

import argparse
import os
import subprocess
import sys

import pytest
from conftest import ROOT

BENCH = os.path.join(ROOT, "bench", "blind_natural.py")


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
    sys.path.insert(0, os.path.join(ROOT, "bench"))
    try:
        import blind_natural
    finally:
        sys.path.remove(os.path.join(ROOT, "bench"))
    ap = argparse.ArgumentParser()
    for set_name, offset, scenes, methods, gmm in (
            ("train-wide", 3, None, "tv", None), ("train-hard", 0, "a.png", "tv,l0", None),
            ("test", 0, None, "tv_judged", "gmm.h5")):
        args = argparse.Namespace(set=set_name, offset=offset, scenes=scenes, methods=methods,
                                  judge_gmm=gmm)
        blind_natural.check_set_options(ap, args)  # raises SystemExit on an error
