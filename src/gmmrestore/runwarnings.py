"""The warnings of a workflow run, gathered from the job logs into one block and one table.

Every stage logs through :func:`gmmrestore.cli.setup_logging`, one record per line as
``HH:MM:SS <logger> <LEVEL>: <message>`` (a message may continue on the following lines),
into its job's log file ``<results>/logs/<stage>/<setting>.log``.  Those files are the
per-job records: :func:`report_warnings`, called once by the Snakefile's ``onsuccess`` and
``onerror`` handlers, reads the WARNING records of the logs written during the run, prints
them as a short "warnings" block (stage, setting, message) and writes every warning of
every log under the results folder to ``<results>/warnings.csv`` (with the log it came
from), so that a warning of an earlier run stays on record.
"""

from __future__ import annotations

import csv
import os
import re
from collections.abc import Iterable
from dataclasses import astuple, dataclass, fields

from .h5io import write_text_atomic

RECORD = re.compile(r"^\d\d:\d\d:\d\d (?P<logger>\S+) (?P<level>[A-Z]+): (?P<message>.*)$")
#: Characters of a message shown in the console block (the table keeps it whole).
MESSAGE_CHARS = 240


@dataclass(frozen=True)
class RunWarning:
    """One WARNING record: the stage (log folder), the setting (log file name without
    .log), the message (continuation lines joined) and the log file."""

    stage: str
    setting: str
    message: str
    log: str


def parse_log(path: str, logs_dir: str) -> list[RunWarning]:
    """The WARNING records of one job log; stage and setting from its path under logs_dir."""
    rel = os.path.relpath(path, logs_dir)
    stage, _, name = rel.partition(os.sep)
    setting = os.path.splitext(name or stage)[0]
    if not name:
        stage = setting
    found: list[RunWarning] = []
    current: list[str] | None = None

    def close() -> None:
        if current is not None:
            text = " ".join(s for s in (p.strip(" !") for p in current) if s)
            found.append(RunWarning(stage, setting, text, path))

    with open(path, encoding="utf-8", errors="replace") as fh:
        for line in fh:
            match = RECORD.match(line.rstrip("\n"))
            if match:
                close()
                current = [match["message"]] if match["level"] == "WARNING" else None
            elif current is not None:
                current.append(line.rstrip("\n"))
    close()
    return found


def collect_warnings(logs_dir: str, since: float | None = None) -> list[RunWarning]:
    """WARNING records of every ``*.log`` under logs_dir (only those modified at or after
    ``since``, a time.time() value, when given), sorted by stage, setting, log."""
    paths = []
    for root, _, files in os.walk(logs_dir):
        paths += [os.path.join(root, f) for f in files if f.endswith(".log")]
    if since is not None:
        paths = [p for p in paths if os.path.getmtime(p) >= since]
    return [w for p in sorted(paths) for w in parse_log(p, logs_dir)]


def format_warnings(warnings: Iterable[RunWarning], limit: int = 30) -> str:
    """The console block: ``warnings (N):`` then ``  stage | setting | message`` lines
    (at most ``limit``; repeated messages of one job once).  '' when there are none."""
    unique = list(dict.fromkeys((w.stage, w.setting, w.message) for w in warnings))
    if not unique:
        return ""
    lines = [f"warnings ({len(unique)}):"]
    for stage, setting, message in unique[:limit]:
        if len(message) > MESSAGE_CHARS:
            message = message[: MESSAGE_CHARS - 3] + "..."
        lines.append(f"  {stage} | {setting} | {message}")
    if len(unique) > limit:
        lines.append(f"  ... and {len(unique) - limit} more")
    return "\n".join(lines)


def write_warnings_csv(warnings: Iterable[RunWarning], path: str) -> None:
    """The warnings as a CSV table (stage, setting, message, log), written atomically."""
    import io

    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow([f.name for f in fields(RunWarning)])
    writer.writerows(astuple(w) for w in warnings)
    write_text_atomic(path, buffer.getvalue())


def report_warnings(results_dir: str, since: float | None = None) -> str:
    """The one end-of-run call: writes ``<results_dir>/warnings.csv`` (all job logs) and
    returns the console block of the logs written since ``since`` ('' when none)."""
    logs_dir = os.path.join(results_dir, "logs")
    if not os.path.isdir(logs_dir):
        return ""
    everything = collect_warnings(logs_dir)
    write_warnings_csv(everything, os.path.join(results_dir, "warnings.csv"))
    recent = everything if since is None else collect_warnings(logs_dir, since)
    block = format_warnings(recent)
    if block:
        block += f"\n(all warnings of the logs in {results_dir}: {results_dir}/warnings.csv)"
    return block
