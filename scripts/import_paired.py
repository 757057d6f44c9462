#!/usr/bin/env python3
"""Import a paired set (original/<id>.png, corrupted/<id>.png, W.npy) as a corrupted file.

The corruption is given, not simulated: this writes the HDF5 file the restore stage
reads (kind "corrupted") with datasets clean (n, H, W: the originals), corrupted
(n, H, W: the corrupted PNGs mapped to observations y = W z + n on the originals'
[0, 1] scale), patch_matrix (the given W), kernel (W's convolution kernel, recovered
exactly, when W is a convolution) and val_clean / val_corrupted (validation images of
--reference blurred with that kernel plus seeded noise sigma: they tune the baselines
and measure MAP-k's boundary term; never the set's own originals).

Intensity mapping (--intensity; PNG values are first divided by 255):
  estimate     each image's gain a and offset b (c = a y + b) and the set's noise sigma
               are estimated from the corrupted images and the patch prior --gmm alone
               (marginal-likelihood EM, gmmrestore.calibration; never the originals):
               y = (c - b) / a.
  unit         the corrupted PNG is taken as y itself (exact only if it was saved
               without rescaling).
  minmax       the PNG is taken as (y - min y) / (max y - min y), the seed's author's
               min-max rescale; min y and max y are replaced by the medians of the
               per-image minimum and maximum of W z + n over --reference's training
               images (blurred, seeded noise sigma): y = low + (high - low) * png.
  match_stats  each corrupted image gets the mean and std predicted for W z + n from
               --reference's training images (per-image gain and offset).
Noise sigma (--sigma): a number (on the originals' [0, 1] scale) is used as given;
'estimate' uses the calibration's estimate.  Whenever --gmm is given the estimate is made
(it does not depend on --sigma) and a warning says when a given sigma differs from it by
more than 15%.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

import numpy as np

import _bootstrap  # noqa: F401  (puts src/ on sys.path)

from gmmrestore import calibration, cli, datasets
from gmmrestore.gmm import load_gmm, load_patch_prior
from gmmrestore.h5io import GmmRestoreError, write_h5
from gmmrestore.operators import blur, kernel_from_patch_matrix
from gmmrestore.restore.mapk import boundary_noise_covariance

log = logging.getLogger("gmmrestore.import_paired")
INTENSITY_MODES = ("estimate", "unit", "minmax", "match_stats")
SIGMA_TOLERANCE = 0.15  # a given sigma this far (relative) from the estimate is warned about
STAGE_SEED = 5
FORWARD_MODEL = ("given: y = W z + n per the paired set; validation images: y = k * x + "
                 "sigma * n with k recovered from W ('same' size, zero boundary)")


def build_parser() -> argparse.ArgumentParser:
    parser = cli.make_parser(__doc__.split("\n\n")[0])
    parser.add_argument("--folder", required=True,
                        help="paired set folder holding original/, corrupted/ and W.npy")
    parser.add_argument("--out", required=True, help="output HDF5 file (kind 'corrupted')")
    parser.add_argument("--sigma", default="estimate",
                        help="noise standard deviation on the originals' [0, 1] scale "
                             "(e.g. 25/255), or 'estimate' (needs --gmm)")
    parser.add_argument("--gmm", default=None,
                        help="patch prior (gmm HDF5, patch size of W, trained without the "
                             "set's originals) for the calibration and the sigma estimate")
    parser.add_argument("--calibration-stride", type=int, default=2,
                        help="patch stride of the calibration (1: every patch)")
    parser.add_argument("--unmatched", choices=("error", "skip"), default="error",
                        help="ids in only one of original/ and corrupted/: stop, or leave "
                             "them out with a warning")
    parser.add_argument("--intensity", choices=INTENSITY_MODES, default="estimate",
                        help="how corrupted PNG values map to observations (see above)")
    parser.add_argument("--reference", default=None,
                        help="dataset HDF5 of training images (never the set's originals): "
                             "its train images give the statistics of --intensity minmax / "
                             "match_stats, its validation images the val_* pairs")
    parser.add_argument("--name", default=None,
                        help="dataset label stored in the file and the metrics rows "
                             "(default: the folder's name)")
    parser.add_argument("--n-test", type=int, default=None,
                        help="restore only the first N pairs in id order (default: all)")
    parser.add_argument("--seed", type=int, default=0,
                        help="seed of the training-image sample and the simulated noise")
    return parser


def recover_kernel(W: np.ndarray, path: str) -> np.ndarray | None:
    """W's image-level convolution kernel, or None (with a warning) if W is not one."""
    m = int(round(np.sqrt(W.shape[0])))
    try:
        return kernel_from_patch_matrix(W, m)
    except GmmRestoreError as err:
        log.warning("%s: %s; MAP-k can still use it, EPLL and the baselines cannot", path, err)
        return None


