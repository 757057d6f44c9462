#!/usr/bin/env bash
# Cancel command for submit.sh's jobs: cancel.sh JOBID... stops each job's process group.
for id in "$@"; do
  pid=$(cat "${FAKE_SCHEDULER_DIR:?}/$id.pid" 2>/dev/null) && kill -TERM -- "-$pid" 2>/dev/null
done
exit 0
