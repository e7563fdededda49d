"""The local kwok cluster behaves like a real control plane.

Each test talks to the real kube-apiserver/controller-manager/scheduler
built by hack/build-cluster-tools.sh; kwok only fakes nodes and pod
lifecycle. Objects are created in a per-test namespace.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.cluster.fixtures import REPO_ROOT, KubeCluster

pytestmark = pytest.mark.e2e

HELLO_CHART = Path(__file__).parent / "charts" / "hello"
GRAVITON_SELECTOR = {
    "eks.amazonaws.com/nodegroup": "graviton-inference",
    "kubernetes.io/arch": "arm64",
}


def expected_nodes() -> dict[str, dict[str, str]]:
    """Node name -> labels, as declared in hack/kwok-nodes.yaml."""
    docs = yaml.safe_load_all((REPO_ROOT / "hack" / "kwok-nodes.yaml").read_text())
    return {d["metadata"]["name"]: d["metadata"]["labels"] for d in docs if d}


def is_ready(obj: dict[str, Any]) -> bool:
    conditions = obj.get("status", {}).get("conditions", [])
    return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)


def deployment(name: str, image: str, replicas: int, node_selector: dict[str, str]) -> str:
    return json.dumps(
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": name},
            "spec": {
                "replicas": replicas,
                "selector": {"matchLabels": {"app": name}},
                "template": {
                    "metadata": {"labels": {"app": name}},
                    "spec": {
                        "nodeSelector": node_selector,
                        "containers": [{"name": "main", "image": image}],
                    },
                },
            },
        }
    )


def rollout_status(cluster: KubeCluster, ns: str, name: str) -> None:
    cluster.kubectl("-n", ns, "rollout", "status", f"deployment/{name}", "--timeout=120s")


def test_fake_nodes_are_ready(kube_cluster: KubeCluster) -> None:
    want = expected_nodes()
    nodes = {n["metadata"]["name"]: n for n in kube_cluster.kubectl_json("get", "nodes")["items"]}

    assert set(want) <= set(nodes), f"missing nodes: {set(want) - set(nodes)}"
    for name, labels in want.items():
        node = nodes[name]
        assert is_ready(node), f"node {name} is not Ready: {node['status'].get('conditions')}"
        for key, value in labels.items():
            assert node["metadata"]["labels"].get(key) == value, (name, key)

    graviton = [
        n
        for n in nodes.values()
        if n["metadata"]["labels"].get("eks.amazonaws.com/nodegroup") == "graviton-inference"
    ]
    assert len(graviton) >= 3
    for node in graviton:
        labels = node["metadata"]["labels"]
        assert labels["kubernetes.io/arch"] == "arm64"
        assert labels["node.kubernetes.io/instance-type"] == "c7g.2xlarge"
        assert labels["rtbserve.io/pool"] == "inference"
        assert node["status"]["nodeInfo"]["architecture"] == "arm64"
        assert int(node["status"]["allocatable"]["pods"]) > 0
    zones = {n["metadata"]["labels"]["topology.kubernetes.io/zone"] for n in graviton}
    assert zones == {"us-east-1a", "us-east-1b", "us-east-1c"}

    # The plain CLI view agrees.
    out = kube_cluster.kubectl("get", "nodes", "-l", "kubernetes.io/arch=arm64").stdout
    assert out.count(" Ready ") >= 3, out


def test_deployment_pods_run_on_graviton(kube_cluster: KubeCluster, kube_namespace: str) -> None:
    ns = kube_namespace
    kube_cluster.apply(deployment("infer", "busybox:1.36", 3, GRAVITON_SELECTOR), ns)
    rollout_status(kube_cluster, ns, "infer")

    graviton = {
        n["metadata"]["name"]
        for n in kube_cluster.kubectl_json(
            "get", "nodes", "-l", "eks.amazonaws.com/nodegroup=graviton-inference"
        )["items"]
    }
    pods = kube_cluster.kubectl_json("-n", ns, "get", "pods", "-l", "app=infer")["items"]
    assert len(pods) == 3
    for pod in pods:
        assert pod["status"]["phase"] == "Running", pod["status"]
        assert is_ready(pod), pod["status"]
        assert pod["spec"]["nodeName"] in graviton, pod["spec"]["nodeName"]

    dep = kube_cluster.kubectl_json("-n", ns, "get", "deployment", "infer")
    assert dep["status"].get("readyReplicas") == 3
    assert dep["status"].get("availableReplicas") == 3

    # A LoadBalancer Service in front of them is accepted; nothing provisions
    # a load balancer here, so its ingress stays empty (pending).
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "infer"},
        "spec": {
            "type": "LoadBalancer",
            "selector": {"app": "infer"},
            "ports": [{"port": 9090, "targetPort": 9090}],
        },
    }
    kube_cluster.apply(json.dumps(service), ns)
    svc = kube_cluster.kubectl_json("-n", ns, "get", "service", "infer")
    assert svc["spec"]["type"] == "LoadBalancer"
    assert svc["spec"]["ports"][0]["nodePort"] > 0
    assert not svc["status"].get("loadBalancer", {}).get("ingress")


def test_job_completes(kube_cluster: KubeCluster, kube_namespace: str) -> None:
    ns = kube_namespace
    job = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": "train"},
        "spec": {
            "completions": 2,
            "parallelism": 2,
            "backoffLimit": 0,
            "template": {
                "spec": {
                    "restartPolicy": "Never",
                    "containers": [{"name": "train", "image": "busybox:1.36", "command": ["true"]}],
                }
            },
        },
    }
    kube_cluster.apply(json.dumps(job), ns)
    kube_cluster.kubectl(
        "-n", ns, "wait", "--for=condition=Complete", "job/train", "--timeout=120s"
    )

    status = kube_cluster.kubectl_json("-n", ns, "get", "job", "train")["status"]
    assert status.get("succeeded") == 2
    assert not status.get("failed")
    pods = kube_cluster.kubectl_json("-n", ns, "get", "pods", "-l", "job-name=train")["items"]
    assert pods
    assert {p["status"]["phase"] for p in pods} == {"Succeeded"}


def test_helm_install_and_uninstall(kube_cluster: KubeCluster, kube_namespace: str) -> None:
    ns = kube_namespace
    kube_cluster.helm(
        "install",
        "demo",
        str(HELLO_CHART),
        "--namespace",
        ns,
        "--set-string",
        "nodeSelector.kubernetes\\.io/arch=arm64",
        "--wait",
        "--timeout",
        "2m",
    )

    releases = json.loads(kube_cluster.helm("list", "-n", ns, "-o", "json").stdout)
    assert [(r["name"], r["status"]) for r in releases] == [("demo", "deployed")]

    dep = kube_cluster.kubectl_json("-n", ns, "get", "deployment", "demo-hello")
    assert dep["status"].get("readyReplicas") == 2
    svc = kube_cluster.kubectl_json("-n", ns, "get", "service", "demo-hello")
    assert svc["spec"]["ports"][0]["port"] == 8080
    assert svc["spec"]["clusterIP"]
    cm = kube_cluster.kubectl_json("-n", ns, "get", "configmap", "demo-hello")
    assert cm["data"]["message"] == "hello from rtbserve"
    # helm saw the real server version (not its compiled-in default).
    server = kube_cluster.kubectl_json("version")["serverVersion"]["gitVersion"]
    assert cm["data"]["kubeVersion"] == server

    kube_cluster.helm("uninstall", "demo", "--namespace", ns, "--wait", "--timeout", "2m")
    assert json.loads(kube_cluster.helm("list", "-n", ns, "-o", "json").stdout) == []
    for kind in ("deployment", "service", "configmap"):
        gone = kube_cluster.kubectl("-n", ns, "get", kind, "demo-hello", check=False)
        assert gone.returncode != 0
        assert "NotFound" in gone.stderr


def test_rollout_undo_restores_previous_replicaset(
    kube_cluster: KubeCluster, kube_namespace: str
) -> None:
    ns = kube_namespace
    kube_cluster.apply(deployment("web", "busybox:1.36", 2, {}), ns)
    rollout_status(kube_cluster, ns, "web")

    def owned_replicasets() -> dict[str, dict[str, Any]]:
        items = kube_cluster.kubectl_json("-n", ns, "get", "replicasets", "-l", "app=web")
        return {rs["metadata"]["name"]: rs for rs in items["items"]}

    def revision(obj: dict[str, Any]) -> str:
        return str(obj["metadata"]["annotations"]["deployment.kubernetes.io/revision"])

    (first_rs,) = owned_replicasets()

    kube_cluster.kubectl("-n", ns, "set", "image", "deployment/web", "main=busybox:1.37")
    rollout_status(kube_cluster, ns, "web")
    after_update = owned_replicasets()
    assert len(after_update) == 2
    (second_rs,) = set(after_update) - {first_rs}
    assert after_update[second_rs]["spec"]["replicas"] == 2
    assert after_update[first_rs]["spec"]["replicas"] == 0
    assert revision(kube_cluster.kubectl_json("-n", ns, "get", "deployment", "web")) == "2"

    kube_cluster.kubectl("-n", ns, "rollout", "undo", "deployment/web")
    rollout_status(kube_cluster, ns, "web")

    dep = kube_cluster.kubectl_json("-n", ns, "get", "deployment", "web")
    assert dep["spec"]["template"]["spec"]["containers"][0]["image"] == "busybox:1.36"
    assert revision(dep) == "3"
    after_undo = owned_replicasets()
    # Undo reuses the first ReplicaSet (same pod-template-hash), bumped to revision 3.
    assert set(after_undo) == {first_rs, second_rs}
    assert after_undo[first_rs]["spec"]["replicas"] == 2
    assert revision(after_undo[first_rs]) == "3"
    assert after_undo[second_rs]["spec"]["replicas"] == 0
    pods = kube_cluster.kubectl_json("-n", ns, "get", "pods", "-l", "app=web")["items"]
    running = [p for p in pods if "deletionTimestamp" not in p["metadata"]]
    assert {p["spec"]["containers"][0]["image"] for p in running} == {"busybox:1.36"}
