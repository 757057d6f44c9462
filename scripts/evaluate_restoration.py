#!/usr/bin/env python3
"""Score restored test images (or the corrupted input itself) against the clean images:
one tidy CSV row per image with the setting, PSNR and SSIM.

For a blind restoration (--kernel-estimate and --true-kernel-restored given) the row also
carries the batch of the image's kernel, that kernel's relative L2 error after the best
integer shift against the true kernel, and Levin's error ratio: SSD of the restoration with
the estimated kernel / SSD of the same method with the true kernel, per image and pooled
over the image's batch (gmmrestore.deconv.blind_scores).  The true kernel is read here, for
scoring only.  Other rows leave these columns empty.
"""

from __future__ import annotations

import csv
import io
import logging
import sys

import numpy as np

import _bootstrap  # noqa: F401  (puts src/ on sys.path)

from gmmrestore import cli
from gmmrestore.deconv import blind_scores
from gmmrestore.h5io import GmmRestoreError, read_h5, write_text_atomic
from gmmrestore.metrics import psnr, ssim

log = logging.getLogger("gmmrestore.evaluate")
COLUMNS = ("dataset", "blur", "noise_sigma", "patch_size", "n_components", "method", "kernel",
           "image_id", "psnr", "ssim", "psnr_unclipped")
BLIND_COLUMNS = ("kernel_batch", "kernel_error", "error_ratio", "batch_error_ratio",
                 "shifted_error_ratio")


def _blank(value) -> str:
    return "" if value in (None, "none") else str(value)


def shown(images: np.ndarray, path: str) -> np.ndarray:
    """Images as scored: finite, clipped to the [0, 1] display range (as a user would look
    at them); PSNR, SSIM and the error ratio all use these."""
    if not np.all(np.isfinite(images)):
        raise GmmRestoreError(f"{path}: images contain NaN or Inf")
    return np.clip(images, 0.0, 1.0)


def load_restored(path: str, clean: np.ndarray, corrupted_path: str, raw: bool = False
                  ) -> tuple[np.ndarray, dict]:
    """Restored images as scored (:func:`shown`), or with ``raw`` as stored (unclipped)."""
    arrays, attrs = read_h5(path, "restored", ["restored"])
    images = arrays["restored"]
    if images.shape != clean.shape:
        raise GmmRestoreError(f"{path}: restored shape {images.shape} differs from the clean "
                              f"images {clean.shape} in {corrupted_path}")
    shown_images = shown(images, path)
    return (images if raw else shown_images), attrs


def blind_columns(args, arrays: dict, clean: np.ndarray, restored: np.ndarray,
                  attrs: dict) -> dict[str, np.ndarray]:
    """Per-image kernel error and error ratios of a blind restoration (see the module doc)."""
    if "kernel" not in arrays:
        raise GmmRestoreError(f"{args.corrupted}: no true 'kernel' to score the estimated "
                              "kernel against")
    reference, ref_attrs = load_restored(args.true_kernel_restored, clean, args.corrupted)
    if ref_attrs.get("kernel_source") != "true":
        raise GmmRestoreError(f"{args.true_kernel_restored}: kernel_source is "
                              f"'{ref_attrs.get('kernel_source')}', expected a restoration "
                              "with the true kernel")
    base, ref_base = attrs.get("base_method"), ref_attrs.get("base_method")
    if base != ref_base:
        raise GmmRestoreError(f"error ratio: {args.restored} is method '{base}' but "
                              f"{args.true_kernel_restored} is '{ref_base}'; the ratio "
                              "compares the same method with both kernels")
    estimate, _ = read_h5(args.kernel_estimate, "kernel", ["batch_kernels", "batch_index"])
    try:
        return blind_scores(clean, restored, reference, estimate["batch_kernels"],
                            estimate["batch_index"], arrays["kernel"])
    except GmmRestoreError as err:
        raise GmmRestoreError(f"{args.kernel_estimate}: {err}") from None


def main(argv=None) -> None:
    parser = cli.make_parser(__doc__)
    parser.add_argument("--corrupted", required=True, help="HDF5 from corrupt_images.py")
    parser.add_argument("--restored", default=None,
                        help="HDF5 of restored images; omit to score the corrupted input")
    parser.add_argument("--kernel-estimate", default=None,
                        help="blind: HDF5 from estimate_kernel.py the restoration used")
    parser.add_argument("--true-kernel-restored", default=None,
                        help="blind: the same method's restoration with the true kernel")
    parser.add_argument("--out", required=True, help="output CSV")
    args = parser.parse_args(argv)
    cli.setup_logging(args.quiet)
    blind = args.kernel_estimate is not None or args.true_kernel_restored is not None
    if blind and not (args.kernel_estimate and args.true_kernel_restored and args.restored):
        parser.error("--kernel-estimate and --true-kernel-restored go together, with "
                     "--restored")

    arrays, attrs = read_h5(args.corrupted, "corrupted", ["clean", "corrupted"])
    clean = arrays["clean"]
    if args.restored:
        raw, r_attrs = load_restored(args.restored, clean, args.corrupted, raw=True)
    else:
        raw = arrays["corrupted"]
        r_attrs = {"method": "corrupted", "kernel_source": ""}
    images = shown(raw, args.restored or args.corrupted)
    # psnr_unclipped: the images as stored (the corrupted input: the published convention)
    p, s, p_raw = psnr(clean, images), ssim(clean, images), psnr(clean, raw)
    extra = blind_columns(args, arrays, clean, images, r_attrs) if blind else {}
    # a paired set's own ids (its file names); otherwise the test image's index
    ids = list(attrs.get("ids", range(len(clean))))
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(COLUMNS + BLIND_COLUMNS)
    for i in range(len(clean)):
        writer.writerow([attrs.get("dataset", ""), attrs.get("blur", ""), attrs["noise_sigma"],
                         _blank(r_attrs.get("patch_size")), _blank(r_attrs.get("n_components")),
                         r_attrs["method"], _blank(r_attrs.get("kernel_source")), ids[i],
                         f"{p[i]:.6f}", f"{s[i]:.6f}", f"{p_raw[i]:.6f}"]
                        + ([int(extra["kernel_batch"][i])]
                           + [f"{extra[c][i]:.6f}" for c in BLIND_COLUMNS[1:]]
                           if blind else [""] * len(BLIND_COLUMNS)))
    write_text_atomic(args.out, buffer.getvalue())
    log.info("%s: mean PSNR %.2f dB, mean SSIM %.4f over %d images -> %s", r_attrs["method"],
             p.mean(), s.mean(), len(p), args.out)
    if blind:
        log.info("%s: kernel error per batch %s, mean error ratio %.3f",
                 r_attrs["method"], np.unique(np.round(extra["kernel_error"], 4)),
                 float(np.mean(extra["error_ratio"])))


if __name__ == "__main__":
    sys.exit(cli.run(main))
