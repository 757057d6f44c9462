#!/usr/bin/env bash
# Status command for submit.sh's jobs: status.sh JOBID prints one line, running | success |
# failed, as snakemake-executor-plugin-cluster-generic expects.
set -euo pipefail
exit_file=${FAKE_SCHEDULER_DIR:?FAKE_SCHEDULER_DIR not set}/$1.exit
if [ ! -e "$exit_file" ]; then
  echo running
elif [ "$(cat "$exit_file")" = 0 ]; then
  echo success
else
  echo failed
fi
