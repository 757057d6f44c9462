"""The registry of restoration methods (gmmrestore.restore.registry) is the one list of
methods: the schema's enum, the workflow's method lists, restore_images.py's --method
choices and the report's captions agree with it, and a method added by a plugin (one entry,
one function) runs through the whole workflow without any other file changed."""

import argparse
import csv
import importlib
import os
import re
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import yaml
from conftest import ROOT, snakemake_env

from gmmrestore.restore import registry
from gmmrestore.restore.baselines import BASELINES

SNAKEMAKE = os.path.join(os.path.dirname(sys.executable), "snakemake")
TINY = os.path.join(ROOT, "tests", "configs", "tiny.yaml")
BUILT_IN = ("mapk", "epll", "epll_image_prior", *BASELINES)

TOY_PLUGIN = '''
"""A toy restoration method: the corrupted images, unchanged."""
from gmmrestore.restore.registry import MethodSpec, register


def identity(problem):
    return problem.images.copy()


register(MethodSpec("identity", "gmm", ("patch_gmm",), "the corrupted images, unchanged",
                    identity))
'''


def schema_methods():
    with open(os.path.join(ROOT, "schemas", "config.schema.yaml"), encoding="utf-8") as fh:
        schema = yaml.safe_load(fh)
    return schema["properties"]["restore"]["properties"]["methods"]["items"]["enum"]


def test_the_registry_holds_every_built_in_method():
    assert registry.method_names()[:len(BUILT_IN)] == BUILT_IN
    assert registry.method_names("gmm")[:3] == ("mapk", "epll", "epll_image_prior")
    assert set(registry.method_names("baseline")) == set(BASELINES)
    for name in BUILT_IN:
        spec = registry.METHODS[name]
        assert spec.name == name and callable(spec.function) and spec.caption
    assert "image_gmm" in registry.METHODS["epll_image_prior"].needs


def test_schema_enum_equals_the_registry():
    """The no-drift test: the static schema lists exactly the registered built-in methods,
    in the registry's order."""
    built_in = [n for n in registry.method_names() if n in BUILT_IN]
    assert schema_methods() == built_in


def run_tiny(tmp_path, override_text, *extra, timeout=300):
    """The tiny workflow in tmp_path with an override file; returns the finished process."""
    override = tmp_path / "override.yaml"
    override.write_text(override_text)
    return subprocess.run(
        [SNAKEMAKE, "-s", os.path.join(ROOT, "Snakefile"), "--directory", str(tmp_path),
         *extra, "--configfile", TINY, str(override)],
        capture_output=True, text=True, env=snakemake_env(), timeout=timeout)


def test_rule_lists_equal_the_registry(tmp_path):
    """rules/common.smk takes GMM_METHODS and the baseline list from the registry: a dry run
    with every built-in method plans one restore_images job per GMM method and one
    restore_baseline job per baseline."""
    result = run_tiny(tmp_path, f"restore: {{methods: [{', '.join(BUILT_IN)}]}}\n",
                      "--cores", "1", "-n")
    assert result.returncode == 0, result.stderr[-3000:]
    counts = dict(re.findall(r"^(\w+)\s+(\d+)$", result.stdout, re.M))
    assert int(counts["restore_images"]) == len(registry.method_names("gmm"))
    assert int(counts["restore_baseline"]) == len(registry.method_names("baseline"))
    with open(os.path.join(ROOT, "rules", "common.smk"), encoding="utf-8") as fh:
        common = fh.read()
    assert 'GMM_METHODS = registry.method_names("gmm")' in common
    assert 'registry.method_names("baseline")' in common


def method_choices(script, argv):
    """The --method choices of ``script``'s parser (main(argv) stopped at parse_args)."""
    sys.path.insert(0, os.path.join(ROOT, "scripts"))
    module = importlib.import_module(script)
    choices = None
    original = argparse.ArgumentParser.parse_args

    def capture(parser, args=None, namespace=None):
        nonlocal choices
        choices = next(tuple(a.choices) for a in parser._actions
                       if "--method" in a.option_strings)
        raise SystemExit(0)

    argparse.ArgumentParser.parse_args = capture
    try:
        with pytest.raises(SystemExit):
            module.main(argv)
    finally:
        argparse.ArgumentParser.parse_args = original
    return choices


def test_script_choices_equal_the_registry():
    """restore_images.py --method offers exactly the registry's GMM methods,
    restore_baseline.py --method its baselines."""
    assert method_choices("restore_images", []) == registry.method_names("gmm")
    assert (sorted(method_choices("restore_baseline", []))
            == sorted(registry.method_names("baseline")))


