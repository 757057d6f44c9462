"""One registry of the restoration methods, GMM methods and baselines alike.

:data:`METHODS` maps a method's name to its :class:`MethodSpec`: its kind ("gmm": restored
by ``scripts/restore_images.py`` with a patch GMM, rule ``restore_images``; "baseline":
``scripts/restore_baseline.py``, rule ``restore_baseline``), the models it needs, a one-line
caption for the report and the function to call.  The workflow's method lists
(``rules/common.smk``), the script's ``--method`` choices and dispatch and the report's
method list derive from it; ``schemas/config.schema.yaml``'s ``restore.methods`` enum is a
static copy of the built-in names, checked equal by a test.

Adding a GMM method = one :func:`register` call with its function.  A module outside the
package can do so: name it in ``restore.plugins`` (a module path, or a ``.py`` file) and
the workflow (and ``restore_images.py --plugin``) imports it with :func:`load_plugins`.

A GMM method's function takes a :class:`GmmProblem` (one group of images restored with one
blur) and returns the restored images ``(n, H, W)``.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import os
import sys
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from ..gmm import GaussianMixture
from ..h5io import GmmRestoreError
from .baselines import BASELINES
from .epll import ImagePrior, epll_restore
from .mapk import map_k_restore
from .settings import EpllSettings, ImagePriorSettings, MapkSettings

#: The kinds of method: restored with a patch GMM, or a classic baseline.
KINDS = ("gmm", "baseline")
#: What a method may need: a patch GMM (train_gmm.py), a whole-image GMM
#: (train_gmm.py --images), an image-level blur kernel (not only a patch matrix).
NEEDS = ("patch_gmm", "image_gmm", "kernel")


@dataclass(frozen=True)
class GmmProblem:
    """One group of corrupted images restored with one blur: what a GMM method gets.

    ``images`` (n, H, W); ``kernel`` the image-level kernel (None if only the patch matrix
    is known); ``patch_matrix`` (m², m²); ``extra_noise_cov`` the boundary term of MAP-k
    (m², m²) or None; ``boundary`` 'zero' or 'valid'; ``image_prior`` the whole-image prior
    of a method that needs 'image_gmm'; ``options`` the parsed options of restore_images.py;
    ``score_dtype`` the precision of MAP-k's component choice: the dtype the GMM was trained
    in ("float32" or "float64", its file's ``dtype`` attribute).
    """

    images: np.ndarray
    gmm: GaussianMixture
    kernel: np.ndarray | None
    patch_matrix: np.ndarray
    sigma: float
    patch_size: int
    remove_dc: bool
    extra_noise_cov: np.ndarray | None
    boundary: str
    image_prior: ImagePrior | None
    options: argparse.Namespace
    progress: Callable[[int, int], None] | None = None
    score_dtype: str = "float64"


def _no_args(restore_config: Mapping[str, Any]) -> str:
    return ""


def _no_params(options: argparse.Namespace, boundary: str) -> dict:
    return {}


@dataclass(frozen=True)
class MethodSpec:
    """A restoration method.

    ``function``: kind 'gmm': ``function(problem: GmmProblem) -> (n, H, W)``; kind
    'baseline': the :class:`~gmmrestore.restore.baselines.BaselineSpec` function.
    ``caption``: one line for the report; ``{restore[...]}`` fields are filled from the
    config (``caption.format(**config)``).  ``script_args(config['restore'])``: the options
    of restore_images.py the workflow passes for this method.  ``params(options,
    boundary)``: the settings recorded in the restored file's ``params``.  ``settings``:
    the dataclasses holding the method's settings and their defaults (restore_images.py's
    options and the config schema agree with them).  ``blind``: for a blur marked blind the
    workflow also restores with the estimated kernel (``<name>-blind``); every GMM method,
    and a baseline whose parameter is not tuned with the true kernel.
    """

    name: str
    kind: str
    needs: tuple[str, ...]
    caption: str
    function: Callable[..., np.ndarray]
    script_args: Callable[[Mapping[str, Any]], str] = field(default=_no_args)
    params: Callable[[argparse.Namespace, str], dict] = field(default=_no_params)
    settings: tuple[type, ...] = ()
    blind: bool = True

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"method {self.name}: kind {self.kind!r} is not one of {KINDS}")
        unknown = set(self.needs) - set(NEEDS)
        if unknown:
            raise ValueError(f"method {self.name}: needs {sorted(unknown)} not in {NEEDS}")
        if not self.name or not all(c.islower() or c.isdigit() or c == "_" for c in self.name):
            # the workflow's method wildcard is [a-z0-9_]+
            raise ValueError(f"method name {self.name!r}: use lower-case letters, digits, '_'")


METHODS: dict[str, MethodSpec] = {}


def register(spec: MethodSpec) -> MethodSpec:
    """Add ``spec`` to :data:`METHODS`; registering the same name twice is an error."""
    if spec.name in METHODS:
        if METHODS[spec.name] == spec:
            return spec  # the same module imported twice
        raise ValueError(f"restoration method {spec.name!r} is registered already")
    METHODS[spec.name] = spec
    return spec


def method_names(kind: str | None = None, needs: str | None = None) -> tuple[str, ...]:
    """Names of the registered methods (of ``kind``; that need ``needs``), in registration
    order."""
    return tuple(n for n, s in METHODS.items()
                 if (kind is None or s.kind == kind) and (needs is None or needs in s.needs))


def get_method(name: str) -> MethodSpec:
    """The spec of method ``name``; a :class:`GmmRestoreError` naming the valid ones."""
    try:
        return METHODS[name]
    except KeyError:
        raise GmmRestoreError(f"unknown restoration method {name!r}; registered: "
                              f"{', '.join(METHODS)}") from None


def load_plugins(plugins: Iterable[str]) -> list[str]:
    """Import every plugin (a module path such as ``mypkg.methods``, or a ``.py`` file), whose
    import registers its methods; returns the names it added."""
    before = set(METHODS)
    for plugin in plugins:
        if plugin.endswith(".py"):
            path = os.path.abspath(plugin)
            name = "gmmrestore_plugin_" + os.path.splitext(os.path.basename(path))[0]
            if name in sys.modules:
                continue
            spec = importlib.util.spec_from_file_location(name, path)
            if spec is None or not os.path.isfile(path):
                raise GmmRestoreError(f"restoration plugin {plugin}: no such file")
            module = importlib.util.module_from_spec(spec)
            sys.modules[name] = module
            spec.loader.exec_module(module)
        else:
            try:
                importlib.import_module(plugin)
            except ImportError as err:
                raise GmmRestoreError(f"restoration plugin {plugin}: {err}") from None
    return [n for n in METHODS if n not in before]


def captions(config: Mapping[str, Any]) -> list[tuple[str, str]]:
    """(name, caption) of the configured methods (``restore.methods``), in that order."""
    return [(n, METHODS[n].caption.format(**config)) for n in config["restore"]["methods"]]


# --------------------------------------------------------------------------------------------
# GMM methods
# --------------------------------------------------------------------------------------------
def _map_k(p: GmmProblem, settings: MapkSettings) -> np.ndarray:
    return map_k_restore(p.images, p.gmm, p.patch_matrix, p.sigma, settings,
                         remove_dc=p.remove_dc, extra_noise_cov=p.extra_noise_cov,
                         images_per_chunk=p.options.images_per_chunk, progress=p.progress,
                         score_dtype=p.score_dtype)


def restore_mapk(p: GmmProblem) -> np.ndarray:
    """MAP-k with the options' position weight power."""
    return _map_k(p, MapkSettings(position_weight_power=p.options.position_weight_power))


