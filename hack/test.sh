#!/usr/bin/env bash
# `make test` (and so CI): start the local cluster, run every test tier with pytest, stop the cluster.
# Make has already run the `venv` prerequisite; the Go binaries (hack/build.sh) are built here, beside the images.
# Arguments go to pytest (make test PYTEST_ARGS=...).
#
# Against another cluster (kind on a machine with Docker, say):
#   MD_EXTERNAL_CLUSTER=1 KUBECONFIG=/path/to/kubeconfig make test
# uses that cluster instead of starting one; hack/cluster-up.sh --external adds what the tests need to it
# (kwok with the fake GPU/CPU nodes, the Job runner, S3) and hack/cluster-down.sh --external removes it.
# A cluster already running from this checkout (make cluster-up) is reused and left running.
set -uo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
export TF_USE_LEGACY_KERAS=1

phase_start=$(date +%s)
declare -a TIMES=()
mark() { local t; t=$(date +%s); TIMES+=("$1: $((t - phase_start))s"); phase_start=$t; }

started=0
mode=()
if [[ ${MD_EXTERNAL_CLUSTER:-0} == 1 ]]; then
  [[ -n ${KUBECONFIG:-} && $KUBECONFIG != "$ROOT/.cluster/kubeconfig" ]] \
    || { echo "test: MD_EXTERNAL_CLUSTER=1 needs KUBECONFIG pointing at that cluster" >&2; exit 2; }
  mode=(--external)
else
  export KUBECONFIG=$ROOT/.cluster/kubeconfig
fi

# The Go binaries and the images need nothing of each other, and from cold both are slow (one compiles on every
# core, the other mostly downloads and unpacks): built side by side, the build's lines prefixed.
hack/build.sh > >(sed -u 's/^/[build] /') 2>&1 &
build_pid=$!

# Reuse a cluster this checkout already runs (a developer's `make cluster-up`); otherwise start one and stop
# it afterwards, whatever pytest does.
if [[ -f .cluster/pids/kube-apiserver.pid || -f .cluster/external ]] \
   && .bin/kubectl --kubeconfig "$KUBECONFIG" get --raw /readyz >/dev/null 2>&1; then
  echo "test: reusing the running cluster ($KUBECONFIG)"
else
  started=1
  trap 'hack/cluster-down.sh "${mode[@]}"' EXIT
fi
# The images (`make images`, cached by content): as root the runner then runs the optimizer Job's container,
# the serving pods' pull init container and the operator's own pod inside them (MD_RUN_IMAGES=1). Without root
# nothing can run in an image here: containers run as host processes and the image tests skip, saying so.
if [[ $(uname) == Linux && $(id -u) == 0 && ${MD_RUN_IMAGES:-1} == 1 ]]; then
  hack/images.sh || { echo "test: hack/images.sh failed" >&2; kill "$build_pid" 2>/dev/null; exit 1; }
  export MD_RUN_IMAGES=1
  mark "images"
else
  export MD_RUN_IMAGES=0
  echo "test: not root on Linux (or MD_RUN_IMAGES=0): containers run as host processes, not in their images"
fi
wait "$build_pid" || { echo "test: hack/build.sh failed" >&2; exit 1; }
mark "build (after the images)"
hack/cluster-up.sh "${mode[@]}" || { echo "test: hack/cluster-up.sh failed" >&2; exit 1; }
mark "cluster-up"

# Arguments that name test paths replace the default `tests` (make test PYTEST_ARGS=tests/unit); other
# arguments are options added to it (PYTEST_ARGS="-k gpu -x").
targets=(tests)
for arg in "$@"; do [[ $arg != -* && -e ${arg%%::*} ]] && targets=(); done
# --durations: the slowest tests, for keeping a cold CI run inside its time budget.
"${MD_VENV:-.venv}/bin/python" -m pytest --durations=15 "${targets[@]}" "$@"
code=$?
mark "pytest"

if (( started )); then
  trap - EXIT
  hack/cluster-down.sh "${mode[@]}"
  mark "cluster-down"
fi
echo "test: phase times: ${TIMES[*]}"
# pytest's own codes: 0 passed, 1 failures, 5 no tests collected -- also a failure here.
exit $code
