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
  unit         the corrupted PNG is taken as y itself (exact only if it was saved
               without rescaling).
  minmax       the PNG is taken as (y - min y) / (max y - min y), the seed's author's
               min-max rescale; min y and max y are replaced by the medians of the
               per-image minimum and maximum of W z + n over --reference's training
               images (blurred, seeded noise sigma): y = low + (high - low) * png.
  match_stats  each corrupted image gets the mean and std predicted for W z + n from
               --reference's training images (per-image gain and offset).
The noise sigma is given (--sigma, on the originals' [0, 1] scale), not estimated; a
wavelet estimate from the mapped images is logged and stored as a check.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

import numpy as np

import _bootstrap  # noqa: F401  (puts src/ on sys.path)

from gmmrestore import cli, datasets
from gmmrestore.h5io import GmmRestoreError, write_h5
from gmmrestore.operators import blur, kernel_from_patch_matrix

log = logging.getLogger("gmmrestore.import_paired")
INTENSITY_MODES = ("unit", "minmax", "match_stats")
STAGE_SEED = 5
FORWARD_MODEL = ("given: y = W z + n per the paired set; validation images: y = k * x + "
                 "sigma * n with k recovered from W ('same' size, zero boundary)")


def build_parser() -> argparse.ArgumentParser:
    parser = cli.make_parser(__doc__.split("\n\n")[0])
    parser.add_argument("--folder", required=True,
                        help="paired set folder holding original/, corrupted/ and W.npy")
    parser.add_argument("--out", required=True, help="output HDF5 file (kind 'corrupted')")
    parser.add_argument("--sigma", type=float, required=True,
                        help="noise standard deviation on the originals' [0, 1] scale "
                             "(e.g. 25/255)")
    parser.add_argument("--intensity", choices=INTENSITY_MODES, default="unit",
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


def map_intensity(corrupted: np.ndarray, mode: str, train: np.ndarray | None,
                  W: np.ndarray, kernel: np.ndarray | None, sigma: float,
                  rng: np.random.Generator) -> tuple[np.ndarray, dict, dict]:
    """Observations y from the corrupted PNG values (see the module docstring).

    Returns (y, extra datasets, extra attributes) recording what was assumed.
    """
    if mode == "unit":
        return corrupted, {}, {}
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


def check_noise_level(observations: np.ndarray, sigma: float) -> float:
    """Median wavelet (MAD) estimate of the noise std of the mapped observations; warns
    when it is more than 1.5 times off the given sigma."""
    from skimage.restoration import estimate_sigma

    estimate = float(np.median([estimate_sigma(y) for y in observations]))
    log.info("noise sigma: given %.4g, wavelet estimate from the mapped images %.4g",
             sigma, estimate)
    if sigma > 0 and not 1 / 1.5 <= estimate / sigma <= 1.5:
        log.warning("the given noise sigma %.4g differs from the estimate %.4g by more than "
                    "a factor 1.5: check --sigma and --intensity", sigma, estimate)
    return estimate


def main(argv=None) -> None:
    args = build_parser().parse_args(argv)
    cli.setup_logging(args.quiet)
    if not np.isfinite(args.sigma) or args.sigma < 0:
        raise GmmRestoreError(f"--sigma {args.sigma}: must be finite and >= 0")
    clean, corrupted, W, ids = datasets.load_paired(args.folder)
    if args.n_test is not None:
        if not 1 <= args.n_test <= len(ids):
            raise GmmRestoreError(f"--n-test {args.n_test}: {args.folder} holds {len(ids)} "
                                  "pairs")
        clean, corrupted, ids = clean[: args.n_test], corrupted[: args.n_test], ids[: args.n_test]
    kernel = recover_kernel(W, os.path.join(args.folder, "W.npy"))
    train = validation = None
    if args.reference:
        arrays, _ = datasets.load_dataset_file(args.reference)
        train, validation = arrays["train"], arrays["validation"]
    rng_map, rng_val = (np.random.default_rng(s) for s in
                        np.random.SeedSequence([args.seed, STAGE_SEED]).spawn(2))
    observed, extra, extra_attrs = map_intensity(corrupted, args.intensity, train, W, kernel,
                                                 args.sigma, rng_map)
    val_clean, val_corrupted = validation_pairs(validation, W, kernel, args.sigma, rng_val)
    m = int(round(np.sqrt(W.shape[0])))
    out = {"clean": clean, "corrupted": observed, "patch_matrix": W,
           "val_clean": val_clean, "val_corrupted": val_corrupted, **extra}
    if kernel is not None:
        out["kernel"] = kernel
    name = args.name or os.path.basename(os.path.abspath(args.folder))
    write_h5(
        args.out, "corrupted", out,
        attrs={"blur": "paired", "noise_sigma": float(args.sigma), "dataset": name,
               "source": f"paired folder {os.path.abspath(args.folder)}", "ids": ids,
               "patch_size": m, "n_images": len(ids), "n_test": len(ids),
               "n_validation": len(val_clean), "intensity_mapping": args.intensity,
               "noise_sigma_source": "given (--sigma)",
               "noise_sigma_estimated": check_noise_level(observed, args.sigma),
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
    log.info("wrote %s: %d paired images of %dx%d, W %dx%d (m = %d), %d validation pairs",
             args.out, len(ids), clean.shape[1], clean.shape[2], W.shape[0], W.shape[1], m,
             len(val_clean))


if __name__ == "__main__":
    sys.exit(cli.run(main))
