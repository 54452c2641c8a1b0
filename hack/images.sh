#!/usr/bin/env bash
# `make images`: build the operator and optimizer images (the two targets of the one Dockerfile).
#
# Engine: the first usable one among docker and podman (a docker client without a daemon does not count); else
# buildah without a daemon, installed with apt-get when missing (Debian's package; root only), building with
# chroot isolation, its images stored under $MD_IMAGE_STORE (default $MD_CACHE/containers, i.e.
# ~/.cache/modeldeploy/containers; hack/imagerun.py reads the same store). CONTAINER_ENGINE=docker|podman|buildah
# forces one.
#
# Base: the Dockerfile's pinned python:3.11-slim-bookworm image. When it cannot be pulled (no registry access),
# a local base with the same Python minor version is made from Debian's own packages: debootstrap (installed
# when missing) writes a minimal Debian bookworm root filesystem with python3, python3-venv and ca-certificates,
# which is committed as localhost/modeldeploy/python-base:<python>-bookworm-<hash> and cached like the images.
# The Dockerfile takes it as PYTHON_IMAGE, with PYTHON=python3 (Debian's interpreter name).
# MD_IMAGE_BASE=auto (default) | registry | local chooses; DEBIAN_MIRROR overrides the mirror.
#
# Cache: each image is tagged localhost/modeldeploy-cache/<target>:<hash of what goes into it> (Dockerfile,
# .dockerignore, pyproject.toml, README.md, operator/, the base image's id, the build arguments). When that tag
# exists, nothing is built: the image is only tagged again. Within a build, the dependency layers depend on
# pyproject.toml alone, so a change under operator/ reinstalls the project, not TensorFlow.
#
# Network for RUN steps: buildah and podman builds get the host's CA bundle (the one pip is configured with)
# mounted read-only over the image's /etc/ssl/certs/ca-certificates.crt, so pip reaches the package index through
# the same TLS trust as the host. MD_BUILD_CA_BUNDLE names another bundle; MD_BUILD_CA_BUNDLE=none mounts none.
#
# Size budget: after a build the image sizes are printed, with what TensorFlow and its companions cost in the
# optimizer image; a size over MD_IMAGE_BUDGET_OPERATOR_MB / MD_IMAGE_BUDGET_OPTIMIZER_MB fails the run.
#
#   IMAGE_REPO   registry/namespace prefix (default ghcr.io/modeldeploy)
#   IMAGE_TAG    tag (default: the version in pyproject.toml, which is also the chart's appVersion)
#   PUSH=1       push both images after building (`buildah push` reads credentials from `buildah login`)
#   TARGETS      the targets to build (default "operator optimizer")
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

MD_CACHE=${MD_CACHE:-$HOME/.cache/modeldeploy}
STORE=${MD_IMAGE_STORE:-$MD_CACHE/containers}
REPO=${IMAGE_REPO:-ghcr.io/modeldeploy}
TAG=${IMAGE_TAG:-$(sed -n 's/^version = "\(.*\)"$/\1/p' pyproject.toml | head -1)}
TARGETS=${TARGETS:-operator optimizer}
BASE_MODE=${MD_IMAGE_BASE:-auto}
DEBIAN_SUITE=bookworm
DEBIAN_MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
# Uncompressed sizes as the engine reports them. The optimizer's TensorFlow, onnxruntime and company are most of
# it (printed after each build).
# shellcheck disable=SC2034  # read as ${!budget} in report()
BUDGET_operator=${MD_IMAGE_BUDGET_OPERATOR_MB:-350}
# shellcheck disable=SC2034
BUDGET_optimizer=${MD_IMAGE_BUDGET_OPTIMIZER_MB:-2400}

log() { printf '[images %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { printf '[images] error: %s\n' "$1" >&2; exit "${2:-1}"; }

[[ -n $TAG ]] || die "cannot read the version from pyproject.toml; set IMAGE_TAG" 2
REGISTRY_BASE=$(sed -n 's/^ARG PYTHON_IMAGE=\(.*\)$/\1/p' Dockerfile | head -1)
[[ -n $REGISTRY_BASE ]] || die "no 'ARG PYTHON_IMAGE=' default in the Dockerfile" 2
# python:3.11.14-slim-bookworm@sha256:... -> 3.11: the local base must have the same minor version.
PY_MINOR=$(sed -n 's/^[^:]*:\([0-9]*\.[0-9]*\)\..*/\1/p' <<<"$REGISTRY_BASE")
[[ -n $PY_MINOR ]] || die "cannot read the Python version from the base image $REGISTRY_BASE" 2

# --- engine ------------------------------------------------------------------------------------------------

usable() {
  case $1 in
    docker) docker info >/dev/null 2>&1 ;;
    podman) podman info >/dev/null 2>&1 ;;
    buildah) buildah_cmd info >/dev/null 2>&1 ;;
    *) return 1 ;;
  esac
}

