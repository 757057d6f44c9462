#!/usr/bin/env python3
"""Blur and add noise to the test and validation images: y = k * x + sigma n.

With --boundary zero (the default) the blur is a 'same'-size 2-D convolution with zero
boundary (see gmmrestore.operators).  With --boundary valid it is what a camera records:
the full convolution's valid centre, cropped by --valid-margin pixels in all (default: the
kernel's size - 1), and the clean reference is the same centre of the image, so nothing
outside the frame is assumed zero.  n is standard normal, seeded; --quantize-bits 8 then
clips to [0, 1] and rounds to 8-bit levels like an image file.  The kernel comes from a
named type (camera_shake kernels are drawn with --blur-seed) or from a user's m^2 x m^2
patch matrix (.npy), whose convolution kernel is recovered exactly.
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
    BOUNDARIES,
    KERNEL_TYPES,
    blur,
    blur_valid,
    kernel_from_patch_matrix,
    load_patch_matrix,
    make_kernel,
    quantize,
    validate_kernel,
)

log = logging.getLogger("gmmrestore.corrupt_images")
STAGE_SEED = 2
# the forward model recorded for each of operators.BOUNDARIES
FORWARD_MODELS = {
    "zero": "y = k * x + sigma * n; '*' is 'same'-size 2-D convolution with zero boundary, "
            "n ~ N(0, I)",
    "valid": "y = valid(k * x) + sigma * n: the full convolution's valid centre (a camera's "
             "blur, no assumption outside the frame), cropped by the margin; clean = the same "
             "centre of x; n ~ N(0, I)",
}


def valid_crop(shape: tuple[int, int], kernel_shape: tuple[int, int], margin: int | None
               ) -> tuple[slice, slice, slice, slice]:
    """Slices (rows, cols) of the valid blur's output and of the scene giving one frame.

    The frame is (H - margin, W - margin), centred; ``margin`` defaults to the kernel's
    size - 1 (the whole valid region) and must be at least that.
    """
    out = []
    for n, s, axis in zip(shape, kernel_shape, ("rows", "columns"), strict=True):
        m = s - 1 if margin is None else margin
        if m < s - 1 or m >= n:
            raise GmmRestoreError(f"--valid-margin {m}: must be at least the kernel's size "
                                  f"- 1 = {s - 1} and less than the images' {n} {axis}")
        extra = m - (s - 1)
        out.append((slice(extra // 2, extra // 2 + n - m),
                    slice(s // 2 + extra // 2, s // 2 + extra // 2 + n - m)))
    (yr, xr), (yc, xc) = out
    return yr, yc, xr, xc


def observe(clean: np.ndarray, kernel: np.ndarray, sigma: float, rng: np.random.Generator,
            boundary: str, margin: int | None, bits: int | None
            ) -> tuple[np.ndarray, np.ndarray]:
    """(clean reference, corrupted) for images (n, H, W) under the chosen forward model."""
    if boundary == "valid":
        yr, yc, xr, xc = valid_crop(clean.shape[-2:], kernel.shape, margin)
        blurred = blur_valid(clean, kernel)[..., yr, yc]
        clean = clean[..., xr, xc]
    else:
        blurred = blur(clean, kernel)
    corrupted = blurred + sigma * rng.standard_normal(clean.shape)
    if bits is not None:
        corrupted = quantize(corrupted, bits)
    return np.ascontiguousarray(clean), corrupted


def build_parser():
    parser = cli.make_parser(__doc__)
    parser.add_argument("--dataset", required=True, help="dataset HDF5 (kind 'dataset')")
    parser.add_argument("--out", required=True, help="output HDF5 (kind 'corrupted')")
    parser.add_argument("--blur-name", required=True, help="name of the blur setting")
    parser.add_argument("--blur-type", required=True, choices=KERNEL_TYPES + ("matrix",))
    parser.add_argument("--blur-size", type=int, default=5, help="kernel size (odd)")
    parser.add_argument("--blur-std", type=float, default=1.0, help="gaussian std, pixels")
    parser.add_argument("--blur-length", type=float, default=5.0, help="motion length, pixels")
    parser.add_argument("--blur-angle", type=float, default=0.0, help="motion angle, degrees")
    parser.add_argument("--blur-seed", type=int, default=0,
                        help="camera_shake: seed of the random trajectory")
    parser.add_argument("--boundary", choices=BOUNDARIES, default=BOUNDARIES[0],
                        help="zero: 'same' convolution, zero outside the image; valid: a "
                             "camera's blur (full convolution's valid centre)")
    parser.add_argument("--valid-margin", type=int, default=None,
                        help="with --boundary valid: pixels cropped in all per axis (default: "
                             "kernel size - 1)")
    parser.add_argument("--quantize-bits", type=int, default=None,
                        help="clip to [0, 1] and round to this many bits (8: an 8-bit file)")
    parser.add_argument("--patch-matrix", default=None,
                        help="with --blur-type matrix: .npy file holding an m^2 x m^2 patch "
                             "blur matrix")
    parser.add_argument("--sigma", type=float, required=True, help="noise std (>= 0)")
    parser.add_argument("--n-test", type=int, default=None,
                        help="use the first N test images (default: all)")
    parser.add_argument("--seed", type=int, default=0, help="random seed of the noise")
    return parser


def blur_of(args) -> tuple[np.ndarray, np.ndarray | None]:
    """The image-level kernel of the blur options and, with --blur-type matrix, the
    patch matrix (m², m²) it was read from (else None)."""
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
                             length=args.blur_length, angle=args.blur_angle,
                             seed=args.blur_seed)
    return validate_kernel(kernel, name=f"blur '{args.blur_name}'"), patch_matrix


def main(argv=None) -> None:
    args = build_parser().parse_args(argv)
    cli.setup_logging(args.quiet)
    if not args.sigma >= 0 or not np.isfinite(args.sigma):
        raise GmmRestoreError(f"noise sigma must be finite and >= 0, got {args.sigma}")
    kernel, patch_matrix = blur_of(args)
    arrays, attrs = load_dataset_file(args.dataset)  # checked: shapes, finite, in [0, 1]
    clean = arrays["test"].astype(np.float64)
    if args.n_test is not None:
        if args.n_test > len(clean):
            raise GmmRestoreError(f"--n-test {args.n_test}: {args.dataset} has only "
                                  f"{len(clean)} test images")
        clean = clean[: args.n_test]
    val_clean = arrays["validation"].astype(np.float64)
    rng = np.random.default_rng([args.seed, STAGE_SEED])
    model = (kernel, args.sigma, rng, args.boundary, args.valid_margin, args.quantize_bits)
    clean, corrupted = observe(clean, *model)
    val_clean, val_corrupted = observe(val_clean, *model)
    spec = {"type": args.blur_type, "size": args.blur_size, "std": args.blur_std,
            "length": args.blur_length, "angle": args.blur_angle, "seed": args.blur_seed,
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
               "seed": args.seed, "boundary": args.boundary,
               "valid_margin": -1 if args.valid_margin is None else args.valid_margin,
               "quantize_bits": args.quantize_bits or 0,
               "forward_model": FORWARD_MODELS[args.boundary]
               + ("" if args.quantize_bits is None
                  else f"; clipped to [0, 1] and quantised to {args.quantize_bits} bits"),
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
