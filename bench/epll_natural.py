#!/usr/bin/env python3
"""EPLL and MAP-k denoising of natural grayscale images (e.g. BSD68) with a DC-removed
natural-image GMM (bench/natural_prior.py), at the published EPLL settings.

Each image gets ``y = x + sigma n`` (n standard normal, seeded per sigma; the noisy input is
not clipped).  EPLL follows the published schedule (Zoran & Weiss's released code,
docs/model.md): start from y, ``lam = d / sigma^2``, ``beta = [1, 4, 8, 16, 32] / sigma^2``
(64 and 128 added for sigma >= ``--high-noise``), one patch / image step per beta, the
patch estimates averaged (``weighting="average"``).  MAP-k is one patch step at the noise
sigma with the estimates averaged.  PSNR is on [0, 1] intensities against the 8-bit clean
image, for the raw output and for the output clipped to [0, 1].  One JSON line per image
and method, the last line a JSON summary (means per sigma and method).  ``--score-dtypes
float64 float32`` runs every method with both precisions of the component choice
(``score_dtype``), alternating per image, and the summary adds each method's PSNR difference
and time ratio float32 / float64 measured in that run.

    .venv/bin/python bench/epll_natural.py --gmm scratch/prior.h5 \
        --images /work/shared/data/natural/BSD68 --sigmas 15 25 50 --n-images 68
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np

from gmmrestore.datasets import read_image
from gmmrestore.gmm import load_patch_prior
from gmmrestore.restore.epll import epll_restore
from gmmrestore.restore.mapk import map_k_restore
from gmmrestore.restore.settings import EpllSettings

PUBLISHED_EPLL = {15: 31.21, 25: 28.68, 50: 25.67}


def psnr(x: np.ndarray, clean: np.ndarray) -> float:
    """PSNR in dB of ``x`` against ``clean``, peak 1."""
    return float(10 * np.log10(1.0 / np.mean((x - clean) ** 2)))


def beta_schedule(sigma255: float, high_noise: float) -> list[float]:
    """The published beta factors: [1, 4, 8, 16, 32], plus 64 and 128 at high noise."""
    return [1, 4, 8, 16, 32] + ([64, 128] if sigma255 >= high_noise else [])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--gmm", required=True)
    p.add_argument("--images", required=True, help="folder of PNG images")
    p.add_argument("--sigmas", type=float, nargs="+", default=[15, 25, 50],
                   help="noise standard deviations on the 0-255 scale")
    p.add_argument("--n-images", type=int, default=None, help="first N images (by name)")
    p.add_argument("--every", type=int, default=1, help="take every k-th image")
    p.add_argument("--methods", nargs="+", default=["epll", "mapk"])
    p.add_argument("--high-noise", type=float, default=50.0,
                   help="sigma (0-255) from which 64 and 128 join the beta factors")
    p.add_argument("--beta-factors", type=float, nargs="+", default=None,
                   help="override the published schedule")
    p.add_argument("--lam-factor", type=float, default=1.0)
    p.add_argument("--weighting", default="average")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--score-dtypes", nargs="+", default=["float64"],
                   choices=("float64", "float32"),
                   help="precisions of the component choice to run side by side")
    args = p.parse_args(argv)
    gmm, remove_dc = load_patch_prior(args.gmm)
    files = sorted(f for f in os.listdir(args.images) if f.endswith(".png"))
    files = files[::args.every][:args.n_images]
    images = [read_image(os.path.join(args.images, f)) for f in files]
    summary: dict = {"gmm": args.gmm, "n_images": len(files), "images": args.images,
                     "seed": args.seed, "results": {}}
    for sigma255 in args.sigmas:
        sigma = sigma255 / 255.0
        rng = np.random.default_rng([args.seed, int(round(sigma255 * 100))])
        noisy = [x + sigma * rng.standard_normal(x.shape) for x in images]
        factors = args.beta_factors or beta_schedule(sigma255, args.high_noise)
        schedule = EpllSettings.published(beta_factors=factors, lam_factor=args.lam_factor,
                                          weighting=args.weighting)
        runs = [(meth, dt) for meth in args.methods for dt in args.score_dtypes]
        rows: dict[tuple, list] = {run: [] for run in runs}
        for name, clean, y in zip(files, images, noisy, strict=True):
            for meth, dt in runs:
                t = time.perf_counter()
                if meth == "epll":
                    x = epll_restore(y[None], gmm, None, sigma, schedule,
                                     remove_dc=remove_dc, score_dtype=dt)[0]
                else:
                    x = map_k_restore(y[None], gmm, None, sigma, remove_dc=remove_dc,
                                      score_dtype=dt)[0]
                sec = time.perf_counter() - t
                row = (psnr(x, clean), psnr(np.clip(x, 0, 1), clean), sec)
                rows[meth, dt].append(row)
                print(json.dumps({"sigma": sigma255, "image": name, "method": meth,
                                  "score_dtype": dt, "psnr": round(row[0], 3),
                                  "psnr_clipped": round(row[1], 3),
                                  "seconds": round(sec, 2)}), flush=True)
        for (meth, dt), r in rows.items():
            a = np.asarray(r)
            key = f"{meth}@{sigma255:g}" + ("" if dt == "float64" else f"/{dt}")
            summary["results"][key] = {
                "psnr": round(float(a[:, 0].mean()), 3),
                "psnr_clipped": round(float(a[:, 1].mean()), 3),
                "seconds_per_image": round(float(a[:, 2].mean()), 2),
                "published_epll": PUBLISHED_EPLL.get(int(sigma255)),
                "beta_factors": factors if meth == "epll" else None}
            if dt == "float32" and (meth, "float64") in rows:
                b = np.asarray(rows[meth, "float64"])
                summary["results"][key].update(
                    psnr_minus_float64=round(float(a[:, 1].mean() - b[:, 1].mean()), 5),
                    time_ratio_to_float64=round(float(a[:, 2].sum() / b[:, 2].sum()), 3))
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