def parse_sigma(text: str) -> float | None:
    """--sigma: a finite number >= 0, or None for 'estimate'."""
    if str(text) == "estimate":
        return None
    try:
        value = float(text)
    except ValueError:
        raise GmmRestoreError(f"--sigma {text}: expected a number >= 0 or 'estimate'") from None
    if not np.isfinite(value) or value < 0:
        raise GmmRestoreError(f"--sigma {text}: must be finite and >= 0")
    return value


def calibrate(corrupted: np.ndarray, gmm_path: str, W: np.ndarray, kernel: np.ndarray | None,
              validation: np.ndarray | None, stride: int) -> calibration.Calibration:
    """Per-image gain/offset and sigma of the corrupted images (n, H, W) under the prior
    --gmm seen through W, with the boundary term measured on the validation images."""
    gmm, attrs = load_gmm(gmm_path)
    m = int(round(np.sqrt(W.shape[0])))
    if gmm.n_features != W.shape[0]:
        raise GmmRestoreError(f"--gmm {gmm_path}: patches of {gmm.n_features} pixels, but W.npy "
                              f"is {W.shape[0]}x{W.shape[1]} ({m}x{m} patches)")
    if attrs.get("remove_dc"):
        raise GmmRestoreError(f"--gmm {gmm_path}: trained on DC-removed patches (gmm.remove_dc)"
                              "; the calibration needs a prior of whole patches")
    extra = None
    if kernel is not None and validation is not None and len(validation):
        extra = boundary_noise_covariance(validation, kernel, W, m)
    else:
        log.warning("calibration without the boundary term (no kernel or no validation "
                    "images): the noise sigma is overestimated")
    model = calibration.ObservationModel.build(gmm.weights, gmm.means, gmm.covariances, W,
                                               extra)
    cal = calibration.estimate_calibration(
        corrupted, model, m, calibration.CalibrationSettings(stride=stride))
    log.info("calibration: sigma %.4g, gain %.3g-%.3g, offset %.3g-%.3g, %d EM iterations, "
             "log-likelihood %.4f per pixel", cal.sigma, cal.gain.min(), cal.gain.max(),
             cal.offset.min(), cal.offset.max(), cal.n_iter, cal.log_likelihood)
    return cal


def needs_calibration(args) -> bool:
    return args.intensity == "estimate" or str(args.sigma) == "estimate"


def whole_patch_prior(gmm_path: str) -> bool:
    """False for a GMM trained on DC-removed patches (it cannot fix the offset)."""
    return not load_patch_prior(gmm_path)[1]


def choose_sigma(given: float | None, cal: calibration.Calibration | None
                 ) -> tuple[float, str]:
    """The sigma to use and where it comes from; warns when a given sigma is more than
    SIGMA_TOLERANCE away from the estimate (which never depends on the given value)."""
    if cal is None:
        if given is None:
            raise GmmRestoreError("--sigma estimate needs --gmm (the patch prior)")
        return given, "given"
    if given is None:
        return cal.sigma, "estimated"
    if given == 0 or abs(cal.sigma / given - 1) > SIGMA_TOLERANCE:
        log.warning("noise sigma: the given %.4g differs from the estimate %.4g from the "
                    "corrupted images and the prior (%+.0f%%); the given value is used "
                    "(noise_sigma: estimate uses the estimate)", given, cal.sigma,
                    100 * (given / cal.sigma - 1))
    return given, "given"


def map_intensity(corrupted: np.ndarray, mode: str, train: np.ndarray | None,
                  W: np.ndarray, kernel: np.ndarray | None, sigma: float,
                  rng: np.random.Generator, cal: calibration.Calibration | None = None
                  ) -> tuple[np.ndarray, dict, dict]:
    """Observations y from the corrupted PNG values (see the module docstring).

    Returns (y, extra datasets, extra attributes) recording what was assumed.
    """
    if mode == "unit":
        return corrupted, {}, {}
    if mode == "estimate":
        if cal is None:
            raise GmmRestoreError("--intensity estimate needs --gmm (the patch prior)")
        return cal.apply(corrupted), {"calibration_gain": cal.gain,
                                      "calibration_offset": cal.offset}, {}
    if train is None:
        raise GmmRestoreError(f"--intensity {mode} needs --reference DATASET.h5 (training "
                              "images that give the target statistics)")
    if mode == "minmax":
        low, high = datasets.observation_range(train, W, sigma, kernel=kernel, rng=rng)
        log.info("min-max rescale undone with min y = %.4f, max y = %.4f (medians over "
                 "training images)", low, high)
        return datasets.undo_minmax(corrupted, low, high), {}, {"assumed_min_y": low,
                                                                "assumed_max_y": high}
    mean, std = datasets.observation_stats(train, W, sigma, kernel=kernel, rng=rng)
    mapped, gain, offset = datasets.match_mean_std(corrupted, mean, std)
    log.info("matched corrupted images to mean %.4f, std %.4f", mean, std)
    return mapped, {"corrupted_gain": gain, "corrupted_offset": offset}, \
        {"target_mean": mean, "target_std": std}


