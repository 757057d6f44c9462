#!/usr/bin/env python3
"""Restore corrupted images with a classic baseline given the true blur and sigma.

The baseline's free parameter is tuned on the corrupted validation images stored in the
corrupted file (never on the test images); the chosen value is recorded in the output.

With --kernel-file (a baseline whose parameter is not tuned, e.g. hyper_laplacian) every
image is restored with the kernel estimated for it by estimate_kernel.py instead, as
restore_images.py does; the true kernel and the clean images are then never read.
"""

from __future__ import annotations

import json
import logging
import sys
import time

import numpy as np

import _bootstrap  # noqa: F401  (puts src/ on sys.path)

from gmmrestore import cli
from gmmrestore.deconv.estimates import estimated_kernels
from gmmrestore.h5io import GmmRestoreError, write_h5
from gmmrestore.operators import kernel_from_patch_matrix, validate_kernel
from gmmrestore.restore.baselines import BASELINES, restore_baseline, tune_baseline
from gmmrestore.restore.inputs import corrupted_setting, read_corrupted

log = logging.getLogger("gmmrestore.restore_baseline")


def main(argv=None) -> None:
    parser = cli.make_parser(__doc__)
    parser.add_argument("--corrupted", required=True, help="HDF5 from corrupt_images.py")
    parser.add_argument("--method", required=True, choices=sorted(BASELINES))
    parser.add_argument("--out", required=True, help="output HDF5 (kind 'restored')")
    parser.add_argument("--kernel-file", default=None,
                        help="estimated kernels (HDF5 from estimate_kernel.py) used instead "
                             "of the true one (baselines of a fixed parameter only)")
    parser.add_argument("--seed", type=int, default=0, help="seed of randomised baselines")
    parser.add_argument("--no-clip", dest="clip", action="store_false",
                        help="keep the raw restoration instead of clipping it to [0, 1] "
                             "(the evaluation scores both)")
    args = parser.parse_args(argv)
    cli.setup_logging(args.quiet)
    started = time.perf_counter()
    restored, record = (restore_blind if args.kernel_file else restore_true)(args)
    seconds = time.perf_counter() - started
    label = record.pop("method")
    write_h5(
        args.out, "restored", {"restored": np.asarray(restored, dtype=np.float64)},
        attrs={"method": label, "base_method": args.method, "patch_size": "none",
               "n_components": "none", "corrupted_file": args.corrupted,
               "param_name": str(BASELINES[args.method].param_name), "seconds": seconds,
               "seed": args.seed, "clipped": args.clip, **record},
        dataset_attrs={"restored": {"description": f"test images restored by {label}"}},
    )
    log.info("%s restored %d images in %.1f s -> %s", label, len(restored), seconds, args.out)


def restore_true(args) -> tuple[np.ndarray, dict]:
    """The restoration with the true kernel, the parameter tuned on the validation images;
    returns it and the attributes to record."""
    arrays, attrs = read_corrupted(args.corrupted, required=("val_clean", "val_corrupted"))
    kernel = arrays.get("kernel")
    if kernel is None and "patch_matrix" in arrays:
        W = arrays["patch_matrix"]
        kernel = kernel_from_patch_matrix(W, int(round(np.sqrt(len(W)))))
    if kernel is None:
        raise GmmRestoreError(f"{args.corrupted}: no blur kernel for the baseline")
    kernel = validate_kernel(kernel)
    setting = corrupted_setting(attrs)
    sigma, boundary = setting["noise_sigma"], setting["boundary"]
    param, table = None, {}
    grid = BASELINES[args.method].default_grid(kernel, sigma)
    if len(grid) == 1:  # nothing to choose (e.g. bm3d for denoising): no validation run
        param = grid[0]
        log.info("%s: one parameter value (%s = %s), nothing to tune", args.method,
                 BASELINES[args.method].param_name, param)
    elif len(arrays["val_clean"]):
        param, table = tune_baseline(args.method, arrays["val_clean"], arrays["val_corrupted"],
                                     kernel, sigma, seed=args.seed, boundary=boundary)
        log.info("%s: tuned %s = %s on %d validation images", args.method,
                 BASELINES[args.method].param_name, param, len(arrays["val_clean"]))
    else:
        log.warning("%s: no validation images; using the default parameter", args.method)
    restored = restore_baseline(args.method, arrays["corrupted"], kernel, sigma, param,
                                seed=args.seed, clip=args.clip, boundary=boundary)
    return restored, {"method": args.method, "kernel_source": "true", **setting,
                      "param": json.dumps(param), "tuning": json.dumps(table, default=str)}


def restore_blind(args) -> tuple[np.ndarray, dict]:
    """--kernel-file: each image restored with its estimated kernel, the parameter fixed;
    reads only what a blind restoration may (``restore.inputs.BLIND_DATASETS``)."""
    spec = BASELINES[args.method]
    if not spec.blind:
        blind = ", ".join(n for n, b in BASELINES.items() if b.blind)
        raise GmmRestoreError(f"--kernel-file: baseline {args.method} tunes its parameter "
                              "with the true kernel and cannot restore with an estimated "
                              f"one; baselines that can: {blind}")
    arrays, attrs = read_corrupted(args.corrupted, blind=True)
    corrupted = arrays["corrupted"]
    setting = corrupted_setting(attrs)
    restored = np.empty(corrupted.shape)
    params = []
    for kernel, members in estimated_kernels(args.kernel_file, len(corrupted)):
        params.append(spec.default(kernel, setting["noise_sigma"]))
        restored[members] = restore_baseline(args.method, corrupted[members], kernel,
                                             setting["noise_sigma"], params[-1],
                                             seed=args.seed, clip=args.clip,
                                             boundary=setting["boundary"])
    return restored, {"method": f"{args.method}-blind", "kernel_source": "estimated",
                      "kernel_file": args.kernel_file, **setting,
                      "param": json.dumps(params[0] if params else None),
                      "tuning": json.dumps({})}


if __name__ == "__main__":
    sys.exit(cli.run(main))
