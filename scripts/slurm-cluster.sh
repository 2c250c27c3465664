#!/usr/bin/env bash
# A real single-node Slurm cluster on this machine, from Debian's packages,
# for the tests of the Slurm executor (and for trying it by hand).
#
#   scripts/slurm-cluster.sh start DIR    # install if missing, start what is not running
#   scripts/slurm-cluster.sh status DIR   # each daemon's state, the node, the queue
#   scripts/slurm-cluster.sh stop DIR     # cancel every job, stop every daemon it started
#
# Everything lives under DIR: configs (DIR/etc), state, spool, logs, the
# accounting database and the daemons' pid files (DIR/run). `start` is
# idempotent: it starts only the daemons that are not running, so after a
# daemon dies (or is killed by a test) running it again brings the cluster
# back. Clients find the cluster through SLURM_CONF=DIR/etc/slurm.conf, which
# `start` prints; when /etc/slurm/slurm.conf is absent (or a link this script
# made) it is also linked there, so plain `sbatch` works in any shell.
#
# Runs as root, without systemd: munged, mariadbd, slurmdbd, slurmctld and
# slurmd are started directly, in that order, each after the one before
# answers. The node advertises NAS_SLURM_CPUS CPUs (default 8, more than the
# machine has, so that sleeping test jobs run side by side) and a count-only
# GRES of NAS_SLURM_GPUS fake GPUs (default 2), so `--gres=gpu:1` schedules.
#
# Environment: NAS_SLURM_CPUS, NAS_SLURM_GPUS, NAS_SLURM_MEMORY_MB (default
# 4000), NAS_SLURM_DB_PORT (default 3306).
set -euo pipefail

