"""The InferenceModel operator end to end: a real `rtbserve operator` process, a real API server
(local kwok cluster), real S3 (moto's server) and real trained model artifacts.

The operator runs as the ServiceAccount of operator/rbac.yaml, so every test also shows that the
shipped RBAC is enough.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest

from tests.operator_fixtures import OperatorHarness, PublishedModels, wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(600)]

SETTLE = 90.0  # seconds allowed for verify + rollout + status on a loaded 2-core machine
# Small requests: the fake nodes are shared with other suites.
SMALL = {"requests": {"cpu": "100m", "memory": "128Mi"}, "limits": {"memory": "256Mi"}}
OWNED = [
    "deployment",
    "service",
    "horizontalpodautoscaler",
    "poddisruptionbudget",
]


class Models:
    """kubectl helpers for InferenceModels in the operator's namespace."""

    def __init__(self, cluster: Any, namespace: str, settle: float = SETTLE) -> None:
        self.cluster = cluster
        self.ns = namespace
        self.settle = settle

    def kubectl(self, *args: str, **kwargs: Any) -> Any:
        return self.cluster.kubectl("-n", self.ns, *args, **kwargs)

    def json(self, *args: str) -> Any:
        return json.loads(self.kubectl(*args, "-o", "json").stdout)

    def apply(self, name: str, spec: dict[str, Any]) -> None:
        body = {
            "apiVersion": "rtbserve.io/v1alpha1",
            "kind": "InferenceModel",
            "metadata": {"name": name, "namespace": self.ns},
            "spec": spec,
        }
        self.kubectl("apply", "-f", "-", input=json.dumps(body))

    def patch_spec(self, name: str, spec: dict[str, Any]) -> None:
        self.kubectl(
            "patch", "inferencemodel", name, "--type=merge", "-p", json.dumps({"spec": spec})
        )

    def get(self, name: str) -> dict[str, Any]:
        found: dict[str, Any] = self.json("get", "inferencemodel", name)
        return found

    def condition(self, name: str, type_: str) -> dict[str, Any]:
        for cond in self.get(name).get("status", {}).get("conditions", []):
            if cond["type"] == type_:
                return dict(cond)
        return {}

    def wait_condition(
        self, name: str, type_: str, status: str, reason: str | None = None
    ) -> dict[str, Any]:
        def check() -> dict[str, Any] | None:
            cond = self.condition(name, type_)
            ok = cond.get("status") == status and (reason is None or cond.get("reason") == reason)
            return cond if ok else None

        found: dict[str, Any] = wait_until(
            check, self.settle, f"{name}: {type_}={status} ({reason or 'any reason'})", interval=1
        )
        return found

    def wait_ready(self, name: str) -> dict[str, Any]:
        self.wait_condition(name, "Ready", "True")
        return self.get(name)

    def deployment(self, name: str) -> dict[str, Any]:
        found: dict[str, Any] = self.json("get", "deployment", name)
        return found

    def template_sha(self, name: str) -> str:
        annotations = self.deployment(name)["spec"]["template"]["metadata"]["annotations"]
        sha: str = annotations["rtbserve.io/model-sha256"]
        return sha

    def events(self, name: str) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = self.json(
            "get",
            "events",
            "--field-selector",
            f"involvedObject.kind=InferenceModel,involvedObject.name={name}",
        )["items"]
        return items

    def wait_event(self, name: str, reason: str) -> dict[str, Any]:
        def check() -> dict[str, Any] | None:
            return next((e for e in self.events(name) if e["reason"] == reason), None)

        found: dict[str, Any] = wait_until(
            check, self.settle, f"{name}: event {reason}", interval=1
        )
        return found


@pytest.fixture
def models(kube_cluster: Any, running_operator: OperatorHarness) -> Models:
    return Models(kube_cluster, running_operator.namespace)


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:6]}"


def spec_for(uri: str, **extra: Any) -> dict[str, Any]:
    return {"artifact": {"uri": uri}, "resources": SMALL, **extra}


