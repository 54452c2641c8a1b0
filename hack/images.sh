#!/usr/bin/env bash
# `make images`: build the operator and optimizer images from the Dockerfile with the first working container
# engine among docker, podman and buildah (override with CONTAINER_ENGINE=...).
#
#   IMAGE_REPO   registry/namespace prefix (default ghcr.io/modeldeploy)
#   IMAGE_TAG    tag (default: the version in pyproject.toml, which is also the chart's appVersion)
#   PUSH=1       push both images after building
#
# Without a usable engine it says so and exits 2 (this machine has none: tests/unit/test_dockerfile.py lints the
# Dockerfile with hadolint instead).
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

REPO=${IMAGE_REPO:-ghcr.io/modeldeploy}
TAG=${IMAGE_TAG:-$(sed -n 's/^version = "\(.*\)"$/\1/p' pyproject.toml | head -1)}
[[ -n $TAG ]] || { echo "images: cannot read the version from pyproject.toml; set IMAGE_TAG" >&2; exit 2; }

# An engine counts only if it can build here: a docker client without a daemon does not.
usable() {
  case $1 in
    docker) docker info >/dev/null 2>&1 ;;
    podman) podman info >/dev/null 2>&1 ;;
    buildah) buildah info >/dev/null 2>&1 ;;
    *) return 1 ;;
  esac
}

engine=""
for candidate in ${CONTAINER_ENGINE:-docker podman buildah}; do
  if command -v "$candidate" >/dev/null 2>&1 && usable "$candidate"; then
    engine=$candidate
    break
  fi
done
if [[ -z $engine ]]; then
  found=()
  for c in docker podman buildah; do command -v "$c" >/dev/null 2>&1 && found+=("$c"); done
  if ((${#found[@]})); then
    echo "images: found ${found[*]} but none can build (is the daemon running? try '${found[0]} info')." >&2
  else
    echo "images: no container engine (docker, podman or buildah) is installed; install one to build the images." >&2
  fi
  echo "images: nothing built. 'make lint' still checks the Dockerfile with hadolint." >&2
  exit 2
fi

build() {
  local target=$1 image=$REPO/$1:$TAG
  echo "images: building $image (target $target) with $engine"
  case $engine in
    buildah) buildah bud --layers --target "$target" --tag "$image" --file Dockerfile . ;;
    *) "$engine" build --target "$target" --tag "$image" --file Dockerfile . ;;
  esac
  if [[ ${PUSH:-0} == 1 ]]; then
    case $engine in
      buildah) buildah push "$image" ;;
      *) "$engine" push "$image" ;;
    esac
  fi
}

build operator
build optimizer
echo "images: built $REPO/operator:$TAG and $REPO/optimizer:$TAG"
echo "images: install with: helm install modeldeploy charts/modeldeploy -n modeldeploy-system --create-namespace \\"
echo "          --set images.operator.repository=$REPO/operator --set images.optimizer.repository=$REPO/optimizer \\"
echo "          --set images.operator.tag=$TAG --set images.optimizer.tag=$TAG"
