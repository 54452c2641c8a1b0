#!/usr/bin/env bash
# Build the pinned control-plane binaries from their Go modules and link them into ./.bin/.
#
# Each group of binaries has a wrapper module under hack/go/<group>/ (go.mod + go.sum are committed); its pin
# is the version below plus a hash of those two files, so editing a wrapper rebuilds exactly that group.
# Results are cached in ${MD_CACHE:-~/.cache/modeldeploy}/bin/<group>-<version>-<hash>/ and shared by every
# checkout on the machine; a warm run only refreshes the symlinks.
#
#   hack/build.sh            build what is missing (cold: tens of minutes on 2 cores), link into .bin/
#   hack/build.sh --check    exit 1 if anything would be built (nothing is built)
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
MD_CACHE=${MD_CACHE:-$HOME/.cache/modeldeploy}
BIN_CACHE=$MD_CACHE/bin
BIN_DIR=$ROOT/.bin

# The pins. kube_version must match the require line in hack/go/kubernetes/go.mod (checked below).
KUBE_VERSION=v1.36.3
ETCD_VERSION=v3.6.8
KWOK_VERSION=v0.8.0
HELM_VERSION=v3.22.0
# metrics-server v0.8.0 is built with its own k8s.io libraries (v0.33.2, from its go.mod): it speaks only stable
# APIs to the v1.36 API server (core/v1 lists and watches, TokenReview, SubjectAccessReview), as any release
# inside the version skew does.
METRICS_SERVER_VERSION=v0.8.0

# group | version | packages built from the wrapper module (binary name = last path element)
GROUPS_SPEC=(
  "etcd|$ETCD_VERSION|go.etcd.io/etcd/server/v3"
  "kubernetes|$KUBE_VERSION|k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kube-controller-manager k8s.io/kubernetes/cmd/kube-scheduler k8s.io/kubernetes/cmd/kubectl"
  "kwok|$KWOK_VERSION|sigs.k8s.io/kwok/cmd/kwok"
  "helm|$HELM_VERSION|helm.sh/helm/v3/cmd/helm"
  "metrics-server|$METRICS_SERVER_VERSION|sigs.k8s.io/metrics-server/cmd/metrics-server"
)

CHECK_ONLY=0
[[ ${1:-} == --check ]] && CHECK_ONLY=1

log() { printf '[build %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { printf '[build] error: %s\n' "$*" >&2; exit 1; }

# Binary name inside the cache for a package path: etcd's main package is the module root "server/v3".
bin_name() {
  case $1 in
    go.etcd.io/etcd/server/v3) echo etcd ;;
    *) basename "$1" ;;
  esac
}

ldflags_for() {
  local group=$1 version=$2
  local flags="-s -w"
  case $group in
    kubernetes)
      local minor=${version#v1.}; minor=${minor%%.*}
      local date; date=$(date -u +%Y-%m-%dT%H:%M:%SZ)
      # Both packages carry a copy of the version info: component-base for the servers, client-go for kubectl.
      for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
        flags+=" -X $pkg.gitVersion=$version -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor"
        flags+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=$date"
      done ;;
    helm)
      flags+=" -X helm.sh/helm/v3/internal/version.version=$version -X helm.sh/helm/v3/internal/version.gitTreeState=clean" ;;
    metrics-server)   # as its Makefile stamps it (metrics-server --version prints client-go's gitVersion)
      flags+=" -X k8s.io/client-go/pkg/version.gitVersion=$version -X k8s.io/client-go/pkg/version.gitTreeState=clean" ;;
  esac
  echo "$flags"
}

cache_dir_for() {
  local group=$1 version=$2 hash
  hash=$(cat "$ROOT/hack/go/$group/go.mod" "$ROOT/hack/go/$group/go.sum" | sha256sum | cut -c1-10)
  echo "$BIN_CACHE/$group-$version-$hash"
}

# go build -v prints each package as it compiles; turn that into one progress line per 100 packages.
progress() {
  local group=$1 start=$2 n=0 line
  while IFS= read -r line; do
    printf '%s\n' "$line" >>"$BUILD_LOG"
    n=$((n + 1))
    if (( n % 100 == 0 )); then
      log "  $group: $n packages compiled ($(( $(date +%s) - start ))s)"
    fi
  done
}

