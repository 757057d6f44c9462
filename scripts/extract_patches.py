#!/usr/bin/env python3
"""Extract stride-1 m x m training patches (and held-out patches) from a dataset file."""

from __future__ import annotations

import logging
import sys

import numpy as np

import _bootstrap  # noqa: F401  (puts src/ on sys.path)

from gmmrestore import cli
from gmmrestore.datasets import load_dataset_file
from gmmrestore.h5io import GmmRestoreError, write_h5
from gmmrestore.patches import check_patch_size, n_patches_per_image, sample_patches

log = logging.getLogger("gmmrestore.extract_patches")
STAGE_SEED = 1  # independent random stream per stage, all derived from the config seed


def main(argv=None) -> None:
    parser = cli.make_parser(__doc__)
    parser.add_argument("--dataset", required=True, help="dataset HDF5 (kind 'dataset')")
    parser.add_argument("--out", required=True, help="output patches HDF5")
    parser.add_argument("--patch-size", type=int, required=True, help="m: patches are m x m")
    parser.add_argument("--max-patches", type=int, default=None,
                        help="keep a seeded random subset of at most this many training patches "
                             "(default: all)")
    parser.add_argument("--heldout-patches", type=int, default=10000,
                        help="held-out patches drawn from the validation images (0: none)")
    parser.add_argument("--transpose-half", action="store_true",
                        help="transpose every second training patch (a transpose-symmetric "
                             "prior, for sets that store portrait images transposed)")
    parser.add_argument("--seed", type=int, default=0, help="random seed")
    args = parser.parse_args(argv)
    cli.setup_logging(args.quiet)

    arrays, attrs = load_dataset_file(args.dataset)  # checked: shapes, finite, in [0, 1]
    train, validation = arrays["train"], arrays["validation"]
    m = args.patch_size
    check_patch_size(m, train.shape[1:])
    if args.max_patches is not None and args.max_patches < 1:
        raise GmmRestoreError(f"--max-patches must be >= 1, got {args.max_patches}")
    rng = np.random.default_rng([args.seed, STAGE_SEED])
    total = len(train) * n_patches_per_image(train.shape[1:], m)
    patches = sample_patches(train, m, args.max_patches, rng,
                             transpose_half=args.transpose_half).astype(np.float32)
    log.info("%d training patches of %dx%d from %d images (%d available)", len(patches), m, m,
             len(train), total)
    datasets = {"patches": patches}
    if args.heldout_patches and len(validation):
        heldout = sample_patches(validation, m, args.heldout_patches, rng).astype(np.float32)
        datasets["heldout"] = heldout
        log.info("%d held-out patches from %d validation images", len(heldout), len(validation))
    write_h5(
        args.out, "patches", datasets,
        attrs={"patch_size": m, "n_images": len(train), "n_heldout_images": len(validation),
               "max_patches": args.max_patches if args.max_patches else "all",
               "transpose_half": args.transpose_half,
               "n_available": total, "seed": args.seed, "source": attrs.get("source", ""),
               "dataset": attrs.get("dataset", ""), "dataset_file": args.dataset,
               "stride": 1, "order": "row-major patch positions, row-major pixels"},
        dataset_attrs={"patches": {"description": "training patches, one per row, row-major "
                                                  "m x m pixels", "units": "intensity in [0, 1]"},
                       "heldout": {"description": "patches of the validation images, for the "
                                                  "held-out log-likelihood"}},
    )
    log.info("wrote %s", args.out)


if __name__ == "__main__":
    sys.exit(cli.run(main))
