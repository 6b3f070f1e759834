#!/usr/bin/env bash
# A one-node Slurm cluster on this machine, for trying `hydra/launcher=slurm_local` before a real
# cluster (README: "Trying the SLURM launcher before a real cluster"). Debian/Ubuntu, as root.
#
#   sudo scripts/slurm_local.sh start    # install slurm-wlm + munge if missing, configure, start, wait for the node
#   sudo scripts/slurm_local.sh status   # the node and the queue; exit 0 when the node takes jobs
#   sudo scripts/slurm_local.sh stop     # stop the daemons this script configured
#
# The cluster: controller and node `localhost` (127.0.0.1), this machine's CPUs (nproc) and memory
# (free), one default partition `debug`, cores and memory as consumable resources (several 1-CPU jobs
# run side by side), no cgroups (works in containers), no accounting database: `sacct` is disabled,
# so submitit is made to poll squeue instead (afno_repro/slurm.py). Daemons are started directly, not
# through systemd, so the script also works where systemd is not PID 1. `start` is idempotent.
# It refuses to touch a slurm.conf it did not write.
#
# Exit status of `start` (the tests skip on 3-6 and fail on anything else): 0 ready; 1 other error;
# 3 not root; 4 Slurm missing and no apt-get; 5 the node is not idle within SLURM_LOCAL_WAIT_S (30 s);
# 6 a slurm.conf this script did not write. `status`: 0 the node takes jobs, 3 it does not.
set -euo pipefail

CONF_DIR=/etc/slurm                 # Debian's slurm-wlm reads /etc/slurm/slurm.conf (since 20.02)
CONF="$CONF_DIR/slurm.conf"
MARKER="# written by afno-repro scripts/slurm_local.sh"
STATE_DIR=/run/afno-slurm-local     # what this script started (so `stop` leaves other daemons alone)
NODE=localhost
PARTITION=debug
WAIT_S=${SLURM_LOCAL_WAIT_S:-30}

say() { echo "slurm_local: $*"; }
die() { echo "slurm_local: error: $1" >&2; exit "${2:-1}"; }

require_root() {
    [[ $(id -u) -eq 0 ]] || die "must run as root (it installs packages and starts system daemons): sudo $0 ${1:-start}" 3
}

node_state() {  # the node's state as sinfo prints it (idle, mixed, allocated, down*, ...), empty if no controller
    controller_up || return 0   # sinfo retries a dead controller for ~10 s; scontrol ping answers at once
    timeout 10 sinfo -h -N -n "$NODE" -o %T 2>/dev/null | head -n 1 || true
}

node_up() { [[ $(node_state) =~ ^(idle|mixed|allocated|completing)$ ]]; }

controller_up() { command -v scontrol >/dev/null 2>&1 && timeout 10 scontrol ping 2>/dev/null | grep -q 'is UP'; }

slurmd_running() { pgrep -x -r D,R,S slurmd >/dev/null; }  # not a zombie left by an earlier stop

munge_works() { command -v munge >/dev/null 2>&1 && munge -n 2>/dev/null | unmunge >/dev/null 2>&1; }

ours() { [[ -f $CONF ]] && grep -qxF "$MARKER" "$CONF"; }

install_packages() {
    if command -v slurmctld >/dev/null && command -v slurmd >/dev/null && command -v sinfo >/dev/null \
        && command -v munged >/dev/null; then
        return
    fi
    command -v apt-get >/dev/null 2>&1 || die "slurm-wlm/munge are not installed and apt-get is not available: install Slurm and MUNGE with this system's package manager" 4
    say "installing slurm-wlm and munge (apt-get update && apt-get install)"
    apt-get update -qq || die "apt-get update failed: Slurm cannot be installed here" 4
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq slurm-wlm munge >/dev/null \
        || die "apt-get install slurm-wlm munge failed" 4
}

start_munge() {
    if munge_works; then
        say "munged already running"
        return
    fi
    if [[ ! -s /etc/munge/munge.key ]]; then
        say "creating /etc/munge/munge.key"
        mungekey --create --keyfile /etc/munge/munge.key 2>/dev/null \
            || dd if=/dev/urandom of=/etc/munge/munge.key bs=1 count=1024 status=none
    fi
    chown munge:munge /etc/munge/munge.key && chmod 400 /etc/munge/munge.key
    install -d -o munge -g munge -m 0755 /run/munge
    say "starting munged"
    runuser -u munge -- /usr/sbin/munged || die "munged did not start (see /var/log/munge/munged.log)"
    touch "$STATE_DIR/munged"
    for _ in $(seq 1 20); do munge_works && return; sleep 0.25; done
    die "munged started but credentials do not round-trip (see /var/log/munge/munged.log)"
}

