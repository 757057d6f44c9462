#!/usr/bin/env python3
"""Blind deblurring of photographs with synthetic camera shake (issue 21).

Cases: sharp scenes from ``--set train`` (Train400, 180x180: development and tuning) or
``--set test`` (BSD68: acceptance only, never for tuning), ``--images`` of them (seeded
choice), each with ``--kernels`` camera-shake kernels (``operators.camera_shake_kernel``,
odd sizes spread over 13..27, seeded).  As a camera makes them: a scene crop of
(crop + s - 1)^2 at a seeded position, full convolution's valid centre
(``operators.blur_valid``) -> crop^2, Gaussian noise sigma 0.01, 8-bit quantisation; the
clean reference is the scene under the photograph.  ``--set train-wide`` (development):
every fifth of the first 380 Train400 images (76 scenes), each whole with one kernel, sizes
cycling through 13, 15, ..., 27 (``--images``, ``--kernels``, ``--crop`` and ``--seed`` do
not apply); ``--offset`` 1-4 takes the 76 scenes ``offset`` places later instead (kernel
seeds 7100 * offset + i), more development cases on other scenes.  ``--set test-wide``
(evaluation only, run after every choice is made): all 68 BSD68 photographs, a centre crop
of ``--crop`` (255) each with one kernel, sizes cycling the same way; a larger sample of
photographs than ``--set test``'s four.  ``--set train-hard``
(development): the six Train400 scenes of ``HARD_TRAIN_IMAGES`` (the wide set's cases above
ratio 3 with the default estimator), each whole with all 8 sizes 13..27 (kernel seeds
9000 + 10 i + j): harder than ``train-wide``, made of development images only;
``--scenes`` puts other Train400 scenes in their place (e.g. a set chosen by an image
statistic).  ``--set workflow`` (evaluation only): the photographs of a workflow run
(``--workflow``, a dataset's results folder such as ``results/blind_natural/bsd_blind``),
every ``*/corrupted.h5`` of a camera's (valid) boundary with its clean frames and true kernel:
the workflow's own cases, so that the methods it does not run (the seed's Gaussian prior, the
fixed blob) are scored on exactly its 32 of ``configs/blind_natural.yaml``.

Methods, side by side on the same cases (the estimator knows the kernel SIZE only):

* ``sparse``: :func:`gmmrestore.deconv.estimate_kernel_sparse` (valid model, sparse
  gradient prior, variational EM);
* ``l0``: :func:`gmmrestore.deconv.l0map.estimate_kernel_l0` (valid model, L0 gradient
  prior, alternating MAP);
* ``tv``: :func:`gmmrestore.deconv.tvmap.estimate_kernel_tv` (valid model, TV alternating
  descent, then L0 alternations on the photograph; ``'{"refine_iter": 0}'`` for TV alone);
* ``tv_judged``: :func:`gmmrestore.deconv.judge.estimate_kernel_tv_judged` (the TV estimator
  once per weight growth of ``--judge``'s ``lam_factors``, two at a time, the candidate kept
  by the natural-patch GMM of ``--judge-gmm``, e.g. the workflow's
  ``results/blind_natural/bsd_blind/gmm/m8_K50.h5``);
* ``gaussian``: the seed's :func:`gmmrestore.deconv.estimate_kernel` (Gaussian gradient
  prior, std 0.07, zero-boundary model);
* ``blob``: no estimation, an isotropic Gaussian of std (s - 1) / 4 (the floor);
* ``true_blurred``: no estimation, the true kernel blurred by a Gaussian of std 1 px (a
  fixed small kernel error): how sensitive each case's error ratio is to the kernel.

Every restoration, including the one with the true kernel, is the same hyper-Laplacian
deconvolution (:func:`gmmrestore.deconv.deconvolve_sparse`); the error ratio is computed
after the best integer shift (``shifted_error_ratio``, border 10, shifts up to 3), the
kernel error after the best shift.  With ``--epll-gmm FILE`` every case is also scored as
the workflow scores it (``epll_ratio``): EPLL with that GMM and the ``restore`` settings
of ``--epll-config`` (default ``configs/blind_natural.yaml``: its beta schedule, start and
clipping), valid boundary, both restorations clipped to [0, 1]; EPLL's true-kernel
restoration is sharper than the hyper-Laplacian one, so the same kernel scores a higher
ratio (docs/results.md).  Prints one line per case and method, a summary (success
at ratio <= 2 and <= 3, mean kernel error, median seconds), and ends with one JSON line.
``--fit-prior`` instead refits the derivative mixture on Train400 and prints it.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import sys
import time

import numpy as np
from scipy import signal

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir)
sys.path.insert(0, os.path.join(ROOT, "src"))

from gmmrestore import deconv  # noqa: E402
from gmmrestore.configcheck import schema_defaults  # noqa: E402
from gmmrestore.datasets import read_image  # noqa: E402
from gmmrestore.datasets.bsd import centre_crop  # noqa: E402
from gmmrestore.deconv import judge, l0map, nonblind, sparse, sparse_pyramid, tvmap  # noqa: E402
from gmmrestore.deconv.scores import shifted_error_ratio, success_rates  # noqa: E402
from gmmrestore.deconv.valid import crop_centre  # noqa: E402
from gmmrestore.gmm.io import load_patch_prior  # noqa: E402
from gmmrestore.h5io import read_h5  # noqa: E402
from gmmrestore.operators import (  # noqa: E402
    blur_valid,
    camera_shake_kernel,
    gaussian_kernel,
    quantize,
)
from gmmrestore.restore.epll import epll_restore  # noqa: E402
from gmmrestore.restore.settings import EpllSettings  # noqa: E402

DATA = "/work/shared/data/natural"
SIGMA = 0.01


def observe(scene: np.ndarray, kernel: np.ndarray, seed: int) -> np.ndarray:
    """The camera's photograph of ``scene``: valid blur, noise of ``seed``, 8 bits."""
    shape = tuple(n - s + 1 for n, s in zip(scene.shape, kernel.shape, strict=True))
    noise = np.random.default_rng(seed).standard_normal(shape)
    return quantize(blur_valid(scene, kernel) + SIGMA * noise, 8)