buildah_cmd() { buildah --root "$STORE/storage" --runroot "$STORE/run" "$@"; }

apt_install() {   # apt_install PACKAGE...: Debian's packages, for a fresh machine (root only)
  command -v apt-get >/dev/null || die "$* missing and there is no apt-get to install them; install $* by hand" 2
  [[ $(id -u) == 0 ]] || die "$* missing; install them (as root: apt-get install $*)" 2
  log "installing $* (apt-get)"
  if ! DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null; then
    apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null \
      || die "apt-get install $* failed" 2
  fi
}

choose_engine() {
  local candidate
  for candidate in ${CONTAINER_ENGINE:-docker podman buildah}; do
    if command -v "$candidate" >/dev/null 2>&1 && usable "$candidate"; then
      ENGINE=$candidate; return
    fi
  done
  # No usable engine: buildah builds without a daemon, so install it unless another engine was asked for.
  if [[ -z ${CONTAINER_ENGINE:-} || ${CONTAINER_ENGINE} == buildah ]]; then
    [[ $(id -u) == 0 ]] || die "no usable docker or podman, and buildah without root needs subuid/subgid set-up; \
run as root or install podman" 2
    command -v buildah >/dev/null || apt_install buildah
    usable buildah || die "buildah is installed but does not work here: $(buildah_cmd info 2>&1 | tail -1)" 2
    ENGINE=buildah; return
  fi
  die "CONTAINER_ENGINE=$CONTAINER_ENGINE is not usable here (try '$CONTAINER_ENGINE info')" 2
}

eng() { if [[ $ENGINE == buildah ]]; then buildah_cmd "$@"; else "$ENGINE" "$@"; fi; }

has_image() {
  if [[ $ENGINE == buildah ]]; then eng inspect --type image "$1" >/dev/null 2>&1
  else eng image inspect "$1" >/dev/null 2>&1; fi
}

image_id() {
  if [[ $ENGINE == buildah ]]; then eng inspect --type image --format '{{.FromImageID}}' "$1"
  else eng image inspect --format '{{.Id}}' "$1"; fi
}

# The image's size in MB (10^6 bytes, as the engines print them).
image_mb() {
  if [[ $ENGINE == buildah ]]; then
    eng images --json "$1" | python3 -c '
import json, sys
value, unit = json.load(sys.stdin)[0]["size"].split()
print(round(float(value) * {"B": 1e-6, "kB": 1e-3, "MB": 1, "GB": 1e3}[unit]))'
  else
    echo $(( $(eng image inspect --format '{{.Size}}' "$1") / 1000000 ))
  fi
}

image_names() {
  if [[ $ENGINE == buildah ]]; then eng images --format '{{.Name}}:{{.Tag}}'
  else eng images --format '{{.Repository}}:{{.Tag}}'; fi
}

# "<MiB>\t<name>" for each entry of a directory inside an image's root filesystem.
image_du() {
  local ref=$1 dir=$2
  if [[ $ENGINE == buildah ]]; then
    local ctr mnt
    ctr=$(eng from --pull-never -q "$ref")
    mnt=$(eng mount "$ctr")
    (cd "$mnt/$dir" && du -sm -- *) || true
    eng umount "$ctr" >/dev/null; eng rm "$ctr" >/dev/null
  else
    eng run --rm --user 0 --workdir "/$dir" --entrypoint sh "$ref" -c 'du -sm -- *' || true
  fi
}

# --- the base image ----------------------------------------------------------------------------------------

LOCAL_BASE_PACKAGES=python3,python3-venv,ca-certificates

local_base_ref() {
  local key
  key=$( { echo "v1 $DEBIAN_SUITE minbase $LOCAL_BASE_PACKAGES"; declare -f make_local_base; } | sha256sum | cut -c1-12)
  echo "localhost/modeldeploy/python-base:$PY_MINOR-$DEBIAN_SUITE-$key"
}

