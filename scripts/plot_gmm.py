#!/usr/bin/env python3
"""Figure: EM log-likelihood curve, component means and covariance eigenvectors."""

from __future__ import annotations

import sys

import _bootstrap  # noqa: F401  (puts src/ on sys.path)

from gmmrestore import cli
from gmmrestore.gmm import load_gmm
from gmmrestore.h5io import read_h5
from gmmrestore.plots import plot_gmm, save_figure


def main(argv=None) -> None:
    parser = cli.make_parser(__doc__)
    parser.add_argument("--gmm", required=True, help="HDF5 from train_gmm.py")
    parser.add_argument("--out", required=True, help="output PNG")
    parser.add_argument("--n-show", type=int, default=16, help="components shown")
    args = parser.parse_args(argv)
    cli.setup_logging(args.quiet)

    gmm, attrs = load_gmm(args.gmm)
    arrays, _ = read_h5(args.gmm, "gmm", ["loglik_train"])
    m = int(attrs["patch_size"])
    title = f"GMM: K={gmm.n_components}, {m}x{m} patches, {attrs.get('n_iter', '?')} iterations"
    fig = plot_gmm(gmm.weights, gmm.means, gmm.covariances, arrays["loglik_train"],
                   arrays.get("loglik_heldout"), m, n_show=args.n_show, title=title,
                   loglik_init=attrs.get("loglik_init"),
                   loglik_init_heldout=attrs.get("loglik_init_heldout"))
    save_figure(fig, args.out)


if __name__ == "__main__":
    sys.exit(cli.run(main))
