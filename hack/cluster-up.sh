#!/usr/bin/env bash
# Start the local Kubernetes control plane for tests and the demo, idempotently, on 127.0.0.1 only:
#   etcd (12379), kube-apiserver (https://127.0.0.1:16443), kube-controller-manager, kube-scheduler, kwok with
#   fake GPU and CPU nodes, the Job runner (hack/jobrunner.py: it runs optimizer pods, and every pod on its
#   runner nodes run-gpu-0 and run-cpu-0, as local processes, and serves those nodes' kubelet resource metrics
#   on :16250 and :16251), metrics-server (:16450, the metrics.k8s.io API behind the kube-apiserver's
#   aggregation layer, fed by those endpoints) and S3 (hack/s3-up.sh).
# State in .cluster/: kubeconfig (admin), pki/, etcd/, logs/<component>.log, pids/<component>.pid.
# A second run starts only what is not running and changes no object. hack/cluster-down.sh undoes it all.
#
# Knobs: MD_GPU_NODES (2), MD_CPU_NODES (2), MD_JOBRUNNER_PARALLEL (2 optimizer pods at once),
# MD_MAX_SERVING_PODS (4 pods on runner nodes at once: each TF Serving stand-in holds TensorFlow in memory),
# MD_BACKOFF_BASE (crash-loop back-off start, 10 s as the kubelet), MD_VENV (.venv), MD_RUN_IMAGES (1 runs every
# container whose image `make images` built inside that image, as its user, with hack/imagerun.py: root only;
# `make test` and `make demo` set it after building the images; 0 plays them with host processes; unset keeps
# the running runner's mode, else 0).
#
# hack/cluster-up.sh --external: use the cluster $KUBECONFIG names (kind, say) instead of starting a control
# plane; only kwok, the fake nodes, the Job runner and S3 are added (all run on this machine; no metrics-server:
# that cluster's could not reach the runner nodes on this machine's loopback).
set -euo pipefail
EXTERNAL=0
[[ ${1:-} == --external ]] && EXTERNAL=1

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
STATE=$ROOT/.cluster
BIN=$ROOT/.bin
PKI=$STATE/pki
KUBECONFIG_FILE=$STATE/kubeconfig
if (( EXTERNAL )); then
  [[ -n ${KUBECONFIG:-} && -f ${KUBECONFIG%%:*} ]] || { echo "cluster-up --external: set KUBECONFIG" >&2; exit 2; }
  KUBECONFIG_FILE=$(readlink -f "${KUBECONFIG%%:*}")
fi

ETCD_PORT=12379
ETCD_PEER_PORT=12380
APISERVER_PORT=16443
KCM_PORT=16257
SCHEDULER_PORT=16259
KWOK_PORT=16247
METRICS_SERVER_PORT=16450
RUNNER_KUBELET_PORT=16250     # the runner nodes' /metrics/resource: run-gpu-0 on 16250, run-cpu-0 on 16251
SERVICE_CIDR=10.96.0.0/16
GPU_NODES=${MD_GPU_NODES:-2}
CPU_NODES=${MD_CPU_NODES:-2}

START=$(date +%s)
log() { printf '[cluster-up %3ss] %s\n' "$(( $(date +%s) - START ))" "$*"; }
die() { printf '[cluster-up] error: %s\n' "$*" >&2; exit 1; }

kubectl() { "$BIN/kubectl" --kubeconfig "$KUBECONFIG_FILE" "$@"; }

# --- preflight -----------------------------------------------------------------------------------------------
needed=(kubectl kwok)
(( EXTERNAL )) || needed+=(etcd kube-apiserver kube-controller-manager kube-scheduler metrics-server)
for b in "${needed[@]}"; do
  [[ -x $BIN/$b ]] || die ".bin/$b is missing: run 'make build' (or hack/build.sh) first"
done
# The virtualenv that runs the Job runner and plays the optimizer image (MD_VENV overrides, e.g. a small one).
VENV=${MD_VENV:-$ROOT/.venv}
[[ -x $VENV/bin/python ]] || die "$VENV is missing: run 'make venv' first (the Job runner needs it)"
command -v openssl >/dev/null || die "openssl is needed to generate the cluster certificates"
mkdir -p "$STATE/logs" "$STATE/pids" "$PKI"

