#!/usr/bin/env python3
"""Concatenate per-restoration metric CSVs into the tidy metrics table and summarise it:
mean PSNR and SSIM with 95% confidence intervals per method x setting."""

from __future__ import annotations

import csv
import io
import logging
import sys
from collections import defaultdict

import numpy as np

import _bootstrap  # noqa: F401  (puts src/ on sys.path)

from gmmrestore import cli
from gmmrestore.h5io import GmmRestoreError, write_text_atomic
from gmmrestore.metrics import mean_ci95

log = logging.getLogger("gmmrestore.collect_metrics")
SETTING = ("dataset", "blur", "noise_sigma", "patch_size", "n_components", "method", "kernel")


def read_rows(paths: list[str]) -> tuple[list[str], list[dict]]:
    header, rows = None, []
    for path in paths:
        try:
            with open(path, newline="", encoding="utf-8") as fh:
                reader = csv.DictReader(fh)
                if header is None:
                    header = reader.fieldnames
                elif reader.fieldnames != header:
                    raise GmmRestoreError(f"{path}: columns {reader.fieldnames} differ from "
                                          f"{header}")
                rows.extend(reader)
        except FileNotFoundError:
            raise GmmRestoreError(f"{path}: metrics file not found") from None
    if header is None:
        raise GmmRestoreError("no metrics files given")
    return list(header), rows


def summarise(rows: list[dict]) -> list[dict]:
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for row in rows:
        groups[tuple(row[c] for c in SETTING)].append(row)
    summary = []
    for key in sorted(groups):
        group = groups[key]
        entry = dict(zip(SETTING, key, strict=True))
        entry["n_images"] = len(group)
        for metric in ("psnr", "ssim"):
            mean, low, high = mean_ci95(np.array([float(r[metric]) for r in group]))
            entry.update({f"{metric}_mean": f"{mean:.4f}", f"{metric}_ci95_low": f"{low:.4f}",
                          f"{metric}_ci95_high": f"{high:.4f}"})
        summary.append(entry)
    return summary


def to_csv(header: list[str], rows: list[dict]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=header, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def main(argv=None) -> None:
    parser = cli.make_parser(__doc__)
    parser.add_argument("inputs", nargs="+", help="per-restoration metric CSVs")
    parser.add_argument("--metrics", required=True, help="output: all rows")
    parser.add_argument("--summary", required=True, help="output: mean and 95%% CI per setting")
    args = parser.parse_args(argv)
    cli.setup_logging(args.quiet)

    header, rows = read_rows(args.inputs)
    summary = summarise(rows)
    write_text_atomic(args.metrics, to_csv(header, rows))
    write_text_atomic(args.summary, to_csv(list(summary[0].keys()), summary))
    for entry in summary:
        log.info("%-22s %-8s s=%-6s m=%-3s K=%-4s %6.2f dB [%s, %s]", entry["method"],
                 entry["blur"], entry["noise_sigma"], entry["patch_size"] or "-",
                 entry["n_components"] or "-", float(entry["psnr_mean"]),
                 entry["psnr_ci95_low"], entry["psnr_ci95_high"])
    log.info("%d rows -> %s; %d settings -> %s", len(rows), args.metrics, len(summary),
             args.summary)


if __name__ == "__main__":
    sys.exit(cli.run(main))
