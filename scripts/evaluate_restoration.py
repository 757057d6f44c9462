#!/usr/bin/env python3
"""Score restored test images (or the corrupted input itself) against the clean images:
one tidy CSV row per image with the setting, PSNR and SSIM."""

from __future__ import annotations

import csv
import io
import logging
import sys

import numpy as np

import _bootstrap  # noqa: F401  (puts src/ on sys.path)

from gmmrestore import cli
from gmmrestore.h5io import GmmRestoreError, read_h5, write_text_atomic
from gmmrestore.metrics import psnr, ssim

log = logging.getLogger("gmmrestore.evaluate")
COLUMNS = ("dataset", "blur", "noise_sigma", "patch_size", "n_components", "method", "kernel",
           "image_id", "psnr", "ssim")


def _blank(value) -> str:
    return "" if value in (None, "none") else str(value)


def main(argv=None) -> None:
    parser = cli.make_parser(__doc__)
    parser.add_argument("--corrupted", required=True, help="HDF5 from corrupt_images.py")
    parser.add_argument("--restored", default=None,
                        help="HDF5 of restored images; omit to score the corrupted input")
    parser.add_argument("--out", required=True, help="output CSV")
    args = parser.parse_args(argv)
    cli.setup_logging(args.quiet)

    arrays, attrs = read_h5(args.corrupted, "corrupted", ["clean", "corrupted"])
    clean = arrays["clean"]
    if args.restored:
        r_arrays, r_attrs = read_h5(args.restored, "restored", ["restored"])
        images = r_arrays["restored"]
        if images.shape != clean.shape:
            raise GmmRestoreError(f"{args.restored}: restored shape {images.shape} differs from "
                                  f"the clean images {clean.shape} in {args.corrupted}")
    else:
        images, r_attrs = arrays["corrupted"], {"method": "corrupted", "kernel_source": ""}
    if not np.all(np.isfinite(images)):
        raise GmmRestoreError(f"{args.restored or args.corrupted}: images contain NaN or Inf")
    # Scores are taken on the [0, 1] display range, as a user would look at the images.
    shown = np.clip(images, 0.0, 1.0)
    p, s = psnr(clean, shown), ssim(clean, shown)
    # a paired set's own ids (its file names); otherwise the test image's index
    ids = list(attrs.get("ids", range(len(clean))))
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(COLUMNS)
    for i in range(len(clean)):
        writer.writerow([attrs.get("dataset", ""), attrs.get("blur", ""), attrs["noise_sigma"],
                         _blank(r_attrs.get("patch_size")), _blank(r_attrs.get("n_components")),
                         r_attrs["method"], _blank(r_attrs.get("kernel_source")), ids[i],
                         f"{p[i]:.6f}", f"{s[i]:.6f}"])
    write_text_atomic(args.out, buffer.getvalue())
    log.info("%s: mean PSNR %.2f dB, mean SSIM %.4f over %d images -> %s", r_attrs["method"],
             p.mean(), s.mean(), len(p), args.out)


if __name__ == "__main__":
    sys.exit(cli.run(main))
