"""deploy/dask-training.yaml: a DaskCluster on the Graviton training pool and the train Job."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from model_server.train_cli import build_parser
from tests.chart_tools import KUBE_VERSION

MANIFEST = Path(__file__).resolve().parents[2] / "deploy" / "dask-training.yaml"
CLUSTER_YAML = Path(__file__).resolve().parents[2] / "eksctl" / "cluster.yaml"


@pytest.fixture(scope="module")
def docs() -> dict[str, dict[str, Any]]:
    return {d["kind"]: d for d in yaml.safe_load_all(MANIFEST.read_text()) if d}


def _pods(docs: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    dask = docs["DaskCluster"]["spec"]
    return [
        dask["worker"]["spec"],
        dask["scheduler"]["spec"],
        docs["Job"]["spec"]["template"]["spec"],
    ]


def test_every_pod_is_valid_locked_down_and_on_the_training_pool(
    docs: dict[str, dict[str, Any]],
) -> None:
    kubernetes_validate.validate(docs["Job"], KUBE_VERSION, strict=True)
    pool = next(g for g in yaml.safe_load(CLUSTER_YAML.read_text())["managedNodeGroups"]
                if g["name"] == "training")  # fmt: skip
    for spec in _pods(docs):
        pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "x"}, "spec": spec}
        kubernetes_validate.validate(pod, KUBE_VERSION, strict=True)
        assert spec["serviceAccountName"] == "rtbserve-train"
        assert spec["nodeSelector"] == {"kubernetes.io/arch": "arm64", **pool["labels"]}
        assert spec["securityContext"]["runAsNonRoot"] is True
        for c in spec["containers"]:
            assert c["securityContext"]["readOnlyRootFilesystem"] is True
            assert not any(
                "AWS_SECRET" in e["name"] or "AWS_ACCESS" in e["name"] for e in c.get("env", [])
            )


def test_the_job_trains_on_the_clusters_scheduler_and_uploads(
    docs: dict[str, dict[str, Any]],
) -> None:
    (container,) = docs["Job"]["spec"]["template"]["spec"]["containers"]
    assert container["args"][0] == "train"
    args = build_parser().parse_args(container["args"][1:])
    name = docs["DaskCluster"]["metadata"]["name"]
    namespace = docs["DaskCluster"]["metadata"]["namespace"]
    port = docs["DaskCluster"]["spec"]["scheduler"]["service"]["ports"][0]["port"]
    assert args.dask == f"tcp://{name}-scheduler.{namespace}.svc:{port}"
    assert args.upload.startswith("s3://")
    assert all(d.startswith("s3://") for d in args.data)
