"""The chart carries the project's CRD and the operator's RBAC unchanged."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from tests.chart_tools import (
    ALL_OPTIONS_VALUES,
    CHART_CRD,
    CRD_SOURCE,
    REPO_ROOT,
    Manifest,
    by_kind,
    one,
    render,
)

OPERATOR_RBAC = REPO_ROOT / "operator" / "rbac.yaml"
SYNC_SCRIPT = REPO_ROOT / "hack" / "sync-crd.sh"


def test_chart_crd_is_byte_identical_to_crds_dir() -> None:
    if not CRD_SOURCE.is_file():
        pytest.skip(f"{CRD_SOURCE} not written yet")
    assert CHART_CRD.read_bytes() == CRD_SOURCE.read_bytes(), "run hack/sync-crd.sh"


def normalized(rules: list[dict[str, Any]]) -> set[tuple[str, str, str]]:
    """(apiGroup, resource, verb) triples: the same grant however the rules are grouped."""
    return {
        (group, resource, verb)
        for rule in rules
        for group in rule.get("apiGroups", [])
        for resource in rule.get("resources", [])
        for verb in rule["verbs"]
    }


def reference_roles() -> dict[str, set[tuple[str, str, str]]]:
    if not OPERATOR_RBAC.is_file():
        pytest.skip(f"{OPERATOR_RBAC} not written yet")
    docs = [d for d in yaml.safe_load_all(OPERATOR_RBAC.read_text()) if d]
    return {
        d["metadata"]["name"]: normalized(d["rules"]) for d in docs if d["kind"] == "ClusterRole"
    }


def chart_role(manifests: list[Manifest], suffix: str) -> set[tuple[str, str, str]]:
    return normalized(one(manifests, "ClusterRole", suffix)["rules"])


def test_operator_rules_mirror_operator_rbac_yaml() -> None:
    reference = reference_roles()
    for args in ([], ["-f", str(ALL_OPTIONS_VALUES)]):
        manifests = render(*args, include_crds=False)
        assert chart_role(manifests, "-operator") == reference["rtbserve-operator"]


def test_discovery_rules_follow_the_watch_mode() -> None:
    reference = reference_roles()["rtbserve-operator-discovery"]
    cluster_wide = render("--set", "operator.allNamespaces=true", include_crds=False)
    assert chart_role(cluster_wide, "-operator-discovery") == reference
    # Watching named namespaces, kopf does not look namespaces up.
    namespaced = chart_role(render(include_crds=False), "-operator-discovery")
    assert namespaced == {t for t in reference if t[1] != "namespaces"}


def bindings_of(manifests: list[Manifest], role: str) -> list[Manifest]:
    return [
        m
        for m in by_kind(manifests, "RoleBinding") + by_kind(manifests, "ClusterRoleBinding")
        if m["roleRef"]["name"] == role
    ]


def test_watch_namespaces_get_role_bindings_only() -> None:
    manifests = render(
        "--namespace", "rtbserve", "--set", "operator.watchNamespaces={bidding,ads}",
        include_crds=False,
    )  # fmt: skip
    bindings = bindings_of(manifests, "rtbserve-operator")
    assert {b["kind"] for b in bindings} == {"RoleBinding"}
    assert sorted(b["metadata"]["namespace"] for b in bindings) == ["ads", "bidding"]
    for binding in bindings:
        assert binding["subjects"] == [
            {"kind": "ServiceAccount", "name": "rtbserve-operator", "namespace": "rtbserve"}
        ]
    args = one(manifests, "Deployment", "-operator")["spec"]["template"]["spec"]["containers"][0]
    assert [a for a in args["args"] if a.startswith("--namespace")] == [
        "--namespace=bidding",
        "--namespace=ads",
    ]


def test_all_namespaces_gets_a_cluster_role_binding() -> None:
    manifests = render("--set", "operator.allNamespaces=true", include_crds=False)
    bindings = bindings_of(manifests, "rtbserve-operator")
    assert [b["kind"] for b in bindings] == ["ClusterRoleBinding"]
    container = one(manifests, "Deployment", "-operator")["spec"]["template"]["spec"]
    assert "--all-namespaces" in container["containers"][0]["args"]


def test_loadgen_may_only_patch_one_inferencemodel_status() -> None:
    manifests = render("-f", str(ALL_OPTIONS_VALUES), include_crds=False)
    role = one(manifests, "Role", "-loadgen")
    assert role["rules"] == [
        {
            "apiGroups": ["rtbserve.io"],
            "resources": ["inferencemodels/status"],
            "resourceNames": ["ctr-demo"],
            "verbs": ["patch"],
        }
    ]
    (binding,) = bindings_of(manifests, role["metadata"]["name"])
    assert binding["subjects"][0]["name"] == "rtbserve-loadgen"


def test_loadgen_without_status_recording_gets_no_role_and_no_token() -> None:
    manifests = render(
        "--set", "loadgen.enabled=true", "--set", "loadgen.target=ctr.rtbserve.svc:9090",
        include_crds=False,
    )  # fmt: skip
    assert not by_kind(manifests, "Role")
    job = one(manifests, "Job")
    assert job["spec"]["template"]["spec"]["automountServiceAccountToken"] is False


def test_no_secrets_and_no_wildcards() -> None:
    manifests = render("-f", str(ALL_OPTIONS_VALUES), include_crds=False)
    assert not by_kind(manifests, "Secret")
    for role in by_kind(manifests, "ClusterRole") + by_kind(manifests, "Role"):
        for group, resource, verb in normalized(role["rules"]):
            assert "*" not in (group, resource, verb), role["metadata"]["name"]
            assert resource != "secrets"


def test_sync_script_detects_a_stale_copy(tmp_path: Any) -> None:
    import shutil
    import subprocess

    if not CRD_SOURCE.is_file():
        pytest.skip(f"{CRD_SOURCE} not written yet")
    # A scratch checkout layout: hack/, crds/, charts/rtbserve/crds/.
    (tmp_path / "hack").mkdir()
    shutil.copy(SYNC_SCRIPT, tmp_path / "hack" / "sync-crd.sh")
    (tmp_path / "crds").mkdir()
    shutil.copy(CRD_SOURCE, tmp_path / "crds" / "inferencemodel.yaml")
    script = str(tmp_path / "hack" / "sync-crd.sh")
    assert subprocess.run([script, "--check"], capture_output=True, check=False).returncode == 1
    subprocess.run([script], capture_output=True, check=True)
    assert subprocess.run([script, "--check"], capture_output=True, check=False).returncode == 0
    copied = tmp_path / "charts" / "rtbserve" / "crds" / "inferencemodel.yaml"
    assert copied.read_bytes() == CRD_SOURCE.read_bytes()
