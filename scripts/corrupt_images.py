#!/usr/bin/env python3
"""Blur and add noise to the test and validation images: y = k * x + sigma n.

The blur is a 'same'-size 2-D convolution with zero boundary (see gmmrestore.operators);
n is standard normal, seeded.  The kernel comes from a named type or from a user's
m^2 x m^2 patch matrix (.npy), whose convolution kernel is recovered exactly.
"""

from __future__ import annotations

import json
import logging
import sys

import numpy as np

import _bootstrap  # noqa: F401  (puts src/ on sys.path)

from gmmrestore import cli
from gmmrestore.datasets import load_dataset_file
from gmmrestore.h5io import GmmRestoreError, write_h5
from gmmrestore.operators import (
    KERNEL_TYPES,
    blur,
    kernel_from_patch_matrix,
    load_patch_matrix,
    make_kernel,
    validate_kernel,
)

log = logging.getLogger("gmmrestore.corrupt_images")
STAGE_SEED = 2
FORWARD_MODEL = ("y = k * x + sigma * n; '*' is 'same'-size 2-D convolution with zero "
                 "boundary, n ~ N(0, I); intensities in [0, 1], not clipped")


def main(argv=None) -> None:
    parser = cli.make_parser(__doc__)
    parser.add_argument("--dataset", required=True, help="dataset HDF5 (kind 'dataset')")
    parser.add_argument("--out", required=True, help="output HDF5 (kind 'corrupted')")
    parser.add_argument("--blur-name", required=True, help="name of the blur setting")
    parser.add_argument("--blur-type", required=True, choices=KERNEL_TYPES + ("matrix",))
    parser.add_argument("--blur-size", type=int, default=5, help="kernel size (odd)")
    parser.add_argument("--blur-std", type=float, default=1.0, help="gaussian std, pixels")
    parser.add_argument("--blur-length", type=float, default=5.0, help="motion length, pixels")
    parser.add_argument("--blur-angle", type=float, default=0.0, help="motion angle, degrees")
    parser.add_argument("--patch-matrix", default=None,
                        help="with --blur-type matrix: .npy file holding an m^2 x m^2 patch "
                             "blur matrix")
    parser.add_argument("--sigma", type=float, required=True, help="noise std (>= 0)")
    parser.add_argument("--n-test", type=int, default=None,
                        help="use the first N test images (default: all)")
    parser.add_argument("--seed", type=int, default=0, help="random seed of the noise")
    args = parser.parse_args(argv)
    cli.setup_logging(args.quiet)

    if not args.sigma >= 0 or not np.isfinite(args.sigma):
        raise GmmRestoreError(f"noise sigma must be finite and >= 0, got {args.sigma}")
    patch_matrix = None
    if args.blur_type == "matrix":
        if not args.patch_matrix:
            raise GmmRestoreError("--blur-type matrix needs --patch-matrix FILE.npy")
        patch_matrix = load_patch_matrix(args.patch_matrix)
        m = int(round(np.sqrt(len(patch_matrix))))
        try:
            kernel = kernel_from_patch_matrix(patch_matrix, m)
        except GmmRestoreError as err:
            raise GmmRestoreError(f"{args.patch_matrix}: {err}") from None
    else:
        kernel = make_kernel(args.blur_type, size=args.blur_size, std=args.blur_std,
                             length=args.blur_length, angle=args.blur_angle)
    kernel = validate_kernel(kernel, name=f"blur '{args.blur_name}'")

    arrays, attrs = load_dataset_file(args.dataset)  # checked: shapes, finite, in [0, 1]
    clean = arrays["test"].astype(np.float64)
    if args.n_test is not None:
        if args.n_test > len(clean):
            raise GmmRestoreError(f"--n-test {args.n_test}: {args.dataset} has only "
                                  f"{len(clean)} test images")
        clean = clean[: args.n_test]
    val_clean = arrays["validation"].astype(np.float64)
    rng = np.random.default_rng([args.seed, STAGE_SEED])
    corrupted = blur(clean, kernel) + args.sigma * rng.standard_normal(clean.shape)
    val_corrupted = blur(val_clean, kernel) + args.sigma * rng.standard_normal(val_clean.shape)
    spec = {"type": args.blur_type, "size": args.blur_size, "std": args.blur_std,
            "length": args.blur_length, "angle": args.blur_angle,
            "patch_matrix": args.patch_matrix}
    datasets = {"clean": clean, "corrupted": corrupted, "val_clean": val_clean,
                "val_corrupted": val_corrupted, "kernel": kernel}
    per_image = {}  # source bsd: each test image's id and whether it is stored transposed
    if "test_transposed" in arrays:
        datasets["transposed"] = arrays["test_transposed"][: len(clean)]
    if "test_ids" in attrs:
        per_image["ids"] = list(attrs["test_ids"])[: len(clean)]
    if patch_matrix is not None:
        datasets["patch_matrix"] = patch_matrix
    write_h5(
        args.out, "corrupted", datasets,
        attrs={"blur": args.blur_name, "blur_spec": json.dumps(spec), "noise_sigma": args.sigma,
               "seed": args.seed, "boundary": "zero", "forward_model": FORWARD_MODEL,
               "dataset": attrs.get("dataset", ""), "source": attrs.get("source", ""),
               "n_test": len(clean), "n_validation": len(val_clean), **per_image},
        dataset_attrs={"clean": {"description": "test images before corruption"},
                       "corrupted": {"description": "blurred and noisy test images"},
                       "val_clean": {"description": "validation images (baseline tuning)"},
                       "val_corrupted": {"description": "corrupted validation images"},
                       "kernel": {"description": "image-level blur kernel, sums to 1"},
                       "transposed": {"description": "test image stored transposed (a "
                                                     "portrait photograph)"}},
    )
    log.info("corrupted %d test + %d validation images with %s (kernel %s), sigma=%g -> %s",
             len(clean), len(val_clean), args.blur_name, kernel.shape, args.sigma, args.out)


if __name__ == "__main__":
    sys.exit(cli.run(main))
