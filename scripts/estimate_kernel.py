#!/usr/bin/env python3
"""Estimate the unknown blur kernel of corrupted images by EM (blind deconvolution, MAP_k).

Reads ONLY the corrupted images of a 'corrupted' HDF5 file (the true kernel and the clean
images in that file are never read).  The image prior is the seed's Gaussian prior on
image differences, or, with --prior-dataset, a stationary Gaussian prior whose power
spectrum is learned from the TRAINING split of a 'dataset' file (sharp images, never the
test images being restored).  The images are split into batches of --batch-size (by
default a seeded shuffle, so that every batch is representative even when the file is
sorted by class, as the offline MNIST test split is; --batch-order consecutive keeps file
order); each batch pools its statistics in one EM (gmmrestore.deconv.estimate_kernel) and
gives one kernel.  `batch_kernels` and `batch_index` (the batch of every image) hold the
per-batch estimates, which restore_images.py uses (every image with its own batch's
kernel).  The output's `kernel` is the batch kernel when there is one batch, else the
element-wise median of the (re-centred) batch kernels, normalised to sum 1 (a summary for
figures and for restoring other images).
"""

from __future__ import annotations

import argparse
import logging
import sys
import time

import numpy as np

import _bootstrap  # noqa: F401  (puts src/ on sys.path)

from gmmrestore import cli
from gmmrestore.deconv import (
    BLIND_PRIORS,
    COVARIANCES,
    JUDGED_PRIORS,
    PHOTOGRAPH_PRIORS,
    GaussianBlindSettings,
    JudgeSettings,
    SparseSettings,
    estimate_kernel,
    estimate_kernel_l0,
    estimate_kernel_sparse,
    estimate_kernel_tv,
    estimate_kernel_tv_judged,
    recenter_kernel,
)
from gmmrestore.gmm.io import load_patch_prior
from gmmrestore.h5io import GmmRestoreError, open_h5, read_dataset, write_h5
from gmmrestore.threads import default_threads

log = logging.getLogger("gmmrestore.estimate_kernel")
STAGE_SEED = 7  # independent random streams (choice of the prior images, batches)
BATCH_ORDERS = ("shuffled", "consecutive")
ESTIMATOR_DESCRIPTIONS = {
    "gaussian": "MAP_k EM, Gaussian image prior, zero boundary "
                "(gmmrestore.deconv.estimate_kernel)",
    "sparse": "MAP_k variational EM, sparse gradient prior, valid boundary "
              "(gmmrestore.deconv.estimate_kernel_sparse)",
    "l0": "alternating MAP, L0 gradient prior, valid boundary "
          "(gmmrestore.deconv.estimate_kernel_l0)",
    "tv": "TV alternating descent refined by L0 alternations, valid boundary "
          "(gmmrestore.deconv.estimate_kernel_tv)",
    "tv_judged": "TV alternating descent refined by L0 at several weight growths and the L0 "
                 "alternating MAP, the kernel kept by a natural-patch GMM, valid boundary "
                 "(gmmrestore.deconv.estimate_kernel_tv_judged)",
}


