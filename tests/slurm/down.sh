#!/usr/bin/env bash
# Stop the cluster tests/slurm/up.sh started: cancel its jobs, then stop the daemons listed in
# STATE_DIR/pids, newest first (SIGTERM, SIGKILL after 15 s). Nothing else is touched; a pid
# that now belongs to another program (the daemon is gone and the pid was reused) is skipped.
#
#   tests/slurm/down.sh [STATE_DIR]    # default /run/evae-slurm; does nothing without STATE_DIR/pids
set -uo pipefail

STATE="${1:-/run/evae-slurm}"
PIDS="$STATE/pids"
[[ -f $PIDS ]] || exit 0

alive() { [[ -r /proc/$2/comm && $(</proc/$2/comm) == "$1" ]]; }

# Cancel the jobs first, so that slurmd ends their steps (and the programs in them) before it goes.
if grep -q '^slurmctld ' "$PIDS" && alive slurmctld "$(awk '$1 == "slurmctld" {print $2}' "$PIDS")"; then
    jobs=$(squeue -h -o %i 2>/dev/null)
    if [[ -n $jobs ]]; then
        scancel $jobs 2>/dev/null
        for _ in $(seq 100); do
            [[ -z $(squeue -h -o %i 2>/dev/null) ]] && break
            sleep 0.2
        done
    fi
fi

status=0
while read -r name pid; do
    alive "$name" "$pid" || continue
    kill -TERM "$pid"
    for _ in $(seq 75); do
        alive "$name" "$pid" || continue 2
        sleep 0.2
    done
    echo "down.sh: $name ($pid) ignored SIGTERM for 15 s; killing it" >&2
    kill -KILL "$pid"
    status=1
done < <(tac "$PIDS")
rm -f "$PIDS"
exit $status