build_group() {
  local group=$1 version=$2 pkgs=$3 dest=$4
  local mod_dir=$ROOT/hack/go/$group tmp start
  tmp=$(mktemp -d "$BIN_CACHE/.tmp-$group-XXXXXX")
  start=$(date +%s)
  log "building $group $version (cold build; log: $BUILD_LOG)"
  log "  $group: downloading modules"
  (cd "$mod_dir" && go mod download) || { rm -rf "$tmp"; die "go mod download failed for $group"; }
  local pkg
  for pkg in $pkgs; do
    log "  $group: compiling $(bin_name "$pkg")"
    # shellcheck disable=SC2046
    if ! (cd "$mod_dir" && go build -v -trimpath -ldflags "$(ldflags_for "$group" "$version")" \
            -o "$tmp/$(bin_name "$pkg")" "$pkg" 2>&1) | progress "$group" "$start"; then
      tail -n 30 "$BUILD_LOG" >&2; rm -rf "$tmp"; die "building $pkg failed; see $BUILD_LOG"
    fi
    [[ -x $tmp/$(bin_name "$pkg") ]] || { tail -n 30 "$BUILD_LOG" >&2; rm -rf "$tmp"; die "building $pkg failed; see $BUILD_LOG"; }
  done
  rm -rf "$dest"
  mv "$tmp" "$dest"   # atomic: a cache dir exists only when every binary in it was built
  log "built $group $version in $(( $(date +%s) - start ))s"
}

main() {
  grep -q "k8s.io/kubernetes $KUBE_VERSION" "$ROOT/hack/go/kubernetes/go.mod" \
    || die "hack/go/kubernetes/go.mod does not require k8s.io/kubernetes $KUBE_VERSION; update both together"
  mkdir -p "$BIN_CACHE"
  local missing=() spec group version pkgs dir
  for spec in "${GROUPS_SPEC[@]}"; do
    IFS='|' read -r group version pkgs <<<"$spec"
    dir=$(cache_dir_for "$group" "$version")
    [[ -d $dir ]] || missing+=("$spec")
  done
  if (( CHECK_ONLY )); then
    (( ${#missing[@]} == 0 )) && exit 0
    printf 'would build: %s\n' "${missing[@]%%|*}"; exit 1
  fi

  if (( ${#missing[@]} > 0 )); then
    command -v go >/dev/null || die "go is not installed; install Go >= 1.26 (https://go.dev/dl/)"
    local gov; gov=$(go env GOVERSION); gov=${gov#go}
    [[ $(printf '%s\n1.26\n' "$gov" | sort -V | head -1) == 1.26 ]] \
      || die "Go $gov is too old: Kubernetes $KUBE_VERSION needs Go >= 1.26"
    export CGO_ENABLED=0 GOTOOLCHAIN=local GOFLAGS="-mod=readonly -buildvcs=false"
    # Two checkouts building at once would compile everything twice on a 2-core machine: serialise.
    exec 9>"$BIN_CACHE/.build.lock"
    if ! flock -n 9; then
      log "another build is running; waiting for it"
      flock 9
    fi
    BUILD_LOG=$BIN_CACHE/build-$(date +%Y%m%d-%H%M%S).log
    local total_start; total_start=$(date +%s)
    for spec in "${missing[@]}"; do
      IFS='|' read -r group version pkgs <<<"$spec"
      dir=$(cache_dir_for "$group" "$version")
      [[ -d $dir ]] && continue   # built by the build we waited for
      build_group "$group" "$version" "$pkgs" "$dir"
    done
    log "all builds done in $(( $(date +%s) - total_start ))s"
  fi

  mkdir -p "$BIN_DIR"
  local pkg name
  for spec in "${GROUPS_SPEC[@]}"; do
    IFS='|' read -r group version pkgs <<<"$spec"
    dir=$(cache_dir_for "$group" "$version")
    for pkg in $pkgs; do
      name=$(bin_name "$pkg")
      ln -sfn "$dir/$name" "$BIN_DIR/$name"
    done
  done
}

main "$@"; exit
