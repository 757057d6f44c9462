"""Blind kernel estimation by EM under a Gaussian image prior (MAP_k, the second seed).

Model
-----
Observed images ``y_i = k * x_i + n_i`` (i = 1..n, all blurred by the SAME kernel ``k``),
``n_i ~ N(0, eta^2 I)``, with ``*`` exactly :func:`gmmrestore.operators.blur`: "same"-size
2-D convolution with the kernel centre at ``(s // 2, s // 2)`` and ZERO boundary (pixels
outside the image are 0).  The same zero-boundary model is used for the data term of both
implementations below, by the corrupt stage and by the restore stage, so they all agree.

Gaussian priors on the sharp image, ``p(x) ∝ exp(-x^T P x / 2)``:

* :class:`GradientPrior` (the seed's): independent ``N(0, std^2)`` horizontal and vertical
  differences ``[-1 1]`` taken inside the image ("valid" differences, the seed's matrices
  ``f_h``, ``f_v``): ``P = (D_h^T D_h + D_v^T D_v) / std^2``.
* :class:`SpectralPrior`: a stationary Gaussian whose power spectrum is learned from sharp
  training images (the average periodogram of the zero-padded images on an FFT grid about
  twice the image size, divided by the image area), conditioned on the pixels outside the
  image being zero: ``P = E^T Circ(1 / spectrum) E`` (``E`` embeds the image in the grid).
  Digits are not ``1/f``-images; a gradient prior biases the kernel estimate because the
  Gaussian marginal likelihood matches the blur's power spectrum to ``|Y|^2 / spectrum``.

EM for the kernel (maximises the marginal likelihood ``p(y | k)`` = MAP_k of Levin et al.)
------------------------------------------------------------------------------------------
* E-step: ``q(x) = p(x | y, k) = N(mu, C)`` with precision ``A_x = T_k^T T_k / eta^2 + P``
  (the seed's ``A_x`` for the gradient prior), ``mu = A_x^{-1} T_k^T y / eta^2``,
  ``C = A_x^{-1}``.
* M-step: ``k = argmin E_q |k * x - y|^2 = k^T A_k k - 2 b_k^T k + |y|^2`` with
  ``A_k = sum_p E[X_p X_p^T] = sum_p (mu_p mu_p^T + C_p)`` and ``b_k = sum_p y_p mu_p``, where
  ``X_p`` (s^2,) holds the pixels of x that output pixel p sees (tap ``(a, b)`` sees
  ``x[p - (a, b) + c]``, zero outside), pooled over all images of a batch.  Solved under
  ``k >= 0`` and ``sum k = 1`` EXACTLY (a convex QP on the simplex; :func:`solve_kernel_qp`:
  NNLS with a Lagrange multiplier for the sum found by root finding, then a KKT polish).
  Levin's "NNLS then normalise" is available as ``constraint="nnls"``; it is not an exact
  M-step, so it may break the monotonicity of EM.

Two implementations
-------------------
* Dense reference (test oracle, tiny images): ``reference_*`` functions build the N x N
  matrices and use Cholesky factorisations; ``C`` is exact.
* Scalable (what users run): convolutions by :func:`operators.blur` (direct) or FFT with zero
  padding (identical numbers); ``mu`` by preconditioned conjugate gradients batched over all
  images of a batch (one array, per-image step sizes; the preconditioner is the circulant
  approximation of ``A_x`` on a zero-padded grid, applied by FFT); ``C`` approximated for
  the M-step in one of two ways (``covariance=``):

  - ``"meanfield"``: ``C ≈ diag(1 / diag(A_x))`` (Levin 2011).  For a Gaussian posterior
    the mean-field mean is exact and ``1 / diag(A_x)`` is the optimal factorised variance,
    so the algorithm is variational EM: :func:`em_objective` (the evidence lower bound of
    the factorised q) does not decrease at fixed ``eta``.  ``1 / A_ii <= C_ii`` always: it
    underestimates the variance of the poorly determined frequencies, which pulls the
    kernel towards a delta.
  - ``"stationary"`` (default): the full covariance of the periodic model on the padded
    grid, ``IFFT[1 / (|K|^2 / eta^2 + symbol(P))]``, restricted to the image
    (:func:`stationary_covariance`): close to the exact ``A_x^{-1}`` away from the border
    and with its off-diagonal terms, but EM is then not guaranteed monotone.

* On top of EM (:func:`estimate_kernel`): a decreasing schedule of ``eta`` (clipped below at
  a noise floor, estimated from the data by default), coarse-to-fine over a pyramid (images
  scaled by ``1/sqrt(2)`` per level, odd kernel sizes, kernel upsampled between levels; the
  spectral prior is re-learned at every level from the training images scaled the same
  way), the 180-degree flip ambiguity resolved by running both candidates and keeping the
  one whose posterior mean has the sparser gradients (a Gaussian prior sees only the power
  spectrum, so its objective hardly separates them), and a re-centering of the kernel
  (centre of mass to the middle pixel) after every level, since a shift of k against x is
  otherwise undetermined.

Batches must be representative: the spectral prior describes the average digit; a batch of
a single class (e.g. 100 "1"s, whose spectrum is far from the average) biases the kernel.

Package layout
--------------
``model`` (convolution helpers, batches, noise level), ``priors`` (Gaussian gradient and
spectral priors), ``reference`` (dense test oracle), ``gaussian`` (scalable E-step and
evidence bound of the Gaussian-prior EM), ``mstep`` (the kernel quadratic and its QP),
``pyramid`` (coarse-to-fine driver), ``scores`` (kernel error, error ratio).  Photographs
(valid model): ``valid`` (operators, exact M-step quadratic), ``sparse`` / ``sparse_pyramid``
(gradient-mixture variational EM), ``l0map`` (L0 alternating MAP), ``tvmap`` (TV
alternating descent refined by L0), ``judge`` (the TV estimate at several weight growths, one
kept by a natural-patch GMM: the default), ``nonblind`` (hyper-Laplacian restoration).
"""