SIZES = range(13, 28, 2)
#: ``--set train-hard``: the Train400 scenes whose ``--set train-wide`` case scored above 3
#: with the default estimator (TV refined by L0, 2026-12-05).
HARD_TRAIN_IMAGES = ("test_036.png", "test_091.png", "test_111.png", "test_116.png",
                     "test_211.png", "test_336.png")


def make_case(name: str, scene: np.ndarray, s: int, kseed: int) -> dict:
    """One case: ``scene`` (H + s - 1, W + s - 1) photographed through the camera-shake
    kernel of size ``s`` and seed ``kseed`` (:func:`observe`)."""
    k = camera_shake_kernel(s, seed=kseed)
    return {"image": name, "size": s, "kernel_seed": kseed, "y": observe(scene, k, kseed),
            "clean": crop_centre(scene, s), "kernel": k}


def make_wide_cases(args) -> list[dict]:
    """``--set train-wide`` and ``--set test-wide`` (module docstring)."""
    if args.set == "train-wide":
        files = sorted(glob.glob(os.path.join(args.data, "Train400", "*.png")))
        files = files[args.offset:380:5]
        first_seed = 7100 * args.offset if args.offset else 7000
    else:
        files = sorted(glob.glob(os.path.join(args.data, "BSD68", "*.png")))
        first_seed = 8000
    cases = []
    for ii, path in enumerate(files):
        s, kseed = SIZES[ii % len(SIZES)], first_seed + ii
        scene = read_image(path)
        if args.set == "test-wide":
            scene = centre_crop(scene, args.crop + s - 1, os.path.basename(path))
        cases.append(make_case(os.path.basename(path), scene, s, kseed))
    return cases


def make_hard_cases(args) -> list[dict]:
    """``--set train-hard`` (module docstring)."""
    scenes = ",".join(HARD_TRAIN_IMAGES) if args.scenes is None else args.scenes
    cases = []
    for ii, name in enumerate(scenes.split(",")):
        scene = read_image(os.path.join(args.data, "Train400", name))
        cases += [make_case(name, scene, s, 9000 + 10 * ii + kj) for kj, s in enumerate(SIZES)]
    return cases


