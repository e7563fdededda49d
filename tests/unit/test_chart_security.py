"""Every pod the chart creates is locked down: non-root, read-only root, no extra rights."""

from __future__ import annotations

from typing import Any

import pytest

from tests.chart_tools import ALL_OPTIONS_VALUES, Manifest, by_kind, one, pod_spec, render

WORKLOADS = {"Deployment", "Job"}
ROLE_ARN = "eks.amazonaws.com/role-arn"


@pytest.fixture(scope="module", params=["defaults", "all-options"])
def manifests(request: pytest.FixtureRequest) -> list[Manifest]:
    args = ("-f", str(ALL_OPTIONS_VALUES)) if request.param == "all-options" else ()
    return render(*args, include_crds=False)


def workloads(manifests: list[Manifest]) -> list[Manifest]:
    found = [m for m in manifests if m["kind"] in WORKLOADS]
    assert found
    return found


def test_pods_run_as_non_root_with_runtime_default_seccomp(manifests: list[Manifest]) -> None:
    for workload in workloads(manifests):
        security: dict[str, Any] = pod_spec(workload)["securityContext"]
        assert security["runAsNonRoot"] is True
        assert security["runAsUser"] == 10001  # the image's user
        assert security["seccompProfile"] == {"type": "RuntimeDefault"}


def test_containers_are_read_only_and_unprivileged(manifests: list[Manifest]) -> None:
    for workload in workloads(manifests):
        spec = pod_spec(workload)
        for container in spec["containers"]:
            security = container["securityContext"]
            assert security["readOnlyRootFilesystem"] is True
            assert security["allowPrivilegeEscalation"] is False
            assert security["capabilities"]["drop"] == ["ALL"]
            assert "add" not in security["capabilities"]
            # With a read-only root, /tmp (HOME and TMPDIR in the image) must be a volume.
            mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
            volumes = {v["name"]: v for v in spec["volumes"]}
            assert "emptyDir" in volumes[mounts["/tmp"]]
            assert volumes[mounts["/tmp"]]["emptyDir"]["sizeLimit"]
        assert not spec.get("hostNetwork")
        assert not spec.get("hostPID")


def test_containers_have_resources(manifests: list[Manifest]) -> None:
    for workload in workloads(manifests):
        for container in pod_spec(workload)["containers"]:
            assert container["resources"]["requests"]["cpu"]
            assert container["resources"]["requests"]["memory"]
            assert container["resources"]["limits"]["memory"]


def test_operator_has_probe_metrics_and_cache(manifests: list[Manifest]) -> None:
    operator = one(manifests, "Deployment", "-operator")
    (container,) = pod_spec(operator)["containers"]
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert any(p["name"] == "http-metrics" for p in container["ports"])
    mounts = {m["mountPath"] for m in container["volumeMounts"]}
    assert "/var/cache/rtbserve" in mounts
    assert "--cache-dir=/var/cache/rtbserve" in container["args"]
    # One operator at a time: it runs without peering.
    assert operator["spec"]["strategy"]["type"] == "Recreate"


def test_irsa_roles_are_annotations_from_values() -> None:
    manifests = render("-f", str(ALL_OPTIONS_VALUES), include_crds=False)
    accounts = {a["metadata"]["name"]: a for a in by_kind(manifests, "ServiceAccount")}
    for name in ("rtbserve-operator", "rtbserve-model-server", "rtbserve-loadgen"):
        role = accounts[name]["metadata"]["annotations"][ROLE_ARN]
        assert role == f"arn:aws:iam::123456789012:role/{name}"
    # Other annotations are kept beside the role.
    operator_annotations = accounts["rtbserve-operator"]["metadata"]["annotations"]
    assert operator_annotations["eks.amazonaws.com/sts-regional-endpoints"] == "true"


def test_no_role_annotation_without_a_role() -> None:
    for account in by_kind(render(include_crds=False), "ServiceAccount"):
        assert ROLE_ARN not in account["metadata"].get("annotations", {})


def test_model_servers_get_no_api_token(manifests: list[Manifest]) -> None:
    account = one(manifests, "ServiceAccount", "-model-server")
    assert account["automountServiceAccountToken"] is False


def test_no_credentials_in_any_environment(manifests: list[Manifest]) -> None:
    for workload in workloads(manifests):
        for container in pod_spec(workload)["containers"]:
            for env in container.get("env", []):
                assert not env["name"].startswith(("AWS_ACCESS", "AWS_SECRET", "AWS_SESSION"))
