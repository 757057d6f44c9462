#!/usr/bin/env python3
"""Concatenate per-restoration metric CSVs into the tidy metrics table and summarise it:
mean PSNR and SSIM with 95% confidence intervals per method x setting.

Blind rows (a non-empty `kernel_error`) also get, in the summary: the mean PSNR of the same
method with the true kernel on the same images (`psnr_true_kernel_mean`), the mean paired
difference estimated - true kernel with its 95% CI (`psnr_vs_true_kernel_*`), the number of
kernel batches, their mean and largest kernel error, the mean per-image and the largest
per-batch error ratio, and how many batches meet both --max-kernel-error and
--max-error-ratio (`kernel_batches_ok`), and for photographs the fractions of images whose
error ratio after the best shift (the field's score) is <= 2 and <= 3
(`shifted_ratio_le2`, `shifted_ratio_le3`).  Other rows leave these columns empty.

Every row also gets the mean PSNR of the images as stored (`psnr_unclipped_mean`; the
`psnr` columns score them clipped to [0, 1]) and, with --published TABLE, the published mean
PSNR of the method at that noise level (`published_psnr`, from
gmmrestore.datasets.bsd.PUBLISHED_PSNR) and the measured minus the published mean
(`psnr_vs_published`) for the blurs named by --denoising-blur; empty where nothing is
published.
"""

from __future__ import annotations

import csv
import io
import logging
import sys
from collections import defaultdict

import numpy as np

import _bootstrap  # noqa: F401  (puts src/ on sys.path)

from gmmrestore import cli
from gmmrestore.datasets.bsd import published_psnr
from gmmrestore.h5io import GmmRestoreError, write_text_atomic
from gmmrestore.metrics import mean_ci95

log = logging.getLogger("gmmrestore.collect_metrics")
SETTING = ("dataset", "blur", "noise_sigma", "patch_size", "n_components", "method", "kernel")
BLIND_SUFFIX = "-blind"
BLIND_SUMMARY = ("psnr_true_kernel_mean", "psnr_vs_true_kernel_mean",
                 "psnr_vs_true_kernel_ci95_low", "psnr_vs_true_kernel_ci95_high",
                 "n_kernel_batches", "kernel_error_mean", "kernel_error_max",
                 "error_ratio_mean", "batch_error_ratio_max", "kernel_batches_ok",
                 "shifted_ratio_le2", "shifted_ratio_le3")


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


def _true_kernel_key(row: dict) -> tuple:
    """Key of the row of the same image, setting and method restored with the true kernel."""
    method = row["method"]
    if not method.endswith(BLIND_SUFFIX):
        raise GmmRestoreError(f"row {row}: a kernel error on method '{method}', which does not "
                              f"end in '{BLIND_SUFFIX}'")
    return (*(row[c] for c in SETTING[:-2]), method[:-len(BLIND_SUFFIX)], "true",
            row["image_id"])


def blind_summary(group: list[dict], true_rows: dict[tuple, dict], max_kernel_error: float,
                  max_error_ratio: float) -> dict:
    """Summary columns of one blind method x setting (see the module doc)."""
    try:
        paired = [true_rows[_true_kernel_key(r)] for r in group]
    except KeyError as err:
        raise GmmRestoreError(
            f"no row of {err.args[0][5]} with the true kernel for image {err.args[0][-1]} of "
            f"setting {err.args[0][:5]}: the metrics of the true-kernel restoration are "
            "needed next to the blind one") from None
    est = np.array([float(r["psnr"]) for r in group])
    true = np.array([float(r["psnr"]) for r in paired])
    diff_mean, diff_low, diff_high = mean_ci95(est - true)
    batches: dict[str, tuple[float, float]] = {}
    for r in group:
        values = (float(r["kernel_error"]), float(r["batch_error_ratio"]))
        if batches.setdefault(r["kernel_batch"], values) != values:
            raise GmmRestoreError(f"kernel batch {r['kernel_batch']} of {r['method']} "
                                  f"({r['blur']}, sigma {r['noise_sigma']}) has differing "
                                  "kernel_error or batch_error_ratio values")
    errors = np.array([v[0] for v in batches.values()])
    pooled = np.array([v[1] for v in batches.values()])
    ok = int(np.sum((errors <= max_kernel_error) & (pooled <= max_error_ratio)))
    return {"psnr_true_kernel_mean": f"{true.mean():.4f}",
            "psnr_vs_true_kernel_mean": f"{diff_mean:.4f}",
            "psnr_vs_true_kernel_ci95_low": f"{diff_low:.4f}",
            "psnr_vs_true_kernel_ci95_high": f"{diff_high:.4f}",
            "n_kernel_batches": len(batches),
            "kernel_error_mean": f"{errors.mean():.4f}",
            "kernel_error_max": f"{errors.max():.4f}",
            "error_ratio_mean": f"{np.mean([float(r['error_ratio']) for r in group]):.4f}",
            "batch_error_ratio_max": f"{pooled.max():.4f}",
            "kernel_batches_ok": ok, **shifted_success(group)}


