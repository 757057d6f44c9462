"""Full-covariance Gaussian mixtures over patches: EM at BLAS speed, in memory or streamed.

The mixture is a small frozen dataclass, :class:`GaussianMixture`.  :func:`fit_gmm` runs EM
with the settings of an :class:`EMSettings` and returns the mixture and a :class:`FitHistory`:

* **E-step** (:mod:`.passes`).  Per component the Cholesky factor ``Sigma_k = L_k L_k^T`` gives
  the upper triangular ``P_k = L_k^{-T}`` with ``||(x - mu_k)^T P_k||^2`` the Mahalanobis term.
  All K factors are stacked side by side, so a sub-block of patches is whitened for every
  component by GEMMs (one per group of output columns, skipping most of the zero triangle);
  squared norms (``einsum``), log-sum-exp and the responsibilities follow on the ``(rows, K)``
  block.  Sub-blocks are sized (``SUB_BLOCK_ELEMENTS``) to stay in cache while they are read
  again.
* **M-step statistics**: counts ``N_k`` and first moments ``R^T X``; the whitened patches
  ``y_nk`` of the pairs with ``r_nk > RESP_FLOOR`` are gathered (scaled by ``sqrt(r_nk)``)
  and grouped by component, then one symmetric rank-update ``S_k = Y_k^T diag(r_k) Y_k`` per
  component and block (BLAS ``syrk``: no per-patch outer products).  ``S_k`` is centred at
  the component's mean, which keeps float32 accurate;
  ``sum_n r_nk (x_n - mu_k)(x_n - mu_k)^T = L_k S_k L_k^T`` follows once per pass.
  Temporaries stay within :data:`BLOCK_ELEMENTS` per thread, never ``N x K x d``.
  The M-step (:mod:`.mstep`) re-seeds components that lose their responsibility or collapse.
* Blocks are processed by worker threads, each with a single-threaded BLAS (a multi-threaded
  BLAS synchronises on every call, which costs a lot on a busy machine, and numpy's
  element-wise work would stay on one core); their float64 partial sums are folded in block
  order, so results do not depend on the number of threads.
* Statistics are summed in float64 over blocks, so the same code runs on an in-memory array or
  streams an ``h5py.Dataset`` chunk by chunk (:mod:`.blocks`: reads aligned with the HDF5
  chunking, prefetched in a background thread): exact EM whatever the size, with memory set by
  the chunk size.
* ``dtype="float32"`` runs the GEMMs in single precision; responsibilities, log-likelihoods and
  all sums stay float64.

Initialisation is k-means++ (:mod:`.init`); checkpoints (:mod:`.checkpoint`) let an
interrupted fit resume with the same result; :mod:`.io` reads and writes ``gmm`` HDF5 files.
With the same start and iteration count the returned parameters equal those of
``sklearn.mixture.GaussianMixture(covariance_type="full")`` (``max_iter`` = our iterations).
"""

from ..threads import default_threads
from .fit import fit_gmm
from .history import FitHistory
from .init import INIT_SUBSAMPLE, init_gmm, kmeans_plusplus
from .io import WHOLE_IMAGE_PRIOR, load_gmm, load_patch_prior, save_gmm
from .model import GaussianMixture, patch_size_of, remove_patch_dc
from .passes import BLOCK_ELEMENTS
from .score import component_log_densities, mean_log_likelihood, score_samples
from .settings import DTYPES, INIT_METHODS, EMSettings

__all__ = [
    "BLOCK_ELEMENTS", "DTYPES", "EMSettings", "FitHistory", "GaussianMixture", "INIT_METHODS",
    "INIT_SUBSAMPLE", "WHOLE_IMAGE_PRIOR", "component_log_densities", "default_threads",
    "fit_gmm", "init_gmm", "kmeans_plusplus", "load_gmm", "load_patch_prior", "mean_log_likelihood",
    "patch_size_of", "remove_patch_dc", "save_gmm", "score_samples",
]