# --- processes ---------------------------------------------------------------------------------------------
# A component counts as running when its PID file names a live process whose command line has our binary in it
# (so a recycled PID never passes for one of ours).
pid_of() { cat "$STATE/pids/$1.pid" 2>/dev/null || true; }
is_running() {
  local pid; pid=$(pid_of "$1")
  [[ -n $pid ]] && kill -0 "$pid" 2>/dev/null && tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q -- "$2"
}

port_in_use() { ss -Htln "sport = :$1" 2>/dev/null | grep -q .; }

# stop_pid NAME: SIGTERM the component, SIGKILL after 10s.
stop_pid() {
  local pid; pid=$(pid_of "$1")
  kill -TERM "$pid" 2>/dev/null || return 0
  for _ in {1..100}; do
    [[ $(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null || echo X) == [ZX] ]] && return 0
    sleep 0.1
  done
  kill -KILL "$pid" 2>/dev/null || true
  # ...and gone (its ports closed) before anything is started in its place.
  for _ in {1..50}; do
    [[ $(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null || echo X) == [ZX] ]] && return 0
    sleep 0.1
  done
}

# start NAME MATCH COMMAND...: run COMMAND detached (own session: it outlives this script and ignores the
# caller's Ctrl-C), log to logs/NAME.log, PID to pids/NAME.pid. Returns 1 when it was already running with
# the same command line and binary; one started with other flags or an older binary is restarted, so a
# changed script or pin takes effect on the next `make cluster-up`.
start() {
  local name=$1 match=$2; shift 2
  if is_running "$name" "$match"; then
    local pid; pid=$(pid_of "$name")
    # setsid execs the command, so the process's own argv and executable are what we would start now.
    if [[ $(tr '\0' ' ' <"/proc/$pid/cmdline") == "$* " \
          && $(readlink "/proc/$pid/exe") == "$(readlink -f "$(command -v "$1")")" ]]; then
      log "$name already running (pid $(pid_of "$name"))"
      return 1
    fi
    log "$name runs with other flags or another binary: restarting it"
    stop_pid "$name"
  fi
  setsid "$@" </dev/null >>"$STATE/logs/$name.log" 2>&1 &
  echo $! >"$STATE/pids/$name.pid"
  log "started $name (pid $!, log .cluster/logs/$name.log)"
}

# wait_for NAME SECONDS COMMAND...: poll COMMAND until it succeeds; fail with NAME's log tail if it does not,
# or at once if NAME's process died.
wait_for() {
  local name=$1 timeout=$2; shift 2
  local deadline=$(( $(date +%s) + timeout ))
  until "$@" >/dev/null 2>&1; do
    # An exited process stays a zombie until init reaps it: look at its state, not just its PID.
    if [[ -n $(pid_of "$name") && $(awk '{print $3}' "/proc/$(pid_of "$name")/stat" 2>/dev/null || echo X) == [ZX] ]]; then
      tail -n 30 "$STATE/logs/$name.log" >&2 || true
      die "$name exited; log above (.cluster/logs/$name.log)"
    fi
    if (( $(date +%s) > deadline )); then
      tail -n 30 "$STATE/logs/$name.log" >&2 || true
      die "$name not ready after ${timeout}s; log above (.cluster/logs/$name.log)"
    fi
    sleep 0.5
  done
}

# Refuse to start a component whose port another process (a cluster from another checkout, say) holds.
check_port() {
  local name=$1 port=$2
  if port_in_use "$port"; then
    die "port $port (for $name) is in use by a process this checkout did not start (another checkout's cluster? \
run its 'make cluster-down'): $(ss -Htlnp "sport = :$port" 2>/dev/null | head -1)"
  fi
}

# --- certificates and kubeconfigs ---------------------------------------------------------------------------
# ECDSA P-256 keys (fast to generate); one CA signs everything but the aggregation layer's front-proxy client
# certificate, which has a CA of its own; the service-account key pair is RSA, the algorithm every token
# consumer supports.
sign() {  # sign NAME SUBJECT EXTENSIONS [CA-NAME (ca)]
  local name=$1 subj=$2 ext=$3 ca=${4:-ca}
  [[ -f $PKI/$name.crt ]] && return 0
  openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$PKI/$name.key" 2>/dev/null
  openssl req -new -key "$PKI/$name.key" -subj "$subj" -out "$PKI/$name.csr" 2>/dev/null
  openssl x509 -req -in "$PKI/$name.csr" -CA "$PKI/$ca.crt" -CAkey "$PKI/$ca.key" -CAcreateserial \
    -days 3650 -sha256 -extfile <(printf '%b' "$ext") -out "$PKI/$name.crt" 2>/dev/null
  rm -f "$PKI/$name.csr"
}

