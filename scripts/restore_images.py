#!/usr/bin/env python3
"""Restore corrupted images with a trained GMM patch prior: MAP-k (the seed's rule) or EPLL.

Method epll_image_prior is EPLL with a second mixture over whole images (train_gmm.py
--images, given as --image-gmm) added to every image step (docs/results.md, MNIST).

The methods (--method) and the function each calls are the GMM methods of
gmmrestore.restore.registry; --plugin imports a module that registers more.

The blur used is the true kernel stored in the corrupted file, or, for blind restoration,
the kernels estimated by estimate_kernel.py (--kernel-file): every image is restored with
the kernel of its own batch (`batch_kernels[batch_index[i]]`; a file with one `kernel` only
gives that kernel to every image).  A blind restoration never reads the true kernel, its
patch matrix or the clean test images from the corrupted file.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time

import numpy as np

import _bootstrap  # noqa: F401  (puts src/ on sys.path)

from gmmrestore import cli
from gmmrestore.deconv.estimates import estimated_kernels
from gmmrestore.gmm import WHOLE_IMAGE_PRIOR, load_gmm
from gmmrestore.h5io import GmmRestoreError, write_h5
from gmmrestore.operators import kernel_from_patch_matrix, patch_blur_matrix, validate_kernel
from gmmrestore.restore import registry
from gmmrestore.restore.epll import WEIGHTINGS, ImagePrior, check_unsharp_parameters
from gmmrestore.restore.inputs import corrupted_setting, read_corrupted
from gmmrestore.restore.mapk import boundary_noise_covariance, check_position_weight_power
from gmmrestore.restore.settings import (
    EPLL_INITS,
    EpllSettings,
    ImagePriorSettings,
    MapkSettings,
)

log = logging.getLogger("gmmrestore.restore_images")


def true_blur(arrays: dict, m: int) -> tuple[np.ndarray | None, np.ndarray]:
    """The true image-level kernel (or None if only a non-convolution patch matrix is
    known) and the m² x m² patch matrix for MAP-k."""
    patch_matrix = arrays.get("patch_matrix")
    kernel = arrays.get("kernel")
    if kernel is None and patch_matrix is not None:
        m_w = int(round(np.sqrt(len(patch_matrix))))
        try:
            kernel = kernel_from_patch_matrix(patch_matrix, m_w)
        except GmmRestoreError:
            kernel = None
    if patch_matrix is not None and len(patch_matrix) == m * m:
        return kernel, patch_matrix
    if kernel is None:
        raise GmmRestoreError("the corrupted file has neither a kernel nor a patch matrix of "
                              f"size {m * m}x{m * m} for patch size m={m}")
    kernel = validate_kernel(kernel, name="kernel")
    return kernel, patch_blur_matrix(kernel, m)


def load_image_prior(args, image_shape: tuple[int, int]) -> ImagePrior | None:
    """The whole-image prior of a method that needs one (registry: 'image_gmm', e.g.
    epll_image_prior; None for the other methods); checks it was trained on images of
    ``image_shape``."""
    if "image_gmm" not in registry.get_method(args.method).needs:
        if args.image_gmm:
            users = registry.method_names(needs="image_gmm")
            raise GmmRestoreError(f"--image-gmm is used by method {', '.join(users)} only, "
                                  f"not {args.method}")
        return None
    if not args.image_gmm:
        raise GmmRestoreError(f"method {args.method} needs --image-gmm (a whole-image "
                              "mixture from train_gmm.py --images)")
    if not args.image_prior_weight > 0:
        raise GmmRestoreError(f"--image-prior-weight must be > 0, got "
                              f"{args.image_prior_weight}")
    gmm, attrs = load_gmm(args.image_gmm)
    trained_on = attrs.get("image_shape")
    if attrs.get("prior") != WHOLE_IMAGE_PRIOR or trained_on is None:
        raise GmmRestoreError(f"--image-gmm {args.image_gmm} is not a whole-image mixture "
                              f"(attribute prior '{WHOLE_IMAGE_PRIOR}' missing; train it with "
                              "train_gmm.py --images)")
    if tuple(int(v) for v in trained_on) != tuple(image_shape):
        raise GmmRestoreError(
            f"--image-gmm {args.image_gmm} was trained on {trained_on[0]} x {trained_on[1]} "
            f"images, the corrupted images are {image_shape[0]} x {image_shape[1]}")
    log.info("whole-image prior: K=%d over %d x %d pixels, weight %g", gmm.n_components,
             *image_shape, args.image_prior_weight)
    return ImagePrior(gmm)


def plugin_args(argv) -> list[str]:
    """The --plugin options of ``argv``, read before the others: their methods are
    --method choices."""
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--plugin", action="append", default=[])
    return pre.parse_known_args(argv)[0].plugin


# options of the methods' settings (gmmrestore.restore.settings), defaults from there
SETTING_OPTIONS = {
    "--position-weight-power": (MapkSettings, "position_weight_power", dict(
        type=float, help="MAP-k: overlapping patch estimates of a pixel are averaged with "
                         "weights (posterior variance at the pixel's position in the "
                         "patch)^-power; 0 is the seed's plain mean (power chosen on "
                         "validation digits, docs/results.md)")),
    "--beta-factors": (EpllSettings, "beta_factors", dict(
        type=float, nargs="+", help="EPLL: beta schedule in units of 1/sigma^2")),
    "--lam-factor": (EpllSettings, "lam_factor", dict(
        type=float, help="EPLL: data weight lam = factor * d / sigma^2")),
    "--n-inner": (EpllSettings, "n_inner", dict(type=int, help="EPLL: iterations per beta")),
    "--epll-init": (EpllSettings, "init", dict(
        choices=EPLL_INITS,
        help="EPLL: starting image ('mapk': MAP-k with the plain mean, a better start for "
             "EPLL on validation digits than the weighted one)")),
    "--init-sharpen": (EpllSettings, "init_sharpen", dict(
        type=float, help="EPLL: unsharp-mask amount applied to the starting image, "
                         "x + amount (x - G x); 0 starts from it as it is (amount chosen on "
                         "validation digits, docs/model.md 'Where EPLL starts')")),
    "--init-sharpen-std": (EpllSettings, "init_sharpen_std", dict(
        type=float, help="EPLL: standard deviation in pixels of the Gaussian G of the "
                         "unsharp mask")),
    "--weighting": (EpllSettings, "weighting", dict(
        choices=WEIGHTINGS, help="EPLL image step: average: each pixel's patch estimates "
                                 "averaged and weighted as an interior pixel's (the "
                                 "published rule; borders as the interior); exact: "
                                 "unweighted sum")),
    "--image-prior-weight": (ImagePriorSettings, "weight", dict(
        type=float, help="epll_image_prior: weight of the whole-image term in each image "
                         "step, in units of one patch's (chosen on validation digits)")),
}


def build_parser():
    parser = cli.make_parser(__doc__)
    parser.add_argument("--corrupted", required=True, help="HDF5 from corrupt_images.py")
    parser.add_argument("--gmm", required=True, help="HDF5 from train_gmm.py")
    parser.add_argument("--method", required=True, choices=registry.method_names("gmm"),
                        help="a GMM method of gmmrestore.restore.registry")
    parser.add_argument("--plugin", action="append", default=[],
                        help="a module (path such as mypkg.methods, or a .py file) whose "
                             "import registers more methods (repeatable)")
    parser.add_argument("--out", required=True, help="output HDF5 (kind 'restored')")
    parser.add_argument("--kernel-file", default=None,
                        help="estimated kernel (HDF5 from estimate_kernel.py) used instead of "
                             "the true one")
    parser.add_argument("--method-label", default=None,
                        help="name recorded for the method (default: --method, plus '-blind' "
                             "with --kernel-file)")
    parser.add_argument("--boundary-model", choices=("covariance", "none"), default="covariance",
                        help="MAP-k: 'covariance' treats the blur from pixels outside a patch as "
                             "structured noise, its covariance measured on the clean validation "
                             "images; 'none' is the seed's model (y = W z + n exactly)")
    for flag, (settings, name, options) in SETTING_OPTIONS.items():
        parser.add_argument(flag, default=getattr(settings(), name), **options)
    parser.add_argument("--image-gmm", default=None,
                        help="epll_image_prior: the whole-image mixture (HDF5 from "
                             "train_gmm.py --images, trained on images of the test images' "
                             "size)")
    parser.add_argument("--no-clip", dest="clip", action="store_false",
                        help="keep the raw restoration instead of clipping it to [0, 1] (the "
                             "known intensity range, as the baselines do); EPLL clips every "
                             "image update unless this is given")
    parser.add_argument("--images-per-chunk", type=int, default=64,
                        help="images processed at once (bounds memory)")
    return parser


def check_options(args) -> None:
    """The method settings' ranges, as errors naming the options."""
    try:
        check_position_weight_power(args.position_weight_power)
    except ValueError as err:
        raise GmmRestoreError(f"--position-weight-power: {err}") from None
    try:
        check_unsharp_parameters(args.init_sharpen, args.init_sharpen_std)
    except ValueError as err:
        raise GmmRestoreError(f"--init-sharpen / --init-sharpen-std: {err}") from None


