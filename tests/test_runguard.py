"""What a run promises about its results folder: this run's status per setting (not old
files'), one run per results folder (a lock), paths with spaces and non-ASCII characters,
noise levels written exactly in paths."""

from __future__ import annotations

import csv
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest
from conftest import ROOT
from test_imageio import write_mode_files
from test_workflow import TINY, snakemake, with_override

from gmmrestore import runlock


def read_csv(path):
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def truncate(path):
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


@pytest.mark.slow
def test_status_after_a_failed_rerun_names_the_failed_settings(tiny_run, tmp_path):
    """A finished run whose model file is then truncated: the rerun's restorations fail,
    and sweep_status.csv and the last line say so (the old metrics files still exist),
    while the settings that did not depend on the model stay ok."""
    work = tmp_path / "rerun"
    shutil.copytree(tiny_run, work, symlinks=True)
    truncate(work / "results/tiny/gmm/m6_K3.h5")
    result = snakemake(work, "--configfile", TINY, check=False)
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert (work / "results/tiny/gauss5_s0.1/metrics/m6_K3__mapk.csv").exists()  # old file
    status = {r["method"]: r for r in read_csv(work / "results/sweep_status.csv")}
    assert {m: r["status"] for m, r in status.items()} == {
        "corrupted": "ok", "wiener": "ok", "mapk": "failed", "epll": "failed",
        "epll_image_prior": "failed"}
    assert status["mapk"]["detail"].startswith(
        "restore_images failed (results/tiny/gauss5_s0.1/m6_K3/mapk.h5; log: "
        "results/logs/restore_images/tiny_gauss5_s0.1_m6_K3_mapk.log")
    line = next(s for s in output.splitlines() if s.startswith("sweep status:"))
    assert line.startswith("sweep status: 2 of 5 ok in this run, 3 failed, 0 not run")
    assert "failed: gauss5 s=0.1 m=6 K=3 mapk" in line


HOLD = ("import sys, time; sys.path.insert(0, sys.argv[2]); from gmmrestore import runlock; "
        "runlock.acquire(sys.argv[1]); print('held', flush=True); time.sleep(600)")


def hold_lock(folder):
    """A process holding ``folder``'s lock (as a run would), started and waited for."""
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(folder), os.path.join(ROOT, "src")],
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_results_folder_lock_is_exclusive_and_released_by_a_kill(tmp_path):
    folder = tmp_path / "results"
    proc = hold_lock(folder)
    try:
        with pytest.raises(runlock.ResultsFolderBusy,
                           match=rf"results_dir '{folder}' is in use by the run of process "
                                 rf"{proc.pid} on "):
            runlock.acquire(str(folder))
    finally:
        proc.send_signal(signal.SIGKILL)   # a killed run: the kernel drops its lock
        proc.wait()
    assert runlock.acquire(str(folder)) == str(folder / runlock.LOCK_NAME)
    runlock.release(str(folder))


def test_second_run_on_a_locked_results_folder_stops_before_any_job(tmp_path):
    """Another working folder writing the same results_dir (absolute) while a run holds it:
    the second run stops with one line naming the folder and the holder; no job ran."""
    shared = tmp_path / "shared results"
    proc = hold_lock(shared)
    try:
        result = snakemake(tmp_path / "second", *with_override(
            tmp_path, f"results_dir: '{shared}'\nrestore: {{methods: [wiener]}}\n"),
            check=False)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait()
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert f"error: results_dir '{shared}' is in use by the run of process {proc.pid}" in output
    assert os.listdir(shared) == [runlock.LOCK_NAME]


def test_sigma_is_written_exactly_in_paths(tmp_path):
    """Two noise levels equal to six digits plan two settings, each path holding its exact
    value."""
    plan = snakemake(tmp_path, "-n", "--forceall", "-p", *with_override(
        tmp_path, "sweep: {patch_size: [6], n_components: [3], blur: [gauss5], "
                  "noise_sigma: [0.1234567, 0.12345671]}\nrestore: {methods: [wiener]}\n"))
    line = next(s for s in plan.stdout.splitlines() if s.startswith("corrupt_images "))
    assert int(line.split()[-1]) == 2
    assert "gauss5_s0.1234567/" in plan.stdout and "gauss5_s0.12345671/" in plan.stdout
    assert "--sigma 0.12345671 " in plan.stdout


