#!/usr/bin/env bash
# Build the binaries for a local kwok control plane (real kube-apiserver,
# controller-manager, scheduler and etcd; nodes and pods simulated by kwok),
# plus kubectl and helm, from their upstream Go modules.
#
# Each tool group is built once into a cache OUTSIDE the repo, keyed by
# version, and skipped on later runs:
#   ${RTBSERVE_TOOLS_DIR:-$HOME/.cache/rtbserve/tools}/<name>-<version>/
# The script ends by writing <tools dir>/tools.env (shell exports with the
# binary paths) and printing its path on stdout.
#
# Usage: hack/build-cluster-tools.sh [kubernetes|etcd|kwok|helm ...]
#        (no argument: all of them)
set -euo pipefail

# Kubernetes 1.34 is an EKS-supported release; etcd 3.6.5 is the version
# kubeadm pins for 1.34 (cmd/kubeadm/app/constants). Helm 3.19 is built
# against the 1.34 client libraries.
K8S_VERSION="${K8S_VERSION:-v1.34.4}"
ETCD_VERSION="${ETCD_VERSION:-v3.6.5}"
KWOK_VERSION="${KWOK_VERSION:-v0.8.0}"
HELM_VERSION="${HELM_VERSION:-v3.19.5}"

TOOLS_DIR="${RTBSERVE_TOOLS_DIR:-$HOME/.cache/rtbserve/tools}"
BUILD_DIR="$TOOLS_DIR/.build"

# The machine has 2 cores: build two packages at a time, with the local
# toolchain only (no toolchain downloads), statically (no cgo).
export GOTOOLCHAIN=local
export CGO_ENABLED=0
export GOFLAGS="-buildvcs=false -mod=mod"
GO_P="${GO_BUILD_PARALLELISM:-2}"

