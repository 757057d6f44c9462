#!/usr/bin/env bash
# A stand-in batch scheduler for tests/test_profiles.py, used through
# snakemake-executor-plugin-cluster-generic:  submit.sh RULE THREADS MEM_MB JOBSCRIPT
# Job state lives in $FAKE_SCHEDULER_DIR. The job script runs in the background in its own
# session (cancel.sh stops the whole job); its exit status goes to <id>.exit (atomically)
# for status.sh; the submission is recorded in submissions.tsv; the job id is printed on the
# first line of output, as a real scheduler's submit command does.
set -euo pipefail
state=${FAKE_SCHEDULER_DIR:?FAKE_SCHEDULER_DIR not set}
rule=$1 threads=$2 mem_mb=$3 jobscript=$4
mkdir -p "$state"
exec 9>>"$state/lock"
flock 9
touch "$state/submissions.tsv"
id=$(($(wc -l <"$state/submissions.tsv") + 1))
printf '%s\t%s\t%s\t%s\n' "$id" "$rule" "$threads" "$mem_mb" >>"$state/submissions.tsv"
flock -u 9
# FAKE_SCHEDULER_FAIL=TEXT: a job whose script contains TEXT fails on its "node" (exit 1)
if [ -n "${FAKE_SCHEDULER_FAIL:-}" ] && grep -qF -- "$FAKE_SCHEDULER_FAIL" "$jobscript"; then
  jobscript=/dev/null fail=1
else
  fail=0
fi
setsid bash -c 'bash "$1" >"$2.log" 2>&1; s=$?; [ "$3" = 1 ] && s=1; echo $s >"$2.exit.tmp"
  mv "$2.exit.tmp" "$2.exit"' _ "$jobscript" "$state/$id" "$fail" </dev/null >/dev/null 2>&1 9>&- &
echo $! >"$state/$id.pid"
echo "$id"
