#!/usr/bin/env bash
# A throw-away single-node Slurm cluster on this machine (munged, slurmctld, slurmd from Debian's
# packages; every file in a temporary folder), used by the deployment tests:
#   source tests/slurm/single_node_slurm.sh && slurm_up   # exports SLURM_CONF; slurm_down stops it all
# slurm_up leaves the daemons running in the background; slurm_down (also run on EXIT) kills every one.
slurm_up() {
  SLURM_DIR=$(mktemp -d /tmp/skein-slurm.XXXXXX)
  local host ports
  host=$(hostname -s)
  # Free ports for the two daemons, so a test never collides with another Slurm.
  ports=$(python3 -c 'import socket
s=[socket.socket() for _ in range(2)]
[x.bind(("127.0.0.1",0)) for x in s]
print(" ".join(str(x.getsockname()[1]) for x in s))')
  set -- $ports
  mkdir -p "$SLURM_DIR/state" "$SLURM_DIR/spool"
  dd if=/dev/urandom of="$SLURM_DIR/munge.key" bs=1024 count=1 status=none
  chmod 400 "$SLURM_DIR/munge.key"
  munged --force --key-file="$SLURM_DIR/munge.key" --socket="$SLURM_DIR/munge.socket" --pid-file="$SLURM_DIR/munged.pid" \
    --log-file="$SLURM_DIR/munged.log" --seed-file="$SLURM_DIR/munge.seed"
  cat >"$SLURM_DIR/slurm.conf" <<CONF
ClusterName=skeintest
SlurmctldHost=$host(127.0.0.1)
SlurmUser=root
SlurmdUser=root
SlurmctldPort=$1
SlurmdPort=$2
AuthType=auth/munge
AuthInfo=socket=$SLURM_DIR/munge.socket
CredType=cred/munge
StateSaveLocation=$SLURM_DIR/state
SlurmdSpoolDir=$SLURM_DIR/spool
SlurmctldPidFile=$SLURM_DIR/slurmctld.pid
SlurmdPidFile=$SLURM_DIR/slurmd.pid
SlurmctldLogFile=$SLURM_DIR/slurmctld.log
SlurmdLogFile=$SLURM_DIR/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SlurmdParameters=config_overrides
MpiDefault=none
ReturnToService=2
NodeName=$host NodeAddr=127.0.0.1 CPUs=8 State=UNKNOWN
PartitionName=debug Nodes=$host Default=YES MaxTime=INFINITE State=UP OverSubscribe=YES
CONF
  export SLURM_CONF="$SLURM_DIR/slurm.conf"
  slurmctld -c -f "$SLURM_CONF"
  slurmd -f "$SLURM_CONF"
  for _ in $(seq 100); do
    sinfo -h -o %T 2>/dev/null | grep -q idle && return 0
    sleep 0.2
  done
  echo "slurm did not come up:"; tail -5 "$SLURM_DIR"/*.log
  return 1
}

slurm_down() {
  [ -n "${SLURM_DIR:-}" ] || return 0
  local p
  # Jobs first (their slurmstepd processes outlive slurmd otherwise), then the daemons.
  scancel --full --quiet --user="$(id -un)" 2>/dev/null || true
  for _ in $(seq 25); do [ -z "$(squeue -h 2>/dev/null)" ] && break; sleep 0.2; done
  local pids=()
  for p in slurmd slurmctld munged; do
    if [ -f "$SLURM_DIR/$p.pid" ]; then pids+=("$(cat "$SLURM_DIR/$p.pid")"); fi
  done
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  # They take a few seconds to shut down (and remove their pid files); then whatever is left is killed.
  for _ in $(seq 50); do
    local alive=0
    for p in "${pids[@]}"; do kill -0 "$p" 2>/dev/null && alive=1; done
    [ $alive = 0 ] && break
    sleep 0.2
  done
  for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null || true; done
  rm -rf "$SLURM_DIR"
  SLURM_DIR=
}