def validation_pairs(validation: np.ndarray | None, W: np.ndarray, kernel: np.ndarray | None,
                     sigma: float, rng: np.random.Generator
                     ) -> tuple[np.ndarray, np.ndarray]:
    """Clean validation images and their simulated observations (blur, noise sigma)."""
    if validation is None or len(validation) == 0:
        log.warning("no validation images (--reference not given or empty): the baselines "
                    "use their default parameter and MAP-k has no boundary term")
        empty = np.zeros((0, 1, 1))
        return empty, empty
    x = np.asarray(validation, dtype=np.float64)
    observed = blur(x, kernel) if kernel is not None else datasets.predict_observations(x, W)
    return x, observed + sigma * rng.standard_normal(x.shape)


def load_pairs(args) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[str], list[str]]:
    """originals, corrupted, W, ids (the first --n-test) and the ids left out as unmatched."""
    clean, corrupted, W, ids = datasets.load_paired(args.folder, unmatched=args.unmatched)
    only_orig, only_corr = datasets.unmatched_paired_ids(datasets.paired_stems(args.folder))
    if args.n_test is not None:
        if not 1 <= args.n_test <= len(ids):
            raise GmmRestoreError(f"--n-test {args.n_test}: {args.folder} holds {len(ids)} "
                                  "pairs")
        clean, corrupted, ids = clean[: args.n_test], corrupted[: args.n_test], ids[: args.n_test]
    return clean, corrupted, W, ids, only_orig + only_corr


def main(argv=None) -> None:
    args = build_parser().parse_args(argv)
    cli.setup_logging(args.quiet)
    given_sigma = parse_sigma(args.sigma)
    if args.calibration_stride < 1:
        raise GmmRestoreError(f"--calibration-stride {args.calibration_stride}: must be >= 1")
    clean, corrupted, W, ids, unmatched = load_pairs(args)
    kernel = recover_kernel(W, os.path.join(args.folder, "W.npy"))
    train = validation = None
    if args.reference:
        arrays, _ = datasets.load_dataset_file(args.reference)
        train, validation = arrays["train"], arrays["validation"]
    cal = None
    if args.gmm and not (needs_calibration(args) or whole_patch_prior(args.gmm)):
        log.warning("--gmm %s was trained on DC-removed patches: no calibration, the given "
                    "sigma is not checked", args.gmm)
    elif args.gmm:
        cal = calibrate(corrupted, args.gmm, W, kernel, validation, args.calibration_stride)
    sigma, sigma_source = choose_sigma(given_sigma, cal)
    rng_map, rng_val = (np.random.default_rng(s) for s in
                        np.random.SeedSequence([args.seed, STAGE_SEED]).spawn(2))
    observed, extra, extra_attrs = map_intensity(corrupted, args.intensity, train, W, kernel,
                                                 sigma, rng_map, cal)
    val_clean, val_corrupted = validation_pairs(validation, W, kernel, sigma, rng_val)
    m = int(round(np.sqrt(W.shape[0])))
    out = {"clean": clean, "corrupted": observed, "patch_matrix": W,
           "val_clean": val_clean, "val_corrupted": val_corrupted, **extra}
    if kernel is not None:
        out["kernel"] = kernel
    if cal is not None:
        extra_attrs.update(noise_sigma_estimated=cal.sigma, calibration_converged=cal.converged,
                           calibration_iterations=cal.n_iter,
                           calibration_loglik=cal.log_likelihood, calibration_gmm=args.gmm,
                           calibration_stride=args.calibration_stride)
    name = args.name or os.path.basename(os.path.abspath(args.folder))
    write_h5(
        args.out, "corrupted", out,
        attrs={"blur": "paired", "noise_sigma": float(sigma), "dataset": name,
               "source": f"paired folder {os.path.abspath(args.folder)}", "ids": ids,
               "patch_size": m, "n_images": len(ids), "n_test": len(ids),
               "n_validation": len(val_clean), "intensity_mapping": args.intensity,
               "noise_sigma_source": sigma_source, "n_unmatched": len(unmatched),
               "unmatched_ids": unmatched or "none",
               "reference": os.path.abspath(args.reference) if args.reference else "none",
               "seed": args.seed, "boundary": "zero", "forward_model": FORWARD_MODEL,
               **extra_attrs},
        dataset_attrs={"clean": {"description": "the set's original/<id>.png, / 255"},
                       "corrupted": {"description": "corrupted/<id>.png mapped by "
                                                    f"--intensity {args.intensity}"},
                       "val_clean": {"description": "validation images of --reference"},
                       "val_corrupted": {"description": "val_clean blurred by W's kernel "
                                                        "plus noise sigma"}},
    )
    log.info("wrote %s: %d paired images of %dx%d, W %dx%d (m = %d), %d validation pairs, "
             "noise sigma %.4g (%s)", args.out, len(ids), clean.shape[1], clean.shape[2],
             W.shape[0], W.shape[1], m, len(val_clean), sigma, sigma_source)


if __name__ == "__main__":
    sys.exit(cli.run(main))