def shifted_success(group: list[dict]) -> dict:
    """Fractions of the images whose error ratio after the best shift is <= 2 and <= 3
    ('' where it is not scored: images too small)."""
    values = np.array([float(r.get("shifted_error_ratio") or "nan") for r in group])
    if np.all(np.isnan(values)):
        return {"shifted_ratio_le2": "", "shifted_ratio_le3": ""}
    return {f"shifted_ratio_le{t}": f"{np.mean(values <= t):.4f}" for t in (2, 3)}


def published_columns(entry: dict, table: str | None, blurs: tuple[str, ...]) -> dict:
    """``published_psnr`` and ``psnr_vs_published`` of a summary row ('' if not listed)."""
    value = None
    if table is not None and entry["blur"] in blurs:
        value = published_psnr(table, entry["method"], float(entry["noise_sigma"]))
    if value is None:
        return {"published_psnr": "", "psnr_vs_published": ""}
    return {"published_psnr": f"{value:.2f}",
            "psnr_vs_published": f"{float(entry['psnr_mean']) - value:+.4f}"}


def summarise(rows: list[dict], max_kernel_error: float = 0.25,
              max_error_ratio: float = 2.0, published: str | None = None,
              denoising_blurs: tuple[str, ...] = ()) -> list[dict]:
    groups: dict[tuple, list[dict]] = defaultdict(list)
    true_rows: dict[tuple, dict] = {}
    for row in rows:
        groups[tuple(row[c] for c in SETTING)].append(row)
        if row["kernel"] == "true":
            true_rows[tuple(row[c] for c in SETTING) + (row["image_id"],)] = row
    summary = []
    for key in sorted(groups):
        group = groups[key]
        entry = dict(zip(SETTING, key, strict=True))
        entry["n_images"] = len(group)
        for metric in ("psnr", "ssim"):
            mean, low, high = mean_ci95(np.array([float(r[metric]) for r in group]))
            entry.update({f"{metric}_mean": f"{mean:.4f}", f"{metric}_ci95_low": f"{low:.4f}",
                          f"{metric}_ci95_high": f"{high:.4f}"})
        raw = [float(r["psnr_unclipped"]) for r in group if r.get("psnr_unclipped")]
        entry["psnr_unclipped_mean"] = f"{np.mean(raw):.4f}" if raw else ""
        entry.update(published_columns(entry, published, denoising_blurs))
        entry.update(dict.fromkeys(BLIND_SUMMARY, ""))
        if group[0].get("kernel_error"):
            entry.update(blind_summary(group, true_rows, max_kernel_error, max_error_ratio))
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
    parser.add_argument("--max-kernel-error", type=float, default=0.25,
                        help="blind: a kernel batch succeeds with at most this kernel error")
    parser.add_argument("--max-error-ratio", type=float, default=2.0,
                        help="blind: ... and at most this (batch-pooled) error ratio")
    parser.add_argument("--published", default=None, metavar="TABLE",
                        help="table of published PSNRs to list next to the measured ones "
                             "(bsd68_denoising)")
    parser.add_argument("--denoising-blur", action="append", default=[], metavar="NAME",
                        help="blur setting (identity kernel) the published table applies to "
                             "(repeatable)")
    args = parser.parse_args(argv)
    cli.setup_logging(args.quiet)

    header, rows = read_rows(args.inputs)
    summary = summarise(rows, args.max_kernel_error, args.max_error_ratio, args.published,
                        tuple(args.denoising_blur))
    write_text_atomic(args.metrics, to_csv(header, rows))
    write_text_atomic(args.summary, to_csv(list(summary[0].keys()), summary))
    for entry in summary:
        log.info("%-22s %-8s s=%-6s m=%-3s K=%-4s %6.2f dB [%s, %s]", entry["method"],
                 entry["blur"], entry["noise_sigma"], entry["patch_size"] or "-",
                 entry["n_components"] or "-", float(entry["psnr_mean"]),
                 entry["psnr_ci95_low"], entry["psnr_ci95_high"])
        if entry["kernel_error_mean"]:
            log.info("%-22s vs true kernel %+.2f dB; kernel error mean %s max %s; error ratio "
                     "mean %s; %s of %s batches ok", "", float(entry["psnr_vs_true_kernel_mean"]),
                     entry["kernel_error_mean"], entry["kernel_error_max"],
                     entry["error_ratio_mean"], entry["kernel_batches_ok"],
                     entry["n_kernel_batches"])
    log.info("%d rows -> %s; %d settings -> %s", len(rows), args.metrics, len(summary),
             args.summary)


if __name__ == "__main__":
    sys.exit(cli.run(main))