def epll_settings(o: argparse.Namespace) -> EpllSettings:
    """The EPLL settings of restore_images.py's options ``o``."""
    return EpllSettings(beta_factors=tuple(o.beta_factors), lam_factor=o.lam_factor,
                        n_inner=o.n_inner, init=o.epll_init, weighting=o.weighting,
                        init_sharpen=o.init_sharpen, init_sharpen_std=o.init_sharpen_std)


def restore_epll(p: GmmProblem) -> np.ndarray:
    """EPLL started from MAP-k with the plain mean (``--epll-init mapk``, with the problem's
    patch matrix and boundary term) or the corrupted images; with the whole-image prior when
    the problem has one."""
    o = p.options
    init = _map_k(p, MapkSettings.published()) if o.epll_init == "mapk" else None
    if p.kernel is None:
        raise GmmRestoreError("EPLL needs an image-level blur kernel, but the patch "
                              "matrix in the corrupted file is not a convolution")
    return epll_restore(p.images, p.gmm, p.kernel, p.sigma, epll_settings(o),
                        remove_dc=p.remove_dc, init=init, image_prior=p.image_prior,
                        image_prior_weight=o.image_prior_weight, boundary=p.boundary,
                        clip=o.clip, images_per_chunk=o.images_per_chunk,
                        progress=p.progress, score_dtype=p.score_dtype)


