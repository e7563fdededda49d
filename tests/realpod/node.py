"""A node of the local cluster whose pods are real containers, run with `podman kube play`.

kwok simulates its nodes' pods; this agent does what a kubelet does for the nodes it registers,
with podman underneath: it registers the Node and keeps its Lease and Ready condition fresh,
and for every pod bound to it pulls the image for the node's architecture (arm64 runs under
qemu-user-static), plays the pod, runs its startup, readiness and liveness probes, restarts
crashed containers with the kubelet's back-off, writes the pod's status (IP, phase,
conditions, container states with ErrImagePull, ImagePullBackOff and CrashLoopBackOff), and on
deletion stops the containers within the grace period and removes the pod.
See tests/realpod/README.md for what it does not do.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml
from kubernetes import client as k8s
from kubernetes import config as k8s_config
from kubernetes.client.exceptions import ApiException

from rtbserve.local_podman import Podman, write_containers_conf
from tests.realpod.translate import (
    ContainerState,
    HostView,
    field_ref,
    play_manifest,
    play_name,
    pod_status,
    service_aliases,
)

log = logging.getLogger("podman-node")

HEARTBEAT_SECONDS = 5.0
LEASE_SECONDS = 40
POLL_SECONDS = 0.5
MAX_BACKOFF_SECONDS = 300.0


def now_rfc3339() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _seconds(stamp: Any) -> str | None:
    """podman's RFC 3339 time with nanoseconds, to whole seconds as the API stores it."""
    if not isinstance(stamp, str) or len(stamp) < 19 or stamp.startswith("0001"):
        return None
    return stamp[:19] + "Z"


def _micro_now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass(frozen=True)
class NodeSpec:
    name: str
    arch: str  # amd64 | arm64: the images it pulls, and its kubernetes.io/arch label
    labels: Mapping[str, str] = field(default_factory=dict)
    taints: Sequence[Mapping[str, str]] = ()


