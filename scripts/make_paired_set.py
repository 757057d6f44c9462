#!/usr/bin/env python3
"""Write a paired set in the seed's format from clean images, to try the paired source.

Takes the first --n images of one split of a dataset file (download_dataset.py), blurs
them with a Gaussian kernel ('same' size, zero boundary), adds seeded Gaussian noise
--sigma and writes --out/original/<id>.png (the clean image, 8 bits),
--out/corrupted/<id>.png (8 bits; with --rescale minmax, the default, each image is
min-max rescaled to [0, 255] as the seed's author did; with none it is clipped to
[0, 1]) and --out/W.npy (the m^2 x m^2 patch matrix of the kernel, float64). The
folder is built under a temporary name and renamed when complete.
"""

from __future__ import annotations

import logging
import os
import shutil
import sys
import tempfile

import numpy as np

import _bootstrap  # noqa: F401  (puts src/ on sys.path)

from gmmrestore import cli, datasets
from gmmrestore.h5io import GmmRestoreError
from gmmrestore.operators import blur, gaussian_kernel, patch_blur_matrix

log = logging.getLogger("gmmrestore.make_paired_set")


def to_uint8(images: np.ndarray, rescale: str) -> np.ndarray:
    """8-bit PNG values: per-image min-max rescale, or clip to [0, 1]."""
    x = np.asarray(images, dtype=np.float64)
    if rescale == "minmax":
        low = x.min(axis=(1, 2), keepdims=True)
        span = np.maximum(x.max(axis=(1, 2), keepdims=True) - low, 1e-12)
        x = (x - low) / span
    return np.rint(np.clip(x, 0.0, 1.0) * 255).astype(np.uint8)


def write_folder(out: str, originals: np.ndarray, corrupted: np.ndarray, W: np.ndarray,
                 observed: np.ndarray | None = None) -> None:
    """original/<i>.png, corrupted/<i>.png and W.npy (and, when given, the true float
    observations as observed.npy) in a temporary folder, renamed to ``out`` when complete
    (an existing ``out`` is replaced only then)."""
    import skimage.io

    parent = os.path.dirname(os.path.abspath(out))
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=f".{os.path.basename(out)}.", dir=parent)
    try:
        for sub, images in (("original", originals), ("corrupted", corrupted)):
            os.mkdir(os.path.join(tmp, sub))
            for i, image in enumerate(images):
                skimage.io.imsave(os.path.join(tmp, sub, f"{i}.png"), image,
                                  check_contrast=False)
        np.save(os.path.join(tmp, "W.npy"), W)
        if observed is not None:
            np.save(os.path.join(tmp, "observed.npy"), observed)
        os.chmod(tmp, 0o755)
        if os.path.exists(out):
            old = tempfile.mkdtemp(prefix=f".{os.path.basename(out)}.old.", dir=parent)
            os.rename(out, os.path.join(old, "set"))
            os.rename(tmp, out)
            shutil.rmtree(old)
        else:
            os.rename(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def main(argv=None) -> None:
    parser = cli.make_parser(__doc__)
    parser.add_argument("--dataset", required=True, help="dataset HDF5 (kind 'dataset')")
    parser.add_argument("--split", choices=datasets.SPLITS, default="test",
                        help="split whose images become the originals (keep it disjoint "
                             "from the images the GMM is trained on)")
    parser.add_argument("--out", required=True, help="paired set folder to create")
    parser.add_argument("--n", type=int, default=20, help="number of pairs (first N images)")
    parser.add_argument("--patch-size", type=int, default=8, help="m of the m^2 x m^2 W")
    parser.add_argument("--kernel-size", type=int, default=5, help="Gaussian kernel size (odd)")
    parser.add_argument("--kernel-std", type=float, default=1.0, help="Gaussian std, pixels")
    parser.add_argument("--sigma", type=float, default=0.1,
                        help="noise std on the [0, 1] scale, before the rescale")
    parser.add_argument("--rescale", choices=("minmax", "none"), default="minmax",
                        help="how observations become 8-bit PNG values")
    parser.add_argument("--seed", type=int, default=0, help="seed of the noise")
    parser.add_argument("--save-observations", action="store_true",
                        help="also write the true observations y = W z + n (float, before "
                             "the rescale and the 8-bit rounding) as observed.npy, to "
                             "compare restorations with an oracle calibration")
    parser.add_argument("--force", action="store_true", help="replace an existing --out")
    args = parser.parse_args(argv)
    cli.setup_logging(args.quiet)

    if os.path.exists(args.out) and not args.force:
        raise GmmRestoreError(f"{args.out}: already exists (use --force to replace it)")
    if not np.isfinite(args.sigma) or args.sigma < 0:
        raise GmmRestoreError(f"--sigma {args.sigma}: must be finite and >= 0")
    arrays, _ = datasets.load_dataset_file(args.dataset)
    images = arrays[args.split]
    if not 1 <= args.n <= len(images):
        raise GmmRestoreError(f"--n {args.n}: the {args.split} split of {args.dataset} holds "
                              f"{len(images)} images")
    originals = np.rint(np.asarray(images[: args.n], dtype=np.float64) * 255) / 255
    kernel = gaussian_kernel(args.kernel_size, args.kernel_std)
    W = patch_blur_matrix(kernel, args.patch_size)
    rng = np.random.default_rng(args.seed)
    observed = blur(originals, kernel) + args.sigma * rng.standard_normal(originals.shape)
    write_folder(args.out, to_uint8(originals, "none"), to_uint8(observed, args.rescale), W,
                 observed if args.save_observations else None)
    log.info("wrote %s: %d pairs of %dx%d from %s (%s), %dx%d Gaussian std %g, W %dx%d, "
             "sigma %g, rescale %s", args.out, args.n, *originals.shape[1:], args.dataset,
             args.split, args.kernel_size, args.kernel_size, args.kernel_std, W.shape[0],
             W.shape[1], args.sigma, args.rescale)


if __name__ == "__main__":
    sys.exit(cli.run(main))