def make_workflow_cases(args) -> list[dict]:
    """``--set workflow`` (module docstring), by kernel size, then in the file's order."""
    cases = []
    for path in sorted(glob.glob(os.path.join(args.workflow, "*", "corrupted.h5"))):
        arrays, attrs = read_h5(path, "corrupted", ["clean", "corrupted", "kernel"])
        if attrs.get("boundary") != "valid":
            continue
        kernel, seed = arrays["kernel"], json.loads(attrs["blur_spec"]).get("seed")
        photographs = arrays["corrupted"]
        names = attrs.get("ids", [f"{attrs['blur']}[{i}]" for i in range(len(photographs))])
        cases += [{"image": str(name), "size": kernel.shape[0], "kernel_seed": seed, "y": y,
                   "clean": clean, "kernel": kernel}
                  for name, y, clean in zip(names, photographs, arrays["clean"], strict=True)]
    if not cases:
        raise SystemExit(f"--set workflow: no corrupted.h5 of a valid boundary under "
                         f"{args.workflow}/*/ (give --workflow a dataset's results folder, "
                         "e.g. results/blind_natural/bsd_blind)")
    return sorted(cases, key=lambda case: case["size"])


def make_cases(args) -> list[dict]:
    if args.set == "workflow":
        return make_workflow_cases(args)
    if args.set in ("train-wide", "test-wide"):
        return make_wide_cases(args)
    if args.set == "train-hard":
        return make_hard_cases(args)
    folder = {"train": "Train400", "test": "BSD68"}[args.set]
    files = sorted(glob.glob(os.path.join(args.data, folder, "*.png")))
    rng = np.random.default_rng(args.seed)
    chosen = sorted(rng.choice(len(files), size=args.images, replace=False))
    sizes = np.linspace(13, 27, args.kernels)
    sizes = [int(2 * round((v - 1) / 2) + 1) for v in sizes]
    cases = []
    for ii in chosen:
        scene = read_image(files[ii])
        for kj, s in enumerate(sizes):
            crop = min(args.crop, min(scene.shape) - s + 1)
            r0 = rng.integers(0, scene.shape[0] - (crop + s - 1) + 1)
            c0 = rng.integers(0, scene.shape[1] - (crop + s - 1) + 1)
            x = scene[r0:r0 + crop + s - 1, c0:c0 + crop + s - 1]
            kseed = int(args.seed * 1000 + ii * 10 + kj)
            cases.append(make_case(os.path.basename(files[ii]), x, s, kseed))
    return cases


def estimate(method: str, y: np.ndarray, s: int, settings,
             true_kernel: np.ndarray | None = None) -> np.ndarray:
    if method == "sparse":
        return sparse_pyramid.estimate_kernel_sparse(y, s, settings["sparse"])[0]
    if method == "l0":
        return l0map.estimate_kernel_l0(y, s, settings["l0"])[0]
    if method == "tv":
        return tvmap.estimate_kernel_tv(y, s, settings["tv"])[0]
    if method == "tv_judged":
        gmm, remove_dc = settings["judge_gmm"]
        return judge.estimate_kernel_tv_judged(y, s, gmm, settings["tv"], settings["judge"],
                                               remove_dc)[0]
    if method == "gaussian":
        return deconv.estimate_kernel(y, s, deconv.GaussianBlindSettings(prior_std=0.07))[0]
    if method == "blob":
        return gaussian_kernel(s, (s - 1) / 4)
    if method == "true_blurred":
        k = signal.convolve2d(true_kernel, gaussian_kernel(7, 1.0), mode="same")
        return k / k.sum()
    raise SystemExit(f"unknown method {method}")