usage() { echo "usage: $0 start|stop|status DIR" >&2; exit 2; }
[ $# -eq 2 ] || usage
ACTION=$1
mkdir -p "$2"
DIR=$(cd "$2" && pwd)
ETC=$DIR/etc
RUN=$DIR/run
LOG=$DIR/log
CONF=$ETC/slurm.conf
export SLURM_CONF=$CONF

CPUS=${NAS_SLURM_CPUS:-8}
GPUS=${NAS_SLURM_GPUS:-2}
MEMORY_MB=${NAS_SLURM_MEMORY_MB:-4000}
DB_PORT=${NAS_SLURM_DB_PORT:-3306}
HOST=$(hostname -s)
MUNGE_SOCKET=/run/munge/munge.socket.2

say() { printf 'slurm-cluster: %s\n' "$*" >&2; }
die() { say "$*"; exit 1; }

# Waits up to $1 seconds for the command after it to succeed.
wait_for() {
  local limit=$1; shift
  local deadline=$(( $(date +%s) + limit ))
  until "$@" >/dev/null 2>&1; do
    [ "$(date +%s)" -lt "$deadline" ] || return 1
    sleep 0.2
  done
}

# Whether process $1 is alive (a zombie is not).
alive() {
  local state
  state=$(awk '/^State:/ {print $2}' "/proc/$1/status" 2>/dev/null) && [ -n "$state" ] && [ "$state" != Z ]
}

# The pid in pid file $1 when that process is alive.
live_pid() {
  local file=$1 pid
  [ -s "$file" ] || return 1
  pid=$(tr -dc '0-9' <"$file")
  [ -n "$pid" ] && alive "$pid" || return 1
  echo "$pid"
}

dead() { ! alive "$1"; }

# Sends TERM to the process in pid file $1, waits up to $2 s, then KILL.
stop_pid() {
  local file=$1 limit=$2 name pid
  name=$(basename "$file" .pid)
  if pid=$(live_pid "$file"); then
    kill -TERM "$pid" 2>/dev/null || true
    if ! wait_for "$limit" dead "$pid"; then
      say "$name ($pid) did not stop in ${limit} s: KILL"
      kill -KILL "$pid" 2>/dev/null || true
      wait_for 5 dead "$pid" || true
    fi
    say "stopped $name ($pid)"
  fi
  rm -f "$file"
}

install_packages() {
  local need=()
  command -v munged >/dev/null || need+=(munge)
  command -v mariadbd >/dev/null || need+=(mariadb-server)
  command -v slurmdbd >/dev/null || need+=(slurmdbd)
  command -v slurmctld >/dev/null || need+=(slurmctld)
  command -v slurmd >/dev/null || need+=(slurmd)
  command -v sbatch >/dev/null && command -v sacct >/dev/null || need+=(slurm-client)
  [ ${#need[@]} -gt 0 ] || return 0
  say "installing ${need[*]}"
  # No service may start on its own during the install: every daemon of the
  # cluster is started below, under DIR, and stopped by `stop`.
  local policy=/usr/sbin/policy-rc.d made_policy=""
  if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' >"$policy"
    chmod 755 "$policy"
    made_policy=1
  fi
  local rc=0
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    munge mariadb-server slurmdbd slurmctld slurmd slurm-client >"$DIR/apt.log" 2>&1 || rc=$?
  [ -z "$made_policy" ] || rm -f "$policy"
  [ "$rc" -eq 0 ] || die "apt-get install failed ($rc), see $DIR/apt.log"
}

# Whether slurmd can make cgroup v1 memory groups here.
cgroup_v1_memory() {
  local probe=/sys/fs/cgroup/memory/nas-slurm-probe.$$
  [ -d /sys/fs/cgroup/memory ] && mkdir "$probe" 2>/dev/null && rmdir "$probe"
}

write_configs() {
  mkdir -p "$ETC" "$RUN" "$LOG" "$DIR/state" "$DIR/spool" "$DIR/db"
  local NODE_GRES=""
  [ "$GPUS" -eq 0 ] || NODE_GRES="Gres=gpu:$GPUS"
  # A job past its --mem: with cgroup v1 memory control the kernel stops it
  # and the job ends OUT_OF_MEMORY, as on most clusters; without, the
  # accounting poll kills it and it ends FAILED (signal 9).
  local TASK_PLUGIN=task/none MEMORY_LIMITS="JobAcctGatherParams=OverMemoryKill"
  rm -f "$ETC/cgroup.conf"
  if cgroup_v1_memory; then
    TASK_PLUGIN=task/cgroup MEMORY_LIMITS=""
    printf 'CgroupPlugin=cgroup/v1\nConstrainRAMSpace=yes\nConstrainSwapSpace=yes\nAllowedSwapSpace=0\n' >"$ETC/cgroup.conf"
  fi
  cat >"$CONF" <<EOF
# Written by scripts/slurm-cluster.sh: a single-node test cluster.
ClusterName=nas
SlurmctldHost=$HOST(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool
SlurmctldPidFile=$RUN/slurmctld.pid
SlurmdPidFile=$RUN/slurmd.pid
SlurmctldLogFile=$LOG/slurmctld.log
SlurmdLogFile=$LOG/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=$TASK_PLUGIN
JobAcctGatherType=jobacct_gather/linux
JobAcctGatherFrequency=2
$MEMORY_LIMITS
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=127.0.0.1
AccountingStorageTRES=gres/gpu
# As on a real cluster: jobs need an account (\`nas\`, the default) and a QoS
# that exist.
AccountingStorageEnforce=associations,limits,qos
JobCompType=jobcomp/none
SchedulerType=sched/backfill
# Start a submitted job at once rather than batching submissions for 3 s.
SchedulerParameters=batch_sched_delay=0
SelectType=select/cons_tres
# Memory is counted (so --mem is enforced); a job without --mem gets
# DefMemPerCPU per CPU.
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=200
MpiDefault=none
ReturnToService=2
# The node advertises the CPUs configured here, not the machine's.
SlurmdParameters=config_overrides
# Fast faults for tests: a job past its limit is killed at once and gets
# KillWait s to end; a node that stops answering is down after SlurmdTimeout.
OverTimeLimit=0
KillWait=2
SlurmdTimeout=10
MessageTimeout=5
InactiveLimit=0
# Finished jobs leave squeue soon (sacct keeps them).
MinJobAge=2
# Fake GPUs (see gres.conf), so --gres=gpu:N schedules.
GresTypes=gpu
NodeName=$HOST NodeAddr=127.0.0.1 CPUs=$CPUS RealMemory=$MEMORY_MB $NODE_GRES State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
EOF
  # Slurm's gpu plugin drops GPUs without device files, and warns about files
  # that are not devices: each fake GPU is a link to /dev/null.
  rm -rf "$DIR/dev"
  mkdir -p "$DIR/dev"
  local i
  for ((i = 0; i < GPUS; i++)); do ln -s /dev/null "$DIR/dev/nvidia$i"; done
  if [ "$GPUS" -gt 0 ]; then
    echo "NodeName=$HOST Name=gpu File=$DIR/dev/nvidia[0-$((GPUS - 1))]" >"$ETC/gres.conf"
  else
    : >"$ETC/gres.conf"
  fi
  (
    umask 077
    cat >"$ETC/slurmdbd.conf" <<EOF
AuthType=auth/munge
DbdHost=localhost
DbdAddr=127.0.0.1
DbdPort=6819
SlurmUser=root
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort=$DB_PORT
StorageUser=root
StorageLoc=slurm_acct_db
PidFile=$RUN/slurmdbd.pid
LogFile=$LOG/slurmdbd.log
EOF
  )
  chmod 600 "$ETC/slurmdbd.conf"
}

start_munge() {
  if live_pid "$RUN/munged.pid" >/dev/null; then return 0; fi
  if [ -S "$MUNGE_SOCKET" ] && munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then
    say "munged already running (not started here, will not be stopped)"
    return 0
  fi
  [ -s /etc/munge/munge.key ] || mungekey --create --keyfile=/etc/munge/munge.key
  chmod 600 /etc/munge/munge.key
  mkdir -p /run/munge /var/lib/munge /var/log/munge
  rm -f "$MUNGE_SOCKET" "$MUNGE_SOCKET.lock"
  munged --force --pid-file="$RUN/munged.pid" --log-file="$LOG/munged.log"
  wait_for 10 bash -c 'munge -n | unmunge' || die "munged does not answer, see $LOG/munged.log"
  say "started munged ($(live_pid "$RUN/munged.pid"))"
}

db_answers() { mariadb -uroot -h127.0.0.1 -P"$DB_PORT" -e 'select 1'; }

start_mariadb() {
  if live_pid "$RUN/mariadbd.pid" >/dev/null && db_answers >/dev/null 2>&1; then return 0; fi
  if [ ! -d "$DIR/db/mysql" ]; then
    mariadb-install-db --no-defaults --datadir="$DIR/db" --user=root \
      --auth-root-authentication-method=normal --skip-test-db >"$LOG/mariadb-install.log" 2>&1 ||
      die "mariadb-install-db failed, see $LOG/mariadb-install.log"
  fi
  setsid mariadbd --no-defaults --datadir="$DIR/db" --user=root --bind-address=127.0.0.1 \
    --port="$DB_PORT" --socket="$RUN/mysqld.sock" --pid-file="$RUN/mariadbd.pid" \
    --innodb-buffer-pool-size=64M --skip-name-resolve --log-error="$LOG/mariadbd.log" \
    </dev/null >/dev/null 2>&1 &
  wait_for 60 db_answers || die "mariadbd does not answer on port $DB_PORT, see $LOG/mariadbd.log"
  say "started mariadbd ($(live_pid "$RUN/mariadbd.pid"))"
}

start_slurmdbd() {
  if live_pid "$RUN/slurmdbd.pid" >/dev/null; then return 0; fi
  slurmdbd || die "slurmdbd failed to start, see $LOG/slurmdbd.log"
  wait_for 30 sacctmgr -n list cluster || die "slurmdbd does not answer, see $LOG/slurmdbd.log"
  if [ -z "$(sacctmgr -n -P list cluster nas format=cluster)" ]; then
    sacctmgr -i add cluster nas >/dev/null
  fi
  if [ -z "$(sacctmgr -n -P list account nas format=account)" ]; then
    sacctmgr -i add account nas cluster=nas description=nas organization=nas >/dev/null
  fi
  local user
  user=$(id -un)
  if [ -z "$(sacctmgr -n -P list association user="$user" account=nas format=user)" ]; then
    sacctmgr -i add user "$user" account=nas defaultaccount=nas cluster=nas >/dev/null
  fi
  say "started slurmdbd ($(live_pid "$RUN/slurmdbd.pid"))"
}

node_ready() { sinfo -h -N -o '%T' | grep -Eq '^(idle|mixed|allocated)'; }

start_slurmctld() {
  if live_pid "$RUN/slurmctld.pid" >/dev/null; then return 0; fi
  slurmctld || die "slurmctld failed to start, see $LOG/slurmctld.log"
  wait_for 30 scontrol ping || die "slurmctld does not answer, see $LOG/slurmctld.log"
  say "started slurmctld ($(live_pid "$RUN/slurmctld.pid"))"
}

start_slurmd() {
  if ! live_pid "$RUN/slurmd.pid" >/dev/null; then
    # The mark lets `stop` find a slurmstepd left behind (slurmd passes its
    # environment on to it).
    NAS_SLURM_CLUSTER=$DIR slurmd || die "slurmd failed to start, see $LOG/slurmd.log"
    wait_for 10 live_pid "$RUN/slurmd.pid" || die "slurmd did not start, see $LOG/slurmd.log"
    say "started slurmd ($(live_pid "$RUN/slurmd.pid"))"
  fi
  # A node that went down (slurmd killed past SlurmdTimeout) comes back by
  # itself (ReturnToService=2) once slurmd registers; one drained by a
  # failure is resumed here.
  if sinfo -h -N -o '%T' | grep -Eq '^(drain|drained|draining)'; then
    scontrol update nodename="$HOST" state=resume || true
  fi
  wait_for 60 node_ready || die "node $HOST not ready: $(sinfo -h -N -o '%T %E'), see $LOG/slurmd.log"
}

link_conf() {
  mkdir -p /etc/slurm
  if [ -L /etc/slurm/slurm.conf ] || [ ! -e /etc/slurm/slurm.conf ]; then
    ln -sfn "$CONF" /etc/slurm/slurm.conf
  fi
}

unlink_conf() {
  if [ -L /etc/slurm/slurm.conf ] && [ "$(readlink /etc/slurm/slurm.conf)" = "$CONF" ]; then
    rm -f /etc/slurm/slurm.conf
  fi
}

start() {
  local t0=$SECONDS
  install_packages
  write_configs
  start_munge
  start_mariadb
  start_slurmdbd
  start_slurmctld
  start_slurmd
  link_conf
  say "up in $(( SECONDS - t0 )) s: node $(sinfo -h -N -o '%N %T %G')"
  echo "SLURM_CONF=$CONF"
}

# Every process whose environment carries this cluster's mark (slurmstepd
# and anything it left behind), by pid.
marked_pids() {
  local env pid
  for env in /proc/[0-9]*/environ; do
    pid=${env#/proc/}; pid=${pid%/environ}
    [ "$pid" != $$ ] || continue
    if { tr '\0' '\n' <"$env"; } 2>/dev/null | grep -qxF "NAS_SLURM_CLUSTER=$DIR"; then
      echo "$pid"
    fi
  done
}

stop() {
  if live_pid "$RUN/slurmctld.pid" >/dev/null && scontrol ping >/dev/null 2>&1; then
    local jobs
    jobs=$(squeue -h -o '%i' 2>/dev/null | tr '\n' ' ')
    if [ -n "${jobs// /}" ]; then
      say "cancelling jobs $jobs"
      # shellcheck disable=SC2086
      scancel $jobs 2>/dev/null || true
      wait_for 30 bash -c '[ -z "$(squeue -h -o %i)" ]' || say "jobs still listed: $(squeue -h -o '%i %T')"
    fi
    scontrol shutdown >/dev/null 2>&1 || true
  fi
  stop_pid "$RUN/slurmd.pid" 15
  stop_pid "$RUN/slurmctld.pid" 15
  stop_pid "$RUN/slurmdbd.pid" 15
  stop_pid "$RUN/mariadbd.pid" 30
  stop_pid "$RUN/munged.pid" 10
  local pid
  for pid in $(marked_pids); do
    say "killing leftover $(cat "/proc/$pid/comm" 2>/dev/null) ($pid)"
    kill -KILL "$pid" 2>/dev/null || true
  done
  # Jobs whose slurmd died leave empty memory groups behind.
  local groups=/sys/fs/cgroup/memory/slurm_$HOST
  [ ! -d "$groups" ] || find "$groups" -depth -type d -exec rmdir {} + 2>/dev/null || true
  unlink_conf
}

status() {
  local name pid state=0
  for name in munged mariadbd slurmdbd slurmctld slurmd; do
    if pid=$(live_pid "$RUN/$name.pid"); then
      printf '%-10s running (%s)\n' "$name" "$pid"
    else
      printf '%-10s stopped\n' "$name"
      state=1
    fi
  done
  if [ "$state" -eq 0 ]; then
    sinfo -N -o '%N %T %C %G' || state=1
    squeue || state=1
    echo "SLURM_CONF=$CONF"
  fi
  return "$state"
}

case "$ACTION" in
  start) start ;;
  stop) stop ;;
  status) status ;;
  *) usage ;;
esac
