"""Fixtures for the image tests: the S3 server where containers reach it, a local registry
holding the built image, and a cluster node whose pods are real podman containers."""

from __future__ import annotations

import os
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from rtbserve.local_registry import LocalRegistry
from rtbserve.local_s3 import LocalS3
from tests.realpod.forward import TcpForwarder
from tests.realpod.node import NodeSpec, Podman, PodmanNode, write_containers_conf
from tests.s3_fixtures import exported

REPO = Path(__file__).resolve().parents[2]
IMAGE = os.environ.get("IMAGE", "localhost/rtbserve:dev")
POD_NETWORK = "rtbserve-pods"
API_NAME = "kubernetes.default.svc"  # a name the local API server's certificate holds

# Nodes as eksctl/cluster.yaml's Graviton node groups label and taint them.
GRAVITON = NodeSpec(
    "podman-graviton-0",
    "arm64",
    labels={
        "rtbserve.io/pool": "inference",
        "eks.amazonaws.com/nodegroup": "graviton-inference",
        "node.kubernetes.io/instance-type": "c7g.2xlarge",
        "topology.kubernetes.io/zone": "us-east-1a",
    },
    taints=[{"key": "rtbserve.io/pool", "value": "inference", "effect": "NoSchedule"}],
)
LOADGEN = NodeSpec(
    "podman-loadgen-0",
    "arm64",
    labels={"rtbserve.io/pool": "loadgen", "topology.kubernetes.io/zone": "us-east-1a"},
    taints=[{"key": "rtbserve.io/pool", "value": "loadgen", "effect": "NoSchedule"}],
)


@pytest.fixture(scope="session")
def pod_gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The pod network's gateway: the host's address as the containers see it."""
    podman = Podman(POD_NETWORK, write_containers_conf(tmp_path_factory.mktemp("podman")))
    try:
        yield podman.hold_bridge()
    finally:
        podman.release()


@pytest.fixture(scope="session")
def s3_server(pod_gateway: str) -> Iterator[LocalS3]:
    """The S3 server on the pod network's gateway, so model-server containers download from it
    (it replaces tests.s3_fixtures' loopback one for these tests)."""
    with LocalS3(host=pod_gateway) as server, exported(server):
        yield server


@pytest.fixture(scope="session")
def registry() -> Iterator[LocalRegistry]:
    with LocalRegistry() as reg:
        yield reg


def _push(ref: str, *, manifest_list: bool) -> None:
    argv = ["buildah", "manifest", "push", "--all"] if manifest_list else ["buildah", "push"]
    done = subprocess.run(
        [*argv, "--tls-verify=false", IMAGE if manifest_list else ref, f"docker://{ref}"],
        check=False, capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert done.returncode == 0, f"{' '.join(argv)} {ref}: {done.stderr[-2000:]}"


@pytest.fixture(scope="session")
def pushed_images(registry: LocalRegistry, tmp_path_factory: pytest.TempPathFactory) -> Any:
    """The built manifest list pushed as `good`, and an arm64 image that crashes on start."""
    good = f"{registry.address}/rtbserve:dev"
    _push(good, manifest_list=True)
    crash = f"{registry.address}/rtbserve:crash"
    script = tmp_path_factory.mktemp("crash") / "rtbserve"
    script.write_text('#!/bin/sh\necho "rtbserve: this image fails on purpose" >&2\nexit 3\n')
    script.chmod(0o755)
    env = subprocess.run(
        ["podman", "image", "inspect", "--format", "{{json .Config.Env}}", f"{IMAGE}-arm64"],
        check=True, capture_output=True, text=True,
    ).stdout  # fmt: skip
    path = next(e.split("=", 1)[1] for e in yaml.safe_load(env) if e.startswith("PATH="))
    ctr = subprocess.run(
        ["buildah", "from", "--pull-never", f"{IMAGE}-arm64"],
        check=True, capture_output=True, text=True,
    ).stdout.strip()  # fmt: skip
    try:
        for argv in (
            ["buildah", "copy", "--chmod", "0755", ctr, str(script), "/crash/rtbserve"],
            ["buildah", "config", "--env", f"PATH=/crash:{path}", ctr],
            ["buildah", "commit", "--quiet", ctr, crash],
        ):
            subprocess.run(argv, check=True, capture_output=True, timeout=300)
    finally:
        subprocess.run(["buildah", "rm", ctr], check=False, capture_output=True)
    _push(crash, manifest_list=False)
    return {"good": good, "crash": crash, "missing": f"{registry.address}/rtbserve:missing"}


@pytest.fixture(scope="session")
def podman_nodes(kube_cluster: Any, pod_gateway: str, registry: LocalRegistry) -> Iterator[Any]:
    """Two real nodes (Graviton inference, loadgen); the kwok nodes are cordoned meanwhile, so
    every pod of these tests runs as a real container."""
    server = yaml.safe_load(Path(kube_cluster.kubeconfig).read_text())["clusters"][0]["cluster"]
    host, port = server["server"].removeprefix("https://").rsplit(":", 1)
    forward = TcpForwarder(pod_gateway, (host, int(port))).start()
    kube_cluster.kubectl("cordon", "-l", "type=kwok")
    node = PodmanNode(
        Path(kube_cluster.kubeconfig),
        [GRAVITON, LOADGEN],
        api_host=API_NAME,
        api_port=forward.port,
        api_aliases={API_NAME: pod_gateway},
        workdir=Path(tempfile.mkdtemp(prefix="rtbserve-podman-node-")),
        network=POD_NETWORK,
        insecure_registries=[registry.address],
        backoff_seconds=2.0,  # the kubelet's is 10 s; the same shape, shorter
    ).start()
    try:
        yield node
    finally:
        node.stop()
        forward.stop()
        kube_cluster.kubectl("uncordon", "-l", "type=kwok", check=False)