def test_apply_verifies_creates_owned_objects_and_reports_ready(
    models: Models, published_models: PublishedModels
) -> None:
    first = published_models.first
    name = unique("apply")
    models.apply(name, spec_for(first.uri, autoscaling={"minReplicas": 2, "maxReplicas": 4}))
    im = models.wait_ready(name)
    status = im["status"]
    assert status["artifact"]["sha256"] == first.sha256
    assert status["artifact"]["versionId"] == first.version_id
    assert status["serving"]["sha256"] == first.sha256
    assert (status["serving"]["name"], status["serving"]["version"]) == (first.name, first.version)
    assert status["readyReplicas"] == 2
    assert status["observedGeneration"] == im["metadata"]["generation"]
    assert models.condition(name, "ArtifactVerified")["status"] == "True"
    # No finalizer: deletion never waits for the operator.
    assert not im["metadata"].get("finalizers")

    uid = im["metadata"]["uid"]
    for kind in OWNED:
        obj = models.json("get", kind, name)
        (owner,) = obj["metadata"]["ownerReferences"]
        assert (owner["kind"], owner["uid"], owner["controller"]) == ("InferenceModel", uid, True)
    dep = models.deployment(name)
    env = {
        e["name"]: e.get("value") for e in dep["spec"]["template"]["spec"]["containers"][0]["env"]
    }
    assert env["RTBSERVE_MODEL_SHA256"] == first.sha256
    assert env["RTBSERVE_MODEL_VERSION_ID"] == first.version_id
    pods = models.json("get", "pods", "-l", f"rtbserve.io/inferencemodel={name}")["items"]
    assert len(pods) == 2
    for pod in pods:
        node = models.cluster.kubectl_json("get", "node", pod["spec"]["nodeName"])
        assert node["metadata"]["labels"]["kubernetes.io/arch"] == "arm64"
    svc = models.json("get", "service", name)
    assert svc["spec"]["type"] == "LoadBalancer"
    assert (
        svc["metadata"]["annotations"][
            "service.beta.kubernetes.io/aws-load-balancer-nlb-target-type"
        ]
        == "ip"
    )
    hpa = models.json("get", "horizontalpodautoscaler", name)
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (2, 4)
    reasons = {e["reason"] for e in models.events(name)}
    assert "RollingOut" in reasons

    # The NLB name shows up as the endpoint once the load balancer controller publishes it.
    ingress = {"status": {"loadBalancer": {"ingress": [{"hostname": f"{name}.elb.example"}]}}}
    models.kubectl(
        "patch", "service", name, "--subresource=status", "--type=merge", "-p", json.dumps(ingress)
    )
    wait_until(
        lambda: models.get(name)["status"].get("endpoint") == f"{name}.elb.example:9090",
        SETTLE,
        "the endpoint in status",
    )
    # `kubectl get im` shows what serves, readiness and where to connect.
    row = models.kubectl("get", "im", name, "--no-headers").stdout.split()
    assert row[:7] == [
        name,
        first.name,
        first.version,
        "2",
        "2",
        "ModelServing",
        f"{name}.elb.example:9090",
    ]


def test_model_change_then_undo_is_respected_and_reported(
    models: Models, published_models: PublishedModels, running_operator: OperatorHarness
) -> None:
    first, second = published_models.first, published_models.second
    name = unique("undo")
    models.apply(name, spec_for(first.uri, replicas=2))
    models.wait_ready(name)

    # Change the model: a new ReplicaSet revision, named in the rollout history.
    models.patch_spec(name, {"artifact": {"uri": second.uri}})
    wait_until(
        lambda: models.get(name)["status"].get("serving", {}).get("sha256") == second.sha256,
        SETTLE,
        "the second model in the pod template",
    )
    models.wait_ready(name)
    history = models.kubectl("rollout", "history", f"deployment/{name}").stdout
    assert first.sha256[:12] in history, history
    assert second.sha256[:12] in history, history
    replica_sets = models.json("get", "replicasets", "-l", f"rtbserve.io/inferencemodel={name}")
    assert len(replica_sets["items"]) == 2

    # Undo: the Deployment goes back to the first model and the operator says so.
    models.kubectl("rollout", "undo", f"deployment/{name}")
    assert models.template_sha(name) == first.sha256
    rolled = models.wait_condition(name, "RolledBack", "True")
    assert first.sha256[:12] in rolled["message"]
    assert second.sha256[:12] in rolled["message"]
    models.wait_event(name, "RolledBack")
    status = models.get(name)["status"]
    assert status["serving"]["sha256"] == first.sha256
    assert status["artifact"]["sha256"] == second.sha256  # the spec's model, as verified

    # Not reverted, even by a restarted operator that has re-read everything.
    running_operator.stop()
    restarted = running_operator.start()
    wait_until(
        lambda: 'handler="deployment"' in restarted.metrics(),
        SETTLE,
        "the restarted operator to process the Deployment",
    )
    assert models.template_sha(name) == first.sha256
    assert models.condition(name, "RolledBack")["status"] == "True"
    assert models.get(name)["status"]["artifact"]["sha256"] == second.sha256

    # Pointing the spec at the model now serving resolves it.
    models.patch_spec(name, {"artifact": {"uri": first.uri}})
    models.wait_condition(name, "RolledBack", "False")
    models.wait_ready(name)
    models.wait_event(name, "RollbackResolved")