def load_patch_gmm(path: str, images: np.ndarray, images_path: str):
    """The patch prior of --gmm and its attributes; checks it is a patch prior whose patch
    size fits the corrupted images (n, H, W) of ``images_path``."""
    gmm, gmm_attrs = load_gmm(path)
    if gmm_attrs.get("prior") == WHOLE_IMAGE_PRIOR or gmm_attrs.get("patch_size") == "none":
        raise GmmRestoreError(f"--gmm {path} is not a patch prior (a whole-image "
                              "mixture goes to --image-gmm)")
    m = int(gmm_attrs["patch_size"])
    if m > min(images.shape[1:]):
        raise GmmRestoreError(f"patch size m={m} of {path} is larger than the images "
                              f"{images.shape[1:]} of {images_path}")
    return gmm, gmm_attrs


def kernel_groups(args, arrays: dict, m: int) -> list[tuple]:
    """(kernel, patch matrix (m², m²), indices of the images) of every blur to restore with:
    the estimated batch kernels of --kernel-file, or the true blur for all images."""
    n = len(arrays["corrupted"])
    if args.kernel_file:
        return [(kernel, patch_blur_matrix(kernel, m), members)
                for kernel, members in estimated_kernels(args.kernel_file, n)]
    return [(*true_blur(arrays, m), np.arange(n))]