write_conf() {
    local cpus mem_mb
    cpus=$(nproc)
    mem_mb=$(free -m | awk '/^Mem:/ {print int($2 * 0.95)}')   # below the total so slurmd never finds less
    install -d "$CONF_DIR"
    install -d -o slurm -g slurm /var/lib/slurm/slurmctld /var/lib/slurm/slurmd /var/log/slurm
    cat > "$CONF" <<EOF
$MARKER
# A one-node cluster on localhost for trying the launcher; not for production. See that script.
ClusterName=afno-local
SlurmctldHost=localhost(127.0.0.1)
SlurmUser=slurm
AuthType=auth/munge
StateSaveLocation=/var/lib/slurm/slurmctld
SlurmdSpoolDir=/var/lib/slurm/slurmd
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd.pid
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
ReturnToService=2
# No cgroups: they are often read-only or absent in containers. Processes are tracked by parent id.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
# No accounting database: sacct reports it as disabled.
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
SchedulerType=sched/backfill
# Cores and memory are consumable: several 1-CPU jobs share the node.
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
MpiDefault=none
NodeName=$NODE NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem_mb State=UNKNOWN
PartitionName=$PARTITION Nodes=$NODE Default=YES MaxTime=INFINITE State=UP
EOF
    say "wrote $CONF (node $NODE: $cpus CPUs, $mem_mb MB; partition $PARTITION)"
}

start() {
    require_root start
    if ours && munge_works && node_up; then
        say "already running (node $NODE is $(node_state)); nothing to do"
        exit 0
    fi
    if [[ -f $CONF ]] && ! ours; then
        die "$CONF exists and was not written by this script: this machine already has a Slurm configuration; use it (hydra/launcher=slurm) instead" 6
    fi
    install_packages
    install -d "$STATE_DIR"
    start_munge
    write_conf
    if controller_up; then
        say "slurmctld already running: reloading the configuration"
        scontrol reconfigure >/dev/null 2>&1 || true
    else
        say "starting slurmctld (log /var/log/slurm/slurmctld.log)"
        /usr/sbin/slurmctld || die "slurmctld did not start (see /var/log/slurm/slurmctld.log)"
    fi
    if slurmd_running; then
        say "slurmd already running"
    else
        say "starting slurmd -N $NODE (log /var/log/slurm/slurmd.log)"
        /usr/sbin/slurmd -N "$NODE" || die "slurmd did not start (see /var/log/slurm/slurmd.log)"
    fi
    local state=""
    for _ in $(seq 1 $((WAIT_S * 2))); do
        state=$(node_state)
        if [[ $state =~ ^(idle|mixed|allocated)$ ]]; then
            say "node $NODE is $state in partition $PARTITION: ready (stop with: $0 stop)"
            exit 0
        fi
        if [[ $state =~ ^(down|drain) ]]; then
            scontrol update NodeName="$NODE" State=RESUME >/dev/null 2>&1 || true
        fi
        sleep 0.5
    done
    sinfo -N -l 2>&1 || true
    scontrol show node "$NODE" 2>/dev/null | grep -i reason || true
    die "node $NODE is not idle after ${WAIT_S}s (state: ${state:-no answer from slurmctld}); see /var/log/slurm/slurmctld.log and slurmd.log" 5
}

stop() {
    require_root stop
    if ! ours; then
        die "$CONF was not written by this script (or is absent): not stopping anything" 6
    fi
    if controller_up || slurmd_running; then
        say "stopping slurmctld and slurmd"
        scontrol shutdown >/dev/null 2>&1 || true
        for _ in $(seq 1 20); do
            pgrep -x -r D,R,S slurmctld >/dev/null || slurmd_running || break
            sleep 0.5
        done
        for pidfile in /run/slurmd.pid /run/slurmctld.pid; do
            [[ -s $pidfile ]] && kill "$(cat "$pidfile")" 2>/dev/null || true
        done
    else
        say "slurmctld and slurmd are not running"
    fi
    if [[ -f $STATE_DIR/munged && -s /run/munge/munged.pid ]]; then
        say "stopping munged"
        kill "$(cat /run/munge/munged.pid)" 2>/dev/null || true
        rm -f "$STATE_DIR/munged"
    fi
}

status() {
    local state
    state=$(node_state)
    if [[ -z $state ]]; then
        say "not running (no answer from slurmctld)"
        exit 3
    fi
    sinfo
    squeue
    [[ $state =~ ^(idle|mixed|allocated|completing)$ ]] || exit 3
}

case "${1:-}" in
    start) start ;;
    stop) stop ;;
    status) status ;;
    *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
