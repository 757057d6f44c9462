#!/usr/bin/env bash
# Smoke test: the tiny gmmrestore workflow through a real one-node SLURM cluster.
#
# Run as root (CI does: .ci/run calls this script). It
#   1. installs Debian's slurm-wlm and munge with apt-get (skipped if already installed),
#   2. writes a one-node /etc/slurm/slurm.conf (no cgroups, no accounting database; state,
#      spool, pid and log files in a temporary folder; an existing slurm.conf is moved aside
#      and put back at the end). A private SLURM_CONF is not enough: the plugin's job step
#      removes SLURM_* variables (SLURM_CONF too) before its nested srun.
#   3. starts munged (unless one already answers), slurmctld and slurmd, waits for the node
#      to be idle,
#   4. runs the tiny workflow with --workflow-profile profiles/slurm plus local overrides,
#   5. checks that every job went through sbatch (SLURM job ids in snakemake's log, each job
#      COMPLETED according to scontrol) and that all outputs are right,
#   6. always stops the daemons it started (trap).
#
# Exit status: 0 on success, and also 0 -- after printing "SLURM smoke test SKIPPED: <reason>"
# -- when apt-get or the daemons are unavailable on this machine; 1 when the cluster came up
# but the workflow or the checks failed.
#
# Environment: VENV_BIN (default <repo>/.venv/bin), SLURM_SMOKE_KEEP=1 keeps the temp folder.

set -uo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
VENV_BIN=${VENV_BIN:-$ROOT/.venv/bin}
START=$(date +%s)

skip() {
  echo "SLURM smoke test SKIPPED: $*"
  exit 0
}
fail() {
  echo "SLURM smoke test FAILED: $*" >&2
  exit 1
}
say() { echo "[slurm-smoke +$(($(date +%s) - START))s] $*"; }

[ "$(id -u)" = 0 ] || skip "must run as root (installs packages, starts slurmctld/slurmd)"
[ -x "$VENV_BIN/snakemake" ] || fail "$VENV_BIN/snakemake not found: run 'make setup' first"

WORK=$(mktemp -d /tmp/gmmrestore-slurm.XXXXXX)
APTLOG=$WORK/apt.log
SLURM_CONF=/etc/slurm/slurm.conf

# always: stop what this script started, put back what it changed, remove $WORK
STARTED_MUNGED=""
stop_daemons() {
  local pid
  if [ -f "$WORK/slurmctld.pid" ] && command -v squeue >/dev/null; then
    # jobs of the test cluster only (our slurmctld is the one answering)
    local jobs
    jobs=$(squeue -h -o %i 2>/dev/null | tr '\n' ' ')
    [ -n "${jobs// /}" ] && scancel $jobs 2>/dev/null
  fi
  for name in slurmd slurmctld; do
    if [ -f "$WORK/$name.pid" ]; then
      pid=$(cat "$WORK/$name.pid")
      kill "$pid" 2>/dev/null && say "stopped $name (pid $pid)"
    fi
  done
  if [ -f "$WORK/slurm.conf.orig" ]; then
    mv -f "$WORK/slurm.conf.orig" "$SLURM_CONF" && say "restored the original $SLURM_CONF"
  elif grep -qs "tests/slurm/run.sh" "$SLURM_CONF"; then
    rm -f "$SLURM_CONF"
  fi
  if [ -n "$STARTED_MUNGED" ]; then
    kill "$STARTED_MUNGED" 2>/dev/null && say "stopped munged (pid $STARTED_MUNGED)"
  fi
  if [ "${SLURM_SMOKE_KEEP:-0}" = 1 ]; then
    say "kept $WORK"
  else
    sleep 1
    rm -rf "$WORK"
  fi
}
trap stop_daemons EXIT
trap 'exit 130' INT TERM

# ---------------------------------------------------------------- 1. packages
if command -v slurmctld >/dev/null && command -v slurmd >/dev/null \
  && command -v sbatch >/dev/null && command -v munged >/dev/null; then
  say "slurm-wlm and munge already installed"
else
  command -v apt-get >/dev/null 2>&1 || skip "slurm-wlm/munge not installed and no apt-get here"
  say "apt-get update && apt-get install slurm-wlm munge (log: $APTLOG)"
  if ! timeout 300 apt-get update -qq >"$APTLOG" 2>&1; then
    skip "apt-get update failed: $(tail -n 2 "$APTLOG" | tr '\n' ' ')"
  fi
  if ! DEBIAN_FRONTEND=noninteractive timeout 600 apt-get install -y -qq \
    --no-install-recommends slurm-wlm munge >>"$APTLOG" 2>&1; then
    skip "apt-get install slurm-wlm munge failed: $(tail -n 2 "$APTLOG" | tr '\n' ' ')"
  fi
  say "installed slurm-wlm and munge"
fi