def workflow_epll(gmm_path: str, config_path: str):
    """``restore(y, kernel) -> x`` (H, W): EPLL as the workflow of ``config_path`` runs it
    on a photograph (its ``restore.epll`` settings and ``restore.clip``, schema defaults for
    the keys it leaves out; valid boundary, noise SIGMA), clipped to [0, 1] as scored."""
    import yaml

    with open(os.path.join(ROOT, "schemas", "config.schema.yaml"), encoding="utf-8") as fh:
        schema = yaml.safe_load(fh)
    with open(config_path, encoding="utf-8") as fh:
        restore = (yaml.safe_load(fh) or {}).get("restore", {})
    epll = {**schema_defaults(schema, "restore", "epll"), **restore.get("epll", {})}
    settings = EpllSettings(**{**epll, "beta_factors": tuple(epll["beta_factors"])})
    clip = restore.get("clip", schema_defaults(schema, "restore")["clip"])
    gmm, remove_dc = load_patch_prior(gmm_path)

    def restore_image(y: np.ndarray, kernel: np.ndarray) -> np.ndarray:
        x = epll_restore(y[None], gmm, kernel, SIGMA, settings, remove_dc=remove_dc,
                         boundary="valid", clip=clip)[0]
        return np.clip(x, 0.0, 1.0)

    return restore_image


def run(args) -> dict:
    settings = {"sparse": sparse_pyramid.SparseSettings(**json.loads(args.sparse)),
                "l0": l0map.L0Settings(**json.loads(args.l0)),
                "tv": tvmap.TVSettings(**json.loads(args.tv)),
                "judge": judge.JudgeSettings(**{"n_workers": 2, **json.loads(args.judge)})}
    methods = args.methods.split(",")
    if "tv_judged" in methods:
        settings["judge_gmm"] = load_patch_prior(args.judge_gmm)
    epll = workflow_epll(args.epll_gmm, args.epll_config) if args.epll_gmm else None
    rows = []
    for case in make_cases(args)[:args.max_cases]:
        x_true = nonblind.deconvolve_sparse(case["y"], case["kernel"])
        epll_true = epll(case["y"], case["kernel"]) if epll else None
        for method in methods:
            t0 = time.perf_counter()
            k_est = estimate(method, case["y"], case["size"], settings, case["kernel"])
            seconds = time.perf_counter() - t0
            x_est = nonblind.deconvolve_sparse(case["y"], k_est)
            row = {"image": case["image"], "size": case["size"], "method": method,
                   "kernel_seed": case["kernel_seed"],
                   "kernel_error": deconv.kernel_error(k_est, case["kernel"]),
                   "error_ratio": shifted_error_ratio(x_est, x_true, case["clean"]),
                   "seconds": seconds}
            if epll:
                row["epll_ratio"] = shifted_error_ratio(epll(case["y"], k_est), epll_true,
                                                        case["clean"])
            rows.append(row)
            print(f"{row['image']} s={row['size']:2d} {method:8s} kernel error "
                  f"{row['kernel_error']:.3f} ratio {row['error_ratio']:6.2f} "
                  + (f"EPLL ratio {row['epll_ratio']:6.2f} " if epll else "")
                  + f"{seconds:6.1f} s", flush=True)
            if args.save_kernels:
                os.makedirs(args.save_kernels, exist_ok=True)
                np.savez(os.path.join(args.save_kernels, f"{case['image']}_{case['size']}_"
                                      f"{method}.npz"), true=case["kernel"], est=k_est)
    summary = {}
    for method in methods:
        mr = [r for r in rows if r["method"] == method]
        ratios = np.array([r["error_ratio"] for r in mr])
        summary[method] = {"cases": len(mr), **success_rates(ratios),
                           "mean_kernel_error": float(np.mean([r["kernel_error"] for r in mr])),
                           "median_ratio": float(np.median(ratios)),
                           "median_seconds": float(np.median([r["seconds"] for r in mr]))}
        if epll:
            epll_ratios = np.array([r["epll_ratio"] for r in mr])
            summary[method]["epll"] = {**success_rates(epll_ratios),
                                       "median_ratio": float(np.median(epll_ratios))}
        big = [r["seconds"] for r in mr if r["size"] == 27]
        if big:
            summary[method]["median_seconds_27"] = float(np.median(big))
    print("\nmethod    cases  ratio<=2  ratio<=3  mean kernel err  median s")
    for method, sm in summary.items():
        print(f"{method:8s} {sm['cases']:6d} {sm['le2']:9.2f} {sm['le3']:9.2f} "
              f"{sm['mean_kernel_error']:16.3f} {sm['median_seconds']:9.1f}")
        if "epll" in sm:
            print(f"  scored by EPLL: ratio<=2 {sm['epll']['le2']:.2f}  ratio<=3 "
                  f"{sm['epll']['le3']:.2f}  median ratio {sm['epll']['median_ratio']:.2f}")
    return {"set": args.set, "images": args.images, "kernels": args.kernels,
            "crop": args.crop, "seed": args.seed, "summary": summary, "cases": rows}