def _float_list(text: str) -> list[float]:
    try:
        values = [float(v) for v in text.replace(",", " ").split()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated numbers, got '{text}'") from None
    if not values or any(not (v > 0 and np.isfinite(v)) for v in values):
        raise argparse.ArgumentTypeError(f"expected positive numbers, got '{text}'")
    return values


def _noise_floor(text: str) -> float | str | None:
    if text == "auto":
        return "auto"
    if text == "none":
        return None
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected 'auto', 'none' or a number, got '{text}'") from None
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


# options of the Gaussian-prior EM (prior gaussian): GaussianBlindSettings fields, defaults
GAUSSIAN_DEFAULTS = GaussianBlindSettings()
GAUSSIAN_OPTIONS = {
    "noise_schedule": dict(type=_float_list,
                           help="decreasing noise levels eta of the EM, comma-separated"),
    "noise_floor": dict(type=_noise_floor, help="lower bound of eta: 'auto' (estimated from "
                                                "the images), 'none' or a number"),
    "prior_std": dict(type=float, help="std of the Gaussian prior on image differences "
                                       "(without --prior-dataset)"),
    "n_iter": dict(type=int, help="EM iterations per eta"),
    "n_levels": dict(type=int, help="pyramid levels (default: down to a 3x3 kernel)"),
    "covariance": dict(choices=COVARIANCES, help="posterior covariance used in the M-step"),
    "seed": dict(type=int, help="seed of the prior subset and the batch shuffle (the EM "
                                "itself is deterministic)"),
}


def batch_members(n: int, batch_size: int, order: str = "shuffled", seed: int = 0
                  ) -> list[np.ndarray]:
    """Indices of the images of every batch: batches of ``batch_size`` (a last batch smaller
    than half a batch is merged into the previous one), taken in file order
    (``order="consecutive"``) or from a seeded permutation (``"shuffled"``); indices are
    sorted within each batch."""
    if batch_size < 1:
        raise GmmRestoreError(f"--batch-size must be >= 1, got {batch_size}")
    if order not in BATCH_ORDERS:
        raise GmmRestoreError(f"batch order must be one of {BATCH_ORDERS}, got '{order}'")
    starts = list(range(0, n, batch_size))
    if len(starts) > 1 and n - starts[-1] < batch_size / 2:
        starts.pop()
    ends = starts[1:] + [n]
    images = np.arange(n)
    if order == "shuffled":
        images = np.random.default_rng([seed, STAGE_SEED, 1]).permutation(n)
    return [np.sort(images[a:b]) for a, b in zip(starts, ends, strict=True)]


def gaussian_settings(args) -> GaussianBlindSettings:
    """The Gaussian-prior EM's settings from the command line."""
    return GaussianBlindSettings(**{name: getattr(args, name) for name in GAUSSIAN_OPTIONS})


def estimate_batch(images: np.ndarray, s: int, args, prior_images, judge_gmm=None
                   ) -> tuple[np.ndarray, dict]:
    """One batch's kernel: the Gaussian-prior EM (zero boundary, pooled batch) or, with
    ``--prior sparse`` / ``l0`` / ``tv`` / ``tv_judged``, the estimate of one photograph
    (valid model): the sparse-prior variational EM, the L0-prior alternating MAP, the TV
    descent refined by L0, or that at several weight growths judged by ``judge_gmm``
    ((GaussianMixture, remove_dc)).
    Returns the kernel and ``{"seconds", "noise_floor", "history"}`` (history records with
    level, eta and objective; NaN where the estimator has none; with tv_judged also
    ``judge``: the candidates, their scores and the chosen index)."""
    if args.prior == "tv_judged":
        gmm, remove_dc = judge_gmm
        kernel, info = estimate_kernel_tv_judged(
            images[0], s, gmm, settings=JudgeSettings(n_workers=default_threads()),
            remove_dc=remove_dc)
        return kernel, {"seconds": info["seconds"], "noise_floor": np.nan,
                        "history": [{"level": 0, "eta": np.nan, "objective": np.nan}],
                        "judge": info}
    if args.prior == "sparse":
        kernel, info = estimate_kernel_sparse(images[0], s, SparseSettings())
        history = [{"level": r["level"], "eta": r["eta"], "objective": np.nan}
                   for r in info["history"]]
        return kernel, {"seconds": info["seconds"], "noise_floor": info["noise_sigma"][-1],
                        "history": history}
    if args.prior in ("l0", "tv"):
        estimator = estimate_kernel_l0 if args.prior == "l0" else estimate_kernel_tv
        kernel, info = estimator(images[0], s)
        history = [{"level": li, "eta": np.nan, "objective": np.nan}
                   for li in range(len(info["levels"]))]
        return kernel, {"seconds": info["seconds"], "noise_floor": np.nan, "history": history}
    kernel, info = estimate_kernel(images, s, gaussian_settings(args),
                                   prior_images=prior_images)
    return kernel, {"seconds": info["seconds"], "noise_floor": info["noise_floor"],
                    "history": info["objective"]}


def read_corrupted(args) -> tuple[np.ndarray, str]:
    """The corrupted images (n, H, W) of --corrupted (the first --max-images) and the blur's
    name; the true kernel stays unread on purpose."""
    s = args.kernel_size
    if s < 1 or s % 2 == 0:
        raise GmmRestoreError(f"--kernel-size must be a positive odd integer, got {s}")
    with open_h5(args.corrupted, "corrupted", ["corrupted"]) as fh:
        dset = fh["corrupted"]
        n_total = dset.shape[0]
        n = n_total if args.max_images is None else min(args.max_images, n_total)
        if n < 1:
            raise GmmRestoreError(f"{args.corrupted}: no corrupted images to estimate from")
        images = np.asarray(read_dataset(dset, slice(0, n)), dtype=np.float64)
        blur_name = fh.attrs.get("blur", "")
        blur_name = blur_name.decode() if isinstance(blur_name, bytes) else str(blur_name)
    if images.ndim != 3:
        raise GmmRestoreError(f"{args.corrupted}: dataset 'corrupted' has shape "
                              f"{images.shape}, expected (n, H, W)")
    if not np.all(np.isfinite(images)):
        raise GmmRestoreError(f"{args.corrupted}: dataset 'corrupted' contains NaN or Inf")
    if s > min(images.shape[1:]):
        raise GmmRestoreError(f"--kernel-size {s} is larger than the images "
                              f"{images.shape[1]}x{images.shape[2]}")
    return images, blur_name


def read_prior_images(args, images: np.ndarray) -> np.ndarray | None:
    """A seeded subset of --prior-dataset's --prior-split for the spectral prior (gaussian
    prior only), or None."""
    prior_images = None
    if args.prior_dataset and args.prior == "gaussian":
        with open_h5(args.prior_dataset, "dataset", [args.prior_split]) as fh:
            dset = fh[args.prior_split]
            m = dset.shape[0]
            if m < 1:
                raise GmmRestoreError(f"{args.prior_dataset}: split '{args.prior_split}' is "
                                      "empty")
            if tuple(dset.shape[1:]) != images.shape[1:]:
                raise GmmRestoreError(
                    f"{args.prior_dataset}: '{args.prior_split}' images are "
                    f"{dset.shape[1]}x{dset.shape[2]}, the corrupted images "
                    f"{images.shape[1]}x{images.shape[2]}; the sizes must match")
            rng = np.random.default_rng([args.seed, STAGE_SEED])
            take = np.sort(rng.choice(m, size=min(m, args.prior_max_images), replace=False))
            prior_images = np.asarray(read_dataset(dset, take), dtype=np.float64)
        log.info("spectral prior from %d '%s' images of %s", len(prior_images),
                 args.prior_split, args.prior_dataset)
    return prior_images


def read_judge_gmm(args):
    """(GaussianMixture, remove_dc) of --judge-gmm for a judged prior, else None."""
    if args.prior not in JUDGED_PRIORS:
        return None
    if not args.judge_gmm:
        raise GmmRestoreError(f"--prior {args.prior} needs --judge-gmm (a natural-patch GMM "
                              "file of kind 'gmm')")
    gmm, remove_dc = load_patch_prior(args.judge_gmm)
    log.info("kernel judge: %d-component GMM over %d features from %s", gmm.n_components,
             gmm.n_features, args.judge_gmm)
    return gmm, remove_dc


def estimate_batches(images: np.ndarray, args, prior_images, judge_gmm=None) -> dict:
    """One kernel per batch of images: the batch kernels, the summary kernel, every image's
    batch and the per-batch seconds, noise floors, histories (and judge records)."""
    n, s = len(images), args.kernel_size
    batches = batch_members(n, args.batch_size, args.batch_order, args.seed)
    t0 = time.perf_counter()
    kernels, seconds, floors, histories, judged = [], [], [], [], []
    batch_index = np.zeros(n, dtype=np.int64)
    for bi, members in enumerate(batches):
        kernel, info = estimate_batch(images[members], s, args, prior_images, judge_gmm)
        if "judge" in info:
            judged.append(info["judge"])
        kernels.append(kernel)
        seconds.append(info["seconds"])
        floors.append(info["noise_floor"])
        histories.append(info["history"])
        batch_index[members] = bi
        log.info("batch %d/%d (%d images): kernel estimated in %.1f s (%.0f s total)",
                 bi + 1, len(batches), len(members), info["seconds"],
                 time.perf_counter() - t0)
    batch_kernels = np.stack(kernels)
    if len(kernels) == 1:
        final = kernels[0]
    else:
        final = np.median(batch_kernels, axis=0)
        final = recenter_kernel(final / final.sum())

    return {"final": final, "batch_kernels": batch_kernels, "batch_index": batch_index,
            "seconds": seconds, "floors": floors, "histories": histories,
            "n_batches": len(batches), "t0": t0, "judged": judged}


def write_estimate(args, est: dict, prior_images, n: int, blur_name: str) -> None:
    """The 'kernel' HDF5 file of --out."""
    s = args.kernel_size
    final, batch_kernels, batch_index = est["final"], est["batch_kernels"], est["batch_index"]
    seconds, floors, histories, t0 = est["seconds"], est["floors"], est["histories"], est["t0"]
    n_batches = est["n_batches"]
    length = max(len(h) for h in histories)
    objective = np.full((len(histories), length), np.nan)
    for i, h in enumerate(histories):
        objective[i, :len(h)] = [r["objective"] for r in h]
    first = histories[int(np.argmax([len(h) for h in histories]))]
    judged = est["judged"]
    judge_arrays = {} if not judged else {
        "judge_candidates": np.stack([r["candidates"] for r in judged]),
        "judge_scores": np.asarray([r["scores"] for r in judged]),
        "judge_chosen": np.asarray([r["chosen"] for r in judged], dtype=np.int64)}
    write_h5(
        args.out, "kernel",
        {"kernel": final, "batch_kernels": batch_kernels, "batch_index": batch_index,
         "batch_seconds": np.asarray(seconds), "batch_noise_floor": np.asarray(floors),
         "objective": objective,
         "objective_level": np.asarray([r["level"] for r in first], dtype=np.int64),
         "objective_eta": np.asarray([r["eta"] for r in first]), **judge_arrays},
        attrs={**({} if not judged else {"judge_gmm": args.judge_gmm,
                                          "judge_candidate_labels": judged[0]["labels"],
                                          "judge_lam_factors": judged[0]["lam_factors"],
                                          "judge_blur_std": judged[0]["blur_std"],
                                          "judge_stride": judged[0]["stride"]}),
               "kernel_size": s, "noise_schedule": list(args.noise_schedule),
               "noise_floor": "auto" if args.noise_floor == "auto" else
               ("none" if args.noise_floor is None else args.noise_floor),
               "prior": args.prior if args.prior in PHOTOGRAPH_PRIORS else
               ("spectral" if prior_images is not None else "gradient"),
               "prior_std": args.prior_std,
               "prior_dataset": args.prior_dataset or "none",
               "n_prior_images": 0 if prior_images is None else len(prior_images),
               "n_iter": args.n_iter,
               "n_levels": args.n_levels if args.n_levels else "auto",
               "covariance": args.covariance, "batch_size": args.batch_size,
               "batch_order": args.batch_order,
               "n_batches": n_batches, "n_images": n, "seed": args.seed,
               "seconds": time.perf_counter() - t0, "source": args.corrupted,
               "blur": blur_name,
               "method": ESTIMATOR_DESCRIPTIONS[args.prior],
               "combination": "single batch" if n_batches == 1 else
               "element-wise median of batch kernels, re-centred, sum 1"},
        dataset_attrs={
            "kernel": {"description": "summary kernel (s, s): the batch kernel, or the "
                                      "element-wise median of the batch kernels; "
                                      "non-negative, sums to 1"},
            "batch_kernels": {"description": "one estimated kernel per batch (n_batches, s, s), "
                                             "used for the images of that batch"},
            "batch_index": {"description": "batch (row of batch_kernels) of every image (n,)"},
            "objective": {"description": "EM objective (evidence lower bound per pixel) after "
                                         "every E-step, one row per batch, NaN padded"},
            **({} if not judged else {
                "judge_candidates": {"description": "tv_judged: the candidate kernels of "
                                     "every batch (n_batches, len(judge_candidate_labels), s, "
                                     "s), in the order of judge_candidate_labels"},
                "judge_scores": {"description": "tv_judged: every candidate's score (mean "
                                 "log-likelihood of its restoration's patches at stride "
                                 "judge_stride minus that after a Gaussian blur of std "
                                 "judge_blur_std px); the highest is kept"},
                "judge_chosen": {"description": "tv_judged: the kept candidate per batch"}}),
        },
    )
    log.info("kernel %dx%d from %d images in %d batch(es), %.1f s -> %s", s, s, n,
             n_batches, time.perf_counter() - t0, args.out)


def build_parser():
    parser = cli.make_parser(__doc__)
    parser.add_argument("--corrupted", required=True,
                        help="input HDF5 of kind 'corrupted' (dataset 'corrupted' (n, H, W))")
    parser.add_argument("--out", required=True, help="output HDF5 of kind 'kernel'")
    parser.add_argument("--kernel-size", type=int, required=True,
                        help="odd size s of the estimated s x s kernel (an upper bound of the "
                             "blur's extent)")
    for name, options in GAUSSIAN_OPTIONS.items():
        parser.add_argument("--" + name.replace("_", "-"),
                            default=getattr(GAUSSIAN_DEFAULTS, name), **options)
    parser.add_argument("--prior-dataset", default=None,
                        help="dataset HDF5 (kind 'dataset'): learn a spectral prior from its "
                             "training images")
    parser.add_argument("--prior-split", default="train",
                        help="split of --prior-dataset to learn the prior from")
    parser.add_argument("--prior-max-images", type=int, default=2000,
                        help="at most this many prior images (a seeded random subset)")
    parser.add_argument("--prior", choices=BLIND_PRIORS, default="gaussian",
                        help="gaussian: the seed's EM (zero boundary, batches of images); "
                             "for photographs (valid boundary, one kernel per image: "
                             "--batch-size 1): sparse, the gradient-mixture variational EM, "
                             "l0, the L0 gradient prior's alternating MAP, tv, TV "
                             "alternating descent refined by L0 alternations, or tv_judged, "
                             "tv at two weight growths with the kernel kept by --judge-gmm "
                             "(the workflow's default for photographs)")
    parser.add_argument("--judge-gmm", default=None,
                        help="tv_judged: natural-patch GMM file (kind 'gmm', e.g. the "
                             "workflow's results/<name>/<dataset>/gmm/m8_K50.h5) that "
                             "judges the candidate kernels")
    parser.add_argument("--batch-size", type=int, default=100,
                        help="images per EM batch (one kernel per batch)")
    parser.add_argument("--batch-order", choices=BATCH_ORDERS, default="shuffled",
                        help="'shuffled': batches from a seeded permutation of the images "
                             "(representative batches even from a class-sorted file); "
                             "'consecutive': file order")
    parser.add_argument("--max-images", type=int, default=None,
                        help="use only the first N corrupted images (default: all)")
    return parser


def main(argv=None) -> None:
    args = build_parser().parse_args(argv)
    cli.setup_logging(args.quiet)
    images, blur_name = read_corrupted(args)
    if args.prior in PHOTOGRAPH_PRIORS and args.batch_size != 1:
        raise GmmRestoreError(f"--prior {args.prior} estimates one kernel per photograph: use "
                              f"--batch-size 1, got {args.batch_size}")
    prior_images = read_prior_images(args, images)
    estimate = estimate_batches(images, args, prior_images, read_judge_gmm(args))
    write_estimate(args, estimate, prior_images, len(images), blur_name)


if __name__ == "__main__":
    sys.exit(cli.run(main))
