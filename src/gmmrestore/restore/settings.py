"""Settings of the GMM restoration methods, with their defaults: the one source the
config schema (``restore.mapk``, ``restore.epll``, ``restore.image_prior``) and
``scripts/restore_images.py``'s options agree with (tests/test_defaults.py).

Two sets of defaults, and this is where they are told apart:

* ``MapkSettings()``, ``EpllSettings()``: the method as the workflow runs it (chosen on
  validation digits, docs/results.md): position weight power 3; EPLL started from MAP-k and
  sharpened by an unsharp mask of amount 1.
* ``MapkSettings.published()``, ``EpllSettings.published()``: the plain published
  algorithms (position weight power 0; EPLL started from the corrupted images, not
  sharpened).  :func:`~gmmrestore.restore.mapk.map_k_restore` and
  :func:`~gmmrestore.restore.epll.epll_restore` use these when called with
  ``settings=None``, as tests and benchmarks mostly do.
"""

from __future__ import annotations

from dataclasses import dataclass

#: EPLL's published beta schedule, in units of 1/sigma^2.
DEFAULT_BETA_FACTORS = (1.0, 4.0, 8.0, 16.0, 32.0)
#: Where EPLL starts (:attr:`EpllSettings.init`).
EPLL_INITS = ("mapk", "corrupted")


@dataclass(frozen=True)
class MapkSettings:
    """Method mapk.

    position_weight_power : overlapping patch estimates of a pixel are averaged with weights
        (posterior variance at the pixel's position inside the patch)^-power; 0 is the
        seed's plain mean.
    """

    position_weight_power: float = 3.0

    @classmethod
    def published(cls, **changes) -> MapkSettings:
        """The seed's plain MAP-k (overlapping estimates averaged with equal weights), with
        ``changes`` to its fields."""
        return cls(**{"position_weight_power": 0.0, **changes})


@dataclass(frozen=True)
class EpllSettings:
    """Methods epll and epll_image_prior.

    beta_factors : the beta schedule in units of 1/sigma^2.
    lam_factor : data weight ``lam = lam_factor * d / sigma^2``.
    n_inner : patch/image alternations per beta.
    init : "mapk" (MAP-k with the plain mean) or "corrupted", the starting image when
        :func:`~gmmrestore.restore.epll.epll_restore` is given none.
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

    @classmethod
    def published(cls, **changes) -> EpllSettings:
        """Zoran & Weiss's EPLL (started from the corrupted images, not sharpened), with
        ``changes`` to its fields."""
        return cls(**{"init": "corrupted", "init_sharpen": 0.0, **changes})


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
