"""This run's outcome per sweep setting, from Snakemake's own record of the run.

When a run ends, :func:`write_status` classifies the metrics file of every expected setting
x method by what happened to the job that makes it in this run (Snakemake's DAG and its
scheduler's failed jobs, read in the ``onsuccess`` / ``onerror`` handlers), not by which
files exist, so a metrics file left by an earlier run never passes for this run's result:

``ok``
    made by this run, or up to date and not needed to run;
``failed``
    its job, or a job it depends on, failed in this run (``detail`` names that job's rule,
    output and log);
``not run``
    needed to run but did not (the run stopped after another job failed, or it was not a
    target), and no current file exists.
"""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from .h5io import write_text_atomic

STATUSES = ("ok", "failed", "not run")


def _norm(path: Any) -> str:
    return os.path.normpath(str(path))


def _failed_ancestor(job: Any, dependencies: Mapping[Any, Mapping[Any, Any]],
                     failed: set) -> Any | None:
    """The first failed job among ``job`` and the jobs it depends on (breadth first)."""
    seen, queue = {job}, [job]
    while queue:
        current = queue.pop(0)
        if current in failed:
            return current
        for dep in dependencies.get(current, {}):
            if dep not in seen:
                seen.add(dep)
                queue.append(dep)
    return None


def _describe_job(job: Any) -> str:
    output = ", ".join(str(f) for f in list(job.output)[:1])
    logs = ", ".join(str(f) for f in job.log)
    return f"{job.rule.name} failed ({output}{'; log: ' + logs if logs else ''})"


def outcomes(workflow: Any, files: Iterable[str]) -> dict[str, tuple[str, str]]:
    """``{file: (status, detail)}`` for the output ``files`` of this run of ``workflow``
    (a Snakemake workflow after its jobs ran); without a DAG (nothing was scheduled) a
    file is ``ok`` when it exists, else ``not run``."""
    files = [_norm(f) for f in files]
    dag = getattr(workflow, "dag", None)
    if dag is None:
        return {f: ("ok", "") if os.path.exists(f) else ("not run", "") for f in files}
    scheduler = getattr(workflow, "scheduler", None)
    failed = set(getattr(scheduler, "failed", ()) or ())
    producer = {_norm(out): job for job in dag.jobs for out in job.output}
    dependencies = dag.dependencies
    result = {}
    for f in files:
        job = producer.get(f)
        if job is None or not dag.needrun(job):
            result[f] = ("ok", "") if os.path.exists(f) else ("not run", "not a target")
        elif dag.finished(job):
            result[f] = ("ok", "")
        else:
            culprit = _failed_ancestor(job, dependencies, failed)
            result[f] = (("failed", _describe_job(culprit)) if culprit is not None
                         else ("not run", "the run stopped before this job"))
    return result


def status_rows(expected: Sequence[tuple[dict, str]],
                outcome: Mapping[str, tuple[str, str]]) -> list[dict]:
    """Rows of sweep_status.csv: each expected (row, metrics file) with its status."""
    rows = []
    for row, path in expected:
        status, detail = outcome.get(_norm(path), ("not run", ""))
        rows.append({**row, "status": status, "detail": detail, "metrics_file": path})
    return rows


def summary_line(rows: Sequence[dict], path: str) -> str:
    """One line: counts per status, the table's path, the settings that are not ok."""
    counts = {s: sum(r["status"] == s for r in rows) for s in STATUSES}
    line = (f"sweep status: {counts['ok']} of {len(rows)} ok in this run, {counts['failed']} "
            f"failed, {counts['not run']} not run -> {path}")
    for status in ("failed", "not run"):
        bad = [r for r in rows if r["status"] == status]
        if bad:
            line += f"; {status}: " + ", ".join(
                "{blur} s={noise_sigma} m={patch_size} K={n_components} {method}".format(**r)
                for r in bad)
    return line


def write_status(workflow: Any, expected: Sequence[tuple[dict, str]], path: str) -> str:
    """Write sweep_status.csv for this run of ``workflow`` (atomically) and return its
    summary line; ``expected`` holds (row without status, metrics file) per setting x
    method."""
    rows = status_rows(expected, outcomes(workflow, [f for _, f in expected]))
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    write_text_atomic(path, buffer.getvalue())
    return summary_line(rows, path)