@pytest.mark.slow
def test_paths_with_spaces_and_non_ascii_characters(tmp_path):
    """A run from a new working folder whose results_dir, cache and image folder hold
    spaces, non-ASCII letters and shell characters; the images are one file of every Pillow
    mode (tests/test_imageio.py).  It completes, writes only inside its folders, and the
    dataset holds the decoded images."""
    work = tmp_path / "wörk dir"
    images = work / "bilder ö" / "imgs $x"
    write_mode_files(images)
    override = (
        "results_dir: \"rés ults/ä b;c\"\n"
        f"dataset: {{source: folder, folder: \"{images}\", cache_dir: \"ca ché\", "
        "image_size: 16, n_train: 20, n_validation: 2, n_test: 4, mirrors: []}\n"
        "sweep: {patch_size: [4], n_components: [2], blur: [gauss5], noise_sigma: [0.05]}\n"
        "patches: {max_patches: 2000, heldout_patches: 200}\n"
        "restore: {methods: [mapk, wiener]}\nfigures: {n_examples: 2}\n")
    start = time.monotonic()
    snakemake(work, *with_override(tmp_path, override))
    results = work / "rés ults" / "ä b;c"
    assert sorted(os.listdir(work)) == [".snakemake", "bilder ö", "rés ults"]
    status = read_csv(results / "sweep_status.csv")
    assert [r["status"] for r in status] == ["ok"] * 3
    assert (results / "figures" / "examples_tiny_gauss5_s0.05.png").stat().st_size > 0
    assert time.monotonic() - start < 300


def test_outcomes_from_the_dag_and_failed_jobs(tmp_path):
    """runstatus.outcomes on a stand-in DAG: a job downstream of a failed one is 'failed'
    naming it, a finished one 'ok', one that needed to run but did not 'not run', an up to
    date file 'ok', a file no job makes and nobody made 'not run'."""
    from types import SimpleNamespace as NS

    from gmmrestore import runstatus

    class Job(NS):
        __hash__ = object.__hash__
        __eq__ = object.__eq__

    def job(name, out):
        return Job(rule=NS(name=name), output=[str(tmp_path / out)],
                   log=[f"logs/{name}.log"])

    train, restore, evaluate = job("train", "m.h5"), job("restore", "r.h5"), job("eval", "c")
    ok_job, stopped = job("eval", "d"), job("eval", "e")
    jobs = [train, restore, evaluate, ok_job, stopped]
    dependencies = {evaluate: {restore: set()}, restore: {train: set()}, train: {},
                    ok_job: {}, stopped: {train: set()}}
    finished = {train, ok_job}
    dag = NS(jobs=jobs, dependencies=dependencies, needrun=lambda j: True,
             finished=lambda j: j in finished)
    workflow = NS(dag=dag, scheduler=NS(failed={restore}))
    (tmp_path / "old").write_text("from an earlier run")
    got = runstatus.outcomes(workflow, [tmp_path / n for n in ("c", "d", "e", "old", "none")])
    assert got == {
        str(tmp_path / "c"): ("failed", f"restore failed ({tmp_path}/r.h5; log: "
                                        "logs/restore.log)"),
        str(tmp_path / "d"): ("ok", ""),
        str(tmp_path / "e"): ("not run", "the run stopped before this job"),
        str(tmp_path / "old"): ("ok", ""),
        str(tmp_path / "none"): ("not run", "not a target")}
    rows = runstatus.status_rows(
        [({"blur": "b", "noise_sigma": "0.1", "patch_size": 6, "n_components": 3,
           "method": m}, str(tmp_path / f)) for m, f in (("mapk", "c"), ("epll", "e"))], got)
    assert runstatus.summary_line(rows, "s.csv") == (
        "sweep status: 0 of 2 ok in this run, 1 failed, 1 not run -> s.csv; failed: b s=0.1 "
        "m=6 K=3 mapk; not run: b s=0.1 m=6 K=3 epll")
