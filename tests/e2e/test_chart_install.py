"""charts/rtbserve on a real API server (the local kwok cluster): install, upgrade, load-test
Job, uninstall.

kwok simulates nodes and pods (no container runs), so "Ready" and "Complete" are the states the
real controllers and scheduler reach for the objects the chart creates. RBAC is checked by the
real API server's authorizer (`kubectl auth can-i --as`).
"""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from tests.chart_tools import CHART_DIR
from tests.cluster.fixtures import KubeCluster

pytestmark = pytest.mark.e2e

CRD_NAME = "inferencemodels.rtbserve.io"
HELM_TIMEOUT = "180s"


@dataclass(frozen=True)
class Release:
    cluster: KubeCluster
    name: str
    namespace: str
    #: what `helm install` printed (NOTES.txt)
    notes: str = ""

    @property
    def operator(self) -> str:
        # A release name containing "rtbserve" is used as the name prefix as is.
        return f"{self.name}-operator"

    def helm(self, *args: str, check: bool = True) -> Any:
        return self.cluster.helm(*args, "--namespace", self.namespace, check=check)

    def kubectl(self, *args: str, check: bool = True) -> Any:
        return self.cluster.kubectl("-n", self.namespace, *args, check=check)

    def get(self, kind: str, name: str) -> dict[str, Any]:
        found: dict[str, Any] = self.cluster.kubectl_json("-n", self.namespace, "get", kind, name)
        return found

    def can(self, service_account: str, *args: str, namespace: str | None = None) -> bool:
        who = f"system:serviceaccount:{self.namespace}:{service_account}"
        proc = self.cluster.kubectl(
            "auth", "can-i", *args, "--as", who, "-n", namespace or self.namespace, check=False
        )
        assert proc.stdout.strip() in {"yes", "no"}, proc.stdout + proc.stderr
        return bool(proc.stdout.strip() == "yes")


def install(cluster: KubeCluster, *values: str) -> Release:
    suffix = uuid.uuid4().hex[:6]
    release = Release(cluster, name=f"rtbserve-{suffix}", namespace=f"rtbserve-e2e-{suffix}")
    # The API server's Pod Security admission refuses any pod of the chart that breaks the
    # "restricted" standard, so a non-compliant pod would fail the install's --wait.
    cluster.kubectl("create", "namespace", release.namespace)
    cluster.kubectl(
        "label", "namespace", release.namespace, "pod-security.kubernetes.io/enforce=restricted"
    )
    proc = release.helm(
        "install", release.name, str(CHART_DIR), "--wait", "--timeout", HELM_TIMEOUT, *values,
    )  # fmt: skip
    return dataclasses.replace(release, notes=proc.stdout)


def remove(release: Release) -> None:
    release.helm("uninstall", release.name, "--wait", "--timeout", HELM_TIMEOUT, check=False)
    release.cluster.kubectl("delete", "namespace", release.namespace, "--wait=false", check=False)


@pytest.fixture(scope="module")
def release(kube_cluster: KubeCluster) -> Iterator[Release]:
    installed = install(kube_cluster)
    try:
        yield installed
    finally:
        remove(installed)


def test_install_creates_the_crd_operator_and_rbac(release: Release) -> None:
    crd = release.cluster.kubectl_json("get", "crd", CRD_NAME)
    assert any(
        c["type"] == "Established" and c["status"] == "True" for c in crd["status"]["conditions"]
    )
    deployment = release.get("deployment", release.operator)
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert container["args"][:2] == ["operator", f"--namespace={release.namespace}"]
    assert release.get("serviceaccount", release.operator)
    assert release.get("service", release.operator)["spec"]["ports"][0]["name"] == "http-metrics"
    binding = release.get("rolebinding", release.operator)
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "ClusterRole",
        "name": release.operator,
    }
    status = release.helm("status", release.name, "-o", "json").stdout
    assert '"status":"deployed"' in status.replace(" ", "")


def test_notes_tell_the_user_what_to_do_next(release: Release) -> None:
    notes = release.notes
    assert f"kubectl -n {release.namespace} rollout status deployment/{release.operator}" in notes
    assert f"kubectl -n {release.namespace} get im -w" in notes
    assert f"serviceAccountName: {release.name}-model-server" in notes
    # No IAM role given: the notes say what model servers are missing.
    assert "modelServer.serviceAccount.roleArn is empty" in notes


def test_operator_pod_becomes_ready(release: Release) -> None:
    release.kubectl("rollout", "status", f"deployment/{release.operator}", "--timeout=120s")
    pods = release.cluster.kubectl_json(
        "-n", release.namespace, "get", "pods", "-l", "app.kubernetes.io/component=operator"
    )["items"]
    assert len(pods) == 1
    conditions = {c["type"]: c["status"] for c in pods[0]["status"]["conditions"]}
    assert conditions["Ready"] == "True"
    assert pods[0]["spec"]["securityContext"]["runAsNonRoot"] is True


