"""library_sources: the gmmrestore files a script imports, directly and transitively."""

import os

from gmmrestore.depends import library_sources

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir)


def write(path, text=""):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8") as fh:
        fh.write(text)


def test_direct_relative_and_function_level_imports(tmp_path):
    src = tmp_path / "src"
    pkg = src / "gmmrestore"
    write(pkg / "__init__.py")
    write(pkg / "a.py", "from .b import f\n")
    write(pkg / "b.py", "def f():\n    from .sub import deep  # lazy import\n")
    write(pkg / "sub" / "__init__.py", "from . import deep\n")
    write(pkg / "sub" / "deep.py", "from ..c import x\n")
    write(pkg / "c.py")
    write(pkg / "unused.py")
    write(tmp_path / "script.py", "import numpy\nimport gmmrestore.a\nfrom os import path\n")
    found = [os.path.relpath(p, src) for p in library_sources(tmp_path / "script.py", src)]
    expected = ["__init__.py", "a.py", "b.py", "c.py", "sub/__init__.py", "sub/deep.py"]
    assert found == [os.path.join("gmmrestore", *e.split("/")) for e in expected]


def test_from_package_import_module(tmp_path):
    src = tmp_path / "src"
    write(src / "gmmrestore" / "__init__.py")
    write(src / "gmmrestore" / "cli.py")
    write(tmp_path / "s.py", "from gmmrestore import cli\n")
    found = [os.path.basename(p) for p in library_sources(tmp_path / "s.py", src)]
    assert found == ["__init__.py", "cli.py"]


def test_restore_stage_depends_on_the_restoration_modules_only():
    found = {os.path.relpath(p, os.path.join(ROOT, "src")).replace(os.sep, "/")
             for p in library_sources(os.path.join(ROOT, "scripts", "restore_images.py"),
                                      os.path.join(ROOT, "src"))}
    assert {"gmmrestore/restore/mapk.py", "gmmrestore/restore/epll.py",
            "gmmrestore/patches.py", "gmmrestore/threads.py"} <= found
    assert not any(f.startswith("gmmrestore/datasets/") for f in found)
    assert "gmmrestore/plots.py" not in found
