"""Operating-system failures end a stage's log with one ``error: <file>: <reason>`` line and
exit status 2, with no traceback and nothing partial left: a full disk during an HDF5 write,
a read-only output folder, a symlink loop or an unreadable file in the image folder; a bug
keeps its traceback but still ends with the ``error:`` line.

Disk full and read-only use a small tmpfs when the tests run as root (CI); otherwise a
simulated ENOSPC and a folder without write permission.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys

import numpy as np
import pytest
from conftest import SCRIPTS, python_env

from gmmrestore import cli, datasets, h5io


def run_script(name, *args):
    """Run ``scripts/<name>.py`` as its rule does; returns (exit status, last log line,
    whole log)."""
    result = subprocess.run([sys.executable, os.path.join(SCRIPTS, f"{name}.py"),
                             *map(str, args)], capture_output=True, text=True,
                            env=python_env(), timeout=120)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    return result.returncode, (lines[-1] if lines else ""), result.stderr


@contextlib.contextmanager
def small_folder(path, options):
    """``path`` as a tmpfs mounted with ``options`` (root only); yields whether it did."""
    path.mkdir()
    mounted = os.geteuid() == 0 and subprocess.run(
        ["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)],
        capture_output=True).returncode == 0
    try:
        yield mounted
    finally:
        if mounted:
            subprocess.run(["umount", str(path)], check=True)


@pytest.fixture
def dataset(tmp_path):
    rng = np.random.default_rng(3)
    images = {s: rng.random((n, 12, 12)).astype(np.float32)
              for s, n in (("train", 300), ("validation", 2), ("test", 3))}
    path = tmp_path / "dataset.h5"
    datasets.write_dataset_file(path, images, {"dataset": "toy", "source": "test"})
    return path


def test_disk_full_during_an_hdf5_write(tmp_path, dataset, monkeypatch, capsys):
    """extract_patches writing 1.5 MB of random patches into a 256 kB file system."""
    full = tmp_path / "full"
    out = full / "patches.h5"
    args = ["--dataset", dataset, "--out", out, "--patch-size", 6, "--max-patches", 20000,
            "--heldout-patches", 100]
    with small_folder(full, "size=256k") as mounted:
        if mounted:
            code, last, log = run_script("extract_patches", *args)
        else:  # simulated: the HDF5 library's own message for errno 28 at the final flush
            import importlib.util

            import h5py

            def full_flush(self):
                raise RuntimeError("Can't flush cache (file write failed: errno = 28, error "
                                   "message = 'No space left on device')")

            monkeypatch.setattr(h5py.File, "flush", full_flush)
            spec = importlib.util.spec_from_file_location(
                "extract_patches", os.path.join(SCRIPTS, "extract_patches.py"))
            module = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)
            monkeypatch.setattr(cli, "setup_logging", lambda quiet=False: None)
            code = cli.run(module.main, [str(a) for a in args])
            log = capsys.readouterr().err
            last = log.strip().splitlines()[-1]
        assert code == 2, log
        assert last == f"error: {out}: no space left on device; nothing written", log
        assert "Traceback" not in log and "Exception ignored" not in log
        assert os.listdir(full) == []


def test_read_only_output_folder(tmp_path, dataset):
    folder = tmp_path / "ro"
    with small_folder(folder, "ro,size=64k") as mounted:
        if not mounted:
            if os.geteuid() == 0:
                pytest.skip("root, but cannot mount a read-only tmpfs")
            folder.chmod(0o555)
        code, last, log = run_script("extract_patches", "--dataset", dataset, "--out",
                                     folder / "patches.h5", "--patch-size", 4)
        folder.chmod(0o755) if not mounted else None
    assert code == 2, log
    reason = "Read-only file system" if mounted else "Permission denied"
    assert last == f"error: {folder}/patches.h5: cannot be written ({reason})", log
    assert "Traceback" not in log


def test_symlink_loop_and_unreadable_image_in_the_folder(tmp_path):
    from test_imageio import write_mode_files

    folder = tmp_path / "img"
    write_mode_files(folder)
    out = tmp_path / "data.h5"
    args = ["--source", "folder", "--folder", folder, "--image-size", 16, "--out", out]
    (folder / "zz_broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 40)
    code, last, log = run_script("download_dataset", *args)
    assert code == 2 and last.startswith(f"error: {folder}/zz_broken.png: cannot read as an "
                                         "image ("), log
    os.remove(folder / "zz_broken.png")
    os.symlink("loop_b.png", folder / "loop_a.png")
    os.symlink("loop_a.png", folder / "loop_b.png")
    code, last, log = run_script("download_dataset", *args)
    assert code == 2, log
    assert last in (f"error: {folder}/loop_{x}.png: cannot be read (Too many levels of "
                    "symbolic links; a symlink loop?)" for x in "ab"), log
    assert "Traceback" not in log and not out.exists()


def test_any_exception_ends_with_one_error_line(capsys, monkeypatch):
    """OSError: its file and reason, no traceback; a bug: traceback, then the error line;
    a multi-line message: joined into one line."""
    monkeypatch.setattr(cli, "setup_logging", lambda quiet=False: None)

    def loop(argv):
        raise OSError(40, "Too many levels of symbolic links", "img/a.png")

    def bug(argv):
        return 1 / 0

    def multi(argv):
        raise h5io.GmmRestoreError("could not get x from any of 2 mirror(s); tried:\n"
                                   "  - http://a/x: HTTP 404\n  - http://b/x: timed out")

    for main, want in (
            (loop, "error: img/a.png: Too many levels of symbolic links"),
            (bug, "error: test_oserrors.py: ZeroDivisionError: division by zero"),
            (multi, "error: could not get x from any of 2 mirror(s); tried:; - http://a/x: "
                    "HTTP 404; - http://b/x: timed out")):
        assert cli.run(main, []) == 2
        err = capsys.readouterr().err
        assert err.strip().splitlines()[-1] == want, err
        assert ("Traceback" in err) == (main is bug)
