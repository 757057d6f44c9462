#!/usr/bin/env python3
"""Import a paired set (original/<id>.png, corrupted/<id>.png, W.npy) as a corrupted file.

The corruption is given, not simulated: this writes the HDF5 file the restore stage
reads (kind "corrupted") with datasets clean (n, H, W), corrupted (n, H, W) and
patch_matrix (d, d), and attributes blur "paired", noise_sigma, source and ids.

Intensity mapping (--intensity): "unit" (default) takes the corrupted PNG divided by 255
as the observation W z + n on the originals' [0, 1] scale (exact only if the files were
not rescaled). "match_stats" gives each corrupted image the mean and standard deviation
predicted for W z + n from the training images of --reference (a dataset file), never
from the originals of this set; the per-image gain and offset are stored.
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

log = logging.getLogger("gmmrestore.import_paired")


def build_parser() -> argparse.ArgumentParser:
    parser = cli.make_parser(__doc__.split("\n\n")[0])
    parser.add_argument("--folder", required=True,
                        help="paired set folder holding original/, corrupted/ and W.npy")
    parser.add_argument("--out", required=True, help="output HDF5 file (kind 'corrupted')")
    parser.add_argument("--sigma", type=float, required=True,
                        help="noise standard deviation on the [0, 1] scale (e.g. 25/255)")
    parser.add_argument("--intensity", choices=["unit", "match_stats"], default="unit",
                        help="how corrupted PNG values map to observations (see above)")
    parser.add_argument("--reference", default=None,
                        help="dataset HDF5 whose train images give the target statistics "
                             "for --intensity match_stats")
    parser.add_argument("--seed", type=int, default=0,
                        help="seed of the patch sample for --intensity match_stats")
    return parser


def main(argv=None) -> None:
    args = build_parser().parse_args(argv)
    cli.setup_logging(args.quiet)
    if not np.isfinite(args.sigma) or args.sigma < 0:
        raise GmmRestoreError(f"--sigma {args.sigma}: must be finite and >= 0")
    clean, corrupted, W, ids = datasets.load_paired(args.folder)
    m = int(round(np.sqrt(W.shape[0])))
    attrs = {"blur": "paired", "noise_sigma": float(args.sigma),
             "source": f"paired folder {os.path.abspath(args.folder)}", "ids": ids,
             "patch_size": m, "n_images": len(ids), "intensity_mapping": args.intensity}
    datasets_out = {"clean": clean.astype(np.float64), "corrupted": corrupted,
                    "patch_matrix": W}
    if args.intensity == "match_stats":
        if not args.reference:
            raise GmmRestoreError("--intensity match_stats needs --reference DATASET.h5")
        arrays, _ = datasets.load_dataset_file(args.reference)
        mean, std = datasets.observation_stats(arrays["train"], W, args.sigma,
                                               rng=np.random.default_rng(args.seed))
        mapped, gain, offset = datasets.match_mean_std(corrupted, mean, std)
        datasets_out.update(corrupted=mapped, corrupted_gain=gain, corrupted_offset=offset)
        attrs.update(target_mean=mean, target_std=std,
                     reference=os.path.abspath(args.reference))
        log.info("matched corrupted images to mean %.4f, std %.4f from %s", mean, std,
                 args.reference)
    write_h5(args.out, "corrupted", datasets_out, attrs)
    log.info("wrote %s: %d paired images of %dx%d, W %dx%d (m = %d)", args.out, len(ids),
             clean.shape[1], clean.shape[2], W.shape[0], W.shape[1], m)


if __name__ == "__main__":
    sys.exit(cli.run(main))