# ---------------------------------------------------------------- 2. cluster config
if pgrep -x slurmctld >/dev/null || pgrep -x slurmd >/dev/null; then
  skip "a slurmctld or slurmd is already running on this machine; not touching it"
fi
NCPU=$(nproc)
MEM_MB=$(awk '/^MemTotal:/ {print int($2 / 1024)}' /proc/meminfo)
REAL_MB=$((MEM_MB * 9 / 10)) # a little under the machine's memory
mkdir -p "$WORK"/{state,spool,log} /etc/slurm
export SLURM_CONF
if [ -e "$SLURM_CONF" ]; then
  mv "$SLURM_CONF" "$WORK/slurm.conf.orig" || skip "cannot move the existing $SLURM_CONF aside"
fi
cat >"$SLURM_CONF" <<EOF
# One-node test cluster for tests/slurm/run.sh: no cgroups, no accounting database.
ClusterName=gmmrestore
SlurmctldHost=localhost
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
JobAcctGatherType=jobacct_gather/none
MpiDefault=none
ReturnToService=2
# finished jobs stay visible to squeue/scontrol for 10 minutes (snakemake's squeue status)
MinJobAge=600
StateSaveLocation=$WORK/state
SlurmdSpoolDir=$WORK/spool
SlurmctldPidFile=$WORK/slurmctld.pid
SlurmdPidFile=$WORK/slurmd.pid
SlurmctldLogFile=$WORK/log/slurmctld.log
SlurmdLogFile=$WORK/log/slurmd.log
NodeName=localhost CPUs=$NCPU RealMemory=$REAL_MB State=UNKNOWN
PartitionName=debug Nodes=localhost Default=YES MaxTime=INFINITE State=UP
EOF
say "slurm.conf: $SLURM_CONF (CPUs=$NCPU RealMemory=$REAL_MB MB, partition debug)"

# ---------------------------------------------------------------- 3. daemons

if munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then
  say "munged already running"
else
  if [ ! -s /etc/munge/munge.key ]; then
    mungekey -c -k /etc/munge/munge.key || skip "mungekey -c failed"
    say "created /etc/munge/munge.key"
  fi
  chown munge:munge /etc/munge/munge.key && chmod 600 /etc/munge/munge.key
  mkdir -p /run/munge /var/lib/munge /var/log/munge
  chown munge:munge /run/munge /var/lib/munge /var/log/munge
  chmod 755 /run/munge
  runuser -u munge -- /usr/sbin/munged >"$WORK/log/munged.out" 2>&1 \
    || skip "munged does not start: $(tail -n 2 "$WORK/log/munged.out" | tr '\n' ' ')"
  for _ in $(seq 1 20); do
    [ -s /run/munge/munged.pid ] && break
    sleep 0.25
  done
  STARTED_MUNGED=$(cat /run/munge/munged.pid 2>/dev/null)
  munge -n | unmunge >/dev/null 2>&1 || skip "munge credentials do not verify"
  say "started munged (pid $STARTED_MUNGED)"
fi

log_tail() { tail -n 3 "$1" 2>/dev/null | tr '\n' ' '; }
slurmctld -f "$SLURM_CONF" -i >"$WORK/log/slurmctld.out" 2>&1 \
  || skip "slurmctld does not start: $(log_tail "$WORK/log/slurmctld.log")"
slurmd -f "$SLURM_CONF" -N localhost >"$WORK/log/slurmd.out" 2>&1 \
  || skip "slurmd does not start: $(log_tail "$WORK/log/slurmd.log")"

STATE=""
for _ in $(seq 1 60); do
  STATE=$(sinfo -h -N -n localhost -o %t 2>/dev/null)
  [ "$STATE" = idle ] && break
  sleep 1
done
if [ "$STATE" != idle ]; then
  echo "--- slurmctld.log"; tail -n 15 "$WORK/log/slurmctld.log" 2>/dev/null
  echo "--- slurmd.log"; tail -n 15 "$WORK/log/slurmd.log" 2>/dev/null
  skip "node not idle after 60 s (state '${STATE:-none}')"
fi
say "sinfo: $(sinfo -h -o '%P %a %D %t %c CPUs')"

# jobs inherit the submitting environment (sbatch --export=ALL): the venv's python first
export PATH="$VENV_BIN:$PATH"
PRE=$WORK/preflight.out
timeout 120 sbatch --wait -N1 -n1 -t 2 --mem 200 -o "$PRE" --wrap \
  'echo "python=$(command -v python)"; env | grep "^SLURM_CONF="; srun -n1 true && echo srun=ok' \
  >/dev/null 2>"$WORK/preflight.err"
cat "$PRE" "$WORK/preflight.err" 2>/dev/null
JOB_PYTHON=$(sed -n 's/^python=//p' "$PRE" 2>/dev/null)
[ "$JOB_PYTHON" = "$VENV_BIN/python" ] \
  || fail "inside a SLURM job 'python' is '$JOB_PYTHON', expected $VENV_BIN/python"
