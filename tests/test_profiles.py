"""Execution profiles: every profile parses, profiles/default is picked up automatically, and
the cluster-generic profile runs the tiny workflow through a stand-in scheduler
(tests/cluster_generic/submit.sh, status.sh, cancel.sh), including a failed setting that
results/sweep_status.csv reports instead of dropping it."""

import csv
import os
import re
import subprocess
import sys

import pytest
from conftest import ROOT, snakemake_env

SNAKEMAKE = os.path.join(os.path.dirname(sys.executable), "snakemake")
TINY = os.path.join(ROOT, "tests", "configs", "tiny.yaml")
FAKE = os.path.join(ROOT, "tests", "cluster_generic")


def snakemake(workdir, *args, env=None, timeout=300):
    full_env = snakemake_env()
    full_env.update(env or {})
    return subprocess.run(
        [SNAKEMAKE, "-s", os.path.join(ROOT, "Snakefile"), "--directory", str(workdir), *args],
        cwd=str(workdir), capture_output=True, text=True, env=full_env, timeout=timeout)


def read_csv(path):
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


@pytest.mark.parametrize("profile", ["default", "slurm", "cluster-generic"])
def test_profile_parses(tmp_path, profile):
    path = os.path.join(ROOT, "profiles", profile)
    # profiles/default is used without being named (snakemake 9's default workflow profile)
    chosen = [] if profile == "default" else ["--workflow-profile", path]
    result = snakemake(tmp_path, "-n", "--configfile", TINY, *chosen)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-3000:]
    assert re.search(rf"workflow specific profile \S*profiles/{profile}\b", output), output[:500]
    assert "restore_images" in output


def cluster_generic_args():
    return [
        "--workflow-profile", os.path.join(ROOT, "profiles", "cluster-generic"),
        "--cluster-generic-submit-cmd",
        f"{FAKE}/submit.sh {{rule}} {{threads}} {{resources.mem_mb}}",
        "--cluster-generic-status-cmd", f"{FAKE}/status.sh",
        "--cluster-generic-cancel-cmd", f"{FAKE}/cancel.sh",
        "--jobs", "3", "--max-threads", "2", "--latency-wait", "5",
        "--seconds-between-status-checks", "1",
    ]


def submissions(state):
    return [line.split("\t") for line in (state / "submissions.tsv").read_text().splitlines()]


@pytest.mark.slow
def test_cluster_generic_profile_runs_and_reports_failed_settings(tmp_path):
    work, state = tmp_path / "work", tmp_path / "scheduler"
    work.mkdir()
    # the corruption job of blur 'broken' fails on its node (a valid setting: a bad one
    # would be refused when the workflow loads, before any job)
    env = {"FAKE_SCHEDULER_DIR": str(state),
           "FAKE_SCHEDULER_FAIL": "tiny/broken_s0.1/corrupted.h5"}
    broken = tmp_path / "broken.yaml"
    broken.write_text(
        "blurs: {broken: {type: gaussian, size: 3, std: 0.8}}\n"
        "sweep: {patch_size: [6], n_components: [3], blur: [gauss5, broken], "
        "noise_sigma: [0.1]}\nrestore: {methods: [mapk]}\n")
    fixed = tmp_path / "fixed.yaml"
    fixed.write_text("sweep: {patch_size: [6], n_components: [3], blur: [gauss5], "
                     "noise_sigma: [0.1]}\nrestore: {methods: [mapk]}\n")

    # 1. one setting cannot be corrupted (its job fails on the node): keep-going (profile) runs
    #    everything else, the run fails, sweep_status.csv names the missing setting
    # (target: the metrics table; the figures are covered by test_workflow and test_report)
    result = snakemake(work, "--configfile", TINY, str(broken), *cluster_generic_args(),
                       "results/metrics.csv", env=env)
    output = result.stdout + result.stderr
    assert result.returncode != 0, output[-3000:]
    submitted = submissions(state)
    for job_id, *_ in submitted:
        assert f"with external jobid '{job_id}'" in output
    rules = {rule for _, rule, _, _ in submitted}
    assert {"download_dataset", "extract_patches", "train_gmm", "corrupt_images",
            "restore_images", "evaluate_corrupted", "evaluate_restoration"} <= rules
    threads = {rule: int(t) for _, rule, t, _ in submitted}
    assert threads["restore_images"] == 2 and threads["download_dataset"] == 1
    assert all(int(mem) >= 1000 for *_, mem in submitted)  # the rules' mem_mb reached qsub
    failed = [i for i, rule, _, _ in submitted if (state / f"{i}.exit").read_text().strip() != "0"]
    assert [dict((i, r) for i, r, _, _ in submitted)[i] for i in failed] == ["corrupt_images"]
    assert "Error in rule corrupt_images" in output
    status = {(r["blur"], r["method"]): r["status"]
              for r in read_csv(work / "results/sweep_status.csv")}
    assert status == {("gauss5", "corrupted"): "ok", ("gauss5", "mapk"): "ok",
                      ("broken", "corrupted"): "failed", ("broken", "mapk"): "failed"}
    assert "sweep status: 2 of 4 ok in this run, 2 failed" in output
    assert "broken s=0.1 m=6 K=3 mapk" in output
    assert not (work / "results/metrics.csv").exists()

    # 2. without the broken setting the same folder completes: only the summary step is left
    n_before = len(submitted)
    result = snakemake(work, "--configfile", TINY, str(fixed), *cluster_generic_args(),
                       "results/metrics.csv", env=env)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-3000:]
    assert {rule for _, rule, _, _ in submissions(state)[n_before:]} == {"collect_metrics"}
    rows = read_csv(work / "results/metrics.csv")
    counts = {}
    for row in rows:
        counts[row["method"]] = counts.get(row["method"], 0) + 1
    assert counts == {"corrupted": 8, "mapk": 8}
    assert {r["method"] for r in read_csv(work / "results/summary.csv")} == {"corrupted", "mapk"}
    assert all(r["status"] == "ok" for r in read_csv(work / "results/sweep_status.csv"))