@pytest.mark.parametrize(
    ("case", "reason"),
    [
        ("corrupt", "ChecksumMismatch"),
        ("wrong-sha256", "ChecksumMismatch"),
        ("missing", "ArtifactNotFound"),
    ],
)
def test_bad_artifact_leaves_the_running_model_untouched(
    models: Models, published_models: PublishedModels, case: str, reason: str
) -> None:
    first, second = published_models.first, published_models.second
    name = unique(case)
    models.apply(name, spec_for(first.uri, replicas=2))
    models.wait_ready(name)
    before = models.deployment(name)

    bad = {
        "corrupt": {"uri": published_models.corrupt_uri},
        "wrong-sha256": {"uri": second.uri, "sha256": "0" * 64},
        "missing": {"uri": published_models.missing_uri},
    }[case]
    models.patch_spec(name, {"artifact": bad})
    cond = models.wait_condition(name, "ArtifactVerified", "False", reason)
    assert cond["message"]
    event = models.wait_event(name, reason)
    assert event["type"] == "Warning"
    assert "left unchanged" in event["message"]
    degraded = models.wait_condition(name, "Degraded", "True", "ArtifactRejected")
    assert f"still serving {first.name} {first.version}" in degraded["message"]

    after = models.deployment(name)
    assert after["metadata"]["generation"] == before["metadata"]["generation"]
    assert after["spec"]["template"] == before["spec"]["template"]
    status = models.get(name)["status"]
    assert status["serving"]["sha256"] == first.sha256
    assert status["observedGeneration"] == models.get(name)["metadata"]["generation"]

    # A later fix of the spec is picked up.
    models.patch_spec(name, {"artifact": {"uri": second.uri, "sha256": None}})
    wait_until(
        lambda: models.template_sha(name) == second.sha256, SETTLE, "the fixed spec rolled out"
    )
    models.wait_ready(name)


def test_delete_removes_everything_owned(models: Models, published_models: PublishedModels) -> None:
    name = unique("delete")
    models.apply(name, spec_for(published_models.first.uri, autoscaling={"maxReplicas": 3}))
    models.wait_ready(name)
    models.kubectl("delete", "inferencemodel", name, "--timeout=60s")

    def gone() -> bool:
        left = models.kubectl(
            "get",
            ",".join([*OWNED, "replicaset", "pod"]),
            "-l",
            f"rtbserve.io/inferencemodel={name}",
            "-o",
            "name",
        ).stdout.strip()
        return not left

    wait_until(gone, SETTLE, "garbage collection of the owned objects")


def test_spec_change_while_the_operator_is_down_is_rolled_out_on_restart(
    models: Models, published_models: PublishedModels, running_operator: OperatorHarness
) -> None:
    first, second = published_models.first, published_models.second
    name = unique("restart")
    models.apply(name, spec_for(first.uri, replicas=1))
    models.wait_ready(name)
    running_operator.stop()
    try:
        models.patch_spec(name, {"artifact": {"uri": second.uri}})
        assert models.template_sha(name) == first.sha256
    finally:
        running_operator.start()
    wait_until(lambda: models.template_sha(name) == second.sha256, SETTLE, "the missed change")
    models.wait_ready(name)


