"""Pure translation between a Kubernetes Pod and what `podman kube play` runs for it.

`play_manifest` turns the API server's Pod (as the scheduler bound it) into the Pod YAML podman
plays: the same containers, commands, env and securityContext, with the parts a kubelet
provides made concrete (volumes as host directories, Service names as host aliases, the
`KUBERNETES_SERVICE_*` variables, field references resolved). Probes and restarts are left out:
the node agent runs them itself, as a kubelet does, so it can report them in the pod's status.
`container_status` and `pod_status` build the status the agent writes back.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

SERVICE_ACCOUNT_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"
# Container fields podman plays as a kubelet would; the rest (probes, lifecycle, resources) the
# agent handles or the host cannot enforce (see tests/realpod/README.md). Not `ports`: podman
# would publish them on the host, where two pods of one Deployment collide; a pod's IP
# reaches every port anyway, as on a cluster network.
_PLAYED_FIELDS = ("name", "image", "command", "args", "workingDir", "securityContext")
_FIELD_LABEL = re.compile(r"metadata\.(labels|annotations)\['([^']+)'\]")


@dataclass(frozen=True)
class HostView:
    """What the node provides to every pod it runs."""

    api_host: str  # the API server as containers reach it (a name its certificate holds)
    api_port: int
    #: hostname -> IP for /etc/hosts (Services resolved to a ready endpoint, the API server)
    aliases: Mapping[str, str] = field(default_factory=dict)


def field_ref(pod: Mapping[str, Any], path: str) -> str:
    """The value of a downward-API fieldPath for `pod` ("" when it is not known yet)."""
    meta = pod.get("metadata") or {}
    spec = pod.get("spec") or {}
    simple = {
        "metadata.name": meta.get("name"),
        "metadata.namespace": meta.get("namespace"),
        "metadata.uid": meta.get("uid"),
        "spec.nodeName": spec.get("nodeName"),
        "spec.serviceAccountName": spec.get("serviceAccountName", "default"),
        "status.podIP": (pod.get("status") or {}).get("podIP"),
        "status.hostIP": (pod.get("status") or {}).get("hostIP"),
    }
    if path in simple:
        return str(simple[path] or "")
    match = _FIELD_LABEL.fullmatch(path)
    if match:
        return str((meta.get(match.group(1)) or {}).get(match.group(2), ""))
    raise ValueError(f"fieldPath {path!r} is not supported by this node")


def container_env(
    pod: Mapping[str, Any], container: Mapping[str, Any], host: HostView
) -> list[dict[str, str]]:
    env = [
        {"name": "KUBERNETES_SERVICE_HOST", "value": host.api_host},
        {"name": "KUBERNETES_SERVICE_PORT", "value": str(host.api_port)},
    ]
    for var in container.get("env") or []:
        if "value" in var or "valueFrom" not in var:
            env.append({"name": var["name"], "value": str(var.get("value", ""))})
            continue
        source = var["valueFrom"]
        if "fieldRef" not in source:
            raise ValueError(f"env {var['name']}: only value and fieldRef are supported here")
        env.append({"name": var["name"], "value": field_ref(pod, source["fieldRef"]["fieldPath"])})
    return env


def play_manifest(
    pod: Mapping[str, Any],
    host: HostView,
    volume_dirs: Mapping[str, str],
    images: Mapping[str, str],
) -> dict[str, Any]:
    """The Pod YAML for `podman kube play`.

    `volume_dirs` maps each pod volume's name to the host directory that backs it (emptyDir, the
    service-account token volume); `images` maps each container's image to the local image the
    agent pulled for the node's architecture.
    """
    meta = pod["metadata"]
    spec = pod["spec"]
    containers = []
    for c in spec["containers"]:
        played = {k: c[k] for k in _PLAYED_FIELDS if k in c}
        played["image"] = images[c["image"]]
        played["imagePullPolicy"] = "Never"  # the agent pulled it, for the node's architecture
        played["env"] = container_env(pod, c, host)
        played["volumeMounts"] = [
            {k: m[k] for k in ("name", "mountPath", "readOnly", "subPath") if k in m}
            for m in c.get("volumeMounts") or []
            if m["name"] in volume_dirs
        ]
        containers.append(played)
    pod_security = {
        k: v
        for k, v in (spec.get("securityContext") or {}).items()
        if k in ("runAsUser", "runAsGroup", "runAsNonRoot", "supplementalGroups")
    }
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": play_name(pod), "labels": {"rtbserve.io/pod-uid": meta["uid"]}},
        "spec": {
            "hostname": meta["name"][:63],
            # The agent restarts containers itself (with the kubelet's back-off) and reports it.
            "restartPolicy": "Never",
            "securityContext": pod_security,
            "hostAliases": [
                {"ip": ip, "hostnames": [name]} for name, ip in sorted(host.aliases.items())
            ],
            "containers": containers,
            "volumes": [
                {"name": name, "hostPath": {"path": path, "type": "Directory"}}
                for name, path in sorted(volume_dirs.items())
            ],
        },
    }


def play_name(pod: Mapping[str, Any]) -> str:
    """podman's pod name: unique per API pod (a pod recreated under the same name differs)."""
    meta = pod["metadata"]
    return f"{meta['name'][:40]}-{meta['uid'][:8]}"


