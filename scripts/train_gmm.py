#!/usr/bin/env python3
"""Train a K-component full-covariance Gaussian mixture on patches by EM.

Reads the 'patches' HDF5 file of extract_patches.py (dataset 'patches', optional 'heldout'),
writes a 'gmm' HDF5 file (weights, means, covariances, per-iteration training and held-out mean
log-likelihood).  Patch sets larger than --memory-budget-mb are streamed from the file chunk by
chunk (exact EM on accumulated sufficient statistics); smaller ones are loaded into memory.

With --images instead of --patches, the mixture is over whole training images of a dataset
file (each H x W image one sample of H*W values, the validation images held out): the
whole-image prior of restore_images.py's method epll_image_prior, for small images only.
"""

from __future__ import annotations

import logging
import os
import sys

import _bootstrap  # noqa: F401  (puts src/ on sys.path)

from gmmrestore import cli
from gmmrestore.configcheck import MAX_IMAGE_PRIOR_PIXELS
from gmmrestore.datasets import load_dataset_file
from gmmrestore.gmm import (
    DTYPES,
    INIT_METHODS,
    WHOLE_IMAGE_PRIOR,
    EMSettings,
    fit_gmm,
    save_gmm,
)
from gmmrestore.h5io import GmmRestoreError, open_h5

log = logging.getLogger("gmmrestore.train_gmm")
DEFAULTS = EMSettings()
# one command-line option per EMSettings field (its default is the field's)
EM_OPTIONS = {
    "max_iter": dict(type=int, help="maximum number of EM iterations per restart"),
    "tol": dict(type=float, help="stop when the relative change of the mean training "
                                 "log-likelihood falls below this (0: run --max-iter iterations)"),
    "reg_covar": dict(type=float, help="added to the diagonal of every covariance matrix"),
    "init": dict(choices=INIT_METHODS,
                 help="initialisation: k-means++ seeding with Lloyd iterations, or random "
                      "patches as centres (both on a seeded subsample)"),
    "n_init": dict(type=int, help="number of restarts; the one with the best final "
                                  "log-likelihood is kept"),
    "seed": dict(type=int, help="random seed of the initialisation"),
    "dtype": dict(choices=DTYPES,
                  help="precision of the matrix products (sums are always float64)"),
    "chunk_size": dict(type=int,
                       help="patches per block (aligned with the HDF5 chunks when streaming)"),
    "memory_budget_mb": dict(type=float,
                             help="load the patches into memory when they need at most this "
                                  "many MiB in --dtype, otherwise stream them from the file"),
    "remove_dc": dict(action="store_true",
                      help="subtract each patch's mean before training and keep all "
                           "components zero-mean (the EPLL prior)"),
}


def build_parser():
    parser = cli.make_parser(__doc__)
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--patches",
                        help="input patches HDF5 (kind 'patches', dataset 'patches' (N, d))")
    source.add_argument("--images",
                        help="input dataset HDF5 (kind 'dataset'): train on its whole "
                             f"training images (at most {MAX_IMAGE_PRIOR_PIXELS} pixels each)")
    parser.add_argument("--out", required=True, help="output GMM HDF5 (kind 'gmm')")
    parser.add_argument("--components", "-K", type=int, required=True,
                        help="number of mixture components K (at most the number of patches)")
    for name, options in EM_OPTIONS.items():
        parser.add_argument("--" + name.replace("_", "-"), default=getattr(DEFAULTS, name),
                            **options)
    parser.add_argument("--checkpoint", default=None,
                        help="checkpoint file written after every iteration; a rerun with the "
                             "same arguments resumes from it; removed once --out is written")
    return parser


def em_settings(args) -> EMSettings:
    """fit_gmm's settings from the command line."""
    return EMSettings(**{name: getattr(args, name) for name in EM_OPTIONS})


def check_components(K: int, n: int, source: str, what: str) -> None:
    if K > n:
        raise GmmRestoreError(f"K={K} larger than the number of training {what} N={n} in "
                              f"{source}")


