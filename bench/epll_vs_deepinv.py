#!/usr/bin/env python3
"""Benchmark: gmmrestore's EPLL against deepinv's (``deepinv.optim.EPLL``), same GMM, same
noisy images, same beta schedule, in one run.

The GMM is a zero-mean prior on DC-removed patches (bench/natural_prior.py).  gmmrestore
removes each patch's mean before the patch step and adds it back (the published rule);
deepinv has no DC removal, so it gets the same components with a large variance ``v`` added
along the constant patch (``Sigma_k + v 1 1^T / d``).  The constant patch is an eigenvector
of every DC-removed covariance (eigenvalue reg_covar), so this changes every component's
score by the same amount (same choice) and keeps the DC up to a factor
``1 - s^2 / (v + s^2)``: the same rule up to round-off.  deepinv runs in float64 (the
covariances' condition number is about v / reg_covar), its patch step in batches of
``--batch`` patches, with its own CG image step (the published averaged update, solved
iteratively).  Reported: PSNR of both, the time per image, the ratio, and the GEMM fraction
of gmmrestore's patch step (one MAP-k pass timed against the float64 GEMM rate measured in
the same run, as bench/restore_speed.py).  The last line is JSON.

    .venv/bin/python bench/epll_vs_deepinv.py --gmm scratch/prior.h5 \
        --images /work/shared/data/natural/Train400 --last 3 --sigma 25
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np
from restore_speed import gemm_rate  # bench/ is on sys.path when run as a script

from gmmrestore.datasets import read_image
from gmmrestore.gmm import load_gmm
from gmmrestore.patches import extract_patches
from gmmrestore.restore.epll import epll_restore
from gmmrestore.restore.mapk import map_k_flops, map_k_restore
from gmmrestore.restore.settings import EpllSettings


def deepinv_epll(weights, covariances, dc_variance: float):
    """deepinv's EPLL with the given zero-mean components (float64) plus ``dc_variance``
    along the constant patch."""
    import torch
    from deepinv.optim import EPLL
    from deepinv.optim.utils import GaussianMixtureModel

    K, d, _ = covariances.shape
    gmm = GaussianMixtureModel(K, d).double()
    gmm.set_weights(torch.as_tensor(weights, dtype=torch.float64))
    cov = covariances + dc_variance * np.ones((d, d)) / d
    gmm.set_cov(torch.as_tensor(cov, dtype=torch.float64))
    return EPLL(GMM=gmm, pretrained=None, patch_size=int(round(np.sqrt(d))))


def psnr(x, clean):
    return float(10 * np.log10(1.0 / np.mean((x - clean) ** 2)))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--gmm", required=True)
    p.add_argument("--images", required=True, help="folder of PNG images")
    p.add_argument("--last", type=int, default=3, help="the last N images (by name)")
    p.add_argument("--sigma", type=float, default=25.0, help="noise sd, 0-255 scale")
    p.add_argument("--beta-factors", type=float, nargs="+", default=[1, 4, 8, 16, 32])
    p.add_argument("--dc-variance", type=float, default=1e3)
    p.add_argument("--batch", type=int, default=4096, help="deepinv patches per batch")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    import torch

    gmm, info = load_gmm(args.gmm)
    m = int(info["patch_size"])
    files = sorted(f for f in os.listdir(args.images) if f.endswith(".png"))[-args.last:]
    clean = [read_image(os.path.join(args.images, f)) for f in files]
    rng = np.random.default_rng(args.seed)
    sigma = args.sigma / 255.0
    noisy = [c + sigma * rng.standard_normal(c.shape) for c in clean]
    peer = deepinv_epll(gmm.weights, gmm.covariances, args.dc_variance)
    betas = [b / sigma**2 for b in args.beta_factors]
    ours_t, peer_t, ours_p, peer_p = [], [], [], []
    rate = gemm_rate()
    mapk_s, n_patches = 0.0, 0
    for c, y in zip(clean, noisy, strict=True):
        t = time.perf_counter()
        x = epll_restore(y[None], gmm, None, sigma,
                         EpllSettings.published(beta_factors=args.beta_factors),
                         remove_dc=True)[0]
        ours_t.append(time.perf_counter() - t)
        ours_p.append(psnr(x, c))
        t = time.perf_counter()
        with torch.no_grad():
            yt = torch.as_tensor(y, dtype=torch.float64)[None, None]
            from deepinv.physics import Denoising, GaussianNoise
            xt = peer(yt, Denoising(GaussianNoise(sigma)), sigma=sigma, x_init=yt.clone(),
                      betas=betas, batch_size=args.batch)
        peer_t.append(time.perf_counter() - t)
        peer_p.append(psnr(xt[0, 0].numpy(), c))
        t = time.perf_counter()
        map_k_restore(y[None], gmm, None, sigma, remove_dc=True)
        mapk_s += time.perf_counter() - t
        n_patches += extract_patches(y[None], m).shape[1]
        print(f"{files[len(ours_t) - 1]}: gmmrestore {ours_p[-1]:.3f} dB {ours_t[-1]:.1f} s, "
              f"deepinv {peer_p[-1]:.3f} dB {peer_t[-1]:.1f} s", flush=True)
    rate = max(rate, gemm_rate())
    gflops = map_k_flops(n_patches, gmm.n_components, m * m) / mapk_s / 1e9
    result = {
        "images": files, "sigma": args.sigma, "beta_factors": args.beta_factors,
        "n_components": gmm.n_components, "patch_size": m,
        "threads": torch.get_num_threads(),
        "psnr_gmmrestore": round(float(np.mean(ours_p)), 4),
        "psnr_deepinv": round(float(np.mean(peer_p)), 4),
        "psnr_difference": round(float(np.mean(ours_p) - np.mean(peer_p)), 4),
        "s_per_image_gmmrestore": round(float(np.mean(ours_t)), 2),
        "s_per_image_deepinv": round(float(np.mean(peer_t)), 2),
        "speedup": round(float(np.sum(peer_t) / np.sum(ours_t)), 2),
        "patch_step_gflops": round(gflops, 2), "gemm_gflops": round(rate, 2),
        "gemm_fraction": round(gflops / rate, 3),
    }
    print(f"EPLL, {len(files)} images, sigma {args.sigma:g}: gmmrestore "
          f"{result['psnr_gmmrestore']} dB in {result['s_per_image_gmmrestore']} s/image, "
          f"deepinv {result['psnr_deepinv']} dB in {result['s_per_image_deepinv']} s/image: "
          f"{result['speedup']}x; patch step {gflops:.1f} GFLOP/s = "
          f"{100 * gflops / rate:.0f}% of the {rate:.1f} GFLOP/s GEMM rate")
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
