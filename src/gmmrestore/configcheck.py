"""Checks of a workflow configuration (a plain dict) with one-line messages.

The Snakefile validates its config against ``schemas/config.schema.yaml`` (JSON Schema,
defaults filled in) and turns the first violation into one line with
:func:`schema_error_message`; :func:`check_settings` then checks what a schema cannot: blur
names against ``blurs``, patch sizes against the image size, K against the number of
training patches, and the whole-image prior's image size and K (:func:`check_image_prior`).
Every message starts with ``config:``, names the key and the value, and says what is
allowed.

Pure Python (no numpy), so the Snakefile can import it wherever Snakemake runs.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

# Side of the (square) images of each dataset source; None: the config's image_size.
SOURCE_IMAGE_SIDE = {"mnist": 28, "fashion_mnist": 28, "folder": None, "natural": None,
                     "bsd": 180}  # bsd: the Train400 crops


# keys of restore.image_prior that replace restore.epll's for method epll_image_prior
IMAGE_PRIOR_EPLL_KEYS = ("lam_factor", "init_sharpen")
#: Largest training image (pixels) for the whole-image mixture of method epll_image_prior:
#: it holds K (H*W)^2 covariances and EPLL diagonalises each one (64 x 64 images: 128 MiB
#: per component).
MAX_IMAGE_PRIOR_PIXELS = 4096


def epll_image_prior_settings(epll: Mapping[str, Any],
                              image_prior: Mapping[str, Any]) -> dict[str, Any]:
    """EPLL settings of method epll_image_prior: ``restore.epll`` with the keys of
    :data:`IMAGE_PRIOR_EPLL_KEYS` that ``restore.image_prior`` sets in their place."""
    return {**epll, **{key: image_prior[key] for key in IMAGE_PRIOR_EPLL_KEYS
                       if key in image_prior}}


class ConfigError(ValueError):
    """A configuration value that cannot work, with a one-line message."""


def key_path(path: Iterable[Any]) -> str:
    """``("sweep", "noise_sigma", 0)`` -> ``"sweep.noise_sigma[0]"``."""
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _under(where: str) -> str:
    return f"under '{where}'" if where else "at the top level"


def _quoted(values: Iterable[Any]) -> str:
    return ", ".join(repr(v) if isinstance(v, str) else str(v) for v in values)


def schema_defaults(schema: Mapping[str, Any], *keys: str) -> dict[str, Any]:
    """The ``default`` of each property of the object at ``keys`` in a JSON schema (loaded
    as a dict), e.g. ``schema_defaults(schema, "restore", "epll")``: what the workflow's
    validation fills in, for scripts that read a config without it.  Properties without a
    default are left out; a missing key raises KeyError naming the path."""
    node = schema
    for depth, key in enumerate(keys):
        try:
            node = node["properties"][key]
        except KeyError:
            raise KeyError(f"schema has no property {key_path(keys[:depth + 1])}") from None
    return {name: spec["default"] for name, spec in node.get("properties", {}).items()
            if "default" in spec}


def schema_error_message(error: Any) -> str:
    """One line for a ``jsonschema.ValidationError``: which key, which value, what is allowed.

    Unknown (e.g. misspelled) and missing keys list the keys allowed at that level, with the
    closest match when there is one.
    """
    where = key_path(error.absolute_path)
    schema = error.schema if isinstance(error.schema, Mapping) else {}
    allowed = list(schema.get("properties", {}))
    instance = error.instance
    if error.validator == "additionalProperties" and isinstance(instance, Mapping) and allowed:
        unknown = [k for k in instance if k not in allowed]
        hints = {k: difflib.get_close_matches(str(k), allowed, n=1) for k in unknown}
        hint = "; ".join(f"did you mean '{h[0]}'" + (f" for '{k}'" if len(unknown) > 1 else "")
                         + "?" for k, h in hints.items() if h)
        return (f"config: unknown key{'s' if len(unknown) > 1 else ''} {_quoted(unknown)} "
                f"{_under(where)}{' (' + hint + ')' if hint else ''}; allowed keys: "
                f"{', '.join(allowed)}")
    if error.validator == "required" and isinstance(instance, Mapping):
        missing = [k for k in error.validator_value if k not in instance]
        return (f"config: missing key{'s' if len(missing) > 1 else ''} {_quoted(missing)} "
                f"{_under(where)}; required: {', '.join(error.validator_value)}; allowed "
                f"keys: {', '.join(allowed)}")
    if error.validator == "enum":
        return (f"config: {where} = {instance!r} is not allowed; allowed values: "
                f"{_quoted(error.validator_value)}")
    if error.validator == "minItems" and isinstance(instance, list) and not instance:
        return (f"config: {where} is an empty list; it needs at least {error.validator_value} "
                "value(s)")
    if error.validator == "propertyNames":
        return f"config: {where}: key {error.message}"
    return f"config: {where or 'the configuration'} = {instance!r}: {error.message}"


def training_source(dataset: Mapping[str, Any]) -> str:
    """Source of the training images: ``dataset.source``, or for a paired set its
    ``paired.training_source`` (the set's own images are never trained on)."""
    if dataset["source"] == "paired":
        return dataset.get("paired", {}).get("training_source", "mnist")
    return dataset["source"]


def image_side(dataset: Mapping[str, Any]) -> int:
    """Side of the square training images the dataset section gives (MNIST: 28; folder and
    natural photographs: their tiles, ``image_size``)."""
    side = SOURCE_IMAGE_SIDE.get(training_source(dataset))
    return int(dataset.get("image_size", 64)) if side is None else side


def n_training_patches(config: Mapping[str, Any], m: int) -> int:
    """Training patches extract_patches will keep for patch size ``m``: every stride-1 patch of
    the ``n_train`` images, at most ``patches.max_patches``."""
    side = image_side(config["dataset"])
    available = int(config["dataset"]["n_train"]) * max(side - m + 1, 0) ** 2
    return min(available, int(config.get("patches", {}).get("max_patches", available)))


def check_settings(config: Mapping[str, Any], settings: Sequence[Any], where: str,
                   given_blurs: Iterable[str] = ()) -> None:
    """Check the sweep ``settings`` (items with ``patch_size``, ``n_components``, ``blur``)
    against the rest of ``config``; ``where`` names their source in messages (``sweep`` or the
    sweep table); ``given_blurs`` are blur names that need no entry under ``blurs`` (a paired
    set's given corruption); then :func:`check_image_prior`.  Raises :class:`ConfigError`."""
    blurs = config["blurs"]
    known = set(blurs) | set(given_blurs)
    unknown = list(dict.fromkeys(s.blur for s in settings if s.blur not in known))
    if unknown:
        raise ConfigError(f"config: {where} lists blur(s) {_quoted(unknown)}, not defined "
                          f"under 'blurs' (defined: {', '.join(sorted(blurs))})")
    for name, spec in blurs.items():
        if spec["type"] != "matrix":
            continue
        if not spec.get("path"):
            raise ConfigError(f"config: blurs.{name} has type 'matrix' but no 'path' (a .npy "
                              "file holding the m² x m² patch matrix)")
        if not os.path.isfile(spec["path"]):
            raise ConfigError(f"config: blurs.{name}.path '{spec['path']}' not found (relative "
                              f"paths are relative to the working directory {os.getcwd()})")
    side = image_side(config["dataset"])
    for m in sorted({int(s.patch_size) for s in settings}):
        if m > side:
            raise ConfigError(
                f"config: {where} lists patch_size {m}, larger than the {side}x{side} training "
                f"images of source '{training_source(config['dataset'])}'; allowed: 2 to "
                f"{side}")
    for m, k in sorted({(int(s.patch_size), int(s.n_components)) for s in settings}):
        n = n_training_patches(config, m)
        if k > n:
            raise ConfigError(
                f"config: {where} lists n_components {k}, more than the {n} training "
                f"patches of patch size {m} (dataset.n_train {config['dataset']['n_train']}, "
                f"patches.max_patches {config.get('patches', {}).get('max_patches')}); "
                f"allowed: 1 to {n}")
    check_image_prior(config)
    check_corruption(config, {s.blur for s in settings} - set(given_blurs))


def check_corruption(config: Mapping[str, Any], blur_names: Iterable[str]) -> None:
    """With ``corruption.boundary: valid`` the frame loses ``valid_margin`` pixels per axis:
    the margin must cover every used blur's size - 1, and the whole-image prior (trained on
    uncropped images) does not apply.  Raises :class:`ConfigError`."""
    corruption = config.get("corruption", {})
    if corruption.get("boundary", "zero") != "valid":
        return
    if "epll_image_prior" in config["restore"]["methods"]:
        raise ConfigError("config: restore.methods lists epll_image_prior, whose whole-image "
                          "mixture needs frames of the training images' size; "
                          "corruption.boundary 'valid' crops them: leave one of the two out")
    margin = corruption.get("valid_margin")
    if margin is None:
        return
    for name in sorted(blur_names):
        spec = config["blurs"].get(name, {})
        size = 1 if spec.get("type") == "identity" else int(spec.get("size", 1))
        if margin < size - 1:
            raise ConfigError(f"config: corruption.valid_margin = {margin} is less than blur "
                              f"'{name}''s size - 1 = {size - 1}; allowed: at least the "
                              "largest kernel's size - 1")


def check_image_prior(config: Mapping[str, Any]) -> None:
    """Method epll_image_prior trains a mixture over whole training images: they must have
    at most :data:`MAX_IMAGE_PRIOR_PIXELS` pixels and number at least its K.  Raises
    :class:`ConfigError`."""
    if "epll_image_prior" not in config["restore"]["methods"]:
        return
    dataset = config["dataset"]
    side = image_side(dataset)
    if side * side > MAX_IMAGE_PRIOR_PIXELS:
        raise ConfigError(
            f"config: restore.methods lists epll_image_prior, whose mixture over whole images "
            f"is limited to {MAX_IMAGE_PRIOR_PIXELS} pixels per image; the training images of "
            f"source '{training_source(dataset)}' are {side}x{side} = {side * side} "
            "(dataset.image_size); leave epll_image_prior out of restore.methods or use "
            "images of at most 64x64")
    k = config["restore"].get("image_prior", {}).get("n_components")
    n_train = int(dataset["n_train"])
    if k is not None and int(k) > n_train:
        raise ConfigError(
            f"config: restore.image_prior.n_components = {k}, more than the {n_train} "
            f"training images (dataset.n_train), each one sample of epll_image_prior's "
            f"whole-image mixture; allowed: 1 to {n_train}")