class PodmanNode:
    """The agent for one or more nodes; `start()` registers them, `stop()` removes everything."""

    def __init__(
        self,
        kubeconfig: Path,
        nodes: Sequence[NodeSpec],
        *,
        api_host: str,
        api_port: int,
        api_aliases: Mapping[str, str],
        workdir: Path,
        network: str = "rtbserve-pods",
        insecure_registries: Sequence[str] = (),
        backoff_seconds: float = 10.0,
    ) -> None:
        # Plain dicts in and out (the client's models are not needed here).
        self.api: Any = k8s_config.new_client_from_config(  # type: ignore[no-untyped-call]
            config_file=str(kubeconfig)
        )
        self.core: Any = k8s.CoreV1Api(self.api)
        self.leases: Any = k8s.CoordinationV1Api(self.api)
        self.discovery: Any = k8s.DiscoveryV1Api(self.api)
        self.nodes = {n.name: n for n in nodes}
        self.workdir = workdir
        # The node's own image store, as a real node has: what it pulls never touches the
        # host's store (where the images were built).
        self.podman = Podman(
            network,
            write_containers_conf(workdir),
            frozenset(insecure_registries),
            store=workdir / "storage",
        )
        self.host_ip = self.podman.gateway()
        self.base_view = HostView(api_host, api_port, dict(api_aliases))
        self.backoff_seconds = backoff_seconds
        self._runners: dict[str, PodRunner] = {}
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="podman-node", daemon=True)

    # --- the nodes -------------------------------------------------------------------------
    def _node_status(self, node: NodeSpec) -> dict[str, Any]:
        now = now_rfc3339()
        ready = {
            "type": "Ready", "status": "True", "reason": "KubeletReady",
            "message": "podman node agent is posting ready status",
            "lastHeartbeatTime": now, "lastTransitionTime": now,
        }  # fmt: skip
        return {
            "conditions": [ready],
            "addresses": [
                {"type": "InternalIP", "address": self.host_ip},
                {"type": "Hostname", "address": node.name},
            ],
            "allocatable": {"cpu": "2", "memory": "8Gi", "pods": "20"},
            "capacity": {"cpu": "2", "memory": "8Gi", "pods": "20"},
            "nodeInfo": {
                "architecture": node.arch, "operatingSystem": "linux",
                "containerRuntimeVersion": "podman://kube-play", "kubeletVersion": "v1.34.4",
                "kubeProxyVersion": "", "bootID": "", "kernelVersion": os.uname().release,
                "machineID": "", "osImage": "podman", "systemUUID": "",
            },
        }  # fmt: skip

    def _register(self, node: NodeSpec) -> None:
        body = {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {
                "name": node.name,
                "labels": {
                    "kubernetes.io/arch": node.arch,
                    "kubernetes.io/os": "linux",
                    "kubernetes.io/hostname": node.name,
                    "type": "podman",
                    **node.labels,
                },
            },
            "spec": {"taints": [dict(t) for t in node.taints]},
            "status": self._node_status(node),
        }
        with contextlib.suppress(ApiException):
            self.core.delete_node(node.name)
        self.core.create_node(body)
        self._heartbeat(node)

    def _heartbeat(self, node: NodeSpec) -> None:
        self.core.patch_node_status(node.name, {"status": self._node_status(node)})
        lease = {
            "metadata": {"name": node.name, "namespace": "kube-node-lease"},
            "spec": {
                "holderIdentity": node.name,
                "leaseDurationSeconds": LEASE_SECONDS,
                "renewTime": _micro_now(),
            },
        }
        try:
            self.leases.patch_namespaced_lease(
                node.name, "kube-node-lease", {"spec": lease["spec"]}
            )
        except ApiException as exc:
            if exc.status != 404:
                raise
            self.leases.create_namespaced_lease("kube-node-lease", lease)

    # --- the loop --------------------------------------------------------------------------
    def start(self) -> PodmanNode:
        for node in self.nodes.values():
            self._register(node)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        self._thread.join(timeout=30)
        for runner in list(self._runners.values()):
            runner.stop(grace=0)
        for runner in list(self._runners.values()):
            runner.join(timeout=60)
        for name in self.nodes:
            with contextlib.suppress(ApiException):
                self.core.delete_node(name)
        self.podman.run("rmi", "--all", "--force")
        shutil.rmtree(self.workdir, ignore_errors=True)

    def _loop(self) -> None:
        beat = 0.0
        while not self._stopping.is_set():
            try:
                if time.monotonic() - beat >= HEARTBEAT_SECONDS:
                    for node in self.nodes.values():
                        self._heartbeat(node)
                    beat = time.monotonic()
                self._sync_pods()
            except Exception:  # the API server restarting, say: try again next round
                log.exception("podman node sync failed")
            self._stopping.wait(POLL_SECONDS)

    def _sync_pods(self) -> None:
        seen = set()
        for node in self.nodes.values():
            pods = self.core.list_pod_for_all_namespaces(
                field_selector=f"spec.nodeName={node.name}"
            )
            for obj in pods.items:
                pod = self.api.sanitize_for_serialization(obj)
                uid = pod["metadata"]["uid"]
                seen.add(uid)
                runner = self._runners.get(uid)
                if runner is None and not pod["metadata"].get("deletionTimestamp"):
                    runner = PodRunner(self, node, pod)
                    self._runners[uid] = runner
                    runner.start()
                elif runner is not None and pod["metadata"].get("deletionTimestamp"):
                    runner.stop(grace=int(pod["metadata"].get("deletionGracePeriodSeconds") or 0))
                elif runner is None:  # being deleted and never started here
                    self._force_delete(pod)
        for uid, runner in list(self._runners.items()):
            if uid not in seen and not runner.is_alive():
                del self._runners[uid]
            elif uid not in seen:
                runner.stop(grace=0)

    def _force_delete(self, pod: Mapping[str, Any]) -> None:
        meta = pod["metadata"]
        with contextlib.suppress(ApiException):
            self.core.delete_namespaced_pod(
                meta["name"],
                meta["namespace"],
                body=k8s.V1DeleteOptions(
                    grace_period_seconds=0, preconditions=k8s.V1Preconditions(uid=meta["uid"])
                ),
            )

    def host_view(self, namespace: str) -> HostView:
        services = self.api.sanitize_for_serialization(
            self.core.list_namespaced_service(namespace)
        )["items"]
        slices = self.api.sanitize_for_serialization(
            self.discovery.list_namespaced_endpoint_slice(namespace)
        )["items"]
        aliases = {**self.base_view.aliases, **service_aliases(services, slices)}
        return HostView(self.base_view.api_host, self.base_view.api_port, aliases)


