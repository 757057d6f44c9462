#!/usr/bin/env python3
"""Figure: the same test images clean, corrupted and restored by every method."""

from __future__ import annotations

import sys

import numpy as np

import _bootstrap  # noqa: F401  (puts src/ on sys.path)

from gmmrestore import cli
from gmmrestore.h5io import read_h5
from gmmrestore.plots import plot_examples, save_figure


def main(argv=None) -> None:
    parser = cli.make_parser(__doc__)
    parser.add_argument("--corrupted", required=True, help="HDF5 from corrupt_images.py")
    parser.add_argument("--restored", nargs="+", required=True, help="restored HDF5 files")
    parser.add_argument("--out", required=True, help="output PNG")
    parser.add_argument("--n-examples", type=int, default=6, help="test images shown")
    parser.add_argument("--title", default="", help="figure title")
    args = parser.parse_args(argv)
    cli.setup_logging(args.quiet)

    arrays, attrs = read_h5(args.corrupted, "corrupted", ["clean", "corrupted"])
    restored = {}
    for path in args.restored:
        r_arrays, r_attrs = read_h5(path, "restored", ["restored"])
        restored[str(r_attrs["method"])] = r_arrays["restored"]
    n = len(arrays["clean"])
    indices = np.unique(np.linspace(0, n - 1, min(args.n_examples, n)).astype(int))
    # the data actually used (download, cache or offline fallback) shows in the report
    source = str(attrs.get("source", "")).split(" (")[0][:90]
    title = args.title or (f"{attrs.get('dataset', '')}: blur {attrs.get('blur', '')}, "
                           f"σ = {attrs['noise_sigma']}" + (f"\ndata: {source}" if source else ""))
    # source bsd: portrait photographs are stored transposed; shown as taken
    save_figure(plot_examples(arrays["clean"], arrays["corrupted"], restored, indices, title,
                              transposed=arrays.get("transposed")), args.out)


if __name__ == "__main__":
    sys.exit(cli.run(main))