make_ca() {  # make_ca NAME COMMON-NAME
  [[ -f $PKI/$1.crt ]] && return 0
  openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$PKI/$1.key" 2>/dev/null
  openssl req -x509 -new -key "$PKI/$1.key" -subj "/CN=$2" -days 3650 -sha256 \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign,digitalSignature" \
    -out "$PKI/$1.crt" 2>/dev/null
}

make_pki() {
  [[ -f $PKI/ca.crt ]] || log "generating certificates in .cluster/pki"
  make_ca ca modeldeploy-local-ca
  # The aggregation layer's own CA, as kubeadm keeps it: the kube-apiserver proxies requests for metrics.k8s.io
  # with the front-proxy-client certificate, and metrics-server trusts the X-Remote-User/-Group headers only
  # from a client certificate of this CA with that name (--requestheader-* below).
  make_ca front-proxy-ca modeldeploy-local-front-proxy-ca
  local client='basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=clientAuth\n'
  local server='basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n'
  local san="IP:127.0.0.1,IP:10.96.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default"
  san+=",DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local"
  sign apiserver "/CN=kube-apiserver" \
    "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\nsubjectAltName=$san\n"
  # RBAC's bootstrap roles bind these user names; system:masters is the admin group.
  sign admin "/O=system:masters/CN=kubernetes-admin" "$client"
  sign kube-controller-manager "/CN=system:kube-controller-manager" "$client"
  sign kube-scheduler "/CN=system:kube-scheduler" "$client"
  sign kwok "/O=system:masters/CN=kwok-controller" "$client"
  sign jobrunner "/O=system:masters/CN=modeldeploy-jobrunner" "$client"
  sign front-proxy-client "/CN=front-proxy-client" "$client" front-proxy-ca
  # metrics-server: a user of its own (RBAC in metrics_server_objects), which also presents this certificate
  # to the runner nodes' kubelet endpoints; its serving certificate carries the name the aggregator checks
  # (<service>.<namespace>.svc) and the address it dials.
  sign metrics-server "/CN=system:metrics-server" "$client"
  sign metrics-server-serving "/CN=metrics-server" \
    "${server}subjectAltName=DNS:metrics-server.kube-system.svc,DNS:localhost,IP:127.0.0.1\n"
  # The runner nodes' kubelet endpoints (hack/kubeletstats.py), which metrics-server reaches at 127.0.0.1.
  sign runner-kubelet "/CN=modeldeploy-runner-kubelet" \
    "${server}subjectAltName=IP:127.0.0.1,DNS:localhost,DNS:run-gpu-0,DNS:run-cpu-0\n"
  if [[ ! -f $PKI/sa.key ]]; then
    openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$PKI/sa.key" 2>/dev/null
    openssl pkey -in "$PKI/sa.key" -pubout -out "$PKI/sa.pub" 2>/dev/null
  fi
  chmod 600 "$PKI"/*.key
}

write_kubeconfig() {  # write_kubeconfig FILE CERT-NAME
  local file=$1 name=$2
  [[ -f $file ]] && return 0
  cat >"$file.tmp" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: modeldeploy-local
  cluster:
    server: https://127.0.0.1:$APISERVER_PORT
    certificate-authority-data: $(base64 -w0 <"$PKI/ca.crt")
users:
- name: $name
  user:
    client-certificate-data: $(base64 -w0 <"$PKI/$name.crt")
    client-key-data: $(base64 -w0 <"$PKI/$name.key")
contexts:
- name: modeldeploy-local
  context: {cluster: modeldeploy-local, user: $name}
current-context: modeldeploy-local
EOF
  chmod 600 "$file.tmp"
  mv "$file.tmp" "$file"
}

# --- components --------------------------------------------------------------------------------------------
start_etcd() {
  is_running etcd "$BIN/etcd" || check_port etcd $ETCD_PORT
  # --unsafe-no-fsync: a throw-away test cluster on a shared disk; durability buys nothing here.
  start etcd "$BIN/etcd" "$BIN/etcd" --name modeldeploy --data-dir "$STATE/etcd" \
    --listen-client-urls "http://127.0.0.1:$ETCD_PORT" --advertise-client-urls "http://127.0.0.1:$ETCD_PORT" \
    --listen-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" \
    --initial-advertise-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" \
    --initial-cluster "modeldeploy=http://127.0.0.1:$ETCD_PEER_PORT" \
    --unsafe-no-fsync --quota-backend-bytes=$((2 * 1024 * 1024 * 1024)) --log-level=warn || true
  wait_for etcd 60 curl -sf "http://127.0.0.1:$ETCD_PORT/health"
}

start_apiserver() {
  is_running kube-apiserver "$BIN/kube-apiserver" || check_port kube-apiserver $APISERVER_PORT
  # The audit log records every request a ServiceAccount makes (verb, resource, namespace; no bodies): the tests
  # run the operator as the chart's ServiceAccount, and tests/integration/test_rbac_matches_calls.py derives
  # the RBAC rules the operator needs from it. The other components use certificates or kube-system accounts.
  cat >"$STATE/audit-policy.yaml" <<'POLICY'
apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: ["RequestReceived"]
rules:
  - level: None          # kube-controller-manager's controllers (--use-service-account-credentials)
    userGroups: ["system:serviceaccounts:kube-system"]
  - level: Metadata
    userGroups: ["system:serviceaccounts"]
  - level: None
POLICY
  # --enable-admission-plugins: blockOwnerDeletion needs update on the owner's finalizers, as on OpenShift.
  # --allow-privileged: privileged pods are then refused by PodSecurity admission (per namespace label), as
  #   on a real cluster, not by a global switch.
  # --endpoint-reconciler-type=none: the `kubernetes` Service would need a non-loopback endpoint address.
  # --requestheader-*, --proxy-client-*: the aggregation layer, which serves metrics.k8s.io from metrics-server.
  #   No --enable-aggregator-routing: it would dial the address in the Service's EndpointSlice, and neither
  #   EndpointSlices nor Endpoints accept a loopback address (ValidateEndpointIP); without it the aggregator
  #   dials an ExternalName Service's name at the APIService's port: 127.0.0.1:$METRICS_SERVER_PORT here.
  start kube-apiserver "$BIN/kube-apiserver" "$BIN/kube-apiserver" \
    --bind-address=127.0.0.1 --secure-port=$APISERVER_PORT --advertise-address=127.0.0.1 \
    --etcd-servers="http://127.0.0.1:$ETCD_PORT" \
    --tls-cert-file="$PKI/apiserver.crt" --tls-private-key-file="$PKI/apiserver.key" \
    --client-ca-file="$PKI/ca.crt" \
    --service-account-issuer=https://kubernetes.default.svc.cluster.local \
    --service-account-key-file="$PKI/sa.pub" --service-account-signing-key-file="$PKI/sa.key" \
    --service-cluster-ip-range=$SERVICE_CIDR \
    --authorization-mode=RBAC --allow-privileged=true --endpoint-reconciler-type=none \
    --enable-admission-plugins=OwnerReferencesPermissionEnforcement \
    --requestheader-client-ca-file="$PKI/front-proxy-ca.crt" --requestheader-allowed-names=front-proxy-client \
    --requestheader-username-headers=X-Remote-User --requestheader-group-headers=X-Remote-Group \
    --requestheader-extra-headers-prefix=X-Remote-Extra- \
    --proxy-client-cert-file="$PKI/front-proxy-client.crt" --proxy-client-key-file="$PKI/front-proxy-client.key" \
    --audit-policy-file="$STATE/audit-policy.yaml" --audit-log-path="$STATE/logs/audit.log" \
    --audit-log-format=json --audit-log-maxsize=500 --audit-log-maxbackup=1 \
    --profiling=false --v=1 || true
  wait_for kube-apiserver 120 curl -sf --cacert "$PKI/ca.crt" --cert "$PKI/admin.crt" --key "$PKI/admin.key" \
    "https://127.0.0.1:$APISERVER_PORT/readyz"
}

start_controllers() {
  local kc=$STATE/kube-controller-manager.kubeconfig ks=$STATE/kube-scheduler.kubeconfig
  is_running kube-controller-manager "$BIN/kube-controller-manager" || check_port kube-controller-manager $KCM_PORT
  # --use-service-account-credentials: each controller acts as its own service account, so RBAC applies to the
  #   controllers as on a real cluster. --leader-elect=false: a single replica; saves a Lease write every 2s.
  # --kube-api-qps/burst (both components): the defaults (20-50 QPS) throttle the operator benchmark's
  #   hundreds of Deployments; a local API server takes far more.
  # --horizontal-pod-autoscaler-sync-period=5s (default 15s): metrics-server refreshes every 15s
  #   (--metric-resolution); polling at 5s makes the time an HPA takes to react that of the metrics plus at
  #   most 5s, so the tests' and benchmark's scale-out times measure the pipeline, not the poll. Cheap: only
  #   existing HPAs are synced (the operator benchmark makes none).
  # --horizontal-pod-autoscaler-downscale-stabilization=60s (default 5 min): an HPA scales in to the highest
  #   recommendation of this window; 60s lets a test see scale-in a minute after the load stops. HPAs that set
  #   spec.behavior.scaleDown.stabilizationWindowSeconds are not affected.
  start kube-controller-manager "$BIN/kube-controller-manager" "$BIN/kube-controller-manager" \
    --kubeconfig="$kc" --authentication-kubeconfig="$kc" --authorization-kubeconfig="$kc" \
    --bind-address=127.0.0.1 --secure-port=$KCM_PORT \
    --service-account-private-key-file="$PKI/sa.key" --root-ca-file="$PKI/ca.crt" \
    --cluster-signing-cert-file="$PKI/ca.crt" --cluster-signing-key-file="$PKI/ca.key" \
    --use-service-account-credentials=true --controllers='*' --service-cluster-ip-range=$SERVICE_CIDR \
    --kube-api-qps=200 --kube-api-burst=400 \
    --horizontal-pod-autoscaler-sync-period=5s --horizontal-pod-autoscaler-downscale-stabilization=60s \
    --leader-elect=false --profiling=false --v=1 || true
  is_running kube-scheduler "$BIN/kube-scheduler" || check_port kube-scheduler $SCHEDULER_PORT
  start kube-scheduler "$BIN/kube-scheduler" "$BIN/kube-scheduler" \
    --kubeconfig="$ks" --authentication-kubeconfig="$ks" --authorization-kubeconfig="$ks" \
    --bind-address=127.0.0.1 --secure-port=$SCHEDULER_PORT --kube-api-qps=200 --kube-api-burst=400 \
    --leader-elect=false --profiling=false --v=1 || true
  # -k: both serve /healthz with a self-signed certificate they make at start; it is loopback only.
  wait_for kube-controller-manager 60 curl -sfk "https://127.0.0.1:$KCM_PORT/healthz"
  wait_for kube-scheduler 60 curl -sfk "https://127.0.0.1:$SCHEDULER_PORT/healthz"
}

start_kwok() {
  # kwok reads its options and stages from one multi-document file; rebuilt each run from hack/kwok/.
  local cfg=$STATE/kwok.yaml f
  {
    cat "$ROOT/hack/kwok/kwok.yaml"
    for f in "$ROOT"/hack/kwok/stages/*.yaml; do printf -- '---\n'; cat "$f"; done
  } >"$cfg.new"
  if is_running kwok "$BIN/kwok" && ! cmp -s "$cfg.new" "$cfg"; then
    log "kwok configuration changed: restarting kwok"
    stop_pid kwok
  fi
  mv "$cfg.new" "$cfg"
  is_running kwok "$BIN/kwok" || check_port kwok $KWOK_PORT
  start kwok "$BIN/kwok" "$BIN/kwok" --config="$cfg" --kubeconfig="$STATE/kwok.kubeconfig" \
    --server-address="127.0.0.1:$KWOK_PORT" || true
  wait_for kwok 60 curl -sf "http://127.0.0.1:$KWOK_PORT/healthz"
}

# The metrics.k8s.io API: metrics-server as a host process, registered with the aggregation layer (upstream's
# manifests/base of v0.8.0, with a user instead of a ServiceAccount and an ExternalName Service, no pod).
metrics_server_objects() {
  cat <<EOF
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata:
  name: system:metrics-server
rules:
- apiGroups: [""]
  resources: [nodes/metrics]
  verbs: [get]
- apiGroups: [""]
  resources: [pods, nodes]
  verbs: [get, list, watch]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata:
  name: system:metrics-server
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: system:metrics-server}
subjects:
- {apiGroup: rbac.authorization.k8s.io, kind: User, name: system:metrics-server}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata:
  name: metrics-server:system:auth-delegator
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: system:auth-delegator}
subjects:
- {apiGroup: rbac.authorization.k8s.io, kind: User, name: system:metrics-server}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata:
  name: metrics-server-auth-reader
  namespace: kube-system
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: Role, name: extension-apiserver-authentication-reader}
subjects:
- {apiGroup: rbac.authorization.k8s.io, kind: User, name: system:metrics-server}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata:
  name: system:aggregated-metrics-reader
  labels:
    rbac.authorization.k8s.io/aggregate-to-view: "true"
    rbac.authorization.k8s.io/aggregate-to-edit: "true"
    rbac.authorization.k8s.io/aggregate-to-admin: "true"
rules:
- apiGroups: [metrics.k8s.io]
  resources: [pods, nodes]
  verbs: [get, list, watch]
---
apiVersion: v1
kind: Service
metadata:
  name: metrics-server
  namespace: kube-system
  labels: {k8s-app: metrics-server}
spec:
  type: ExternalName
  externalName: 127.0.0.1
---
apiVersion: apiregistration.k8s.io/v1
kind: APIService
metadata:
  name: v1beta1.metrics.k8s.io
  labels: {k8s-app: metrics-server}
spec:
  group: metrics.k8s.io
  version: v1beta1
  service: {name: metrics-server, namespace: kube-system, port: $METRICS_SERVER_PORT}
  caBundle: $(base64 -w0 <"$PKI/ca.crt")
  groupPriorityMinimum: 100
  versionPriority: 100
EOF
}

start_metrics_server() {
  local kc=$STATE/metrics-server.kubeconfig
  # Its RBAC first: at start it reads the aggregation layer's client CA and header names from ConfigMap
  # kube-system/extension-apiserver-authentication, and fails without that right.
  local out
  out=$(metrics_server_objects | kubectl apply -f -) || die "applying metrics-server's RBAC, Service and APIService failed"
  grep -v unchanged <<<"$out" || true
  is_running metrics-server "$BIN/metrics-server" || check_port metrics-server $METRICS_SERVER_PORT
  # --node-selector: only the runner nodes serve /metrics/resource; kwok's fake nodes are never dialled.
  # --kubelet-preferred-address-types=InternalIP, --kubelet-use-node-status-port: 127.0.0.1 and each runner
  #   node's status.daemonEndpoints.kubeletEndpoint.Port. --kubelet-certificate-authority: their certificates
  #   are the cluster CA's; metrics-server presents its kubeconfig's client certificate to them.
  # --metric-resolution=15s: the scrape period (upstream's manifest sets the same; the default is 60s).
  start metrics-server "$BIN/metrics-server" "$BIN/metrics-server" \
    --kubeconfig="$kc" --authentication-kubeconfig="$kc" --authorization-kubeconfig="$kc" \
    --bind-address=127.0.0.1 --secure-port=$METRICS_SERVER_PORT \
    --tls-cert-file="$PKI/metrics-server-serving.crt" --tls-private-key-file="$PKI/metrics-server-serving.key" \
    --node-selector=modeldeploy.io/runner=true \
    --kubelet-preferred-address-types=InternalIP --kubelet-use-node-status-port \
    --kubelet-certificate-authority="$PKI/ca.crt" \
    --metric-resolution=15s --profiling=false --v=1 || true
  wait_for metrics-server 60 curl -sf --cacert "$PKI/ca.crt" --cert "$PKI/admin.crt" --key "$PKI/admin.key" \
    "https://127.0.0.1:$METRICS_SERVER_PORT/healthz"
}

# The kube-apiserver's aggregator marks the APIService Available once it reached metrics-server's discovery.
metrics_api_available() {
  [[ $(kubectl get apiservice v1beta1.metrics.k8s.io \
        -o jsonpath='{.status.conditions[?(@.type=="Available")].status}') == True ]]
}

runner_ready() { [[ $(cat "$STATE/jobrunner.ready" 2>/dev/null) == "$(pid_of jobrunner)" ]]; }

start_jobrunner() {
  local mode=process flags=() want=${MD_RUN_IMAGES:-}
  # Unset: a running runner keeps its mode (a second cluster-up changes nothing).
  [[ -z $want ]] && is_running jobrunner "hack/jobrunner.py" && [[ $(cat "$STATE/jobrunner.mode" 2>/dev/null) == images ]] \
    && want=1
  if [[ $want == 1 ]]; then
    [[ $(id -u) == 0 ]] || die "MD_RUN_IMAGES=1 needs root (hack/imagerun.py mounts and chroots, as a container runtime)"
    mode=images flags=(--images)
  fi
  # Restart a runner that is older than its code, uses another virtualenv or another mode (it then fails the
  # pods it was running, as a crashed kubelet's pods would be).
  if is_running jobrunner "hack/jobrunner.py"; then
    local f changed=0
    for f in jobrunner podrunner kubeletstats imagerun; do
      [[ $ROOT/hack/$f.py -nt $STATE/pids/jobrunner.pid ]] && changed=1
    done
    if (( changed )) || ! is_running jobrunner "$VENV/bin/python" \
       || [[ $(cat "$STATE/jobrunner.mode" 2>/dev/null) != "$mode" ]]; then
      log "the runner's code, the virtualenv or the runner mode changed: restarting the Job runner"
      stop_pid jobrunner
    fi
  fi
  # The runner nodes' kubelet resource-metrics endpoints (for metrics-server), with certificates of this
  # cluster's CA: not with --external, whose cluster has its own metrics pipeline.
  local kubelet=()
  if (( ! EXTERNAL )); then
    kubelet=(--kubelet-port-base "$RUNNER_KUBELET_PORT" --kubelet-cert "$PKI/runner-kubelet.crt"
             --kubelet-key "$PKI/runner-kubelet.key" --kubelet-client-ca "$PKI/ca.crt")
    if ! is_running jobrunner "hack/jobrunner.py"; then
      check_port "run-gpu-0's kubelet endpoint" $RUNNER_KUBELET_PORT
      check_port "run-cpu-0's kubelet endpoint" $((RUNNER_KUBELET_PORT + 1))
    fi
  fi
  start jobrunner "hack/jobrunner.py" "$VENV/bin/python" -u "$ROOT/hack/jobrunner.py" \
    --kubeconfig "$STATE/jobrunner.kubeconfig" --state "$STATE" --venv "$VENV" \
    --parallel "${MD_JOBRUNNER_PARALLEL:-2}" --runner-node run-gpu-0=gpu --runner-node run-cpu-0=cpu \
    --max-serving-pods "${MD_MAX_SERVING_PODS:-4}" --backoff-base "${MD_BACKOFF_BASE:-10}" "${flags[@]}" \
    "${kubelet[@]}" || true
  # The runner writes its PID to jobrunner.ready once it registered its nodes and its first pod lists succeeded.
  wait_for jobrunner 30 runner_ready
}

# --- objects -----------------------------------------------------------------------------------------------
node_manifest() {  # node_manifest NAME gpu|cpu
  local name=$1 kind=$2
  cat <<EOF
apiVersion: v1
kind: Node
metadata:
  name: $name
  annotations:
    kwok.x-k8s.io/node: fake
    node.alpha.kubernetes.io/ttl: "0"
  labels:
    kubernetes.io/hostname: $name
    kubernetes.io/os: linux
    kubernetes.io/arch: amd64
    kubernetes.io/role: agent
    node-role.kubernetes.io/agent: ""
    type: kwok
    modeldeploy.io/node-pool: $kind
EOF
  if [[ $kind == gpu ]]; then
    cat <<EOF
    nvidia.com/gpu.present: "true"
    nvidia.com/gpu.product: NVIDIA-H100-80GB-HBM3
    nvidia.com/gpu.count: "8"
    nvidia.com/gpu.memory: "81559"
spec:
  taints:
  - {key: nvidia.com/gpu, value: present, effect: NoSchedule}
status:
  capacity: {cpu: "64", memory: 512Gi, pods: "110", ephemeral-storage: 1Ti, nvidia.com/gpu: "8"}
  allocatable: {cpu: "63", memory: 500Gi, pods: "110", ephemeral-storage: 1Ti, nvidia.com/gpu: "8"}
EOF
  else
    # Generous pod counts: the operator benchmark places hundreds of serving pods on the CPU pool.
    cat <<EOF
spec: {}
status:
  capacity: {cpu: "32", memory: 128Gi, pods: "1000", ephemeral-storage: 1Ti}
  allocatable: {cpu: "31", memory: 120Gi, pods: "1000", ephemeral-storage: 1Ti}
EOF
  fi
}

create_nodes() {
  local i name created=0
  for kind in gpu cpu; do
    local count=$GPU_NODES; [[ $kind == cpu ]] && count=$CPU_NODES
    for ((i = 0; i < count; i++)); do
      name=kwok-$kind-$i
      kubectl get node "$name" >/dev/null 2>&1 && continue
      node_manifest "$name" "$kind" | kubectl create -f - >/dev/null
      created=$((created + 1))
    done
  done
  (( created > 0 )) && log "created $created fake nodes"
  local deadline=$(( $(date +%s) + 60 ))
  until [[ -z $(kubectl get nodes -o jsonpath='{range .items[*]}{.metadata.name}={.status.conditions[?(@.type=="Ready")].status}{"\n"}{end}' | grep -v '=True$') ]]; do
    (( $(date +%s) > deadline )) && { kubectl get nodes >&2; tail -n 20 "$STATE/logs/kwok.log" >&2; die "nodes not Ready after 60s"; }
    sleep 0.5
  done
}

# Pods can be created in a namespace only once its `default` ServiceAccount exists (the ServiceAccount
# admission plugin), and the service-account controller creates it a moment after the namespace.
wait_default_sa() {
  local deadline=$(( $(date +%s) + 60 ))
  until kubectl -n default get serviceaccount default >/dev/null 2>&1; do
    (( $(date +%s) > deadline )) && die "ServiceAccount default/default missing after 60s (kube-controller-manager log)"
    sleep 0.5
  done
}

# Secret model-store in `default`, from .cluster/s3.env (the namespace fixture makes one per test namespace).
model_store_secret() {
  local env_file=$STATE/s3.env args=() line
  [[ -f $env_file ]] || die "$env_file missing: hack/s3-up.sh did not write it"
  while IFS= read -r line; do
    case $line in AWS_ACCESS_KEY_ID=*|AWS_SECRET_ACCESS_KEY=*|AWS_ENDPOINT_URL=*|AWS_REGION=*) args+=(--from-literal="$line");; esac
  done <"$env_file"
  kubectl -n default create secret generic model-store "${args[@]}" --dry-run=client -o yaml \
    | kubectl apply -f - | grep -v unchanged || true
}

main() {
  if (( EXTERNAL )); then
    "$BIN/kubectl" --kubeconfig "$KUBECONFIG_FILE" get --raw /readyz >/dev/null \
      || die "the cluster in $KUBECONFIG_FILE does not answer"
    echo "$KUBECONFIG_FILE" >"$STATE/external"   # tells cluster-down.sh whose fake nodes to delete
    ln -sfn "$KUBECONFIG_FILE" "$STATE/kwok.kubeconfig"
    ln -sfn "$KUBECONFIG_FILE" "$STATE/jobrunner.kubeconfig"
  else
    make_pki
    write_kubeconfig "$KUBECONFIG_FILE" admin
    write_kubeconfig "$STATE/kube-controller-manager.kubeconfig" kube-controller-manager
    write_kubeconfig "$STATE/kube-scheduler.kubeconfig" kube-scheduler
    write_kubeconfig "$STATE/kwok.kubeconfig" kwok
    write_kubeconfig "$STATE/jobrunner.kubeconfig" jobrunner
    write_kubeconfig "$STATE/metrics-server.kubeconfig" metrics-server
    start_etcd
    start_apiserver
    start_controllers
  fi
  start_kwok
  "$ROOT/hack/s3-up.sh" | sed 's/^/[cluster-up] /'
  (( EXTERNAL )) || start_metrics_server
  start_jobrunner
  create_nodes
  wait_default_sa
  model_store_secret
  (( EXTERNAL )) || wait_for metrics-server 60 metrics_api_available

  log "ready: $(kubectl get nodes --no-headers | wc -l) nodes, \
server $(kubectl version -o json | sed -n 's/.*"gitVersion": *"\([^"]*\)".*/\1/p' | tail -1)"
  echo "  export KUBECONFIG=$KUBECONFIG_FILE"
  echo "  PATH=$BIN:\$PATH kubectl get nodes"
}

main "$@"; exit