@dataclass
class _Probe:
    spec: Mapping[str, Any]
    next_at: float
    failures: int = 0


class PodRunner(threading.Thread):
    """One API pod's life on the node: pull, play, probe, restart, report, tear down."""

    def __init__(self, agent: PodmanNode, node: NodeSpec, pod: dict[str, Any]) -> None:
        super().__init__(name=f"pod-{pod['metadata']['name']}", daemon=True)
        self.agent, self.node, self.pod = agent, node, pod
        self.name_ = play_name(pod)
        self.containers = [ContainerState(c["name"], c["image"]) for c in pod["spec"]["containers"]]
        self.pod_ip: str | None = None
        self.started_at = now_rfc3339()
        self.dir = Path(tempfile.mkdtemp(prefix=f"{self.name_}-", dir=agent.workdir))
        self._stopping = threading.Event()
        self._grace = 0
        self._written: Any = None

    # --- helpers ---------------------------------------------------------------------------
    def stop(self, grace: int) -> None:
        self._grace = grace
        self._stopping.set()

    def _podman(self, *args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
        return self.agent.podman.run(*args, timeout=timeout)

    def _backoff(self, attempt: int) -> float:
        return float(
            min(self.agent.backoff_seconds * 2 ** max(attempt - 1, 0), MAX_BACKOFF_SECONDS)
        )

    def report(self) -> None:
        status = pod_status(
            self.pod, self.containers, pod_ip=self.pod_ip, host_ip=self.agent.host_ip,
            start_time=self.started_at, now=now_rfc3339(),
        )  # fmt: skip
        comparable = json.dumps(
            {**status, "conditions": [(c["type"], c["status"]) for c in status["conditions"]]},
            sort_keys=True,
        )
        if comparable == self._written:
            return
        meta = self.pod["metadata"]
        try:
            self.agent.core.patch_namespaced_pod_status(
                meta["name"], meta["namespace"], {"status": status}
            )
            self._written = comparable
        except ApiException as exc:
            if exc.status != 404:
                log.warning("pod %s: status write failed: %s", meta["name"], exc.reason)

    # --- the life of the pod ---------------------------------------------------------------
    def run(self) -> None:
        try:
            self.report()
            images = self._pull_all()
            if images is not None and not self._stopping.is_set():
                self._play(images)
                self._watch()
        except Exception:
            log.exception("pod %s failed on the node", self.pod["metadata"]["name"])
        finally:
            self._teardown()

    def _pull_all(self) -> dict[str, str] | None:
        attempt = 0
        while not self._stopping.is_set():
            failures = []
            images: dict[str, str] = {}
            for spec, state in zip(self.pod["spec"]["containers"], self.containers, strict=True):
                error = self._pull(spec)
                if error:
                    failures.append((state, error))
                else:
                    images[spec["image"]] = spec["image"]
                    state.image_id = self._image_id(spec["image"])
                    state.waiting = ("ContainerCreating", "")
            if not failures:
                return images
            attempt += 1
            for state, error in failures:
                state.waiting = ("ErrImagePull", error)
            self.report()
            delay = self._backoff(attempt)
            for state, _ in failures:
                state.waiting = (
                    "ImagePullBackOff",
                    f'Back-off pulling image "{state.image}": {failures[0][1]}',
                )
            self._stopping.wait(min(delay, 2.0))  # report ErrImagePull first, as a kubelet does
            self.report()
            self._stopping.wait(max(delay - 2.0, 0))
        return None

    def _local_arch(self, image: str) -> str | None:
        out = self._podman("image", "inspect", "--format", "{{.Architecture}}", image)
        return out.stdout.strip() if out.returncode == 0 else None

    def _image_id(self, image: str) -> str:
        out = self._podman("image", "inspect", "--format", "{{.Digest}}", image)
        return f"{image.split('@', maxsplit=1)[0].rsplit(':', 1)[0]}@{out.stdout.strip()}"

    def _pull(self, spec: Mapping[str, Any]) -> str | None:
        image, policy = spec["image"], spec.get("imagePullPolicy", "IfNotPresent")
        have = self._local_arch(image) == self.node.arch
        if policy == "Never":
            return None if have else f'image "{image}" is not present with pull policy Never'
        if have and policy == "IfNotPresent":
            return None
        pulled = self._podman(
            "pull", "--quiet", "--arch", self.node.arch, *self.agent.podman.tls_flags(image), image
        )
        if pulled.returncode != 0:
            lines = [line for line in pulled.stderr.strip().splitlines() if line.strip()]
            return lines[-1] if lines else f"podman pull exited {pulled.returncode}"
        return None

    def _volumes(self) -> dict[str, str]:
        dirs: dict[str, str] = {}
        for volume in self.pod["spec"].get("volumes") or []:
            path = self.dir / "volumes" / volume["name"]
            path.mkdir(parents=True)
            if "emptyDir" in volume:
                path.chmod(0o1777)  # the pod's non-root user writes there, as with fsGroup
            elif "projected" in volume:
                self._project(volume["projected"], path)
            else:
                raise ValueError(f"volume {volume['name']}: only emptyDir and projected here")
            dirs[volume["name"]] = str(path)
        return dirs

    def _project(self, projected: Mapping[str, Any], path: Path) -> None:
        meta, spec = self.pod["metadata"], self.pod["spec"]
        path.chmod(0o755)
        for source in projected.get("sources") or []:
            if "serviceAccountToken" in source:
                token = self.agent.core.create_namespaced_service_account_token(
                    spec.get("serviceAccountName", "default"),
                    meta["namespace"],
                    {
                        "spec": {
                            "audiences": [],
                            "expirationSeconds": 3600,
                            "boundObjectRef": {
                                "apiVersion": "v1",
                                "kind": "Pod",
                                "name": meta["name"],
                                "uid": meta["uid"],
                            },
                        }
                    },
                )
                self._file(path / source["serviceAccountToken"]["path"], token.status.token)
            elif "configMap" in source:
                cm = self.agent.core.read_namespaced_config_map(
                    source["configMap"]["name"], meta["namespace"]
                )
                for item in source["configMap"].get("items") or []:
                    self._file(path / item["path"], (cm.data or {})[item["key"]])
            elif "downwardAPI" in source:
                for item in source["downwardAPI"].get("items") or []:
                    value = field_ref(self.pod, item["fieldRef"]["fieldPath"])
                    self._file(path / item["path"], value)

    @staticmethod
    def _file(path: Path, text: str) -> None:
        path.write_text(text)
        path.chmod(0o644)  # the pod's user reads it; a kubelet would use fsGroup instead

    def _play(self, images: dict[str, str]) -> None:
        try:
            volumes = self._volumes()
            manifest = play_manifest(
                self.pod, self.agent.host_view(self.pod["metadata"]["namespace"]), volumes, images
            )
        except ValueError as exc:
            for state in self.containers:
                state.waiting = ("CreateContainerConfigError", str(exc))
            self.report()
            self._stopping.wait()
            return
        path = self.dir / "pod.yaml"
        path.write_text(yaml.safe_dump(manifest))
        played = self._podman("kube", "play", "--network", self.agent.podman.network, str(path))
        if played.returncode != 0:
            for state in self.containers:
                state.waiting = ("RunContainerError", played.stderr.strip()[-300:])
        self.pod_ip = self._ip()

    def _inspect(self, container: str) -> dict[str, Any] | None:
        out = self._podman("inspect", "--type", "container", "--format", "json", container)
        if out.returncode != 0:
            return None
        data: list[dict[str, Any]] = json.loads(out.stdout)
        return data[0] if data else None

    def _ip(self) -> str | None:
        info = self._inspect(f"{self.name_}-{self.containers[0].name}")
        for net in ((info or {}).get("NetworkSettings") or {}).get("Networks", {}).values():
            if net.get("IPAddress"):
                return str(net["IPAddress"])
        return None

    def _watch(self) -> None:
        specs = {c["name"]: c for c in self.pod["spec"]["containers"]}
        policy = self.pod["spec"].get("restartPolicy", "Always")
        probes = {name: self._probes(spec) for name, spec in specs.items()}
        restart_at: dict[str, float] = {}
        while not self._stopping.is_set():
            for state in self.containers:
                ctr = f"{self.name_}-{state.name}"
                info = self._inspect(ctr)
                if info is None:
                    continue
                st = info["State"]
                state.container_id = str(info.get("Id", ""))[:64]
                if st.get("Status") == "running":
                    if state.running_since is None or state.waiting is not None:
                        state.running_since = now_rfc3339()
                        state.waiting = None
                        probes[state.name] = self._probes(specs[state.name])
                    self._run_probes(state, specs[state.name], probes[state.name], ctr)
                elif st.get("Status") in ("exited", "stopped") and state.terminated is None:
                    self._exited(state, st, policy, restart_at, ctr)
            self.report()
            self._stopping.wait(POLL_SECONDS)

    def _exited(
        self,
        state: ContainerState,
        st: Mapping[str, Any],
        policy: str,
        restart_at: dict[str, float],
        ctr: str,
    ) -> None:
        code = int(st.get("ExitCode", 0))
        ended = {
            "exitCode": code, "reason": "Completed" if code == 0 else "Error",
            "startedAt": state.running_since or _seconds(st.get("StartedAt")),
            "finishedAt": _seconds(st.get("FinishedAt")) or now_rfc3339(),
            "containerID": f"podman://{state.container_id}",
        }  # fmt: skip
        if code != 0:  # terminationMessagePolicy FallbackToLogsOnError: the log's tail
            tail = self._podman("logs", "--tail", "5", ctr)
            ended["message"] = (tail.stdout + tail.stderr).strip()[-1000:]
        state.ready = state.started = False
        if policy == "Never" or (policy == "OnFailure" and code == 0):
            state.terminated = ended
            return
        if state.name not in restart_at:
            state.last_terminated = ended
            state.restarts += 1
            delay = self._backoff(state.restarts)
            restart_at[state.name] = time.monotonic() + delay
            state.waiting = (
                "CrashLoopBackOff",
                f"back-off {delay:.0f}s restarting failed container={state.name} "
                f"pod={self.pod['metadata']['name']}",
            )
        elif time.monotonic() >= restart_at[state.name]:
            del restart_at[state.name]
            self._podman("start", ctr)

    def _probes(self, spec: Mapping[str, Any]) -> dict[str, _Probe]:
        now = time.monotonic()
        return {
            kind: _Probe(spec[kind], now + float(spec[kind].get("initialDelaySeconds", 0)))
            for kind in ("startupProbe", "readinessProbe", "livenessProbe")
            if kind in spec
        }

    def _http_ok(self, probe: Mapping[str, Any], spec: Mapping[str, Any]) -> bool:
        get = probe.get("httpGet")
        if get is None or not self.pod_ip:
            return get is None  # only httpGet probes here; a pod without them is ready when up
        port = get["port"]
        if isinstance(port, str):
            port = next(p["containerPort"] for p in spec.get("ports", []) if p.get("name") == port)
        url = f"http://{self.pod_ip}:{port}{get.get('path', '/')}"
        try:
            with urllib.request.urlopen(url, timeout=float(probe.get("timeoutSeconds", 1))) as r:
                return bool(200 <= r.status < 400)
        except (urllib.error.URLError, OSError):
            return False

    def _run_probes(
        self, state: ContainerState, spec: Mapping[str, Any], probes: dict[str, _Probe], ctr: str
    ) -> None:
        now = time.monotonic()
        if "startupProbe" not in probes:
            state.started = True
        if "readinessProbe" not in probes and state.started:
            state.ready = True
        for kind, probe in probes.items():
            if now < probe.next_at or (kind != "startupProbe" and not state.started):
                continue
            if kind == "startupProbe" and state.started:
                continue
            probe.next_at = now + float(probe.spec.get("periodSeconds", 10))
            ok = self._http_ok(probe.spec, spec)
            threshold = int(probe.spec.get("failureThreshold", 3))
            probe.failures = 0 if ok else probe.failures + 1
            if kind == "startupProbe" and ok:
                state.started = True
            elif kind == "readinessProbe":
                state.ready = ok or (state.ready and probe.failures < threshold)
            elif kind in ("startupProbe", "livenessProbe") and probe.failures >= threshold:
                log.info("%s: %s failed %d times: restarting", ctr, kind, probe.failures)
                self._podman("stop", "-t", str(self.pod["spec"].get(
                    "terminationGracePeriodSeconds", 30)), ctr)  # fmt: skip

    def _teardown(self) -> None:
        self._podman("pod", "stop", "-t", str(self._grace), self.name_, timeout=self._grace + 60)
        self._podman("pod", "rm", "-f", self.name_)
        if self._stopping.is_set():
            self.agent._force_delete(self.pod)
