#!/usr/bin/env bash
# Bring up a one-node Slurm 22.05 cluster on loopback (munged, slurmctld, slurmd; no accounting),
# installing Debian's packages first if they are missing. Needs root.
#
#   tests/slurm/up.sh [STATE_DIR]     # default /run/evae-slurm; prints the node line when it is idle
#   tests/slurm/down.sh [STATE_DIR]   # stops exactly the daemons this script started
#
# STATE_DIR/pids lists "name pid" of every daemon started, oldest first. Exit status: 0 up,
# 2 cannot run here (not root, no apt-get, install failed, a Slurm or munge not ours is running
# or configured), 1 a daemon failed to start (everything started is stopped again).
set -euo pipefail

HERE="$(cd "$(dirname "$0")" && pwd)"
STATE="${1:-/run/evae-slurm}"
CONF=/etc/slurm/slurm.conf
MARKER="# Written by tests/slurm/up.sh"
PACKAGES="munge slurmctld slurmd slurm-client"

cannot() { echo "up.sh: cannot run a local Slurm cluster here: $*" >&2; exit 2; }
fail() {
    echo "up.sh: $*" >&2
    for log in /var/log/slurm/slurmctld.log /var/log/slurm/slurmd.log /var/log/munge/munged.log; do
        [[ -f $log ]] && { echo "--- last lines of $log" >&2; tail -n 15 "$log" >&2; }
    done
    "$HERE/down.sh" "$STATE" >&2 || true
    exit 1
}
wait_for() {  # wait_for SECONDS DESCRIPTION COMMAND...: poll every 0.2 s
    local deadline=$((SECONDS + $1)) what=$2; shift 2
    until "$@" >/dev/null 2>&1; do
        ((SECONDS < deadline)) || fail "timed out after waiting for $what"
        sleep 0.2
    done
}
record() {  # record NAME PIDFILE: the daemon forked; keep its pid once it has written it
    wait_for 20 "$1 to write $2" test -s "$2"
    local pid; pid=$(<"$2")
    kill -0 "$pid" 2>/dev/null || fail "$1 exited right after starting"
    echo "$1 $pid" >>"$STATE/pids"
}

[[ -f $STATE/pids ]] && "$HERE/down.sh" "$STATE"
((EUID == 0)) || cannot "starting munged, slurmctld and slurmd needs root (running as uid $EUID)"
for daemon in munged slurmctld slurmd; do
    pgrep -x "$daemon" >/dev/null && cannot "a $daemon that this script did not start is running; stop it first"
done
if [[ -f $CONF ]] && ! grep -qF "$MARKER" "$CONF"; then
    cannot "$CONF exists and was not written by this script; refusing to overwrite a real cluster's config"
fi

missing=""
for bin in /usr/sbin/munged /usr/sbin/slurmctld /usr/sbin/slurmd /usr/bin/sbatch; do
    [[ -x $bin ]] || missing=yes
done
if [[ -n $missing ]]; then
    command -v apt-get >/dev/null || cannot "the Slurm daemons are not installed and there is no apt-get to install $PACKAGES"
    echo "up.sh: installing $PACKAGES" >&2
    export DEBIAN_FRONTEND=noninteractive
    mkdir -p "$STATE"
    { apt-get update -qq && apt-get install -y -qq --no-install-recommends $PACKAGES; } >"$STATE/apt.log" 2>&1 \
        || cannot "apt-get install $PACKAGES failed (no package mirror reachable?): $(tail -n 5 "$STATE/apt.log")"
fi

mkdir -p "$STATE" /etc/slurm /var/spool/slurmctld /var/spool/slurmd /var/log/slurm /run/slurm /run/munge
chown slurm:slurm /var/spool/slurmctld /var/log/slurm /run/slurm
chown munge:munge /run/munge
if [[ ! -s /etc/munge/munge.key ]]; then
    mungekey --create --keyfile=/etc/munge/munge.key && chown munge:munge /etc/munge/munge.key && chmod 400 /etc/munge/munge.key
fi

# The node as slurmd sees it; RealMemory must not exceed it (or the node is drained), and 2 GiB stay for the OS.
node_line=$(/usr/sbin/slurmd -C | head -n 1)
NODE=$(hostname -s)
CPUS=$(sed -n 's/.*CPUs=\([0-9]*\).*/\1/p' <<<"$node_line")
MEMORY_MB=$(sed -n 's/.*RealMemory=\([0-9]*\).*/\1/p' <<<"$node_line")
MEMORY_MB=$((MEMORY_MB > 3072 ? MEMORY_MB - 2048 : MEMORY_MB / 2))
[[ -n $CPUS && $MEMORY_MB -gt 0 ]] || cannot "could not read CPUs and RealMemory from 'slurmd -C': $node_line"
sed -e "s/@NODE@/$NODE/g" -e "s/@CPUS@/$CPUS/g" -e "s/@MEMORY_MB@/$MEMORY_MB/g" "$HERE/slurm.conf.in" >"$CONF.tmp"
mv "$CONF.tmp" "$CONF"
: >"$STATE/pids"

rm -f /run/munge/munged.pid /run/slurm/slurmctld.pid /run/slurm/slurmd.pid
: >/var/log/slurm/slurmctld.log && : >/var/log/slurm/slurmd.log && chown slurm:slurm /var/log/slurm/slurmctld.log
runuser -u munge -- /usr/sbin/munged || fail "munged did not start"
record munged /run/munge/munged.pid
wait_for 10 "munge to issue and check a credential" bash -c 'munge -n | unmunge'
/usr/sbin/slurmctld -c || fail "slurmctld did not start"  # -c: no jobs or node state from an earlier cluster
record slurmctld /run/slurm/slurmctld.pid
/usr/sbin/slurmd || fail "slurmd did not start"
record slurmd /run/slurm/slurmd.pid
wait_for 30 "node $NODE to become idle" bash -c "[[ \$(sinfo -h -n '$NODE' -o %t) == idle ]]"
echo "NodeName=$NODE CPUs=$CPUS RealMemory=$MEMORY_MB"
