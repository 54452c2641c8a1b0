#!/usr/bin/env bash
# Stop everything hack/cluster-up.sh started -- by the PIDs it recorded, never by process name -- and remove
# the cluster state (.cluster/). Idempotent.
#   hack/cluster-down.sh          stop and delete .cluster/
#   hack/cluster-down.sh --keep   stop, but keep .cluster/ (logs, certificates, etcd data) for a look
# After `cluster-up.sh --external` it stops kwok, the Job runner and S3 and deletes the fake nodes it added.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
STATE=$ROOT/.cluster
KEEP=0
for arg in "$@"; do [[ $arg == --keep ]] && KEEP=1; done

log() { printf '[cluster-down] %s\n' "$*"; }

# A process that exited but was not reaped yet (a zombie, our daemons' parent is init) counts as gone.
alive() {
  local state
  state=$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null) || return 1
  [[ -n $state && $state != Z && $state != X ]]
}

# stop PID LABEL: SIGTERM, wait up to 10s, then SIGKILL.
stop() {
  local pid=$1 label=$2 i
  alive "$pid" || return 0
  kill -TERM "$pid" 2>/dev/null || true
  for ((i = 0; i < 100; i++)); do
    alive "$pid" || { log "stopped $label (pid $pid)"; return 0; }
    sleep 0.1
  done
  kill -KILL "$pid" 2>/dev/null || true
  log "killed $label (pid $pid) after 10s"
}

# stop_component NAME MATCH: stop the PID in pids/NAME.pid if its command line still shows it is ours.
stop_component() {
  local name=$1 match=$2 file=$STATE/pids/$1.pid pid
  [[ -f $file ]] || return 0
  pid=$(cat "$file")
  if alive "$pid" && tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q -- "$match"; then
    stop "$pid" "$name"
  fi
  rm -f "$file"
}

if [[ -d $STATE ]]; then
  # Reverse start order: nothing writes to a component that is already gone. The Job runner goes first and
  # takes its pods' processes with it; any it left behind (it was SIGKILLed) are found by their PID files.
  stop_component jobrunner "hack/jobrunner.py"
  for f in "$STATE"/pods/*/*.pid; do
    [[ -f $f ]] || continue
    pid=$(cat "$f")
    # Only if the process still runs in that pod's scratch directory (it is one of ours).
    if [[ $(readlink "/proc/$pid/cwd" 2>/dev/null) == "$(dirname "$f")"* ]]; then
      kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null || true
      log "killed a leftover optimizer process (pid $pid)"
    fi
    rm -f "$f"
  done
  if [[ -f $STATE/external ]]; then
    # --external: the control plane is someone else's; remove only the fake and runner nodes we added to it.
    for selector in type=kwok,modeldeploy.io/node-pool modeldeploy.io/runner=true; do
      "$ROOT/.bin/kubectl" --kubeconfig "$(cat "$STATE/external")" delete nodes -l "$selector" \
        --ignore-not-found --wait=false | sed 's/^/[cluster-down] /' || true
    done
  fi
  stop_component kwok "/.bin/kwok"
  stop_component metrics-server "/.bin/metrics-server"
  stop_component kube-scheduler "/.bin/kube-scheduler"
  stop_component kube-controller-manager "/.bin/kube-controller-manager"
  stop_component kube-apiserver "/.bin/kube-apiserver"
  stop_component etcd "/.bin/etcd"
  if [[ -x $ROOT/hack/s3-down.sh ]]; then
    "$ROOT/hack/s3-down.sh" | sed 's/^/[cluster-down] /'
  fi
  if (( KEEP )); then
    log "kept $STATE"
  else
    rm -rf "$STATE"
    log "removed $STATE"
  fi
else
  log "no cluster state in $STATE: nothing to stop"
fi
