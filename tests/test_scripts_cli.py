"""Every stage script runs from the command line and documents itself with --help."""

import glob
import os
import subprocess
import sys

import pytest
from conftest import SCRIPTS, python_env

STAGE_SCRIPTS = sorted(p for p in glob.glob(os.path.join(SCRIPTS, "*.py"))
                       if not os.path.basename(p).startswith("_"))


def test_every_rule_script_exists():
    names = {os.path.basename(p) for p in STAGE_SCRIPTS}
    for required in ("download_dataset.py", "extract_patches.py", "train_gmm.py",
                     "corrupt_images.py", "restore_images.py", "restore_baseline.py",
                     "evaluate_restoration.py", "collect_metrics.py", "plot_examples.py",
                     "plot_gmm.py", "plot_sweep.py"):
        assert required in names


@pytest.mark.parametrize("script", STAGE_SCRIPTS, ids=os.path.basename)
def test_help(script):
    result = subprocess.run([sys.executable, script, "--help"], capture_output=True, text=True,
                            env=python_env(), timeout=120)
    assert result.returncode == 0, result.stderr
    assert "usage:" in result.stdout and "--" in result.stdout