def fit_prior(args) -> dict:
    files = sorted(glob.glob(os.path.join(args.data, "Train400", "*.png")))
    d = np.concatenate([sparse.derivative_images(read_image(f)).ravel() for f in files])
    d = np.random.default_rng(args.seed).choice(d, 1_000_000, replace=False)
    mix = sparse.fit_scale_mixture(d, 4)
    return {"weights": np.round(mix.w, 4).tolist(), "stds": np.round(mix.s, 5).tolist(),
            "mean_log_likelihood": float(np.mean(mix.log_pdf(d)))}


def check_set_options(ap: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Exit with a usage error when ``--offset`` or ``--scenes`` is given for a set that
    would ignore it."""
    if args.offset and args.set != "train-wide":
        ap.error(f"--offset {args.offset} applies to --set train-wide only, not {args.set}")
    if args.scenes is not None and args.set != "train-hard":
        ap.error(f"--scenes applies to --set train-hard only, not {args.set}")
    if (args.workflow is not None) != (args.set == "workflow"):
        ap.error("--set workflow and --workflow DIR go together")
    if "tv_judged" in args.methods.split(",") and not args.judge_gmm:
        ap.error("method tv_judged needs --judge-gmm (a natural-patch GMM file)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--set", default="train",
                    choices=("train", "train-wide", "train-hard", "test", "test-wide", "workflow"))
    ap.add_argument("--workflow", default=None,
                    help="--set workflow's folder: a workflow run's dataset results, e.g. "
                    "results/blind_natural/bsd_blind")
    ap.add_argument("--images", type=int, default=4)
    ap.add_argument("--kernels", type=int, default=8)
    ap.add_argument("--crop", type=int, default=255)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--methods", default="sparse,gaussian,blob")
    ap.add_argument("--max-cases", type=int, default=None,
                    help="only the first N cases of the set (the same cases as the full run)")
    ap.add_argument("--offset", type=int, default=0, choices=range(5),
                    help="--set train-wide's scenes: Train400 files [offset:380:5]")
    ap.add_argument("--scenes", default=None,
                    help="--set train-hard's Train400 file names, comma-separated "
                    "(default: the six of HARD_TRAIN_IMAGES)")
    ap.add_argument("--data", default=DATA)
    ap.add_argument("--sparse", default="{}", help="SparseSettings fields as JSON "
                    '(e.g. \'{"eta_factors": [4, 2, 1]}\')')
    ap.add_argument("--l0", default="{}", help="L0Settings fields as JSON "
                    '(e.g. \'{"lam_min": 2e-3}\')')
    ap.add_argument("--tv", default="{}", help="TVSettings fields as JSON "
                    '(e.g. \'{"refine_iter": 0}\')')
    ap.add_argument("--judge", default="{}", help="JudgeSettings fields as JSON "
                    '(e.g. \'{"lam_factors": [1.9, 1.2]}\'; n_workers 2 by default)')
    ap.add_argument("--judge-gmm", default=None,
                    help="natural-patch GMM file (gmm HDF5) of method tv_judged")
    ap.add_argument("--epll-gmm", default=None,
                    help="also score every case by EPLL with this patch GMM (gmm HDF5), as "
                    "the workflow does (epll_ratio), e.g. the judge's GMM")
    ap.add_argument("--epll-config", default=os.path.join(ROOT, "configs", "blind_natural.yaml"),
                    help="workflow config whose restore settings --epll-gmm's EPLL uses "
                    "(default: configs/blind_natural.yaml)")
    ap.add_argument("--save-kernels", default=None, help="folder for true/estimated kernels")
    ap.add_argument("--fit-prior", action="store_true")
    args = ap.parse_args()
    check_set_options(ap, args)
    result = fit_prior(args) if args.fit_prior else run(args)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
