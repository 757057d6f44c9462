"""Checks of a workflow configuration (a plain dict) with one-line messages.

The Snakefile validates its config against ``schemas/config.schema.yaml`` (JSON Schema,
defaults filled in) and turns the first violation into one line with
:func:`schema_error_message`; :func:`check_settings` then checks what a schema cannot: blur
names against ``blurs``, patch sizes against the image size, K against the number of
training patches, and the whole-image prior's image size and K (:func:`check_image_prior`).
Every message starts with ``config:``, names the key and the value, and says what is
allowed.

Pure Python at import (no numpy), so the Snakefile can import it wherever Snakemake runs;
:func:`check_blurs` builds the kernels with numpy when it is called.
"""

from __future__ import annotations

import difflib
import math
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


#: The built-in methods that need the whole-image mixture (registry: needs 'image_gmm'; the
#: workflow passes the registry's list, plugins included; a test checks they agree).
IMAGE_PRIOR_METHODS = ("epll_image_prior",)
# blur name of a paired set's given corruption (reserved)
PAIRED_BLUR = "paired"


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


def _describe_choice(schema: Mapping[str, Any]) -> str:
    """``{type: number, minimum: 0}`` -> ``a number >= 0``; ``{enum: [a]}`` -> ``'a'``."""
    if "enum" in schema:
        return _quoted(schema["enum"])
    text = f"a{'n' if schema.get('type', '')[:1] in 'aeiou' else ''} {schema.get('type', 'value')}"
    if "minimum" in schema:
        text += f" >= {schema['minimum']}"
    return text


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
    if error.validator == "oneOf":
        return (f"config: {where} = {instance!r} is not allowed; expected "
                + " or ".join(_describe_choice(s) for s in error.validator_value))
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


def is_paired(config: Mapping[str, Any]) -> bool:
    """Whether the corruption is given (source 'paired'), not simulated."""
    return config["dataset"]["source"] == "paired"


def check_paired_config(config: Mapping[str, Any]) -> None:
    """The reserved blur name; for source 'paired', the keys the schema cannot require."""
    ds = config["dataset"]
    if PAIRED_BLUR in config["blurs"]:
        raise ConfigError(f"config: blurs.{PAIRED_BLUR}: the name '{PAIRED_BLUR}' is reserved "
                          "for the given blur of source 'paired'; rename it")
    if not is_paired(config):
        return
    if "paired" not in ds:
        raise ConfigError("config: dataset.source is 'paired' but dataset.paired is not set "
                          "(expected folder: a folder with original/, corrupted/ and W.npy)")
    estimated = [f"{key}: estimate" for key in ("intensity", "noise_sigma")
                 if ds["paired"][key] == "estimate"]
    if estimated and config["gmm"]["remove_dc"]:
        raise ConfigError(
            f"config: dataset.paired.{' and '.join(estimated)} needs a GMM of whole patches, "
            "but gmm.remove_dc is true (set it false, or give intensity and noise_sigma)")
    if ds["paired"]["training_source"] == "folder" and not ds.get("folder"):
        raise ConfigError("config: dataset.paired.training_source is 'folder' but "
                          "dataset.folder is not set")


def check_settings(config: Mapping[str, Any], settings: Sequence[Any], where: str,
                   given_blurs: Iterable[str] = (),
                   image_prior_methods: Iterable[str] = IMAGE_PRIOR_METHODS) -> None:
    """Check the sweep ``settings`` (items with ``patch_size``, ``n_components``, ``blur``)
    against the rest of ``config``; ``where`` names their source in messages (``sweep`` or the
    sweep table); ``given_blurs`` are blur names that need no entry under ``blurs`` (a paired
    set's given corruption); then :func:`check_image_prior` (``image_prior_methods``: the
    methods that need the whole-image mixture).  Raises :class:`ConfigError`."""
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
    # a paired set's setting carries its calibration key, checked by the schema's paired block
    check_noise_sigmas([s for s in settings if s.blur not in set(given_blurs)], where)
    check_blurs(config)
    check_paths(config)
    check_image_prior(config, image_prior_methods)
    check_corruption(config, {s.blur for s in settings} - set(given_blurs),
                     image_prior_methods)