from .gaussian import (
    deconvolve_gaussian,
    em_objective,
    estep_mean,
    estep_variance,
    stationary_covariance,
)
from .judge import JudgeSettings, estimate_kernel_tv_judged
from .l0map import L0Settings, estimate_kernel_l0
from .model import (
    FFT_MIN_TAPS,
    LOG_2PI,
    _as_batch,
    _check_kernel_size,
    _conv,
    _corr,
    _n_grad_rows,
    estimate_noise_sigma,
)
from .mstep import mstep_system, solve_kernel_qp
from .nonblind import SparseDeconvSettings, deconvolve_sparse
from .priors import GradientPrior, Prior, SpectralPrior, finite_difference_matrices
from .pyramid import (
    COVARIANCES,
    DEFAULT_NOISE_SCHEDULE,
    GaussianBlindSettings,
    _em_step,
    estimate_kernel,
    gradient_sparsity,
    pyramid_levels,
)
from .reference import (
    reference_em,
    reference_estep,
    reference_mstep_system,
    reference_objective,
    reference_precision,
    tap_selection_matrices,
)
from .scores import (
    blind_scores,
    error_ratio,
    kernel_error,
    recenter_kernel,
    shifted_error_ratio,
    ssd_upto_shift,
    success_rates,
)
from .sparse import DEFAULT_MIXTURE, ScaleMixture, fit_scale_mixture
from .sparse_pyramid import SparseSettings, estimate_kernel_sparse, estimate_noise_8bit
from .tvmap import TVSettings, estimate_kernel_tv

#: Image priors of a blind kernel estimate (config ``blurs.*.prior``, ``--prior``): the
#: seed's Gaussian EM on batches, and those for photographs, which estimate one kernel per
#: photograph with the valid model (:data:`PHOTOGRAPH_PRIORS`; the default for the valid
#: boundary is :data:`DEFAULT_PHOTOGRAPH_PRIOR`).
BLIND_PRIORS = ("gaussian", "sparse", "l0", "tv", "tv_judged")
PHOTOGRAPH_PRIORS = ("sparse", "l0", "tv", "tv_judged")
#: Photograph priors whose estimate needs a natural-patch GMM (the kernel judge).
JUDGED_PRIORS = ("tv_judged",)
DEFAULT_PHOTOGRAPH_PRIOR = "tv_judged"

__all__ = [
    "BLIND_PRIORS",
    "PHOTOGRAPH_PRIORS",
    "DEFAULT_PHOTOGRAPH_PRIOR",
    "JUDGED_PRIORS",
    "JudgeSettings",
    "estimate_kernel_tv_judged",
    "L0Settings",
    "estimate_kernel_l0",
    "TVSettings",
    "estimate_kernel_tv",
    "GaussianBlindSettings",
    "COVARIANCES", "DEFAULT_NOISE_SCHEDULE", "FFT_MIN_TAPS", "LOG_2PI", "GradientPrior",
    "Prior", "SpectralPrior", "blind_scores", "deconvolve_gaussian", "em_objective",
    "error_ratio", "estep_mean", "estep_variance", "estimate_kernel", "estimate_noise_sigma",
    "finite_difference_matrices", "gradient_sparsity", "kernel_error", "mstep_system",
    "pyramid_levels", "recenter_kernel", "reference_em", "reference_estep",
    "reference_mstep_system", "reference_objective", "reference_precision",
    "solve_kernel_qp", "stationary_covariance", "tap_selection_matrices",
    "_as_batch", "_check_kernel_size", "_conv", "_corr", "_em_step",
    "_n_grad_rows", "DEFAULT_MIXTURE", "ScaleMixture", "SparseDeconvSettings", "SparseSettings",
    "deconvolve_sparse", "estimate_kernel_sparse", "estimate_noise_8bit", "fit_scale_mixture",
    "shifted_error_ratio", "ssd_upto_shift", "success_rates",
]
