#!/usr/bin/env bash
# The rtbserve image for linux/amd64 and linux/arm64 without a Docker daemon or a remote registry.
#
#   hack/image.sh base             Debian bookworm base images, made with mmdebstrap, cached
#   hack/image.sh build            base, then the Dockerfile with buildah, one image per arch,
#                                  gathered in the manifest list $IMAGE in local storage
#   hack/image.sh push REGISTRY    push the manifest list and both images to REGISTRY/rtbserve:TAG
#
# PYTHON_IMAGE=python:3.11-slim builds on Docker Hub's image instead (for hosts that reach it).
# The base rootfs tarballs and pip's downloads are cached in $RTBSERVE_IMAGE_CACHE
# (default ~/.cache/rtbserve/images), outside the repo, like the cluster tools.
set -euo pipefail
cd "$(dirname "$0")/.."

IMAGE=${IMAGE:-localhost/rtbserve:dev}
ARCHES=${ARCHES:-"amd64 arm64"}
SUITE=${SUITE:-bookworm}
MIRROR=${MIRROR:-http://deb.debian.org/debian}
CACHE=${RTBSERVE_IMAGE_CACHE:-$HOME/.cache/rtbserve/images}
PYTHON_IMAGE=${PYTHON_IMAGE:-}
EXTRAS=${EXTRAS:-}
# What the runtime needs (TLS roots for S3, OpenMP for XGBoost) and what the builder adds.
RUNTIME_PACKAGES="python3,ca-certificates,libgomp1"
BUILDER_PACKAGES="$RUNTIME_PACKAGES,python3-dev,python3-venv,gcc,libc6-dev,make"

log() { printf '[image] %s\n' "$*" >&2; }

install_tools() {
  local missing=()
  for tool in buildah podman mmdebstrap runc docker-registry; do
    command -v "$tool" >/dev/null || missing+=("$tool")
  done
  [[ -x /usr/bin/qemu-aarch64-static ]] || missing+=(qemu-user-static)
  if ((${#missing[@]})); then
    log "installing ${missing[*]} from Debian"
    apt-get update -qq  # a new machine may have no package lists yet
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
      buildah podman mmdebstrap runc qemu-user-static uidmap docker-registry >/dev/null
  fi
}

# Foreign binaries (arm64 on amd64, and back) run under qemu through binfmt_misc. The F flag
# opens the interpreter now, so it also works inside containers and mmdebstrap's chroot.
register_binfmt() {
  local arch=$1 native qemu
  native=$(dpkg --print-architecture)
  [[ $arch == "$native" ]] && return 0
  qemu=$([[ $arch == arm64 ]] && echo aarch64 || echo x86_64)
  [[ -e /proc/sys/fs/binfmt_misc/register ]] \
    || mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc
  if [[ ! -e /proc/sys/fs/binfmt_misc/qemu-$qemu ]]; then
    grep -v '^#' "/usr/lib/binfmt.d/qemu-$qemu.conf" >/proc/sys/fs/binfmt_misc/register
  fi
}

# Podman and buildah on this kind of host: runc (crun fails on hybrid cgroups), the host's
# network for builds (pip reaches PyPI through it), and no raising of rlimits.
RUNTIME_FLAGS=(--runtime runc)
ULIMITS=(--ulimit nofile=1024:1024 --ulimit nproc=1024:1024)

# The host's pip configuration and CA bundle (an egress proxy's CA, say) are lent to the
# build's RUN steps as read-only volumes: they reach PyPI as the host does, and no layer keeps them.
HOST_TRUST=()
for f in /etc/pip.conf /etc/ssl/certs/ca-certificates.crt; do
  [[ -f $f ]] && HOST_TRUST+=(--volume "$f:$f:ro")
done

base_tag() { echo "localhost/rtbserve-$1:$SUITE-$2"; }

# One rootfs per (kind, arch), keyed by the suite and the package list; --refresh remakes it.
make_base() {
  local kind=$1 arch=$2 packages=$3 key tar tag
  key=$(printf '%s %s %s' "$SUITE" "$packages" "$MIRROR" | sha256sum | cut -c1-12)
  tar="$CACHE/$SUITE-$kind-$arch-$key.tar"
  tag=$(base_tag "$kind" "$arch")
  if [[ ! -s $tar || ${REFRESH:-} == 1 ]]; then
    log "mmdebstrap $SUITE $kind for $arch"
    mkdir -p "$CACHE"
    mmdebstrap --quiet --format=tar --variant=minbase --architectures="$arch" --include="$packages" \
      --dpkgopt='path-exclude=/usr/share/man/*' \
      --dpkgopt='path-exclude=/usr/share/locale/*' \
      --dpkgopt='path-exclude=/usr/share/info/*' \
      --dpkgopt='path-exclude=/usr/share/doc/*' \
      --dpkgopt='path-include=/usr/share/doc/*/copyright' \
      --customize-hook='rm -rf "$1"/var/lib/apt/lists/* "$1"/var/cache/apt/*' \
      "$SUITE" "$tar.partial" "$MIRROR"
    mv "$tar.partial" "$tar"
  fi
  if [[ $(podman image inspect --format '{{.Labels.key}}' "$tag" 2>/dev/null || true) != "$key" ]]; then
    log "importing $tag"
    podman import --arch "$arch" --os linux --change "LABEL key=$key" \
      --change 'CMD ["/bin/bash"]' "$tar" "$tag" >/dev/null 2>&1
  fi
}

cmd_base() {
  install_tools
  for arch in $ARCHES; do
    register_binfmt "$arch"
    make_base runtime "$arch" "$RUNTIME_PACKAGES"
    make_base builder "$arch" "$BUILDER_PACKAGES"
  done
}

cmd_build() {
  install_tools
  [[ -n $PYTHON_IMAGE ]] || cmd_base
  buildah manifest rm "$IMAGE" >/dev/null 2>&1 || true
  buildah manifest create "$IMAGE" >/dev/null
  for arch in $ARCHES; do
    register_binfmt "$arch"
    local runtime=${PYTHON_IMAGE:-$(base_tag runtime "$arch")}
    local builder=${PYTHON_IMAGE:-$(base_tag builder "$arch")}
    log "building $IMAGE for linux/$arch on $runtime"
    local started=$SECONDS
    buildah bud --quiet "${RUNTIME_FLAGS[@]}" "${ULIMITS[@]}" --network host \
      --platform "linux/$arch" --pull-never \
      --build-arg "PYTHON_IMAGE=$runtime" --build-arg "BUILDER_IMAGE=$builder" \
      --build-arg "EXTRAS=$EXTRAS" \
      "${HOST_TRUST[@]}" \
      --manifest "$IMAGE" --tag "$IMAGE-$arch" . >/dev/null
    log "linux/$arch built in $((SECONDS - started)) s: $(image_size "$IMAGE-$arch")"
  done
  buildah manifest inspect "$IMAGE" \
    | python3 -c 'import json, sys; m = json.load(sys.stdin); print("[image] manifest list:", ", ".join(d["platform"]["os"] + "/" + d["platform"]["architecture"] for d in m["manifests"]))' >&2
}

image_size() {
  podman image inspect --format '{{.Size}}' "$1" | awk '{printf "%.0f MiB", $1 / 1048576}'
}

cmd_push() {
  local registry=${1:?usage: hack/image.sh push REGISTRY}
  local tag=${TAG:-${IMAGE##*:}}
  local dest="$registry/rtbserve:$tag"
  log "pushing $IMAGE to $dest"
  buildah manifest push --all ${TLS_VERIFY:+--tls-verify="$TLS_VERIFY"} "$IMAGE" "docker://$dest"
  echo "$dest"
}

case ${1:-build} in
  base) cmd_base ;;
  build) cmd_build ;;
  push) shift; cmd_push "$@" ;;
  *) echo "usage: hack/image.sh base|build|push REGISTRY" >&2; exit 2 ;;
esac