def _image_prior_method(config: Mapping[str, Any], methods: Iterable[str]) -> str | None:
    """The first method of restore.methods that needs the whole-image mixture, or None."""
    methods = set(methods)
    return next((m for m in config["restore"]["methods"] if m in methods), None)


def check_corruption(config: Mapping[str, Any], blur_names: Iterable[str],
                     image_prior_methods: Iterable[str] = IMAGE_PRIOR_METHODS) -> None:
    """With ``corruption.boundary: valid`` the frame loses ``valid_margin`` pixels per axis:
    the margin must cover every used blur's size - 1, and the whole-image prior (trained on
    uncropped images) does not apply.  Raises :class:`ConfigError`."""
    corruption = config.get("corruption", {})
    if corruption.get("boundary", "zero") != "valid":
        return
    method = _image_prior_method(config, image_prior_methods)
    if method is not None:
        raise ConfigError(f"config: restore.methods lists {method}, whose whole-image "
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


def check_image_prior(config: Mapping[str, Any],
                      image_prior_methods: Iterable[str] = IMAGE_PRIOR_METHODS) -> None:
    """A method that needs the whole-image mixture (``image_prior_methods``, e.g.
    epll_image_prior) trains it over whole training images: they must have at most
    :data:`MAX_IMAGE_PRIOR_PIXELS` pixels and number at least its K.  Raises
    :class:`ConfigError`."""
    method = _image_prior_method(config, image_prior_methods)
    if method is None:
        return
    dataset = config["dataset"]
    side = image_side(dataset)
    if side * side > MAX_IMAGE_PRIOR_PIXELS:
        raise ConfigError(
            f"config: restore.methods lists {method}, whose mixture over whole images "
            f"is limited to {MAX_IMAGE_PRIOR_PIXELS} pixels per image; the training images of "
            f"source '{training_source(dataset)}' are {side}x{side} = {side * side} "
            f"(dataset.image_size); leave {method} out of restore.methods or use "
            "images of at most 64x64")
    k = config["restore"].get("image_prior", {}).get("n_components")
    n_train = int(dataset["n_train"])
    if k is not None and int(k) > n_train:
        raise ConfigError(
            f"config: restore.image_prior.n_components = {k}, more than the {n_train} "
            f"training images (dataset.n_train), each one sample of {method}'s "
            f"whole-image mixture; allowed: 1 to {n_train}")


#: Largest noise sigma, on the images' [0, 1] intensity scale.
MAX_NOISE_SIGMA = 1.0
#: How far a blur kernel's sum may be from 1.
KERNEL_SUM_TOLERANCE = 1e-6


def check_noise_sigmas(settings: Sequence[Any], where: str) -> None:
    """Every setting's ``noise_sigma`` is a finite number in [0, :data:`MAX_NOISE_SIGMA`].
    Raises :class:`ConfigError`."""
    for s in settings:
        try:
            sigma = float(s.noise_sigma)
        except (TypeError, ValueError):
            sigma = math.nan
        if not (math.isfinite(sigma) and 0 <= sigma <= MAX_NOISE_SIGMA):
            raise ConfigError(
                f"config: {where} lists noise_sigma {s.noise_sigma}; allowed: a finite "
                f"number from 0 to {MAX_NOISE_SIGMA:g} (the images' intensity range is "
                "[0, 1])")


def blur_kernel(name: str, spec: Mapping[str, Any]) -> Any:
    """Build the kernel of blur setting ``blurs.<name>`` as the corruption stage will, and
    check it: odd sizes, finite, summing to 1.  Returns it ((s, s) float64).  Raises
    :class:`ConfigError` naming the key."""
    from .h5io import GmmRestoreError
    from .operators import kernel_from_patch_matrix, load_patch_matrix, make_kernel

    key = f"blurs.{name}"
    kind = spec["type"]
    size = spec.get("size", 5)
    if kind in ("gaussian", "box", "disk") and int(size) % 2 == 0:
        raise ConfigError(f"config: {key}.size = {size}: a blur kernel's size must be odd "
                          f"(e.g. {int(size) - 1} or {int(size) + 1})")
    if spec.get("blind") and int(spec.get("kernel_size", 3)) % 2 == 0:
        raise ConfigError(f"config: {key}.kernel_size = {spec['kernel_size']}: the estimated "
                          "kernel's size must be odd")
    try:
        if kind == "matrix":
            W = load_patch_matrix(spec["path"])
            kernel = kernel_from_patch_matrix(W, int(round(len(W) ** 0.5)))
        else:
            kernel = make_kernel(kind, size=size, std=spec.get("std", 1.0),
                                 length=spec.get("length", 5.0), angle=spec.get("angle", 0.0))
    except GmmRestoreError as err:
        where = f"{key}.path '{spec['path']}'" if kind == "matrix" else key
        raise ConfigError(f"config: {where}: {err}") from None
    total = float(kernel.sum())
    if not (math.isfinite(total) and abs(total - 1) <= KERNEL_SUM_TOLERANCE):
        where = f"{key}.path '{spec['path']}': the kernel of W" if kind == "matrix" else key
        raise ConfigError(f"config: {where} sums to {total:.9g}; a blur kernel must sum to 1 "
                          "(it would change the images' brightness)")
    return kernel


def check_blurs(config: Mapping[str, Any]) -> None:
    """Build and check every blur under ``blurs`` (:func:`blur_kernel`), used or not."""
    for name, spec in config["blurs"].items():
        blur_kernel(name, spec)


def _nearest_existing(path: str) -> str:
    while not os.path.exists(path) and os.path.dirname(path) != path:
        path = os.path.dirname(path)
    return path


def check_output_folder(key: str, value: Any, cwd: str | None = None) -> None:
    """An output folder setting (``results_dir``, ``dataset.cache_dir``): a non-empty path,
    not the working directory or a folder above it, and a folder that exists and is
    writable or can be created.  Raises :class:`ConfigError`."""
    cwd = os.path.realpath(cwd or os.getcwd())
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(f"config: {key} = {value!r}: expected a folder name such as "
                          "'results' (an empty path would put outputs under the root folder)")
    path = os.path.realpath(value)
    if os.path.commonpath([path, cwd]) == path:
        raise ConfigError(f"config: {key} = {value!r} is the working directory {cwd} or a "
                          "folder above it; give a folder of its own, e.g. 'results'")
    existing = _nearest_existing(path)
    if not os.path.isdir(existing):
        raise ConfigError(f"config: {key} = {value!r}: {existing} is a file, not a folder")
    if not os.access(existing, os.W_OK | os.X_OK) or _read_only_mount(existing):
        what = "is not writable" if existing == path else f"cannot be created ({existing} " \
            "is not writable)"
        raise ConfigError(f"config: {key} = {value!r} {what}")


def _read_only_mount(path: str) -> bool:
    """Whether ``path`` is on a read-only file system (root's os.access ignores that)."""
    try:
        return bool(os.statvfs(path).f_flag & os.ST_RDONLY)
    except OSError:
        return False


def check_paths(config: Mapping[str, Any]) -> None:
    """``results_dir`` and ``dataset.cache_dir`` (:func:`check_output_folder`);
    ``dataset.folder`` when set: not empty.  Raises :class:`ConfigError`."""
    check_output_folder("results_dir", config.get("results_dir", "results"))
    dataset = config["dataset"]
    if training_source(dataset) in ("mnist", "fashion_mnist"):
        check_output_folder("dataset.cache_dir", dataset.get("cache_dir", "data/cache"))
    folder = dataset.get("folder")
    if folder is not None and (not isinstance(folder, str) or not folder.strip()):
        raise ConfigError(f"config: dataset.folder = {folder!r}: expected the path of a "
                          "folder of images")
    if isinstance(folder, str) and os.path.exists(folder) and not os.path.isdir(folder):
        raise ConfigError(f"config: dataset.folder = {folder!r} is a file, not a folder")
