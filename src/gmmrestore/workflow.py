"""The pure-Python part of the workflow's planning (``rules/common.smk``): the settings of a
sweep (the config's lists, or a table) and the names in result paths.

Every function takes the config (a mapping as validated by the schema) and returns plain
values; errors are :class:`~gmmrestore.configcheck.ConfigError` naming the config key.
"""

from __future__ import annotations

import collections
import csv
import itertools
import os
import re
from collections.abc import Iterable, Mapping
from typing import Any

from .configcheck import PAIRED_BLUR, ConfigError, is_paired

Setting = collections.namedtuple("Setting", "patch_size n_components blur noise_sigma")
SWEEP_COLUMNS = Setting._fields


def fmt_sigma(value: Any) -> str:
    """Noise level as it appears in paths (0.1 -> '0.1', 0.05 -> '0.05'), written exactly:
    the shortest text that reads back as the same float (0.1234567 -> '0.1234567')."""
    short = f"{float(value):g}"
    return short if float(short) == float(value) else repr(float(value))


def unique(values: Iterable[Any]) -> list[Any]:
    """``values`` without repeats, in first-seen order."""
    return list(dict.fromkeys(values))


def names_regex(names: Iterable[str]) -> str:
    """A regex matching exactly one of ``names``, longest first, so that names sharing a
    prefix or holding underscores never split ambiguously."""
    return "|".join(re.escape(n) for n in sorted(names, key=len, reverse=True))


def _table_setting(row: Mapping[str, str]) -> Setting | None:
    """One row of a sweep table as a :class:`Setting`, or None if it is not valid."""
    try:
        setting = Setting(patch_size=int(row["patch_size"]),
                          n_components=int(row["n_components"]),
                          blur=row["blur"].strip(), noise_sigma=fmt_sigma(row["noise_sigma"]))
    except (AttributeError, TypeError, ValueError):
        return None
    ok = setting.patch_size >= 2 and setting.n_components >= 1
    return setting if ok and float(setting.noise_sigma) >= 0 and setting.blur != "" else None


def read_sweep_table(path: str) -> list[Setting]:
    """Settings listed in a TSV file: a header naming the columns patch_size, n_components,
    blur and noise_sigma (any order), then one setting per row; '#' lines are comments."""
    if not os.path.isfile(path):
        raise ConfigError(f"config: sweep_table '{path}' not found (relative paths are "
                          f"relative to the working directory {os.getcwd()})")
    with open(path, newline="", encoding="utf-8") as fh:
        lines = [ln for ln in fh if ln.strip() and not ln.lstrip().startswith("#")]
    reader = csv.DictReader(lines, delimiter="\t")
    columns = reader.fieldnames or []
    if sorted(columns) != sorted(SWEEP_COLUMNS):
        raise ConfigError(f"config: sweep_table '{path}' has columns {columns}; expected "
                          f"exactly {list(SWEEP_COLUMNS)}, separated by tabs")
    settings: list[Setting] = []
    for number, row in enumerate(reader, start=1):
        setting = _table_setting(row)
        if setting is None:
            raise ConfigError(
                f"config: sweep_table '{path}', setting {number}: {dict(row)} is not valid "
                "(expected integer patch_size >= 2, integer n_components >= 1, a blur name, "
                "noise_sigma >= 0)")
        if setting in settings:
            raise ConfigError(f"config: sweep_table '{path}' lists {dict(row)} twice")
        settings.append(setting)
    if not settings:
        raise ConfigError(f"config: sweep_table '{path}' lists no settings")
    return settings


def paired_key(config: Mapping[str, Any]) -> str:
    """Source 'paired': the '<sigma>_<intensity>' key of the results folder (sigma 'est'
    when estimated), so that runs with other sigma or calibration settings never share a
    folder or a summary.csv."""
    paired = config["dataset"]["paired"]
    sigma = paired["noise_sigma"]
    sigma = "est" if sigma == "estimate" else fmt_sigma(sigma)
    return f"{sigma}_{paired['intensity']}"


def sweep_settings(config: Mapping[str, Any]) -> list[Setting]:
    """Every (patch_size, n_components, blur, noise_sigma) setting of the experiment, the one
    list every target is built from: the rows of config['sweep_table'] when it is set, else
    the cartesian product of the config['sweep'] lists.  Source 'paired': the corruption is
    given, not simulated, so every setting's blur and noise sigma become the set's
    ('paired', :func:`paired_key`); the patch size and component axes are kept."""
    if config.get("sweep_table"):
        settings = read_sweep_table(config["sweep_table"])
    else:
        sweep = config["sweep"]
        settings = [Setting(m, k, blur, fmt_sigma(sigma)) for m, k, blur, sigma in
                    itertools.product(sweep["patch_size"], sweep["n_components"],
                                      sweep["blur"], sweep["noise_sigma"])]
    if not is_paired(config):
        return settings
    key = paired_key(config)
    return unique(s._replace(blur=PAIRED_BLUR, noise_sigma=key) for s in settings)