def _epll_cli(e: Mapping[str, Any]) -> str:
    """restore_images.py's EPLL options from EPLL settings ``e`` (restore.epll)."""
    factors = " ".join(str(f) for f in e["beta_factors"])
    return (
        f"--beta-factors {factors} --lam-factor {e['lam_factor']} --n-inner {e['n_inner']} "
        f"--init-sharpen {e['init_sharpen']} --init-sharpen-std {e['init_sharpen_std']} "
        f"--weighting {e['weighting']} --epll-init {e['init']}"
    )


def _epll_image_prior_cli(r: Mapping[str, Any]) -> str:
    from ..configcheck import epll_image_prior_settings

    return (_epll_cli(epll_image_prior_settings(r["epll"], r["image_prior"]))
            + f" --image-prior-weight {r['image_prior']['weight']}")


def _mapk_params(o: argparse.Namespace, boundary: str) -> dict:
    return {"position_weight_power": o.position_weight_power}


def _epll_params(o: argparse.Namespace, boundary: str) -> dict:
    params = asdict(epll_settings(o))
    return {**params, "beta_factors": list(params["beta_factors"]), "boundary": boundary}


register(MethodSpec(
    "mapk", "gmm", ("patch_gmm",),
    "the seed's rule: per patch, the component k maximising pi_k N(y; W mu_k, W Sigma_k W^T "
    "+ sigma^2 I), its posterior mean; the overlapping estimates of a pixel averaged with "
    "weights (posterior variance at the position inside the patch)^-power, power "
    "{restore[mapk][position_weight_power]} (0: the plain mean)",
    restore_mapk,
    script_args=lambda r: f"--position-weight-power {r['mapk']['position_weight_power']}",
    params=_mapk_params, settings=(MapkSettings,)))
register(MethodSpec(
    "epll", "gmm", ("patch_gmm", "kernel"),
    "Expected Patch Log Likelihood by half-quadratic splitting with the same GMM, started "
    "from the MAP-k estimate (plain mean) sharpened by an unsharp mask of amount "
    "{restore[epll][init_sharpen]} (0: not sharpened)",
    restore_epll,
    script_args=lambda r: _epll_cli(r["epll"]),
    params=_epll_params, settings=(EpllSettings,)))
register(MethodSpec(
    "epll_image_prior", "gmm", ("patch_gmm", "image_gmm", "kernel"),
    "EPLL with a second GMM over whole training images "
    "({restore[image_prior][n_components]} components) whose MAP estimate joins every "
    "image step with the weight of {restore[image_prior][weight]} patches (small images "
    "only)",
    restore_epll,
    script_args=_epll_image_prior_cli,
    params=_epll_params, settings=(EpllSettings, ImagePriorSettings)))

# --------------------------------------------------------------------------------------------
# baselines: the entries of baselines.BASELINES (tuned on validation images, or fixed)
# --------------------------------------------------------------------------------------------
_BASELINE_CAPTIONS = {
    False: "classic baseline given the true blur and sigma, its free parameter tuned on "
           "validation images: ",
    True: "baseline of fixed parameter given the true blur (and, '-blind', the estimated "
          "one): ",
}
for _name, _baseline in BASELINES.items():
    register(MethodSpec(
        _name, "baseline", ("kernel",),
        _BASELINE_CAPTIONS[_baseline.blind] + _baseline.description,
        _baseline.function, blind=_baseline.blind))
del _name, _baseline
