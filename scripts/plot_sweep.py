#!/usr/bin/env python3
"""Figures: mean PSNR (95% CI) against a sweep parameter, one line per method."""

from __future__ import annotations

import csv
import sys

import _bootstrap  # noqa: F401  (puts src/ on sys.path)

from gmmrestore import cli
from gmmrestore.h5io import GmmRestoreError
from gmmrestore.plots import plot_sweep, save_figure

PARAMETERS = ("noise_sigma", "n_components", "patch_size")


def main(argv=None) -> None:
    parser = cli.make_parser(__doc__)
    parser.add_argument("--metrics", required=True, help="metrics CSV from collect_metrics.py")
    parser.add_argument("--parameter", required=True, choices=PARAMETERS)
    parser.add_argument("--out", required=True, help="output PNG")
    args = parser.parse_args(argv)
    cli.setup_logging(args.quiet)

    with open(args.metrics, newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    if not rows:
        raise GmmRestoreError(f"{args.metrics}: no rows")
    save_figure(plot_sweep(rows, args.parameter), args.out)


if __name__ == "__main__":
    sys.exit(cli.run(main))