def test_the_load_test_report_in_status_survives_operator_writes(
    models: Models, published_models: PublishedModels
) -> None:
    name = unique("report")
    models.apply(name, spec_for(published_models.first.uri, replicas=1))
    models.wait_ready(name)
    report = {
        "time": "2026-01-01T00:00:00Z",
        "targetRate": 5000.0,
        "achievedRate": 4990.5,
        "p50Ms": 0.4,
        "p99Ms": 1.7,
        "errors": 0,
        "requests": 299430,
        "durationSeconds": 60.0,
    }
    models.kubectl(
        "patch",
        "inferencemodel",
        name,
        "--subresource=status",
        "--type=merge",
        "-p",
        json.dumps({"status": {"lastLoadTest": report}}),
    )
    # Force several operator status writes: scale, then change the model.
    models.patch_spec(name, {"replicas": 2})
    wait_until(lambda: models.get(name)["status"].get("readyReplicas") == 2, SETTLE, "2 ready")
    models.patch_spec(name, {"artifact": {"uri": published_models.second.uri}})
    models.wait_condition(name, "ArtifactVerified", "True")
    wait_until(
        lambda: models.get(name)["status"]["serving"]["sha256"] == published_models.second.sha256,
        SETTLE,
        "the second model",
    )
    assert models.get(name)["status"]["lastLoadTest"] == report


def test_the_api_server_refuses_replicas_with_autoscaling(
    models: Models, published_models: PublishedModels
) -> None:
    name = unique("invalid")
    body = {
        "apiVersion": "rtbserve.io/v1alpha1",
        "kind": "InferenceModel",
        "metadata": {"name": name},
        "spec": spec_for(published_models.first.uri, replicas=2, autoscaling={"maxReplicas": 3}),
    }
    result = models.kubectl("apply", "-f", "-", input=json.dumps(body), check=False)
    assert result.returncode != 0
    assert "either replicas or autoscaling" in result.stderr


def test_operator_metrics(running_operator: OperatorHarness, models: Models) -> None:
    assert running_operator.current is not None
    text = running_operator.current.metrics()
    assert "rtbserve_operator_reconciles_total" in text
    assert "rtbserve_operator_artifact_verifications_total" in text
    assert "rtbserve_operator_errors_total" in text


def test_replicas_belong_to_the_hpa_while_autoscaling(
    models: Models, published_models: PublishedModels
) -> None:
    first, second = published_models.first, published_models.second
    name = unique("hpa")
    models.apply(name, spec_for(first.uri, replicas=3))
    models.wait_ready(name)

    # Fixed -> autoscaling: the HPA appears and takes the count over as it is.
    models.patch_spec(name, {"replicas": None, "autoscaling": {"minReplicas": 2, "maxReplicas": 6}})
    wait_until(
        lambda: models.kubectl("get", "hpa", name, check=False).returncode == 0,
        SETTLE,
        "the HPA",
    )
    models.wait_ready(name)
    assert models.deployment(name)["spec"]["replicas"] == 3

    # What the HPA decided survives a model change.
    models.kubectl("scale", f"deployment/{name}", "--replicas=5")
    models.patch_spec(name, {"artifact": {"uri": second.uri}})
    wait_until(lambda: models.template_sha(name) == second.sha256, SETTLE, "the second model")
    assert models.deployment(name)["spec"]["replicas"] == 5

    # Autoscaling -> fixed: the HPA goes, the spec's count applies.
    models.patch_spec(name, {"autoscaling": None, "replicas": 4})
    wait_until(
        lambda: models.kubectl("get", "hpa", name, check=False).returncode != 0,
        SETTLE,
        "the HPA to be deleted",
    )
    wait_until(lambda: models.deployment(name)["spec"]["replicas"] == 4, SETTLE, "4 replicas")


def test_an_unrelated_deployment_of_the_same_name_is_left_alone(
    models: Models, published_models: PublishedModels
) -> None:
    name = unique("taken")
    models.kubectl("create", "deployment", name, "--image=nginx:stable", "--replicas=1")
    before = models.deployment(name)
    models.apply(name, spec_for(published_models.first.uri, replicas=1))
    cond = models.wait_condition(name, "Degraded", "True", "OwnershipConflict")
    assert "not created by the operator" in cond["message"]
    models.wait_event(name, "OwnershipConflict")
    after = models.deployment(name)
    assert after["metadata"]["generation"] == before["metadata"]["generation"]
    assert not after["metadata"].get("ownerReferences")