def boundary_term(args, arrays: dict, kernel, W, m: int, sigma: float, params: dict):
    """MAP-k's boundary noise covariance (m², m²) with --boundary-model covariance, or None
    (and ``params["boundary_model"]`` set to 'none' when it cannot be measured)."""
    if args.boundary_model != "covariance":
        return None
    val_clean = arrays.get("val_clean")
    if kernel is None or val_clean is None or len(val_clean) == 0:
        log.warning("no kernel or no clean validation images in %s: MAP-k uses the "
                    "seed's patch model without the boundary term", args.corrupted)
        params["boundary_model"] = "none"
        return None
    extra_cov = boundary_noise_covariance(val_clean, kernel, W, m)
    log.info("boundary term: rms %.4g per pixel (noise sigma %.4g), from %d "
             "validation images", np.sqrt(np.trace(extra_cov) / (m * m)), sigma,
             len(val_clean))
    return extra_cov


def write_restored(args, restored: np.ndarray, label: str, setting: dict, gmm_attrs: dict,
                   n_components: int, params: dict, seconds: float) -> None:
    """The 'restored' HDF5 file of --out."""
    kernel_source = "estimated" if args.kernel_file else "true"
    write_h5(
        args.out, "restored", {"restored": restored},
        attrs={"method": label, "base_method": args.method, "kernel_source": kernel_source,
               "patch_size": int(gmm_attrs["patch_size"]), "n_components": n_components,
               "remove_dc": bool(gmm_attrs.get("remove_dc", False)),
               **setting, "corrupted_file": args.corrupted,
               "gmm_file": args.gmm, "kernel_file": args.kernel_file or "",
               "params": json.dumps(params), "seconds": seconds,
               "images_per_s": len(restored) / max(seconds, 1e-9)},
        dataset_attrs={"restored": {"description": f"test images restored by {label}",
                                    "units": "intensity, [0, 1] scale" + (
                                        ", clipped to [0, 1]" if args.clip else
                                        ", not clipped")}},
    )


