#!/usr/bin/env bash
# A single-host Slurm for the `slurm` tests: munged, slurmctld and slurmd as root on this
# machine, no systemd and no cgroups (proctrack/linuxproc, task/none). Installs Debian's
# slurm-wlm and munge when missing.
#
#   tests/slurm/slurm_cluster.sh start   # installs if needed, configures, starts, waits for idle
#   tests/slurm/slurm_cluster.sh stop    # stops the daemons by their pid files
#   tests/slurm/slurm_cluster.sh status
#
# Everything lives under $CANOPY_SLURM_DIR (default /tmp/canopy-slurm); the config is
# /etc/slurm/slurm.conf (where the Slurm commands look for it).
set -euo pipefail
DIR=${CANOPY_SLURM_DIR:-/tmp/canopy-slurm}
CONF=/etc/slurm/slurm.conf
HOST=$(hostname -s)
CPUS=${CANOPY_SLURM_CPUS:-$(nproc)}

need_root() {
  if [ "$(id -u)" -ne 0 ]; then echo "slurm_cluster.sh: must run as root" >&2; exit 1; fi
}

install() {
  if ! command -v slurmctld >/dev/null || ! command -v munged >/dev/null; then
    echo "installing slurm-wlm and munge"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq slurm-wlm munge >/dev/null
  fi
}

configure() {
  mkdir -p "$DIR"/{state,spool,log,run} /etc/slurm /etc/munge /run/munge /var/lib/munge /var/log/munge
  if [ ! -s /etc/munge/munge.key ]; then
    dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none
  fi
  chown -R munge:munge /etc/munge /run/munge /var/lib/munge /var/log/munge
  chmod 0400 /etc/munge/munge.key
  chmod 0700 /etc/munge
  cat > "$CONF" <<CONF
# Written by canopy's tests/slurm/slurm_cluster.sh: one node, no cgroups, no systemd.
ClusterName=canopy
SlurmctldHost=$HOST(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CryptoType=crypto/munge
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
ReturnToService=2
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool
SlurmctldPidFile=$DIR/run/slurmctld.pid
SlurmdPidFile=$DIR/run/slurmd.pid
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd.log
SlurmctldPort=6817
SlurmdPort=6818
SchedulerType=sched/backfill
KillWait=10
MinJobAge=300
InactiveLimit=0
NodeName=$HOST NodeAddr=127.0.0.1 CPUs=$CPUS RealMemory=4000 State=UNKNOWN
PartitionName=debug Nodes=$HOST Default=YES MaxTime=INFINITE State=UP OverSubscribe=FORCE:4
CONF
}

start() {
  need_root
  install
  configure
  if ! pgrep -x munged >/dev/null; then
    su -s /bin/sh munge -c "munged --force" 2>/dev/null || munged --force
  fi
  if ! pgrep -x slurmctld >/dev/null; then slurmctld; fi
  if ! pgrep -x slurmd >/dev/null; then slurmd; fi
  for _ in $(seq 60); do
    state=$(sinfo -h -N -o '%T' 2>/dev/null | head -n 1 || true)
    case "$state" in
      idle*|mixed*|allocated*) echo "slurm: node $HOST is $state"; return 0 ;;
      down*|drain*) scontrol update nodename="$HOST" state=resume >/dev/null 2>&1 || true ;;
    esac
    sleep 1
  done
  echo "slurm: the node never became idle (state '$state'); logs in $DIR/log" >&2
  tail -n 20 "$DIR"/log/*.log >&2 || true
  exit 1
}

stop() {
  for d in slurmd slurmctld; do
    if [ -f "$DIR/run/$d.pid" ]; then kill "$(cat "$DIR/run/$d.pid")" 2>/dev/null || true; fi
    pkill -x "$d" 2>/dev/null || true
  done
  echo "slurm: stopped"
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  status) sinfo; squeue ;;
  *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
