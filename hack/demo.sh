#!/usr/bin/env bash
# `make demo` (after `make venv build`, Make prerequisites): the whole flow on this machine.
#   0. as root: build the images (`make images`, cached by content) and start the local cluster with its runner
#      running containers of those images inside them (MD_RUN_IMAGES=1); otherwise the cluster alone, whose
#      runner plays the images with host processes
#   1. install the chart (CRDs from crds/, ServiceAccount, RBAC, Deployment) into modeldeploy-system, watching
#      the demo's namespace only (a Role there: the demo never touches other objects of a shared cluster)
#   2. the operator: as root, the chart's own pod on the runner node run-cpu-0, inside the operator image;
#      otherwise in the background as the chart's pod would run, with its ServiceAccount's token -- PID/log in
#      .cluster/
#   3. train the digits CNN (scikit-learn's bundled digits) and upload it and its dataset to S3
#   4. apply examples/gpu-pruned-int8-autoscaling.yaml in namespace ml, placed on the runner node run-gpu-0
#      (whose pods really run: hack/podrunner.py), and show progress
#   5. print `kubectl get md`, the optimization figures and the images the optimizer Job and the pull init
#      container ran in
#   6. send the validation images to every serving pod through TF Serving's REST :predict (the local
#      stand-in, hack/tfserving/) and print the accuracy each gave, and a curl to paste
# The cluster keeps running for exploration.
#
#   hack/demo.sh          run (idempotent: a second run reuses what is there)
#   hack/demo.sh down     stop the demo's operator (make demo-down also stops the cluster)
#
# Knobs: DEMO_NAMESPACE (ml), DEMO_TIMEOUT (seconds to wait for Ready, 900), DEMO_HEALTH_PORT (17081),
# DEMO_METRICS_PORT (17080).
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

export KUBECONFIG=${KUBECONFIG:-$ROOT/.cluster/kubeconfig}
export TF_USE_LEGACY_KERAS=1 TF_CPP_MIN_LOG_LEVEL=2
STATE=$ROOT/.cluster
PID_FILE=$STATE/pids/demo-operator.pid
LOG_FILE=$STATE/logs/demo-operator.log
NS=${DEMO_NAMESPACE:-ml}
RELEASE=modeldeploy
RELEASE_NS=modeldeploy-system
TIMEOUT=${DEMO_TIMEOUT:-900}
HEALTH_PORT=${DEMO_HEALTH_PORT:-17081}
METRICS_PORT=${DEMO_METRICS_PORT:-17080}
PY=$ROOT/.venv/bin/python
KUBECTL=$ROOT/.bin/kubectl
HELM=$ROOT/.bin/helm

START=$(date +%s)
say() { printf '\n\033[1m[demo %3ss] %s\033[0m\n' "$(( $(date +%s) - START ))" "$*"; }
die() { printf '\n[demo] error: %s\n' "$*" >&2; exit 1; }
k() { "$KUBECTL" "$@"; }

# The operator counts as ours when the PID file names a live process running `modeldeploy ... run`.
operator_pid() {
  local pid
  pid=$(cat "$PID_FILE" 2>/dev/null || true)
  if [[ -n $pid ]] && kill -0 "$pid" 2>/dev/null \
     && tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -qE "modeldeploy.* run|run_as_chart.py"; then
    echo "$pid"
  fi
}

stop_operator() {
  local pid
  pid=$(operator_pid)
  if [[ -z $pid ]]; then
    echo "demo: no demo operator running"
    rm -f "$PID_FILE"
    return 0
  fi
  kill -TERM "$pid"
  for _ in $(seq 1 40); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.5
  done
  if kill -0 "$pid" 2>/dev/null; then
    kill -KILL "$pid"
  fi
  rm -f "$PID_FILE"
  echo "demo: stopped the operator (pid $pid); the cluster is still running (make cluster-down stops it)"
}

if [[ ${1:-} == down ]]; then
  stop_operator
  if "$KUBECTL" -n "$RELEASE_NS" get deployment "$RELEASE" >/dev/null 2>&1; then
    "$KUBECTL" -n "$RELEASE_NS" scale deployment "$RELEASE" --replicas=0 >/dev/null && echo "demo: scaled the operator pod to 0"
  fi
  exit 0
