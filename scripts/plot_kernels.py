#!/usr/bin/env python3
"""Figure: the true blur kernel next to the one estimated blindly from the corrupted images."""

from __future__ import annotations

import sys

import _bootstrap  # noqa: F401  (puts src/ on sys.path)

from gmmrestore import cli
from gmmrestore.h5io import read_h5
from gmmrestore.plots import plot_kernels, save_figure


def main(argv=None) -> None:
    parser = cli.make_parser(__doc__)
    parser.add_argument("--corrupted", required=True, help="HDF5 from corrupt_images.py")
    parser.add_argument("--estimate", required=True, help="HDF5 from estimate_kernel.py")
    parser.add_argument("--out", required=True, help="output PNG")
    args = parser.parse_args(argv)
    cli.setup_logging(args.quiet)

    true, attrs = read_h5(args.corrupted, "corrupted", ["kernel"])
    estimate, _ = read_h5(args.estimate, "kernel", ["kernel"])
    title = f"blur {attrs.get('blur', '')}, σ = {attrs['noise_sigma']}"
    save_figure(plot_kernels({"true": true["kernel"], "estimated": estimate["kernel"]}, title),
                args.out)


if __name__ == "__main__":
    sys.exit(cli.run(main))