def fit_patches(args):
    """EM on the patches of a patches file; returns (gmm, history, attributes to record)."""
    with open_h5(args.patches, "patches", ["patches"]) as fh:
        patches = fh["patches"]
        if patches.ndim != 2:
            raise GmmRestoreError(f"{args.patches}: dataset 'patches' has shape "
                                  f"{patches.shape}, expected (N, d)")
        n, d = patches.shape
        check_components(args.components, n, args.patches, "patches")
        m_attr = fh.attrs.get("patch_size")
        m = int(m_attr) if m_attr is not None else None
        if m is not None and m * m != d:
            raise GmmRestoreError(f"{args.patches}: attribute patch_size={m} but patches have "
                                  f"{d} values (expected {m * m})")
        heldout = fh["heldout"] if "heldout" in fh and fh["heldout"].shape[0] > 0 else None
        if heldout is not None:
            log.info("scoring %d held-out patches after every iteration", heldout.shape[0])
        # fit_gmm reads the patches into memory when they fit in the budget, else streams them
        gmm, history = fit_gmm(patches, args.components, em_settings(args), heldout=heldout,
                               checkpoint_path=args.checkpoint)
        attrs = {"source": args.patches,
                 "n_train_patches": int(n),
                 "n_heldout_patches": 0 if heldout is None else int(heldout.shape[0]),
                 "streamed": bool(history.timing["streamed"]), "chunk_size": args.chunk_size,
                 "dataset": fh.attrs.get("dataset", ""),
                 "patches_seed": fh.attrs.get("seed", -1)}
    if m is not None:
        attrs["patch_size"] = m
    return gmm, history, attrs


def fit_images(args):
    """EM on the whole training images of a dataset file (validation images held out);
    returns (gmm, history, attributes to record)."""
    arrays, ds_attrs = load_dataset_file(args.images)  # checked: shapes, finite, [0, 1]
    train, validation = arrays["train"], arrays["validation"]
    h, w = train.shape[1:]
    if h * w > MAX_IMAGE_PRIOR_PIXELS:
        raise GmmRestoreError(
            f"{args.images}: images of {h} x {w} = {h * w} pixels; a whole-image mixture "
            f"is limited to {MAX_IMAGE_PRIOR_PIXELS} pixels (its covariances are (H*W)^2 each); "
            "leave out method epll_image_prior for images this large")
    check_components(args.components, len(train), args.images, "images")
    heldout = validation.reshape(len(validation), h * w) if len(validation) else None
    log.info("whole-image mixture: %d training images of %d x %d, %d held out", len(train),
             h, w, len(validation))
    gmm, history = fit_gmm(train.reshape(len(train), h * w), args.components,
                           em_settings(args), heldout=heldout, checkpoint_path=args.checkpoint)
    attrs = {"source": args.images, "prior": WHOLE_IMAGE_PRIOR, "image_shape": [h, w],
             "patch_size": None,  # H*W may be a square; this is no patch prior
             "n_train_images": len(train), "n_heldout_images": len(validation),
             "dataset": ds_attrs.get("dataset", "")}
    return gmm, history, attrs


def main(argv=None) -> None:
    args = build_parser().parse_args(argv)
    cli.setup_logging(args.quiet)
    for name in ("max_iter", "n_init", "chunk_size"):
        if getattr(args, name) < 1:
            raise GmmRestoreError(f"--{name.replace('_', '-')} must be >= 1, "
                                  f"got {getattr(args, name)}")
    if args.components < 1:
        raise GmmRestoreError(f"--components must be >= 1, got {args.components}")
    if args.memory_budget_mb <= 0:
        raise GmmRestoreError(f"--memory-budget-mb must be > 0, got {args.memory_budget_mb}")
    if args.images:
        gmm, history, attrs = fit_images(args)
    else:
        gmm, history, attrs = fit_patches(args)
    save_gmm(args.out, gmm, history, attrs)
    log.info("wrote %s: K=%d, %d iterations (%s), final mean log-likelihood %.6f", args.out,
             gmm.n_components, history.n_iter,
             "converged" if history.converged else "max_iter reached",
             history.loglik_train[-1])
    if args.checkpoint and os.path.exists(args.checkpoint):
        os.remove(args.checkpoint)


if __name__ == "__main__":
    sys.exit(cli.run(main))