log() { printf '[build-cluster-tools] %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

command -v go >/dev/null || die "go is not installed (need Go >= 1.24)"

# retry N CMD...: module downloads go over the network and can flake.
# The command's output (hundreds of "go: downloading" lines) goes to a log
# file; its tail is shown when an attempt fails.
retry() {
    local n="$1" i=1 out="$BUILD_DIR/last-command.log"
    shift
    until "$@" >"$out" 2>&1; do
        tail -n 40 "$out" >&2
        if (( i >= n )); then
            die "failed after $n attempts: $*"
        fi
        log "attempt $i failed, retrying in $((i * 10))s: $*"
        sleep $((i * 10))
        i=$((i + 1))
    done
}

# is_built DIR BIN...: true when DIR has a completion stamp and every binary.
is_built() {
    local dir="$1" b
    shift
    [[ -f "$dir/.complete" ]] || return 1
    for b in "$@"; do [[ -x "$dir/$b" ]] || return 1; done
}

# start_group NAME VERSION -> sets OUT (final dir) and TMP (staging dir).
# Binaries are written to a staging dir and renamed into place at the end,
# so an interrupted build never leaves a half-filled cache entry behind.
start_group() {
    OUT="$TOOLS_DIR/$1-$2"
    TMP="$TOOLS_DIR/.tmp-$1-$2"
    rm -rf "$TMP"
    mkdir -p "$TMP" "$BUILD_DIR"
}

finish_group() {
    touch "$TMP/.complete"
    rm -rf "$OUT"
    mv "$TMP" "$OUT"
}

build_kubernetes() {
    local bins=(kube-apiserver kube-controller-manager kube-scheduler kubectl)
    if is_built "$TOOLS_DIR/kubernetes-$K8S_VERSION" "${bins[@]}"; then
        log "kubernetes $K8S_VERSION: cached"
        return
    fi
    start_group kubernetes "$K8S_VERSION"
    local start=$SECONDS
    log "kubernetes $K8S_VERSION: building ${bins[*]} (the slow one: ~12 min cold on 2 cores)"

    # k8s.io/kubernetes points its staging modules (k8s.io/api, client-go,
    # ...) at ./staging via replace directives, which `go install mod@ver`
    # refuses. A wrapper module requires it and replaces each staging module
    # with its published v0.Y.Z tag instead.
    retry 3 go mod download "k8s.io/kubernetes@$K8S_VERSION"
    local modfile
    modfile="$(go env GOMODCACHE)/cache/download/k8s.io/kubernetes/@v/$K8S_VERSION.mod"
    [[ -f "$modfile" ]] || die "missing $modfile"
    local staging_ver="v0.${K8S_VERSION#v1.}"
    local wrap="$BUILD_DIR/kubernetes-$K8S_VERSION"
    rm -rf "$wrap"
    mkdir -p "$wrap"
    {
        echo "module rtbserve.local/kubernetes-build"
        echo
        grep -m1 '^go ' "$modfile"
        # Same runtime defaults (GODEBUG) as the upstream release binaries.
        grep '^godebug' "$modfile" || true
        echo
        echo "require k8s.io/kubernetes $K8S_VERSION"
        echo
        echo "replace ("
        sed -n '/^replace (/,/^)/p' "$modfile" |
            awk -v v="$staging_ver" '$2 == "=>" && $3 ~ /^\.\/staging\// { printf "\t%s => %s %s\n", $1, $1, v }'
        echo ")"
    } >"$wrap/go.mod"
    grep -q '=> k8s.io/api ' "$wrap/go.mod" || die "no staging replaces found in $modfile"

    local pkgs=()
    local b
    # Pin the version on each package: a bare `go get pkg` would move
    # k8s.io/kubernetes to its latest release.
    for b in "${bins[@]}"; do pkgs+=("k8s.io/kubernetes/cmd/$b@$K8S_VERSION"); done
    # `go get` fills in the full requirement graph of the four commands.
    (cd "$wrap" && retry 3 go get "${pkgs[@]}")
    (cd "$wrap" && retry 3 go mod download)

    # The same version stamps as upstream's hack/lib/version.sh; helm and
    # kwokctl read them from `--version` and the /version endpoint. The
    # module proxy gives no commit hash, so gitCommit is left empty and the
    # build date is the tag's date (reproducible).
    local minor="${K8S_VERSION#v1.}"
    minor="${minor%%.*}"
    local tag_date
    tag_date="$(sed -n 's/.*"Time":"\([^"]*\)".*/\1/p' "${modfile%.mod}.info")"
    local ld="-s -w" p
    for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
        ld+=" -X $p.gitVersion=$K8S_VERSION -X $p.gitMajor=1 -X $p.gitMinor=$minor"
        ld+=" -X $p.gitCommit= -X $p.gitTreeState=clean -X $p.buildDate=${tag_date:-1970-01-01T00:00:00Z}"
    done
    for b in "${bins[@]}"; do
        log "  go build $b"
        (cd "$wrap" && go build -p "$GO_P" -trimpath -ldflags "$ld" -o "$TMP/$b" "k8s.io/kubernetes/cmd/$b") ||
            die "go build $b failed"
    done
    finish_group
    log "kubernetes $K8S_VERSION: done in $((SECONDS - start))s"
}

build_etcd() {
    if is_built "$TOOLS_DIR/etcd-$ETCD_VERSION" etcd; then
        log "etcd $ETCD_VERSION: cached"
        return
    fi
    start_group etcd "$ETCD_VERSION"
    local start=$SECONDS
    log "etcd $ETCD_VERSION: building"
    # go.etcd.io/etcd/server/v3 (whose root package is the etcd command)
    # replaces its sibling modules with ../ paths: same wrapper trick.
    local wrap="$BUILD_DIR/etcd-$ETCD_VERSION"
    rm -rf "$wrap"
    mkdir -p "$wrap"
    cat >"$wrap/go.mod" <<EOF
module rtbserve.local/etcd-build

go 1.24

require go.etcd.io/etcd/server/v3 $ETCD_VERSION

replace (
	go.etcd.io/etcd/api/v3 => go.etcd.io/etcd/api/v3 $ETCD_VERSION
	go.etcd.io/etcd/client/pkg/v3 => go.etcd.io/etcd/client/pkg/v3 $ETCD_VERSION
	go.etcd.io/etcd/client/v3 => go.etcd.io/etcd/client/v3 $ETCD_VERSION
	go.etcd.io/etcd/pkg/v3 => go.etcd.io/etcd/pkg/v3 $ETCD_VERSION
)
EOF
    (cd "$wrap" && retry 3 go get "go.etcd.io/etcd/server/v3@$ETCD_VERSION")
    (cd "$wrap" && retry 3 go mod download)
    # etcd's own version string is a constant; kwokctl parses it from
    # `etcd --version` to pick its flags.
    (cd "$wrap" && go build -p "$GO_P" -trimpath -ldflags "-s -w" \
        -o "$TMP/etcd" go.etcd.io/etcd/server/v3) || die "go build etcd failed"
    finish_group
    log "etcd $ETCD_VERSION: done in $((SECONDS - start))s"
}

build_kwok() {
    if is_built "$TOOLS_DIR/kwok-$KWOK_VERSION" kwok kwokctl; then
        log "kwok $KWOK_VERSION: cached"
        return
    fi
    start_group kwok "$KWOK_VERSION"
    local start=$SECONDS
    log "kwok $KWOK_VERSION: building kwok kwokctl"
    # consts.Version is what `kwok --version` reports and what kwokctl
    # records in its cluster config.
    local ld="-s -w -X sigs.k8s.io/kwok/pkg/consts.Version=$KWOK_VERSION"
    local b
    for b in kwok kwokctl; do
        retry 3 env GOBIN="$TMP" go install -p "$GO_P" -trimpath -ldflags "$ld" \
            "sigs.k8s.io/kwok/cmd/$b@$KWOK_VERSION"
    done
    finish_group
    log "kwok $KWOK_VERSION: done in $((SECONDS - start))s"
}

build_helm() {
    if is_built "$TOOLS_DIR/helm-$HELM_VERSION" helm; then
        log "helm $HELM_VERSION: cached"
        return
    fi
    start_group helm "$HELM_VERSION"
    local start=$SECONDS
    log "helm $HELM_VERSION: building"
    # Without these, helm reports version "v3.x-dev"-style strings and
    # assumes a default Kubernetes version for .Capabilities.KubeVersion
    # when templating offline.
    local minor="${K8S_VERSION#v1.}"
    minor="${minor%%.*}"
    local ld="-s -w -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION"
    ld+=" -X helm.sh/helm/v3/internal/version.gitTreeState=clean"
    ld+=" -X helm.sh/helm/v3/pkg/chartutil.k8sVersionMajor=1"
    ld+=" -X helm.sh/helm/v3/pkg/chartutil.k8sVersionMinor=$minor"
    retry 3 env GOBIN="$TMP" go install -p "$GO_P" -trimpath -ldflags "$ld" \
        "helm.sh/helm/v3/cmd/helm@$HELM_VERSION"
    finish_group
    log "helm $HELM_VERSION: done in $((SECONDS - start))s"
}

write_env() {
    local k="$TOOLS_DIR/kubernetes-$K8S_VERSION"
    local env="$TOOLS_DIR/tools.env"
    cat >"$env.tmp" <<EOF
# Generated by hack/build-cluster-tools.sh
export RTBSERVE_K8S_VERSION=$K8S_VERSION
export RTBSERVE_KUBE_APISERVER=$k/kube-apiserver
export RTBSERVE_KUBE_CONTROLLER_MANAGER=$k/kube-controller-manager
export RTBSERVE_KUBE_SCHEDULER=$k/kube-scheduler
export RTBSERVE_KUBECTL=$k/kubectl
export RTBSERVE_ETCD=$TOOLS_DIR/etcd-$ETCD_VERSION/etcd
export RTBSERVE_KWOK=$TOOLS_DIR/kwok-$KWOK_VERSION/kwok
export RTBSERVE_KWOKCTL=$TOOLS_DIR/kwok-$KWOK_VERSION/kwokctl
export RTBSERVE_HELM=$TOOLS_DIR/helm-$HELM_VERSION/helm
export RTBSERVE_TOOLS_PATH=$k:$TOOLS_DIR/etcd-$ETCD_VERSION:$TOOLS_DIR/kwok-$KWOK_VERSION:$TOOLS_DIR/helm-$HELM_VERSION
EOF
    mv "$env.tmp" "$env"
    echo "$env"
}

main() {
    local groups=("$@")
    (( ${#groups[@]} )) || groups=(kubernetes etcd kwok helm)
    mkdir -p "$TOOLS_DIR"
    # One build at a time per tools dir: the cluster fixture and `make`
    # may both trigger a build.
    exec 9>"$TOOLS_DIR/.lock"
    if ! flock -n 9; then
        log "waiting for another build holding $TOOLS_DIR/.lock"
        flock 9
    fi
    local g
    for g in "${groups[@]}"; do
        case "$g" in
            kubernetes | etcd | kwok | helm) "build_$g" ;;
            *) die "unknown tool group: $g (kubernetes|etcd|kwok|helm)" ;;
        esac
    done
    write_env
}

main "$@"
