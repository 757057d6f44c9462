"""Which gmmrestore source files a stage's script runs: inputs of its Snakemake rule, so
that editing the library reruns exactly the stages that use the edited module."""

from __future__ import annotations

import ast
import functools
import os

PACKAGE = "gmmrestore"


def _module_file(src_root: str, module: str) -> str | None:
    """``src_root/a/b.py`` or ``src_root/a/b/__init__.py`` for module ``a.b``, if it exists."""
    base = os.path.join(src_root, *module.split("."))
    for path in (base + ".py", os.path.join(base, "__init__.py")):
        if os.path.isfile(path):
            return path
    return None


@functools.cache
def _imported_modules(path: str, module: str | None) -> frozenset[str]:
    """Absolute names of the modules imported anywhere in the file ``path`` (also inside
    functions); ``module`` is the file's own dotted name (None for a script), to resolve
    relative imports.  ``from a import b`` yields ``a`` and ``a.b`` (b may be a module).
    Cached: the workflow asks for every rule's script, and most share their modules (each
    file is parsed once per Snakemake start, not once per rule)."""
    with open(path, encoding="utf-8") as fh:
        tree = ast.parse(fh.read(), filename=path)
    is_package = os.path.basename(path) == "__init__.py"
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                if module is None:
                    continue
                parts = module.split(".")
                parts = parts[: len(parts) - node.level + (1 if is_package else 0)]
                base = ".".join(parts + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)
    return frozenset(names)


def library_sources(script: str | os.PathLike, src_root: str | os.PathLike) -> list[str]:
    """The files of package ``gmmrestore`` under ``src_root`` that ``script`` imports,
    directly or through other gmmrestore modules, sorted."""
    src_root = os.fspath(src_root)
    found: dict[str, str] = {}
    todo: list[tuple[str, str | None]] = [(os.fspath(script), None)]
    while todo:
        path, module = todo.pop()
        for name in _imported_modules(path, module):
            if name != PACKAGE and not name.startswith(PACKAGE + "."):
                continue
            # importing a.b.c runs the __init__ of a and a.b too
            parts = name.split(".")
            for depth in range(1, len(parts) + 1):
                parent = ".".join(parts[:depth])
                file = _module_file(src_root, parent)
                if file is not None and parent not in found:
                    found[parent] = file
                    todo.append((file, parent))
    return sorted(found.values())
