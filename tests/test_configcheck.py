"""gmmrestore.configcheck.schema_defaults against a small schema and against what the
workflow's validation (snakemake.utils.validate) fills into the real config."""

from __future__ import annotations

import os

import pytest
import yaml
from snakemake.utils import validate

from gmmrestore.configcheck import epll_image_prior_settings, schema_defaults

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir)
SCHEMA_PATH = os.path.abspath(os.path.join(ROOT, "schemas", "config.schema.yaml"))


def test_schema_defaults_small_schema():
    schema = {"properties": {"a": {"type": "object", "properties": {
        "b": {"type": "number", "default": 1.5},
        "c": {"type": "number"},
        "d": {"type": "array", "default": [1, 2]}}}}}
    assert schema_defaults(schema, "a") == {"b": 1.5, "d": [1, 2]}
    assert schema_defaults(schema, "a", "b") == {}
    with pytest.raises(KeyError, match=r"a\.x"):
        schema_defaults(schema, "a", "x")


@pytest.mark.parametrize("section", ["epll", "mapk"])
def test_schema_defaults_match_validation(section):
    with open(SCHEMA_PATH, encoding="utf-8") as fh:
        schema = yaml.safe_load(fh)
    with open(os.path.join(ROOT, "config.yaml"), encoding="utf-8") as fh:
        config = yaml.safe_load(fh)
    config["restore"].pop(section, None)
    validate(config, SCHEMA_PATH)  # fills in the defaults
    expected = schema_defaults(schema, "restore", section)
    assert expected  # the section has defaults to compare
    assert config["restore"][section] == expected


def test_epll_image_prior_settings_replace_only_their_keys():
    epll = {"beta_factors": [1, 4], "lam_factor": 0.5, "n_inner": 2, "init_sharpen": 1.0}
    merged = epll_image_prior_settings(epll, {"n_components": 40, "weight": 16,
                                              "lam_factor": 2.0})
    assert merged == {**epll, "lam_factor": 2.0}
    assert epll["lam_factor"] == 0.5  # the EPLL settings themselves are untouched
    assert epll_image_prior_settings(epll, {"n_components": 40}) == epll


def _default_config(**overrides):
    with open(os.path.join(ROOT, "config.yaml"), encoding="utf-8") as fh:
        config = yaml.safe_load(fh)
    for section, values in overrides.items():
        config.setdefault(section, {}).update(values)
    validate(config, SCHEMA_PATH)
    return config


def test_corruption_defaults_to_the_zero_boundary_and_valid_margin_is_checked():
    from gmmrestore.configcheck import ConfigError, check_corruption

    config = _default_config()
    assert config["corruption"] == {"boundary": "zero", "valid_margin": None,
                                    "quantize_bits": None}
    assert config["blurs"]["gauss5"]["seed"] == 0
    check_corruption(config, ["gauss5"])  # zero boundary: nothing to check
    config = _default_config(corruption={"boundary": "valid", "valid_margin": 2},
                             restore={"methods": ["mapk", "epll"]})
    with pytest.raises(ConfigError, match="valid_margin = 2 is less than blur 'gauss5''s "
                                          "size - 1 = 4"):
        check_corruption(config, ["gauss5"])
    config["corruption"]["valid_margin"] = 6
    check_corruption(config, ["gauss5", "seed7"])
    config["restore"]["methods"].append("epll_image_prior")
    with pytest.raises(ConfigError, match="epll_image_prior"):
        check_corruption(config, ["gauss5"])
