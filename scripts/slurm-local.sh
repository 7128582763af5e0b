#!/bin/sh
# A one-node Slurm cluster on this machine, for the tests and for trying deploy/slurm/:
#
#   scripts/slurm-local.sh start    # munged, slurmctld, slurmd; prints `export SLURM_CONF=...`
#   scripts/slurm-local.sh stop     # stops the daemons this script started
#
# Needs root and Debian 12's `slurm-wlm munge` (scripts/setup.sh installs them). Idempotent:
# `start` with the cluster up does nothing. Everything it writes lives in $SLURM_LOCAL_DIR
# (default /tmp/clipdenoise-slurm): slurm.conf (SlurmctldHost and NodeName are this host's
# short name, proctrack/linuxproc, task/none, no accounting, select/cons_tres, SlurmUser
# root), state, logs, and the pids of what it started. /etc/slurm is not touched: every
# Slurm command must see SLURM_CONF=$SLURM_LOCAL_DIR/slurm.conf. The munge key is Debian's
# (/etc/munge/munge.key, created by the package; made here if missing).
set -eu
DIR=${SLURM_LOCAL_DIR:-/tmp/clipdenoise-slurm}
CONF=$DIR/slurm.conf
export SLURM_CONF=$CONF
host=$(hostname -s)

alive() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

wait_for() { # seconds, command...
    n=$1; shift
    while ! "$@" >/dev/null 2>&1; do
        n=$((n - 1))
        if [ "$n" -le 0 ]; then return 1; fi
        sleep 1
    done
}

idle() { sinfo -h -n "$host" -o %t 2>/dev/null | grep -Eq '^(idle|mix|alloc)'; }

start() {
    for p in munged slurmctld slurmd sinfo sbatch; do
        command -v "$p" >/dev/null || { echo "slurm-local: $p is missing (apt-get install slurm-wlm munge)" >&2; exit 1; }
    done
    mkdir -p "$DIR/state" "$DIR/spool" "$DIR/pids"
    if [ ! -s /etc/munge/munge.key ]; then
        mkdir -p /etc/munge
        dd if=/dev/urandom of=/etc/munge/munge.key bs=1 count=1024 2>/dev/null
    fi
    chown munge:munge /etc/munge /etc/munge/munge.key
    chmod 700 /etc/munge
    chmod 400 /etc/munge/munge.key
    mkdir -p /run/munge /var/lib/munge /var/log/munge
    chown munge:munge /run/munge /var/lib/munge /var/log/munge
    if ! munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then
        runuser -u munge -- munged --pid-file=/run/munge/munged.pid
        cp /run/munge/munged.pid "$DIR/pids/munged"
        wait_for 10 sh -c 'munge -n | unmunge' || { echo "slurm-local: munged did not start" >&2; exit 1; }
    fi
    cat > "$CONF.new" <<CONF
ClusterName=clipdenoise
SlurmctldHost=$host
SlurmUser=root
AuthType=auth/munge
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool
SlurmctldPidFile=$DIR/slurmctld.pid
SlurmdPidFile=$DIR/slurmd.pid
SlurmctldLogFile=$DIR/slurmctld.log
SlurmdLogFile=$DIR/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
ReturnToService=2
MpiDefault=none
NodeName=$host CPUs=$(nproc) State=UNKNOWN
PartitionName=local Nodes=$host Default=YES MaxTime=INFINITE State=UP
CONF
    mv "$CONF.new" "$CONF"
    if ! alive "$DIR/slurmctld.pid"; then
        slurmctld -i
        wait_for 20 alive "$DIR/slurmctld.pid"
        cat "$DIR/slurmctld.pid" > "$DIR/pids/slurmctld"
    fi
    if ! alive "$DIR/slurmd.pid"; then
        slurmd
        wait_for 20 alive "$DIR/slurmd.pid"
        cat "$DIR/slurmd.pid" > "$DIR/pids/slurmd"
    fi
    scontrol update nodename="$host" state=resume >/dev/null 2>&1 || true
    if ! wait_for 60 idle; then
        echo "slurm-local: node $host not idle after 60 s (see $DIR/slurmctld.log, $DIR/slurmd.log)" >&2
        exit 1
    fi
    echo "export SLURM_CONF=$CONF"
}

stop() {
    for d in slurmd slurmctld munged; do
        f=$DIR/pids/$d
        if alive "$f"; then
            pid=$(cat "$f")
            kill "$pid"
            n=50
            while kill -0 "$pid" 2>/dev/null && [ $n -gt 0 ]; do sleep 0.2; n=$((n - 1)); done
            kill -0 "$pid" 2>/dev/null && kill -KILL "$pid"
        fi
        rm -f "$f"
    done
}

case "${1:-}" in
    start) start ;;
    stop) stop ;;
    *) echo "usage: $0 start|stop" >&2; exit 2 ;;
esac