def main(argv=None) -> None:
    registry.load_plugins(plugin_args(argv))
    args = build_parser().parse_args(argv)
    cli.setup_logging(args.quiet)
    check_options(args)
    arrays, attrs = read_corrupted(args.corrupted, blind=bool(args.kernel_file),
                                   required=("clean",))
    corrupted = arrays["corrupted"]
    gmm, gmm_attrs = load_patch_gmm(args.gmm, corrupted, args.corrupted)
    image_prior = load_image_prior(args, corrupted.shape[1:])
    m = int(gmm_attrs["patch_size"])
    remove_dc = bool(gmm_attrs.get("remove_dc", False))
    # the component choice in the precision the prior was trained in
    score_dtype = "float32" if gmm_attrs.get("dtype") == "float32" else "float64"
    setting = corrupted_setting(attrs)
    sigma = setting["noise_sigma"]
    n = len(corrupted)
    groups = kernel_groups(args, arrays, m)
    # a camera's blur (corrupt stage --boundary valid): EPLL restores the larger scene
    boundary = setting["boundary"]
    label = args.method_label or args.method + ("-blind" if args.kernel_file else "")
    started = time.perf_counter()
    done = 0

    def progress(finished: int, total: int) -> None:
        rate = (done + finished) / max(time.perf_counter() - started, 1e-9)
        log.info("%s: %d/%d images (%.1f images/s)", label, done + finished, n, rate)

    spec = registry.get_method(args.method)
    params: dict = {"images_per_chunk": args.images_per_chunk,
                    "boundary_model": args.boundary_model, "clip": args.clip,
                    "score_dtype": score_dtype}
    if args.kernel_file:
        params["kernels"] = len(groups)  # one per batch of the estimate
    params.update(spec.params(args, boundary))
    if image_prior is not None:
        params.update(image_gmm=args.image_gmm, image_prior_weight=args.image_prior_weight,
                      image_prior_components=len(image_prior.log_weights))
    parts = []
    for number, (kernel, W, members) in enumerate(groups):
        if len(groups) > 1:
            log.info("kernel %d/%d (batch %d of the estimate): %d images", number + 1,
                     len(groups), number, len(members))
        problem = registry.GmmProblem(
            images=corrupted[members], gmm=gmm, kernel=kernel, patch_matrix=W, sigma=sigma,
            patch_size=m, remove_dc=remove_dc,
            extra_noise_cov=boundary_term(args, arrays, kernel, W, m, sigma, params),
            boundary=boundary, image_prior=image_prior, options=args, progress=progress,
            score_dtype=score_dtype)
        parts.append(spec.function(problem))
        done += len(members)
    restored = np.empty(corrupted.shape, dtype=np.result_type(*parts))
    for (_, _, members), part in zip(groups, parts, strict=True):
        restored[members] = part
    if args.clip:
        restored = np.clip(restored, 0.0, 1.0)
    seconds = time.perf_counter() - started
    if not np.all(np.isfinite(restored)):
        raise GmmRestoreError(f"{label}: restoration produced NaN or Inf; nothing written")
    write_restored(args, restored, label, setting, gmm_attrs, gmm.n_components, params,
                   seconds)
    log.info("%s restored %d images in %.1f s -> %s", label, n, seconds, args.out)


if __name__ == "__main__":
    sys.exit(cli.run(main))
