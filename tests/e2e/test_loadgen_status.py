"""`rtbserve loadgen --inference-model` records its result on a real API server (kwok)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from loadgen.exit_codes import ExitCode
from tests.cluster.fixtures import REPO_ROOT, KubeCluster

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(600)]

CRD = REPO_ROOT / "crds" / "inferencemodel.yaml"
FIELDS = {
    "time",
    "targetRate",
    "achievedRate",
    "p50Ms",
    "p99Ms",
    "errors",
    "requests",
    "durationSeconds",
}


@pytest.fixture(scope="module")
def inferencemodel_crd(kube_cluster: KubeCluster) -> None:
    if not CRD.is_file():
        pytest.skip(f"{CRD} not found: the InferenceModel CRD is not written yet")
    kube_cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(CRD))
    kube_cluster.kubectl(
        "wait", "--for=condition=Established", "crd/inferencemodels.rtbserve.io", "--timeout=60s"
    )


def _model(name: str) -> str:
    return f"""
apiVersion: rtbserve.io/v1alpha1
kind: InferenceModel
metadata:
  name: {name}
spec:
  artifact:
    uri: s3://models/{name}/1/
"""


def test_last_load_test_written_to_status(
    kube_cluster: KubeCluster,
    kube_namespace: str,
    inferencemodel_crd: None,
    fast_stub: Any,
    run_loadgen: Any,
) -> None:
    kube_cluster.apply(_model("ctr"), namespace=kube_namespace)
    before = kube_cluster.kubectl_json("-n", kube_namespace, "get", "inferencemodel", "ctr")
    run = run_loadgen(
        "--target", fast_stub.target, "--rate", "500", "--duration", "2s",
        "--inference-model", "ctr", "--namespace", kube_namespace,
        env={"KUBECONFIG": str(kube_cluster.kubeconfig)},
    )  # fmt: skip
    assert run.code == 0, run.stderr
    assert f"status.lastLoadTest written to InferenceModel {kube_namespace}/ctr" in run.stdout

    after = kube_cluster.kubectl_json("-n", kube_namespace, "get", "inferencemodel", "ctr")
    last = after["status"]["lastLoadTest"]
    assert set(last) == FIELDS
    assert last["requests"] == 1000
    assert last["errors"] == 0
    assert last["targetRate"] == 500
    assert last["achievedRate"] == pytest.approx(500, rel=0.02)
    assert last["durationSeconds"] == 2
    assert 0 < last["p50Ms"] <= last["p99Ms"]
    finished = datetime.strptime(last["time"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    assert abs(datetime.now(UTC) - finished) < timedelta(minutes=5)
    # only the status changed: the spec and its generation are the user's
    assert after["spec"] == before["spec"]
    assert after["metadata"]["generation"] == before["metadata"]["generation"]


def test_unknown_model_fails_publishing_but_keeps_the_report(
    kube_cluster: KubeCluster,
    kube_namespace: str,
    inferencemodel_crd: None,
    fast_stub: Any,
    run_loadgen: Any,
) -> None:
    run = run_loadgen(
        "--target", fast_stub.target, "--rate", "200", "--duration", "1s",
        "--inference-model", "absent", "--namespace", kube_namespace,
        env={"KUBECONFIG": str(kube_cluster.kubeconfig)},
    )  # fmt: skip
    assert run.code == ExitCode.PUBLISH_FAILED
    assert f"InferenceModel {kube_namespace}/absent not found" in run.stderr
    assert "achieved rate" in run.stdout  # the measurements were still reported
