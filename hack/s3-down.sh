#!/usr/bin/env bash
# Stop the local S3 server that hack/s3-up.sh started (by its PID file only). Data in .cluster/s3/ stays,
# unless --purge is given. Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."
state="$PWD/.cluster"
pidfile="$state/pids/s3.pid"
if [ -f "$pidfile" ]; then
  pid=$(cat "$pidfile")
  if kill -0 "$pid" 2>/dev/null; then
    kill -TERM "$pid" 2>/dev/null || true
    # SeaweedFS waits on its own gRPC streams after TERM and can hang there; its data is flushed per write,
    # so after 5 s a KILL loses nothing.
    for _ in $(seq 1 10); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
    if kill -0 "$pid" 2>/dev/null; then kill -KILL "$pid" 2>/dev/null || true; sleep 0.5; fi
    echo "s3-down: stopped SeaweedFS (pid $pid)"
  fi
  rm -f "$pidfile"
else
  echo "s3-down: not running (no $pidfile)"
fi
rm -f "$state/s3.env"
if [ "${1:-}" = "--purge" ]; then rm -rf "$state/s3"; fi
