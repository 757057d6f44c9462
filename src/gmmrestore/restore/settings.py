"""Settings of the GMM restoration methods, with their defaults: the one source the
config schema (``restore.mapk``, ``restore.epll``, ``restore.image_prior``) and
``scripts/restore_images.py``'s options agree with (tests/test_defaults.py).

The defaults are the method as the workflow runs it (chosen on validation digits,
docs/results.md); the keyword defaults of :func:`~gmmrestore.restore.mapk.map_k_restore`
and :func:`~gmmrestore.restore.epll.epll_restore` are the plain published algorithms
(position weight power 0, no sharpening), which tests and benchmarks call directly.
"""

from __future__ import annotations

from dataclasses import dataclass

from .epll import DEFAULT_BETA_FACTORS


@dataclass(frozen=True)
class MapkSettings:
    """Method mapk.

    position_weight_power : overlapping patch estimates of a pixel are averaged with weights
        (posterior variance at the pixel's position inside the patch)^-power; 0 is the
        seed's plain mean.
    """

    position_weight_power: float = 3.0


@dataclass(frozen=True)
class EpllSettings:
    """Methods epll and epll_image_prior.

    beta_factors : the beta schedule in units of 1/sigma^2.
    lam_factor : data weight ``lam = lam_factor * d / sigma^2``.
    n_inner : patch/image alternations per beta.
    init : "mapk" (MAP-k with the plain mean) or "corrupted", the starting image.
    weighting : "average" or "exact", the image step's weighting (:mod:`.epll`).
    init_sharpen, init_sharpen_std : amount and Gaussian std (pixels) of the unsharp mask
        applied to the start, ``x + amount (x - G x)``; amount 0 starts from it as it is.
    """

    beta_factors: tuple[float, ...] = DEFAULT_BETA_FACTORS
    lam_factor: float = 1.0
    n_inner: int = 1
    init: str = "mapk"
    weighting: str = "average"
    init_sharpen: float = 1.0
    init_sharpen_std: float = 1.0


@dataclass(frozen=True)
class ImagePriorSettings:
    """Method epll_image_prior's whole-image mixture.

    weight : weight of the whole-image term in each EPLL image step, in units of one
        patch's.
    n_components, reg_covar, max_iter, tol : the mixture's EM (rule train_image_gmm).
    """

    weight: float = 16.0
    n_components: int = 40
    reg_covar: float = 0.01
    max_iter: int = 60
    tol: float = 1e-5
