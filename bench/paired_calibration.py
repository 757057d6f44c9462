#!/usr/bin/env python3
"""Estimated calibration against the oracle on a synthetic paired set (issue 23's table).

After a workflow run on a set made by ``scripts/make_paired_set.py --save-observations``
(the true observations y = W z + n, float, never rescaled, in observed.npy), this restores
the true y with the same methods, GMM and settings as the run (read from its restored
files), with the true sigma, and prints one markdown row: true and estimated sigma, rms of
the mapped observations against y, and mean PSNR of each method with the estimated
calibration and with the oracle.

    python bench/paired_calibration.py --results results/paired_seed7_s0.05 \\
        --set data/paired_seed7_s0.05 --sigma 0.05
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "src"))

from gmmrestore.h5io import read_h5, write_h5  # noqa: E402
from gmmrestore.metrics import psnr  # noqa: E402
from gmmrestore.operators import blur  # noqa: E402

OPTIONS = {"images_per_chunk": "--images-per-chunk", "boundary_model": "--boundary-model",
           "position_weight_power": "--position-weight-power",
           "beta_factors": "--beta-factors", "lam_factor": "--lam-factor",
           "n_inner": "--n-inner", "init": "--epll-init", "init_sharpen": "--init-sharpen",
           "init_sharpen_std": "--init-sharpen-std"}


def restore_options(params: dict) -> list[str]:
    """restore_images.py options from a restored file's 'params' attribute."""
    args = [] if params.get("clip", True) else ["--no-clip"]
    for key, option in OPTIONS.items():
        if key in params:
            value = params[key]
            args += [option, *map(str, value if isinstance(value, list) else [value])]
    return args


def oracle_file(corrupted: str, observed: np.ndarray, sigma: float, out: str, seed: int) -> None:
    """The run's corrupted file with the true observations and sigma (validation pairs
    re-simulated with that sigma)."""
    arrays, attrs = read_h5(corrupted, "corrupted")
    ids = [int(i) for i in attrs["ids"]]
    arrays["corrupted"] = observed[ids]
    if len(arrays["val_clean"]):
        rng = np.random.default_rng(seed)
        arrays["val_corrupted"] = blur(arrays["val_clean"], arrays["kernel"]) + \
            sigma * rng.standard_normal(arrays["val_clean"].shape)
    attrs.update(noise_sigma=sigma, noise_sigma_source="oracle", intensity_mapping="oracle")
    write_h5(out, "corrupted", arrays, attrs=attrs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--results", required=True, help="the run's results_dir")
    parser.add_argument("--set", required=True, help="the paired set (with observed.npy)")
    parser.add_argument("--sigma", type=float, required=True, help="the set's true sigma")
    parser.add_argument("--dataset", default="mnist_paired")
    parser.add_argument("--key", default="est_estimate", help="the paired folder key")
    parser.add_argument("--model", default="m8_K20")
    parser.add_argument("--methods", nargs="+", default=["mapk", "epll"])
    args = parser.parse_args()
    folder = os.path.join(args.results, args.dataset, f"paired_s{args.key}")
    corrupted = os.path.join(folder, "corrupted.h5")
    arrays, attrs = read_h5(corrupted, "corrupted")
    observed = np.load(os.path.join(args.set, "observed.npy"))
    y = observed[[int(i) for i in attrs["ids"]]]
    oracle_dir = os.path.join(folder, "oracle")
    os.makedirs(oracle_dir, exist_ok=True)
    oracle = os.path.join(oracle_dir, "corrupted.h5")
    oracle_file(corrupted, observed, args.sigma, oracle, seed=0)
    gmm = os.path.join(args.results, args.dataset, "gmm", f"{args.model}.h5")
    estimate = float(attrs["noise_sigma"])
    row = [f"{args.sigma:g}", f"{estimate:.4f} ({estimate / args.sigma - 1:+.1%})",
           f"{np.sqrt(np.mean((arrays['corrupted'] - y) ** 2)):.4f}"]
    for method in args.methods:
        restored = os.path.join(folder, args.model, f"{method}.h5")
        r_arrays, r_attrs = read_h5(restored, "restored")
        out = os.path.join(oracle_dir, f"{method}.h5")
        cmd = [sys.executable, os.path.join(ROOT, "scripts", "restore_images.py"),
               "--corrupted", oracle, "--gmm", gmm, "--method", method, "--out", out,
               "--quiet", *restore_options(json.loads(r_attrs["params"]))]
        subprocess.run(cmd, check=True)
        est = float(psnr(arrays["clean"], r_arrays["restored"]).mean())
        ora = float(psnr(arrays["clean"], read_h5(out, "restored")[0]["restored"]).mean())
        row += [f"{est:.2f}", f"{ora:.2f}", f"{est - ora:+.2f}"]
    print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    main()
