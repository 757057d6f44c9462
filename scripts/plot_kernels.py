#!/usr/bin/env python3
"""Figure: the true blur kernel next to the kernels estimated blindly from the corrupted
images (one per batch, each titled with its relative L2 error after the best integer shift;
with several batches also their summary median)."""

from __future__ import annotations

import sys

import _bootstrap  # noqa: F401  (puts src/ on sys.path)

from gmmrestore import cli
from gmmrestore.deconv import kernel_error
from gmmrestore.h5io import read_h5
from gmmrestore.plots import plot_kernels, save_figure


def main(argv=None) -> None:
    parser = cli.make_parser(__doc__)
    parser.add_argument("--corrupted", required=True, help="HDF5 from corrupt_images.py")
    parser.add_argument("--estimate", required=True, help="HDF5 from estimate_kernel.py")
    parser.add_argument("--out", required=True, help="output PNG")
    args = parser.parse_args(argv)
    cli.setup_logging(args.quiet)

    true, attrs = read_h5(args.corrupted, "corrupted", ["kernel"], only=["kernel"])
    estimate, _ = read_h5(args.estimate, "kernel", ["kernel"])
    k_true = true["kernel"]
    batches = list(estimate.get("batch_kernels", [estimate["kernel"]]))
    kernels = {"true": k_true}
    for b, k in enumerate(batches):
        name = f"batch {b}" if len(batches) > 1 else "estimated"
        kernels[f"{name} (err {kernel_error(k, k_true):.2f})"] = k
    if len(batches) > 1:
        kernels[f"median (err {kernel_error(estimate['kernel'], k_true):.2f})"] = \
            estimate["kernel"]
    title = f"blur {attrs.get('blur', '')}, σ = {attrs['noise_sigma']}"
    save_figure(plot_kernels(kernels, title), args.out)


if __name__ == "__main__":
    sys.exit(cli.run(main))
