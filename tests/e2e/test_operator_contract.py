"""Operator and server agree: the model-server container exactly as the operator wrote it into
the Deployment (read back from the API server) comes up as a local process and serves.

Only what a pod gets from its surroundings is supplied here: free loopback ports instead of
9090/8080, a private TMPDIR (the pod's /tmp emptyDir), the local S3 endpoint with dummy
credentials (IRSA in EKS), and PATH to find `rtbserve`.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.operator_fixtures import OperatorHarness, PublishedModels, free_port, wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]

OPENRTB_EXAMPLES = Path(__file__).resolve().parents[3] / "shared" / "openrtb-2.6"
PORT_ENV = {"RTBSERVE_THRIFT_PORT", "RTBSERVE_HTTP_PORT"}


def bid_request() -> bytes:
    """One of IAB's example bid requests when available, else a minimal valid one."""
    example = OPENRTB_EXAMPLES / "mobile.json"
    if example.is_file():
        data = json.loads(example.read_text())
        return json.dumps(data.get("request", data)).encode()
    return json.dumps(
        {"id": "r1", "imp": [{"id": "1", "banner": {"w": 320, "h": 50}}], "app": {"id": "a"}}
    ).encode()


def container_of(cluster: Any, namespace: str, name: str) -> dict[str, Any]:
    def created() -> dict[str, Any] | None:
        result = cluster.kubectl(
            "-n", namespace, "get", "deployment", name, "-o", "json", check=False
        )
        return json.loads(result.stdout) if result.returncode == 0 else None

    deployment = wait_until(created, 90, f"Deployment {name}")
    container: dict[str, Any] = deployment["spec"]["template"]["spec"]["containers"][0]
    return container


@pytest.fixture
def served(
    kube_cluster: Any,
    running_operator: OperatorHarness,
    published_models: PublishedModels,
    s3_server: Any,
    tmp_path: Path,
) -> Iterator[tuple[int, int]]:
    pytest.importorskip("model_server.serve_cli", reason="the model server CLI is not written yet")
    namespace = running_operator.namespace
    name = f"contract-{uuid.uuid4().hex[:6]}"
    body = {
        "apiVersion": "rtbserve.io/v1alpha1",
        "kind": "InferenceModel",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "artifact": {"uri": published_models.first.uri},
            "replicas": 1,
            "resources": {"requests": {"cpu": "1", "memory": "256Mi"}},
            "server": {"drainSeconds": 1},
        },
    }
    kube_cluster.kubectl("apply", "-f", "-", input=json.dumps(body))
    container = container_of(kube_cluster, namespace, name)
    assert all("valueFrom" not in e for e in container["env"]), "no secrets in the pod spec"

    thrift_port, http_port = free_port(), free_port()
    env = {e["name"]: e["value"] for e in container["env"]}
    assert set(env) >= PORT_ENV
    env |= {"RTBSERVE_THRIFT_PORT": str(thrift_port), "RTBSERVE_HTTP_PORT": str(http_port)}
    tmp = tmp_path / "pod-tmp"
    tmp.mkdir()
    env |= {
        **s3_server.env,
        "RTBSERVE_BIND_ADDRESS": "127.0.0.1",
        "TMPDIR": str(tmp),
        "HOME": str(tmp),
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
    }
    argv = [*container["command"], *container["args"]]
    log = tmp_path / "server.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(argv, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:

        def ready() -> bool:
            if proc.poll() is not None:
                raise AssertionError(f"server exited {proc.returncode}:\n{log.read_text()}")
            try:
                url = f"http://127.0.0.1:{http_port}/readyz"
                with urllib.request.urlopen(url, timeout=2) as resp:
                    return bool(resp.status == 200)
            except (urllib.error.URLError, OSError):
                return False

        wait_until(ready, 120, "the server's /readyz")
        yield thrift_port, http_port
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        kube_cluster.kubectl(
            "-n", namespace, "delete", "inferencemodel", name, "--wait=false", check=False
        )


def test_the_generated_container_serves_the_verified_model(
    served: tuple[int, int], published_models: PublishedModels
) -> None:
    from thriftpy2.protocol import TBinaryProtocolFactory
    from thriftpy2.rpc import make_client
    from thriftpy2.transport import TFramedTransportFactory

    from model_server.thrift_contract import ModelServer

    thrift_port, http_port = served
    client = make_client(
        ModelServer,
        "127.0.0.1",
        thrift_port,
        trans_factory=TFramedTransportFactory(),
        proto_factory=TBinaryProtocolFactory(),  # type: ignore[no-untyped-call]
        timeout=10_000,
    )
    try:
        info = client.info()
        assert info.sha256 == published_models.first.sha256
        assert (info.name, info.version) == (
            published_models.first.name,
            published_models.first.version,
        )
        response = client.score(bid_request(), [])
        assert [s.bidder for s in response.scores] == list(info.bidders)
        assert all(0.0 <= s.probability <= 1.0 for s in response.scores)
    finally:
        client.close()
    with urllib.request.urlopen(f"http://127.0.0.1:{http_port}/metrics", timeout=5) as resp:
        metrics = resp.read().decode()
    assert published_models.first.sha256 in metrics  # rtbserve_model_info{sha256=...}