def service_aliases(
    services: Sequence[Mapping[str, Any]], slices: Sequence[Mapping[str, Any]]
) -> dict[str, str]:
    """Each Service's DNS names -> the address of one ready endpoint, for /etc/hosts.

    There is no kube-proxy on this node: a name resolves straight to a pod, which works for
    Services whose port equals the target port (rtbserve's do).
    """
    ready: dict[str, str] = {}
    for s in sorted(slices, key=lambda s: s["metadata"]["name"]):
        owner = (s["metadata"].get("labels") or {}).get("kubernetes.io/service-name")
        for endpoint in s.get("endpoints") or []:
            if owner and owner not in ready and (endpoint.get("conditions") or {}).get("ready"):
                ready[owner] = endpoint["addresses"][0]
    aliases: dict[str, str] = {}
    for svc in services:
        name, namespace = svc["metadata"]["name"], svc["metadata"]["namespace"]
        if name in ready:
            for host in (
                name,
                f"{name}.{namespace}",
                f"{name}.{namespace}.svc",
                f"{name}.{namespace}.svc.cluster.local",
            ):
                aliases[host] = ready[name]
    return aliases


@dataclass
class ContainerState:
    """What the agent knows of one container, kept across restarts."""

    name: str
    image: str
    image_id: str = ""
    container_id: str = ""
    running_since: str | None = None
    waiting: tuple[str, str] | None = ("ContainerCreating", "")
    terminated: dict[str, Any] | None = None  # the current run ended (restartPolicy Never)
    last_terminated: dict[str, Any] | None = None
    restarts: int = 0
    started: bool = False  # the startup probe passed (or there is none)
    ready: bool = False


def container_status(state: ContainerState) -> dict[str, Any]:
    current: dict[str, Any]
    if state.terminated is not None:
        current = {"terminated": state.terminated}
    elif state.waiting is not None:
        reason, message = state.waiting
        current = {"waiting": {"reason": reason, **({"message": message} if message else {})}}
    else:
        current = {"running": {"startedAt": state.running_since}}
    out: dict[str, Any] = {
        "name": state.name,
        "image": state.image,
        "imageID": state.image_id,
        "ready": state.ready,
        "started": state.started and state.waiting is None and state.terminated is None,
        "restartCount": state.restarts,
        "state": current,
        "lastState": {"terminated": state.last_terminated} if state.last_terminated else {},
    }
    if state.container_id:
        out["containerID"] = f"podman://{state.container_id}"
    return out


def pod_status(
    pod: Mapping[str, Any],
    containers: Sequence[ContainerState],
    *,
    pod_ip: str | None,
    host_ip: str,
    start_time: str,
    now: str,
) -> dict[str, Any]:
    """The status a kubelet would write: phase, conditions, IPs and container states."""
    restart = (pod.get("spec") or {}).get("restartPolicy", "Always")
    ended = [c.terminated for c in containers if c.terminated is not None]
    if restart != "Always" and len(ended) == len(containers):
        phase = "Succeeded" if all(t.get("exitCode") == 0 for t in ended) else "Failed"
    elif pod_ip and any(c.running_since for c in containers):
        phase = "Running"
    else:
        phase = "Pending"
    all_ready = phase == "Running" and all(c.ready for c in containers)

    def condition(kind: str, true: bool) -> dict[str, Any]:
        return {"type": kind, "status": "True" if true else "False", "lastProbeTime": None,
                "lastTransitionTime": now}  # fmt: skip

    status: dict[str, Any] = {
        "phase": phase,
        "hostIP": host_ip,
        "hostIPs": [{"ip": host_ip}],
        "startTime": start_time,
        "conditions": [
            condition("PodScheduled", True),
            condition("Initialized", True),
            condition("ContainersReady", all_ready),
            condition("Ready", all_ready),
        ],
        "containerStatuses": [container_status(c) for c in containers],
    }
    if pod_ip:
        status |= {"podIP": pod_ip, "podIPs": [{"ip": pod_ip}]}
    return status
