"""One source for every default: each library settings dataclass a stage script exposes has
the same defaults as the config schema's keys for it and as the script's options."""

from __future__ import annotations

import dataclasses
import os
import sys

import pytest
import yaml
from conftest import ROOT

from gmmrestore.configcheck import schema_defaults
from gmmrestore.deconv import GaussianBlindSettings, L0Settings, SparseSettings, TVSettings
from gmmrestore.gmm import EMSettings
from gmmrestore.restore import registry
from gmmrestore.restore.epll import WEIGHTINGS
from gmmrestore.restore.settings import EPLL_INITS, EpllSettings, ImagePriorSettings, MapkSettings

sys.path.insert(0, os.path.join(ROOT, "scripts"))

with open(os.path.join(ROOT, "schemas", "config.schema.yaml"), encoding="utf-8") as fh:
    SCHEMA = yaml.safe_load(fh)


def _plain(value):
    return list(value) if isinstance(value, tuple) else value


def option_defaults(parser) -> dict:
    """``{dest: default}`` of every option of an argparse parser."""
    return {a.dest: a.default for a in parser._actions if a.option_strings}


def restore_images_defaults() -> dict:
    """``{(settings class, field): argparse default}`` of restore_images.py's method options."""
    import restore_images

    defaults = option_defaults(restore_images.build_parser())
    out = {}
    for flag, (settings, name, _) in restore_images.SETTING_OPTIONS.items():
        dest = next(a.dest for a in restore_images.build_parser()._actions
                    if flag in a.option_strings)
        out[(settings, name)] = defaults[dest]
    return out


# settings class -> the schema keys holding its fields (None: it has none in the config)
SCHEMA_SECTIONS = {
    EMSettings: ("gmm",),
    MapkSettings: ("restore", "mapk"),
    EpllSettings: ("restore", "epll"),
    ImagePriorSettings: ("restore", "image_prior"),
    GaussianBlindSettings: None,
    SparseSettings: None,
    L0Settings: None,
    TVSettings: None,
}


@pytest.mark.parametrize("settings", list(SCHEMA_SECTIONS), ids=lambda c: c.__name__)
def test_schema_defaults_are_the_settings_defaults(settings):
    """Every schema key of the section that names a field has the field's default."""
    section = SCHEMA_SECTIONS[settings]
    defaults = {f.name: _plain(f.default) for f in dataclasses.fields(settings)}
    if section is None:
        return  # not configurable in config.yaml (the scripts use the library's defaults)
    schema = schema_defaults(SCHEMA, *section)
    shared = set(schema) & set(defaults)
    assert shared, f"schema section {'.'.join(section)} has no key of {settings.__name__}"
    assert {k: schema[k] for k in shared} == {k: defaults[k] for k in shared}
    # a schema default without a field must be a workflow-only key, listed here
    workflow_only = {EMSettings: set(), MapkSettings: set(), EpllSettings: set(),
                     ImagePriorSettings: set()}[settings]
    assert set(schema) - set(defaults) == workflow_only


# config.yaml keys of a settings section set to something other than the library default on
# purpose; each carries a comment there saying so
CONFIG_YAML_CHOICES = {("gmm", "max_iter")}


def _yaml_line(text: str, path: tuple[str, ...]) -> str:
    """The line of key ``path[-1]`` found by walking to each key of ``path`` in turn (so a
    same-named key of another section is not taken)."""
    lines = text.splitlines()
    i = -1
    for key in path:
        i = next(j for j in range(i + 1, len(lines)) if lines[j].strip().startswith(key + ":"))
    return lines[i]


@pytest.mark.parametrize("settings", [c for c, s in SCHEMA_SECTIONS.items() if s],
                         ids=lambda c: c.__name__)
def test_config_yaml_repeats_the_settings_defaults(settings):
    """The default config's settings are the library's defaults, except the listed choices,
    each commented in config.yaml as differing from the library."""
    with open(os.path.join(ROOT, "config.yaml"), encoding="utf-8") as fh:
        text = fh.read()
    config = yaml.safe_load(text)
    section = SCHEMA_SECTIONS[settings]
    for key in section:
        config = config[key]
    for field in dataclasses.fields(settings):
        if field.name not in config:
            continue
        if section + (field.name,) in CONFIG_YAML_CHOICES:
            line = _yaml_line(text, section + (field.name,))
            assert settings.__name__ in line and str(field.default) in line, line
        else:
            assert config[field.name] == _plain(field.default), (section, field.name)


