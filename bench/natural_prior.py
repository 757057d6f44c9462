"""Train EPLL's natural-image prior: K zero-mean full-covariance components over 8x8
patches with the DC removed, by the project's EM (:func:`gmmrestore.gmm.fit_gmm`) on
Train400 patches.

The last ``--n-val`` images of Train400 (sorted by name) are held out for validation: their
patches never train; ``--n-heldout`` of them are scored after every EM iteration.  Training
patches are drawn uniformly over (image, position) and every second one is taken from the
transposed image, which makes the prior transpose-symmetric.  A snapshot of the mixture is
written every ``--snapshot-every`` iterations (same file, atomically), so that a long fit can
be used while it runs.

Usage::

    python bench/natural_prior.py --train-dir /work/shared/data/natural/Train400 \
        --n-patches 400000 --out scratch/prior_400k.h5
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time

import numpy as np

from gmmrestore.datasets import read_image
from gmmrestore.gmm import EMSettings, FitHistory, fit_gmm, save_gmm
from gmmrestore.patches import extract_patches


def image_files(folder: str) -> list[str]:
    """PNG files of ``folder``, sorted by name."""
    return sorted(os.path.join(folder, f) for f in os.listdir(folder) if f.endswith(".png"))


def sample_patches(images: list[np.ndarray], n: int, m: int, rng: np.random.Generator,
                   transpose_half: bool = True) -> np.ndarray:
    """``n`` m x m patches drawn uniformly over (image, position), as (n, m*m) float64;
    with ``transpose_half`` every second patch is transposed."""
    per_image = np.array([(im.shape[0] - m + 1) * (im.shape[1] - m + 1) for im in images])
    flat = rng.choice(per_image.sum(), size=n, replace=n > per_image.sum())
    which = np.searchsorted(np.cumsum(per_image), flat, side="right")
    out = np.empty((n, m, m))
    for i, im in enumerate(images):
        rows = np.flatnonzero(which == i)
        if not len(rows):
            continue
        all_patches = extract_patches(im[None], m).reshape(-1, m, m)  # (n_pos, m, m)
        start = per_image[:i].sum()
        out[rows] = all_patches[flat[rows] - start]
    if transpose_half:
        out[1::2] = out[1::2].transpose(0, 2, 1)
    return out.reshape(n, m * m)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--train-dir", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--n-patches", type=int, default=400_000)
    p.add_argument("--n-val", type=int, default=20)
    p.add_argument("--n-heldout", type=int, default=20_000)
    p.add_argument("--patch-size", type=int, default=8)
    p.add_argument("--n-components", type=int, default=200)
    p.add_argument("--max-iter", type=int, default=60)
    p.add_argument("--tol", type=float, default=1e-5)
    p.add_argument("--reg-covar", type=float, default=1e-6)
    p.add_argument("--dtype", default="float32")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--snapshot-every", type=int, default=5)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    files = image_files(args.train_dir)
    train = [read_image(f) for f in files[:-args.n_val]]
    val = [read_image(f) for f in files[-args.n_val:]]
    rng = np.random.default_rng(args.seed)
    m = args.patch_size
    X = sample_patches(train, args.n_patches, m, rng)
    H = sample_patches(val, args.n_heldout, m, rng)
    attrs = {"source": "Train400", "train_images": len(train), "val_images": len(val),
             "val_first": os.path.basename(files[-args.n_val]), "n_patches": args.n_patches,
             "transpose_augmented": True, "remove_dc": True, "patch_size": m}
    t0 = time.perf_counter()

    def snapshot(run, it, gmm, ll):
        if it % args.snapshot_every == 0:
            save_gmm(args.out, gmm, None, dict(attrs, snapshot_iteration=it, loglik_train=ll,
                                               em_seconds=time.perf_counter() - t0))

    settings = EMSettings(max_iter=args.max_iter, tol=args.tol, reg_covar=args.reg_covar,
                          seed=args.seed, dtype=args.dtype, remove_dc=True)
    gmm, hist = fit_gmm(X, args.n_components, settings, heldout=H, callback=snapshot)
    seconds = time.perf_counter() - t0
    assert isinstance(hist, FitHistory)
    save_gmm(args.out, gmm, hist, dict(attrs, em_seconds=seconds))
    print(json.dumps({"out": args.out, "n_patches": args.n_patches, "n_iter": hist.n_iter,
                      "em_seconds": round(seconds, 1),
                      "loglik_train": float(hist.loglik_train[-1]),
                      "loglik_heldout": float(hist.loglik_heldout[-1])}))


if __name__ == "__main__":
    sys.exit(main())
