"""The end-of-run warnings block (gmmrestore.runwarnings) from job logs."""

import csv
import logging
import os
import time

from gmmrestore import cli
from gmmrestore.runwarnings import collect_warnings, format_warnings, report_warnings


def forced_warning_log(path, message):
    """A job log written the way the stages write them (cli.setup_logging), holding one
    INFO record, one forced WARNING record (two lines) and one after it."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8") as fh:
        cli.setup_logging()
        handler = logging.getLogger().handlers[0]
        handler.setStream(fh)
        log = logging.getLogger("gmmrestore.test")
        log.info("starting")
        log.warning("%s\n!!!!\nsecond line", message)
        log.info("done")
        handler.setStream(__import__("sys").stderr)


def test_block_lists_a_forced_warning(tmp_path):
    results = tmp_path / "results"
    old = results / "logs" / "train_gmm" / "old_m8_K20.log"
    forced_warning_log(str(old), "from an earlier run")
    os.utime(old, (time.time() - 3600, time.time() - 3600))
    started = time.time() - 1
    new = results / "logs" / "import_paired" / "set_paired_sest_estimate.log"
    forced_warning_log(str(new), "forced: sigma differs")
    (results / "logs" / "plain.log").write_text("12:00:00 gmmrestore.x INFO: fine\n")

    block = report_warnings(str(results), started)
    lines = block.splitlines()
    assert lines[0] == "warnings (1):"
    assert lines[1] == ("  import_paired | set_paired_sest_estimate | forced: sigma differs "
                        "second line")
    assert "earlier run" not in block  # not written in this run
    with open(results / "warnings.csv", newline="") as fh:  # every log's warnings
        rows = list(csv.DictReader(fh))
    assert [(r["stage"], r["setting"]) for r in rows] == [
        ("import_paired", "set_paired_sest_estimate"), ("train_gmm", "old_m8_K20")]
    assert rows[0]["log"] == str(new)


def test_no_warnings_no_block(tmp_path):
    assert report_warnings(str(tmp_path)) == ""  # no logs folder
    (tmp_path / "logs").mkdir()
    (tmp_path / "logs" / "a.log").write_text("12:00:00 gmmrestore.x INFO: fine\n")
    assert report_warnings(str(tmp_path)) == ""
    assert format_warnings(collect_warnings(str(tmp_path / "logs"))) == ""


def test_long_lists_are_cut(tmp_path):
    logs = tmp_path / "logs" / "stage"
    logs.mkdir(parents=True)
    text = "".join(f"12:00:00 gmmrestore.x WARNING: message {i} {'x' * 300}\n"
                   for i in range(40))
    (logs / "job.log").write_text(text)
    block = format_warnings(collect_warnings(str(tmp_path / "logs")), limit=5)
    assert block.splitlines()[0] == "warnings (40):"
    assert block.splitlines()[-1] == "  ... and 35 more"
    assert all(len(line) < 300 for line in block.splitlines())