def test_every_registered_settings_class_is_checked():
    used = {c for name in registry.method_names("gmm") for c in registry.METHODS[name].settings}
    assert used == {MapkSettings, EpllSettings, ImagePriorSettings}
    assert used <= set(SCHEMA_SECTIONS)


def test_restore_images_options_are_the_method_settings_defaults():
    for (settings, name), default in restore_images_defaults().items():
        assert _plain(default) == _plain(getattr(settings(), name)), (settings, name)
    # every field of the methods' settings that restore_images.py reads is an option
    covered = set(restore_images_defaults())
    for settings in (MapkSettings, EpllSettings):
        assert {(settings, f.name) for f in dataclasses.fields(settings)} <= covered


def test_train_gmm_options_are_em_settings_defaults():
    import train_gmm

    defaults = option_defaults(train_gmm.build_parser())
    for name in train_gmm.EM_OPTIONS:
        assert defaults[name] == getattr(EMSettings(), name), name


def test_estimate_kernel_options_are_gaussian_blind_settings_defaults():
    import estimate_kernel

    defaults = option_defaults(estimate_kernel.build_parser())
    assert set(estimate_kernel.GAUSSIAN_OPTIONS) <= {
        f.name for f in dataclasses.fields(GaussianBlindSettings)}
    for name in estimate_kernel.GAUSSIAN_OPTIONS:
        assert defaults[name] == getattr(GaussianBlindSettings(), name), name
    args = estimate_kernel.build_parser().parse_args(
        ["--corrupted", "c.h5", "--out", "k.h5", "--kernel-size", "5"])
    assert estimate_kernel.gaussian_settings(args) == GaussianBlindSettings()


def test_one_boundary_vocabulary():
    """The corrupted file's ``boundary`` words: the schema, corrupt_images.py and the
    restorations (EPLL, the baselines) all take operators.BOUNDARIES."""
    import corrupt_images

    from gmmrestore.operators import BOUNDARIES

    boundary = SCHEMA["properties"]["corruption"]["properties"]["boundary"]
    assert tuple(boundary["enum"]) == BOUNDARIES and boundary["default"] == BOUNDARIES[0]
    assert tuple(corrupt_images.FORWARD_MODELS) == BOUNDARIES
    action = next(a for a in corrupt_images.build_parser()._actions
                  if "--boundary" in a.option_strings)
    assert tuple(action.choices) == BOUNDARIES and action.default == BOUNDARIES[0]


def test_one_blind_prior_vocabulary():
    """The blind priors: the schema's enum, estimate_kernel.py's --prior choices and
    descriptions, and the workflow's default for photographs all come from gmmrestore.deconv."""
    import estimate_kernel

    from gmmrestore.deconv import BLIND_PRIORS, DEFAULT_PHOTOGRAPH_PRIOR, PHOTOGRAPH_PRIORS

    prior = SCHEMA["properties"]["blurs"]["additionalProperties"]["properties"]["prior"]
    assert tuple(prior["enum"]) == BLIND_PRIORS
    assert f"Default: {DEFAULT_PHOTOGRAPH_PRIOR} when corruption.boundary is valid" \
        in " ".join(prior["description"].split())
    assert set(estimate_kernel.ESTIMATOR_DESCRIPTIONS) == set(BLIND_PRIORS)
    action = next(a for a in estimate_kernel.build_parser()._actions
                  if "--prior" in a.option_strings)
    assert tuple(action.choices) == BLIND_PRIORS
    assert DEFAULT_PHOTOGRAPH_PRIOR in PHOTOGRAPH_PRIORS


@pytest.mark.parametrize("field,flag,vocabulary", [
    ("init", "--epll-init", EPLL_INITS), ("weighting", "--weighting", WEIGHTINGS)])
def test_one_epll_vocabulary(field, flag, vocabulary):
    """EPLL's start and image-step words: the schema's enum and restore_images.py's choices
    are the library's tuple (restore.settings / restore.epll)."""
    import restore_images

    enum = SCHEMA["properties"]["restore"]["properties"]["epll"]["properties"][field]["enum"]
    assert tuple(enum) == tuple(vocabulary)
    action = next(a for a in restore_images.build_parser()._actions if flag in a.option_strings)
    assert tuple(action.choices) == tuple(vocabulary)
