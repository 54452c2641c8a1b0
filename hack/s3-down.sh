#!/usr/bin/env bash
# Stop the local S3 server that hack/s3-up.sh started (by its PID file only). Data in .cluster/s3/ stays,
# unless --purge is given. Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."
state="$PWD/.cluster"
pidfile="$state/pids/s3.pid"
# A process that exited but is not reaped yet (a zombie: our daemons' parent is init) counts as gone.
alive() { local st; st=$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null) && [ "$st" != Z ]; }
if [ -f "$pidfile" ]; then
  pid=$(cat "$pidfile")
  if alive "$pid"; then
    kill -TERM "$pid" 2>/dev/null || true
    # SeaweedFS waits on its own gRPC streams after TERM and can hang there; its data is flushed per write,
    # so after 5 s a KILL loses nothing.
    for _ in $(seq 1 10); do alive "$pid" || break; sleep 0.5; done
    if alive "$pid"; then kill -KILL "$pid" 2>/dev/null || true; sleep 0.5; fi
    echo "s3-down: stopped SeaweedFS (pid $pid)"
  fi
  rm -f "$pidfile"
else
  echo "s3-down: not running (no $pidfile)"
fi
rm -f "$state/s3.env"
if [ "${1:-}" = "--purge" ]; then rm -rf "$state/s3"; fi