grep -q '^srun=ok$' "$PRE" || fail "srun inside an sbatch job failed (see above)"
say "inside SLURM jobs python is $JOB_PYTHON"

# ---------------------------------------------------------------- 4. the workflow
RUN=$WORK/run
mkdir -p "$RUN"
LOG=$WORK/snakemake.log
say "snakemake --workflow-profile profiles/slurm (tiny config) in $RUN"
(
  cd "$RUN" && timeout 600 "$VENV_BIN/snakemake" -s "$ROOT/Snakefile" \
    --configfile "$ROOT/tests/configs/tiny.yaml" \
    --workflow-profile "$ROOT/profiles/slurm" \
    --slurm-no-account \
    --slurm-status-command squeue \
    --slurm-init-seconds-before-status-checks 2 \
    --seconds-between-status-checks 2 \
    --latency-wait 5 \
    --default-resources slurm_partition=debug \
    --max-threads "$NCPU" \
    --jobs 4
) >"$LOG" 2>&1
STATUS=$?
if [ $STATUS -ne 0 ]; then
  echo "--- last lines of $LOG"; tail -n 60 "$LOG"
  for f in "$RUN"/.snakemake/slurm_logs/*/*/*.log; do
    [ -f "$f" ] && { echo "--- $f"; tail -n 20 "$f"; }
  done
  SLURM_SMOKE_KEEP=1
  fail "snakemake exited with $STATUS (log kept in $WORK)"
fi

# ---------------------------------------------------------------- 5. checks
grep -E "submitted with SLURM jobid" "$LOG"
mapfile -t JOBIDS < <(grep -oE "submitted with SLURM jobid [0-9]+" "$LOG" | awk '{print $NF}')
N_EXPECTED=$(grep -oE "^[0-9]+ of [0-9]+ steps \(100%\) done" "$LOG" | tail -n 1 | awk '{print $3}')
# every step except the target rule 'all' (run in the main process) is a SLURM job
[ -n "$N_EXPECTED" ] || fail "no '100% done' line in $LOG"
[ "${#JOBIDS[@]}" -eq $((N_EXPECTED - 1)) ] \
  || fail "${#JOBIDS[@]} SLURM job ids in the log, expected $((N_EXPECTED - 1))"
printf '%-6s %-10s %-5s %-8s %s\n' jobid state cpus mem "rule (snakemake's --comment)"
for id in "${JOBIDS[@]}"; do
  info=$(scontrol -o show job "$id" 2>/dev/null)
  state=$(grep -oE "JobState=[A-Z_]+" <<<"$info" | cut -d= -f2)
  printf '%-6s %-10s %-5s %-8s %s\n' "$id" "${state:-unknown}" \
    "$(grep -oE "NumCPUs=[0-9]+" <<<"$info" | cut -d= -f2)" \
    "$(grep -oE "MinMemoryNode=[0-9A-Z]+" <<<"$info" | cut -d= -f2)" \
    "$(grep -oE "Comment=[^ ]+" <<<"$info" | cut -d= -f2)"
  [ "$state" = COMPLETED ] || fail "SLURM job $id: state '${state:-unknown}', expected COMPLETED"
done
say "${#JOBIDS[@]} SLURM jobs COMPLETED: ${JOBIDS[*]}"

"$VENV_BIN/python" - "$RUN/results" <<'EOF' || fail "outputs of the tiny workflow are wrong"
import csv
import os
import sys

results = sys.argv[1]
def rows(name):
    with open(os.path.join(results, name), newline="") as fh:
        return list(csv.DictReader(fh))

metrics = rows("metrics.csv")
methods = {}
for row in metrics:
    methods.setdefault(row["method"], []).append(float(row["psnr"]))
assert set(methods) == {"corrupted", "mapk", "epll", "epll_image_prior", "wiener"}, methods.keys()
assert all(len(v) == 8 for v in methods.values()), {m: len(v) for m, v in methods.items()}
mean = {m: sum(v) / len(v) for m, v in methods.items()}
assert mean["mapk"] > mean["corrupted"] + 2, mean
summary = rows("summary.csv")
assert {r["method"] for r in summary} == set(methods), summary
status = rows("sweep_status.csv")
assert status and all(r["status"] == "ok" for r in status), status
for name in ("figures/gmm_tiny_m6_K3.png", "figures/examples_tiny_gauss5_s0.1.png"):
    with open(os.path.join(results, name), "rb") as fh:
        assert fh.read(8) == b"\x89PNG\r\n\x1a\n", name
print("outputs ok: %d metric rows, mean PSNR %s" % (
    len(metrics), ", ".join(f"{m} {v:.2f} dB" for m, v in sorted(mean.items()))))
EOF

say "SLURM smoke test PASSED: tiny workflow finished through sbatch," \
  "${#JOBIDS[@]} SLURM jobs: ${JOBIDS[*]}"