def test_operator_rbac_is_least_privilege(release: Release) -> None:
    sa = release.operator
    assert release.can(sa, "watch", "inferencemodels.rtbserve.io")
    assert release.can(sa, "patch", "inferencemodels.rtbserve.io", "--subresource=status")
    assert release.can(sa, "create", "deployments.apps")
    assert release.can(sa, "list", "customresourcedefinitions.apiextensions.k8s.io")
    # Pods read only: their containers' waiting reasons (ImagePullBackOff ...) feed status.
    assert release.can(sa, "watch", "pods")
    # Nothing it does not need: no delete of Deployments, no Secrets, no writes to pods, no
    # other namespace.
    assert not release.can(sa, "delete", "deployments.apps")
    assert not release.can(sa, "get", "secrets")
    assert not release.can(sa, "create", "pods")
    assert not release.can(sa, "delete", "pods")
    assert not release.can(sa, "watch", "inferencemodels.rtbserve.io", namespace="default")


def test_upgrade_changes_a_value(release: Release) -> None:
    release.helm(
        "upgrade", release.name, str(CHART_DIR), "--reuse-values",
        "--set", "operator.workers=8", "--wait", "--timeout", HELM_TIMEOUT,
    )  # fmt: skip
    args = release.get("deployment", release.operator)["spec"]["template"]["spec"]["containers"][0][
        "args"
    ]
    assert "--workers=8" in args
    assert "--workers=4" not in args
    release.kubectl("rollout", "status", f"deployment/{release.operator}", "--timeout=120s")
    history = release.helm("history", release.name, "-o", "json").stdout
    assert '"revision":2' in history.replace(" ", "")


def test_loadgen_job_completes_and_may_only_patch_status(release: Release) -> None:
    loadgen = f"{release.name}-loadgen"
    upgrade = release.helm(
        "upgrade", release.name, str(CHART_DIR), "--reuse-values",
        "--set", "examples.enabled=true",
        "--set", "examples.models[0].name=ctr",
        "--set", "examples.models[0].spec.artifact.uri=s3://rtbserve-models-e2e/models/ctr/",
        "--set", f"loadgen.target=ctr.{release.namespace}.svc:9090",
        "--set", "loadgen.enabled=true",
        "--set", "loadgen.inferenceModel=ctr",
        "--set", "loadgen.duration=30s",
        "--set", "grafana.dashboard.enabled=true",
        "--wait", "--timeout", HELM_TIMEOUT,
    )  # fmt: skip
    # The example InferenceModel passed the API server's own CRD validation.
    model = release.get("inferencemodel", "ctr")
    assert model["spec"]["serviceAccountName"] == f"{release.name}-model-server"
    jobs = release.cluster.kubectl_json(
        "-n", release.namespace, "get", "jobs", "-l", "app.kubernetes.io/component=loadgen"
    )["items"]
    assert len(jobs) == 1
    job = jobs[0]["metadata"]["name"]
    assert job.startswith(loadgen)
    release.kubectl("wait", "--for=condition=Complete", f"job/{job}", "--timeout=120s")
    # NOTES.txt names the Job the chart really created.
    assert f"logs job/{job}" in upgrade.stdout
    assert release.can(loadgen, "patch", "inferencemodels.rtbserve.io/ctr", "--subresource=status")
    assert not release.can(
        loadgen, "patch", "inferencemodels.rtbserve.io/other", "--subresource=status"
    )
    assert not release.can(loadgen, "get", "inferencemodels.rtbserve.io")
    assert not release.can(loadgen, "patch", "inferencemodels.rtbserve.io/ctr")
    dashboards = release.cluster.kubectl_json(
        "-n", release.namespace, "get", "configmaps", "-l", "grafana_dashboard=1"
    )["items"]
    assert len(dashboards) == 1


def test_uninstall_removes_the_release_but_keeps_the_crd(kube_cluster: KubeCluster) -> None:
    installed = install(kube_cluster, "--set", "operator.allNamespaces=true")
    try:
        sa = installed.operator
        # Cluster-wide mode: the operator may watch InferenceModels anywhere.
        assert installed.can(sa, "watch", "inferencemodels.rtbserve.io", namespace="default")
        assert installed.can(sa, "watch", "namespaces")
        installed.helm("uninstall", installed.name, "--wait", "--timeout", HELM_TIMEOUT)
        left = installed.kubectl(
            "get", "deployments,services,serviceaccounts,rolebindings",
            "-l", f"app.kubernetes.io/instance={installed.name}", "-o", "name",
        ).stdout.split()  # fmt: skip
        assert left == []
        cluster_left = kube_cluster.kubectl(
            "get", "clusterroles,clusterrolebindings",
            "-l", f"app.kubernetes.io/instance={installed.name}", "-o", "name",
        ).stdout.split()  # fmt: skip
        assert cluster_left == []
        assert not installed.can(sa, "watch", "inferencemodels.rtbserve.io", namespace="default")
        # Helm never deletes crds/: deleting the CRD would delete every InferenceModel.
        kube_cluster.kubectl("get", "crd", CRD_NAME)
    finally:
        remove(installed)
