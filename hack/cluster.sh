#!/usr/bin/env bash
# Local Kubernetes control plane for tests and demos: a kwok cluster run
# from locally built binaries (hack/build-cluster-tools.sh). etcd,
# kube-apiserver, kube-controller-manager and kube-scheduler are real;
# nodes and pods are simulated by kwok-controller.
#
# Usage: hack/cluster.sh up|down|kubeconfig|status
#   up          build the tools if needed, create the cluster and the fake
#               nodes of hack/kwok-nodes.yaml, wait until they are Ready,
#               print the kubeconfig path on stdout
#   down        delete the cluster and check that none of its processes remain
#   kubeconfig  print the kubeconfig path
#   status      exit 0 when the cluster answers
#
# Environment:
#   RTBSERVE_CLUSTER_NAME   cluster name (default rtbserve)
#   RTBSERVE_KWOK_WORKDIR   kwokctl state dir (default ~/.cache/rtbserve/kwok)
#   RTBSERVE_TOOLS_DIR      binary cache (see build-cluster-tools.sh)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
NAME="${RTBSERVE_CLUSTER_NAME:-rtbserve}"
export KWOK_WORKDIR="${RTBSERVE_KWOK_WORKDIR:-$HOME/.cache/rtbserve/kwok}"
CLUSTER_DIR="$KWOK_WORKDIR/clusters/$NAME"
KUBECONFIG_PATH="$CLUSTER_DIR/kubeconfig.yaml"

log() { printf '[cluster] %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

load_tools() {
    local env_file
    # Cheap when everything is cached: the build script only checks stamps.
    env_file="$("$ROOT/hack/build-cluster-tools.sh")" || die "building cluster tools failed"
    # shellcheck disable=SC1090
    source "$env_file"
    # kwokctl reads these (KWOK_ prefix) instead of downloading release
    # binaries: kubectl has no create flag, the versions keep its generated
    # component flags matched to what we built.
    export KWOK_KUBECTL_BINARY="$RTBSERVE_KUBECTL"
    export KWOK_KUBE_VERSION="$RTBSERVE_K8S_VERSION"
}

# Use already-built tools without building (for down/status).
source_cached_tools() {
    local env_file="${RTBSERVE_TOOLS_DIR:-$HOME/.cache/rtbserve/tools}/tools.env"
    # shellcheck disable=SC1090
    [[ -f "$env_file" ]] && source "$env_file"
    return 0
}

kctl() { "$RTBSERVE_KUBECTL" --kubeconfig "$KUBECONFIG_PATH" "$@"; }

cluster_pids() {
    # Every component kwokctl starts has a path inside the cluster dir on its
    # command line; match on that so other clusters are left alone.
    pgrep -f -- "$CLUSTER_DIR/" || true
}

cmd_up() {
    load_tools
    if [[ -f "$KUBECONFIG_PATH" ]] && kctl get --raw /readyz >/dev/null 2>&1; then
        log "cluster $NAME is already running"
    else
        if [[ -d "$CLUSTER_DIR" ]]; then
            log "removing stale cluster $NAME"
            cmd_down
        fi
        log "creating kwok cluster $NAME (binary runtime, k8s $RTBSERVE_K8S_VERSION)"
        # --kubeconfig= keeps kwokctl from editing ~/.kube/config; callers use
        # the cluster's own kubeconfig file instead.
        "$RTBSERVE_KWOKCTL" create cluster \
            --name "$NAME" \
            --runtime binary \
            --kubeconfig= \
            --kube-apiserver-binary "$RTBSERVE_KUBE_APISERVER" \
            --kube-controller-manager-binary "$RTBSERVE_KUBE_CONTROLLER_MANAGER" \
            --kube-scheduler-binary "$RTBSERVE_KUBE_SCHEDULER" \
            --etcd-binary "$RTBSERVE_ETCD" \
            --kwok-controller-binary "$RTBSERVE_KWOK" \
            --config "$ROOT/hack/kwok-config.yaml" \
            --disable-qps-limits \
            --wait 120s \
            --timeout 5m >&2 || {
            log "kwokctl create failed; logs under $CLUSTER_DIR/logs"
            cmd_down || true
            exit 1
        }
    fi

    kctl apply -f "$ROOT/hack/kwok-nodes.yaml" >&2
    kctl wait --for=condition=Ready node --all --timeout=120s >&2
    # Pods are refused until the controller-manager has made the namespace's
    # default ServiceAccount.
    local i
    for i in $(seq 1 60); do
        kctl -n default get serviceaccount default >/dev/null 2>&1 && break
        (( i < 60 )) || die "default ServiceAccount never appeared"
        sleep 1
    done
    log "cluster $NAME is up: export KUBECONFIG=$KUBECONFIG_PATH"
    echo "$KUBECONFIG_PATH"
}

cmd_down() {
    # Deleting must not trigger a build: use the cached kwokctl if any.
    [[ -n "${RTBSERVE_KWOKCTL:-}" ]] || source_cached_tools
    local kwokctl="${RTBSERVE_KWOKCTL:-}"
    if [[ -d "$CLUSTER_DIR" && -x "$kwokctl" ]]; then
        log "deleting kwok cluster $NAME"
        # delete refuses an empty --kubeconfig; name the cluster's own file
        # (removed with the cluster) so ~/.kube/config is left alone.
        "$kwokctl" delete cluster --name "$NAME" --kubeconfig "$KUBECONFIG_PATH" >&2 ||
            log "kwokctl delete failed"
    fi
    # kwokctl stops components by pid file; anything that survived (a crashed
    # kwokctl, a stale pid file) is ended here, by pid.
    local pids i
    for i in 1 2 3 4 5 6 7 8 9 10; do
        pids="$(cluster_pids)"
        [[ -z "$pids" ]] && break
        if (( i == 1 )); then log "stopping leftover processes: $(xargs <<<"$pids")"; fi
        # shellcheck disable=SC2086
        kill $pids 2>/dev/null || true
        sleep 1
    done
    pids="$(cluster_pids)"
    if [[ -n "$pids" ]]; then
        # shellcheck disable=SC2086
        kill -9 $pids 2>/dev/null || true
        sleep 1
    fi
    [[ -z "$(cluster_pids)" ]] || die "processes of cluster $NAME are still running: $(cluster_pids | xargs)"
    rm -rf "$CLUSTER_DIR"
    log "cluster $NAME is down"
}

case "${1:-}" in
    up) cmd_up ;;
    down) cmd_down ;;
    kubeconfig) echo "$KUBECONFIG_PATH" ;;
    status)
        source_cached_tools
        [[ -x "${RTBSERVE_KUBECTL:-}" ]] || die "cluster tools are not built (make cluster-tools)"
        kctl get --raw /readyz >/dev/null 2>&1 || die "cluster $NAME is not running"
        log "cluster $NAME is running"
        ;;
    *)
        echo "usage: $0 up|down|kubeconfig|status" >&2
        exit 2
        ;;
esac