# Debian bookworm (minbase) with Python from Debian's packages, committed as an image: the stand-in for the
# python:3.11-slim-bookworm image (same Debian release, same Python minor version) where no registry is reachable.
make_local_base() {
  local ref=$1 tmp rootfs got
  command -v debootstrap >/dev/null || apt_install debootstrap
  [[ $(id -u) == 0 ]] || die "debootstrap needs root to make the local base image" 2
  mkdir -p "$MD_CACHE"
  tmp=$(mktemp -d "$MD_CACHE/.base-XXXXXX")
  rootfs=$tmp/rootfs
  local start; start=$(date +%s)
  log "making the local base $ref: debootstrap $DEBIAN_SUITE from $DEBIAN_MIRROR (log: $tmp.log)"
  if ! debootstrap --variant=minbase --include="$LOCAL_BASE_PACKAGES" "$DEBIAN_SUITE" "$rootfs" "$DEBIAN_MIRROR" \
        >"$tmp.log" 2>&1; then
    tail -n 20 "$tmp.log" >&2; rm -rf "$tmp"; die "debootstrap failed; see $tmp.log"
  fi
  got=$(chroot "$rootfs" python3 -c 'import sys; print("%d.%d" % sys.version_info[:2])')
  [[ $got == "$PY_MINOR" ]] || { rm -rf "$tmp"; die "Debian $DEBIAN_SUITE has Python $got, the Dockerfile's base $PY_MINOR"; }
  # What the slim images leave out too: package lists and archives, logs, manuals, translations; the copyright
  # files stay. resolv.conf and hostname are the build host's: engines mount their own at run time.
  rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/cache/apt/*.bin "$rootfs"/var/lib/apt/lists/* \
         "$rootfs"/var/log/* "$rootfs"/usr/share/man/* "$rootfs"/usr/share/info/* "$rootfs"/usr/share/locale/* \
         "$rootfs"/etc/hostname "$rootfs"/etc/resolv.conf
  find "$rootfs"/usr/share/doc -mindepth 1 -not -name copyright -not -type d -delete
  find "$rootfs"/usr/share/doc -mindepth 1 -type d -empty -delete
  local env_path=PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
  local desc="Debian $DEBIAN_SUITE (minbase) with Python $got from Debian's packages: modeldeploy's local base"
  if [[ $ENGINE == buildah ]]; then
    local ctr mnt
    ctr=$(eng from scratch)
    mnt=$(eng mount "$ctr")
    tar -C "$rootfs" --numeric-owner --xattrs -cf - . | tar -C "$mnt" --numeric-owner --xattrs -xf -
    eng umount "$ctr" >/dev/null
    eng config --env "$env_path" --env LANG=C.UTF-8 --cmd python3 \
      --label org.opencontainers.image.description="$desc" "$ctr"
    eng commit -q "$ctr" "$ref" >/dev/null
    eng rm "$ctr" >/dev/null
  else
    tar -C "$rootfs" --numeric-owner -cf - . \
      | eng import --change "ENV $env_path" --change "ENV LANG=C.UTF-8" --change 'CMD ["python3"]' \
          --change "LABEL org.opencontainers.image.description=\"$desc\"" - "$ref" >/dev/null
  fi
  rm -rf "$tmp" "$tmp.log"
  log "made the local base $ref in $(( $(date +%s) - start ))s"
}

# Sets BASE (the PYTHON_IMAGE build argument) and PYTHON (the interpreter's name in it).
choose_base() {
  if [[ $BASE_MODE != local ]]; then
    if has_image "$REGISTRY_BASE"; then BASE=$REGISTRY_BASE PYTHON=python; return; fi
    local err
    if err=$(eng pull -q "$REGISTRY_BASE" 2>&1); then BASE=$REGISTRY_BASE PYTHON=python; return; fi
    [[ $BASE_MODE == registry ]] && die "cannot pull $REGISTRY_BASE: $err"
    log "cannot pull $REGISTRY_BASE: $(tail -1 <<<"$err")"
    log "so the base is a local one made from Debian's packages (MD_IMAGE_BASE=registry refuses that)"
  fi
  BASE=$(local_base_ref) PYTHON=python3
  has_image "$BASE" || make_local_base "$BASE"
}

# --- building ----------------------------------------------------------------------------------------------

# The build context as .dockerignore lets it through: pyproject.toml, README.md and operator/ minus caches.
inputs_hash() {
  local target=$1
  {
    printf 'target=%s base=%s python=%s\n' "$target" "$(image_id "$BASE")" "$PYTHON"
    sha256sum Dockerfile .dockerignore pyproject.toml README.md
    find operator -type f ! -path '*/__pycache__/*' ! -name '*.pyc' ! -path '*.egg-info/*' -print0 \
      | LC_ALL=C sort -z | xargs -0 sha256sum
  } | sha256sum | cut -c1-16
}

ca_bundle() {
  local b=${MD_BUILD_CA_BUNDLE:-}
  [[ $b == none ]] && return 0
  if [[ -z $b ]]; then
    # The bundle pip is configured with (PIP_CERT, pip's configuration), else Python's default verify file,
    # else Debian's.
    b=${PIP_CERT:-}
    [[ -f $b ]] || b=$( (pip config get global.cert || python3 -m pip config get global.cert) 2>/dev/null | head -1 || true)
    [[ -f $b ]] || b=$(python3 -c 'import ssl; print(ssl.get_default_verify_paths().cafile or "")' 2>/dev/null || true)
    [[ -f $b ]] || b=/etc/ssl/certs/ca-certificates.crt
  fi
  if [[ -f $b ]]; then echo "$b"; fi
}

build() {
  local target=$1 image=$REPO/$1:$TAG hash cache_ref start
  hash=$(inputs_hash "$target")
  cache_ref=localhost/modeldeploy-cache/$target:$hash
  if has_image "$cache_ref"; then
    eng tag "$cache_ref" "$image"
    log "$image is up to date (cached as $cache_ref)"
  else
    start=$(date +%s)
    log "building $image (target $target, base $BASE) with $ENGINE"
    local args=(--target "$target" --tag "$image" --tag "$cache_ref" --file Dockerfile
                --build-arg "PYTHON_IMAGE=$BASE" --build-arg "PYTHON=$PYTHON"
                --label "io.modeldeploy.inputs=$hash")
    local ca; ca=$(ca_bundle)
    case $ENGINE in
      buildah)
        [[ -n $ca ]] && args+=(--volume "$ca:/etc/ssl/certs/ca-certificates.crt:ro")
        eng bud --isolation chroot --layers --force-rm --pull=never "${args[@]}" . ;;
      podman)
        [[ -n $ca ]] && args+=(--volume "$ca:/etc/ssl/certs/ca-certificates.crt:ro")
        eng build --layers --force-rm --pull=never "${args[@]}" . ;;
      docker) eng build "${args[@]}" . ;;
    esac
    log "built $image in $(( $(date +%s) - start ))s"
    # Older cache tags of this target name images that nothing else uses: free them.
    local old
    for old in $(image_names 2>/dev/null | grep "^localhost/modeldeploy-cache/$target:" | grep -v ":$hash\$" || true); do
      eng rmi "$old" >/dev/null 2>&1 || true
    done
  fi
  if [[ ${PUSH:-0} == 1 ]]; then eng push "$image"; fi
}

report() {
  local over=0 target image mb budget
  echo "images: sizes (uncompressed, as $ENGINE reports them)"
  declare -A size
  for target in $TARGETS; do
    image=$REPO/$target:$TAG
    mb=$(image_mb "$image")
    size[$target]=$mb
    budget=BUDGET_$target; budget=${!budget:-0}
    printf '  %-45s %6d MB   budget %6d MB%s\n' "$image" "$mb" "$budget" "$( ((budget && mb > budget)) && echo '   OVER' )"
    ((budget && mb > budget)) && over=1
  done
  if [[ " $TARGETS " == *" optimizer "* ]]; then
    local sp=opt/modeldeploy/lib/python$PY_MINOR/site-packages
    echo "images: the optimizer's largest packages (MiB on disk; TensorFlow and its companions make the image):"
    # sed reads to the end: `head` would close the pipe early, and under pipefail sort's SIGPIPE fails the build
    image_du "$REPO/optimizer:$TAG" "$sp" | sort -rn | sed -n '1,12s/^/  /p'
    if [[ -n ${size[operator]:-} ]]; then
      echo "  optimizer - operator: $(( size[optimizer] - size[operator] )) MB (what the optimize and onnx extras add)"
    fi
  fi
  ((over == 0)) || die "an image is over its size budget (MD_IMAGE_BUDGET_<TARGET>_MB)"
}

main() {
  mkdir -p "$MD_CACHE"
  exec 9>"$MD_CACHE/images.lock"
  flock -n 9 || { log "another 'make images' is running; waiting for it"; flock 9; }
  local total_start; total_start=$(date +%s)
  choose_engine
  [[ $ENGINE == buildah ]] && mkdir -p "$STORE"
  choose_base
  log "engine $ENGINE, base $BASE (python executable: $PYTHON)"
  local target
  for target in $TARGETS; do build "$target"; done
  report
  log "done in $(( $(date +%s) - total_start ))s"
  echo "images: built $(for t in $TARGETS; do printf '%s ' "$REPO/$t:$TAG"; done)"
  if [[ $ENGINE == buildah ]]; then
    echo "images: in buildah's store $STORE; run a command in one with hack/imagerun.py, or push with PUSH=1"
  fi
  echo "images: install with: helm install modeldeploy charts/modeldeploy -n modeldeploy-system --create-namespace \\"
  echo "          --set images.operator.repository=$REPO/operator --set images.optimizer.repository=$REPO/optimizer \\"
  echo "          --set images.operator.tag=$TAG --set images.optimizer.tag=$TAG"
}

main "$@"; exit