fi
[[ $# -eq 0 ]] || die "usage: hack/demo.sh [down]"

# --- 0. images and cluster ----------------------------------------------------------------------------------
[[ -x $PY && -x $KUBECTL && -x $HELM ]] || die "run 'make demo' (it builds the venv and the binaries)"
IN_IMAGES=0
if [[ $(uname) == Linux && $(id -u) == 0 && ${MD_RUN_IMAGES:-1} == 1 ]]; then
  say "0/6 make images (cached by content), then the local cluster running containers inside their images"
  mkdir -p "$STATE/logs"
  hack/images.sh >"$STATE/logs/images.log" 2>&1 || { tail -20 "$STATE/logs/images.log" >&2; die "make images failed"; }
  grep "^images: built" "$STATE/logs/images.log" || true
  MD_RUN_IMAGES=1 hack/cluster-up.sh | tail -3
  IN_IMAGES=1
else
  say "0/6 the local cluster (not root: containers run as host processes, not inside their images)"
  MD_RUN_IMAGES=0 hack/cluster-up.sh | tail -3
fi

# --- preflight ---------------------------------------------------------------------------------------------
k get --raw /readyz >/dev/null 2>&1 || die "the cluster does not answer ($KUBECONFIG): run 'make cluster-up'"
[[ -f $STATE/s3.env ]] || die ".cluster/s3.env is missing: run 'make cluster-up' (it starts S3)"
mkdir -p "$STATE/pids" "$STATE/logs" "$STATE/demo"

# --- 1. the chart ------------------------------------------------------------------------------------------
say "1/6 helm upgrade --install $RELEASE charts/modeldeploy -n $RELEASE_NS --set watchNamespaces={$NS}"
k get namespace "$NS" >/dev/null 2>&1 || k create namespace "$NS"
# Helm installs crds/ only on first install; apply them too so a re-run after a CRD change is current.
k apply --server-side --force-conflicts -f charts/modeldeploy/crds/ >/dev/null
# In images, the operator's pod runs on the runner node run-cpu-0 (host network: its ports must be free ones).
PLACE=()
if (( IN_IMAGES )); then
  PLACE=(--set-json 'nodeSelector={"kubernetes.io/hostname":"run-cpu-0"}'
         --set-json 'tolerations=[{"key":"modeldeploy.io/runner","operator":"Exists","effect":"NoSchedule"}]'
         --set "probes.port=$HEALTH_PORT" --set "metrics.port=$METRICS_PORT" --set replicaCount=1)
fi
"$HELM" upgrade --install "$RELEASE" charts/modeldeploy -n "$RELEASE_NS" --create-namespace \
  --set "watchNamespaces={$NS}" --wait --timeout 3m "${PLACE[@]}" \
  --set-json "extraEnv=[{\"name\":\"MODELDEPLOY_PROBE_MODELS\",\"value\":\"1\"},
    {\"name\":\"MODELDEPLOY_PROBE_CIDRS\",\"value\":\"127.0.0.0/8\"},
    {\"name\":\"MODELDEPLOY_S3_ENDPOINT_URL\",\"value\":\"$(sed -n 's/^AWS_ENDPOINT_URL=//p' "$STATE/s3.env")\"}]" \
  >/dev/null
# (extraEnv: the model-status probe is switched on (a process outside the cluster would not) and limited to the
#  loopback pod IPs of the runner nodes -- kwok's simulated pod IPs never get traffic; the operator's own
#  storage reads go to the local S3, an endpoint only the administrator sets, never a tenant's Secret.)
k get crd modeldeployments.modeldeploy.io
k -n "$RELEASE_NS" get deployment,serviceaccount,service -l app.kubernetes.io/instance="$RELEASE"

# --- 2. the operator, as the chart's pod, in the background ------------------------------------------------
say "2/6 the operator: the chart's command, args and env, as system:serviceaccount:$RELEASE_NS:$RELEASE"
if (( IN_IMAGES )); then
  stop_operator >/dev/null    # a process left by a non-root run would reconcile the same objects
  k -n "$RELEASE_NS" rollout status deployment "$RELEASE" --timeout=180s
  POD=$(k -n "$RELEASE_NS" get pods -l app.kubernetes.io/instance="$RELEASE",app.kubernetes.io/component=operator \
        --field-selector=status.phase=Running -o jsonpath='{.items[0].metadata.name}')
  LOG_FILE=$STATE/pods/${RELEASE_NS}_$POD/operator.log
  echo "demo: the operator runs as pod $RELEASE_NS/$POD on run-cpu-0, inside" \
       "$(k -n "$RELEASE_NS" get pod "$POD" -o jsonpath='{.status.containerStatuses[0].image} ({.status.containerStatuses[0].imageID})')," \
       "healthy at http://127.0.0.1:$HEALTH_PORT/healthz, log $LOG_FILE"
elif [[ -n $(operator_pid) ]]; then
  echo "demo: the operator is already running (pid $(operator_pid)); log: $LOG_FILE"
else
  for port in "$HEALTH_PORT" "$METRICS_PORT"; do
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
      die "port $port on 127.0.0.1 is in use; choose others with DEMO_HEALTH_PORT / DEMO_METRICS_PORT"
    fi
  done
  "$PY" hack/run_as_chart.py --release "$RELEASE" --namespace "$RELEASE_NS" --print
  nohup "$PY" hack/run_as_chart.py --release "$RELEASE" --namespace "$RELEASE_NS" \
    --health-port "$HEALTH_PORT" --metrics-port "$METRICS_PORT" \
    --kubeconfig-out "$STATE/demo/operator.kubeconfig" >"$LOG_FILE" 2>&1 &
  echo $! >"$PID_FILE"
  ok=0
  for _ in $(seq 1 120); do
    if [[ -z $(operator_pid) ]]; then
      tail -30 "$LOG_FILE" >&2
      die "the operator exited; its log is $LOG_FILE"
    fi
    if curl -fsS "http://127.0.0.1:$HEALTH_PORT/healthz" >/dev/null 2>&1; then ok=1; break; fi
    sleep 1
  done
  (( ok )) || die "the operator's health endpoint http://127.0.0.1:$HEALTH_PORT/healthz did not answer in 120 s (log: $LOG_FILE)"
  echo "demo: operator running (pid $(operator_pid)), healthy at http://127.0.0.1:$HEALTH_PORT/healthz," \
       "metrics at http://127.0.0.1:$METRICS_PORT/metrics, log $LOG_FILE"
fi

# --- 3. the model ------------------------------------------------------------------------------------------
say "3/6 train the digits CNN and upload it to s3://models/digits/base, its dataset to s3://models/datasets/digits.npz"
# TensorFlow's start-up chatter goes to the log; the result lines to the screen.
"$PY" hack/train_digits.py --work-dir "$STATE/demo" 2>"$STATE/logs/demo-train.log" \
  || { tail -20 "$STATE/logs/demo-train.log" >&2; die "training failed (log: .cluster/logs/demo-train.log)"; }

# --- 4. the ModelDeployment --------------------------------------------------------------------------------
say "4/6 kubectl apply -n $NS -f examples/gpu-pruned-int8-autoscaling.yaml"
# The storage credentials the Job and the serving pods get (the operator itself never reads them).
set -a; . "$STATE/s3.env"; set +a
k -n "$NS" create secret generic model-store \
  --from-literal=AWS_ACCESS_KEY_ID="$AWS_ACCESS_KEY_ID" --from-literal=AWS_SECRET_ACCESS_KEY="$AWS_SECRET_ACCESS_KEY" \
  --from-literal=AWS_ENDPOINT_URL="$AWS_ENDPOINT_URL" --from-literal=AWS_REGION="${AWS_REGION:-us-east-1}" \
  --dry-run=client -o yaml | k apply -f - >/dev/null
# The example as a user applies it, plus a placement on the runner nodes (kwok's nodes run nothing).
PLACEMENT='{"spec":{"serving":{"nodeSelector":{"modeldeploy.io/runner":"true","nvidia.com/gpu.present":"true"},
  "tolerations":[{"key":"modeldeploy.io/runner","operator":"Exists","effect":"NoSchedule"},
                 {"key":"nvidia.com/gpu","operator":"Exists","effect":"NoSchedule"}]}}}'
echo "demo: + spec.serving.nodeSelector/tolerations for the runner node run-gpu-0"
k patch --local -f examples/gpu-pruned-int8-autoscaling.yaml --type merge -p "$PLACEMENT" -o yaml \
  | k -n "$NS" apply -f -

say "progress (conditions as they change; Ctrl-C stops watching, not the demo)"
"$PY" - "$NS" digits "$TIMEOUT" "$KUBECTL" <<'EOF' || true
import json, subprocess, sys, time
ns, name, timeout, kubectl = sys.argv[1], sys.argv[2], float(sys.argv[3]), sys.argv[4]
deadline, last = time.monotonic() + timeout, None
def get(*args):
    p = subprocess.run([kubectl, "-n", ns, "get", *args, "-o", "json"], capture_output=True, text=True)
    return json.loads(p.stdout) if p.returncode == 0 else None
while time.monotonic() < deadline:
    md = get("modeldeployment", name) or {}
    st = md.get("status") or {}
    conds = {c["type"]: c for c in st.get("conditions", [])}
    jobs = get("jobs", "-l", f"app.kubernetes.io/instance={name}") or {"items": []}
    job = ", ".join(f"{j['metadata']['name']}: " + ("succeeded" if j["status"].get("succeeded") else
                    "failed" if j["status"].get("failed") else "running" if j["status"].get("active") else "pending")
                    for j in jobs["items"]) or "-"
    line = (f"phase={st.get('phase', '-'):<10} " +
            " ".join(f"{t}={c['status']}" for t, c in sorted(conds.items())) +
            f" | job {job} | serving {st.get('serving', {}).get('readyReplicas', 0)}/"
            f"{st.get('serving', {}).get('replicas', 0)}")
    reasons = "; ".join(f"{t}: {c.get('reason')} - {c.get('message')}" for t, c in sorted(conds.items())
                        if c["status"] == "True" and c.get("message"))
    if line != last:
        print(time.strftime("%H:%M:%S"), line, flush=True)
        if reasons:
            print("          ", reasons, flush=True)
        last = line
    if conds.get("Ready", {}).get("status") == "True" and md.get("metadata", {}).get("generation") == \
            st.get("observedGeneration"):
        print("Ready.")
        sys.exit(0)
    if conds.get("Stalled", {}).get("status") == "True":
        print("Stalled: the operator needs a spec change to go on (kubectl describe md shows why).")
        sys.exit(1)
    time.sleep(2)
print(f"not Ready after {timeout:.0f}s; see kubectl -n {ns} describe md {name} and {kubectl}")
sys.exit(1)
EOF

# --- 5. the result -----------------------------------------------------------------------------------------
say "5/6 kubectl get md -n $NS"
k -n "$NS" get md
echo
k -n "$NS" get deployment,service,hpa,pdb,jobs -l app.kubernetes.io/instance=digits 2>/dev/null || true
echo
k -n "$NS" get pods -l app.kubernetes.io/instance=digits -o wide 2>/dev/null || true
echo
k -n "$NS" get md digits -o json >"$STATE/demo/digits.json"
"$PY" - "$STATE/demo/digits.json" <<'EOF'
import json, sys
md = json.load(open(sys.argv[1]))
st = md.get("status") or {}
o, m = st.get("optimization") or {}, st.get("model") or {}
def f(key, fmt="{}"):
    v = o.get(key)
    return "-" if v is None else fmt.format(v)
print("Optimization figures (status.optimization, from the optimizer's report):")
print("  job                ", f("job"))
print("  compression ratio  ", f("compressionRatio", "{:.2f}x"),
      f"  (gzip {f('originalCompressedBytes')} -> {f('compressedBytes')} bytes)")
print("  sparsity           ", f("sparsity", "{:.3f}"))
print("  accuracy           ", f("baselineAccuracy", "{:.4f}"), "->", f("optimizedAccuracy", "{:.4f}"),
      f"  (drop {f('accuracyDrop', '{:+.4f}')})")
print("  CPU latency        ", f("baselineLatencyMs", "{:.3f}"), "ms ->", f("optimizedLatencyMs", "{:.3f}"),
      "ms (batch of 1)")
print(f"serving version {m.get('servingVersion', '-')} from {m.get('uri', '-')}")
EOF
echo "Images the containers ran in (imageID '-': played by a host process, not run inside the image):"
k -n "$NS" get pods -l app.kubernetes.io/instance=digits -o json | "$PY" -c '
import json, sys
for p in json.load(sys.stdin)["items"]:
    st = p["status"]
    for c in st.get("initContainerStatuses", []) + st.get("containerStatuses", []):
        print("  %-36s %-12s %s  %s" % (p["metadata"]["name"], c["name"], c["image"], c.get("imageID") or "-"))'
# --- 6. predictions ---------------------------------------------------------------------------------------
say "6/6 predictions: the validation images through :predict on every serving pod"
"$PY" hack/demo_predict.py --namespace "$NS" --name digits --dataset "$STATE/demo/digits.npz" --kubectl "$KUBECTL" \
  || die "the served model did not answer as expected (pod logs: .cluster/pods/${NS}_digits-*/)"

cat <<EOF

The cluster keeps running. Try:
  export KUBECONFIG=$KUBECONFIG
  kubectl -n $NS describe md digits                      # conditions and Events
  kubectl -n $NS patch md digits --type merge -p '{"spec":{"model":{"version":2}}}'   # optimize and roll out v2
  curl -s http://127.0.0.1:$METRICS_PORT/metrics | grep ^modeldeploy_   # the operator's metrics
  tail -f $LOG_FILE                                      # the operator's log
  make demo-down                                         # stop the operator and the cluster
EOF
