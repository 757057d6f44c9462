"""Create the project's virtual environment with a working pip.

Debian's python3 ships without ``ensurepip`` unless ``python3-venv`` is installed.
In that case the venv is created without pip and pip is installed from its wheel on
PyPI (the only network this needs), so ``make`` works with nothing but python3.

Usage: python3 tools/bootstrap_venv.py VENV_DIR
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import urllib.request
import venv

PYPI_JSON = "https://pypi.org/pypi/pip/json"


def _venv_python(path: str) -> str:
    return os.path.join(path, "bin", "python")


def _has_pip(python: str) -> bool:
    return subprocess.run([python, "-m", "pip", "--version"], capture_output=True).returncode == 0


def _install_pip_from_pypi(python: str) -> None:
    with urllib.request.urlopen(PYPI_JSON, timeout=60) as response:
        release = json.load(response)
    wheel = next(f for f in release["urls"] if f["filename"].endswith("-py3-none-any.whl"))
    with tempfile.TemporaryDirectory() as tmp:
        target = os.path.join(tmp, wheel["filename"])
        urllib.request.urlretrieve(wheel["url"], target)
        # A pip wheel is importable as a zip: run pip from it to install itself.
        subprocess.run([python, os.path.join(target, "pip"), "install", "--quiet", target],
                       check=True)


def main(argv: list[str]) -> int:
    if len(argv) != 2 or argv[1] in {"-h", "--help"}:
        print(__doc__)
        return 0 if len(argv) == 2 else 2
    path = argv[1]
    python = _venv_python(path)
    if os.path.exists(python) and _has_pip(python):
        return 0
    try:
        venv.create(path, with_pip=True, clear=True)
    except (subprocess.CalledProcessError, OSError) as err:
        print(f"bootstrap_venv: ensurepip unavailable ({err}); installing pip from PyPI",
              file=sys.stderr)
        venv.create(path, with_pip=False, clear=True)
    if not _has_pip(python):
        _install_pip_from_pypi(python)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