def test_captions_are_filled_from_the_config():
    config = {"restore": {"methods": ["mapk", "epll_image_prior", "wiener"],
                          "mapk": {"position_weight_power": 3},
                          "epll": {"init_sharpen": 1.0},
                          "image_prior": {"n_components": 4, "weight": 16.0}}}
    captions = dict(registry.captions(config))
    assert list(captions) == ["mapk", "epll_image_prior", "wiener"]
    assert "power 3 (0: the plain mean)" in captions["mapk"]
    assert "(4 components)" in captions["epll_image_prior"]
    assert "weight of 16.0 patches" in captions["epll_image_prior"]
    assert BASELINES["wiener"].description in captions["wiener"]


def test_a_method_is_one_entry_and_one_function(tmp_path):
    """In process: a plugin module registers 'identity'; the registry offers it, the script
    dispatches to it, and registering a name twice is refused."""
    plugin = tmp_path / "toy_identity.py"
    plugin.write_text(TOY_PLUGIN)
    added = registry.load_plugins([str(plugin)])
    try:
        assert added == ["identity"]
        assert registry.load_plugins([str(plugin)]) == []  # imported once
        spec = registry.get_method("identity")
        assert spec.kind == "gmm" and "identity" in registry.method_names("gmm")
        images = np.random.default_rng(0).random((2, 8, 8))
        problem = registry.GmmProblem(images, None, None, np.eye(4), 0.1, 2, False, None,
                                      "same", None, argparse.Namespace())
        np.testing.assert_array_equal(spec.function(problem), images)
        with pytest.raises(ValueError, match="registered already"):
            registry.register(registry.MethodSpec("identity", "gmm", (), "other",
                                                  lambda p: p.images))
        with pytest.raises(ValueError, match="kind"):
            registry.MethodSpec("x", "neural", (), "", lambda p: p.images)
    finally:
        registry.METHODS.pop("identity", None)
        sys.modules.pop("gmmrestore_plugin_toy_identity", None)


@pytest.mark.slow
def test_a_plugin_method_runs_through_the_tiny_workflow(tmp_path):
    """End to end: a plugin file (one entry, one function) named in restore.plugins, its
    method in restore.methods; the tiny workflow restores and scores it, no other file
    changed."""
    plugin = tmp_path / "toy_identity.py"
    plugin.write_text(TOY_PLUGIN)
    result = run_tiny(tmp_path, textwrap.dedent(f"""\
        restore:
          methods: [mapk, identity]
          plugins: [{plugin}]
        """), "--cores", "2", timeout=900)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]
    with open(tmp_path / "results" / "metrics.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    by_method = {}
    for row in rows:
        by_method.setdefault(row["method"], []).append(row)
    assert set(by_method) == {"corrupted", "mapk", "identity"}
    assert len(by_method["identity"]) == 8
    # the identity restoration is the corrupted image (clipped to [0, 1], as every method)
    corrupted = {r["image_id"]: float(r["psnr"]) for r in by_method["corrupted"]}
    identity = {r["image_id"]: float(r["psnr"]) for r in by_method["identity"]}
    assert identity.keys() == corrupted.keys()
    assert all(identity[i] >= corrupted[i] - 1e-9 for i in identity)


def test_configcheck_knows_the_methods_that_need_the_image_prior():
    from gmmrestore.configcheck import IMAGE_PRIOR_METHODS

    built_in = [n for n in registry.method_names(needs="image_gmm") if n in BUILT_IN]
    assert list(IMAGE_PRIOR_METHODS) == built_in


@pytest.mark.parametrize("plugins, methods, message", [
    pytest.param("[/nonexistent/toy.py]", "[mapk]",
                 "config: restore.plugins: restoration plugin /nonexistent/toy.py: no such file",
                 id="missing_plugin_file"),
    pytest.param("[no_such_module_25d]", "[mapk]",
                 "config: restore.plugins: restoration plugin no_such_module_25d: No module",
                 id="missing_plugin_module"),
    pytest.param("[]", "[mapk, identity]",
                 "config: restore.methods[1] = 'identity' is not allowed",
                 id="method_without_its_plugin"),
])
def test_plugin_config_errors(tmp_path, plugins, methods, message):
    result = run_tiny(tmp_path, f"restore: {{methods: {methods}, plugins: {plugins}}}\n",
                      "--cores", "1", "-n")
    assert result.returncode != 0
    assert message in result.stdout + result.stderr
