"""`rtbserve operator` flags, kopf settings, handler registration and the shipped RBAC."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import kopf
import pytest
import yaml
from rtbserve_operator.cli import build_settings, parse_args
from rtbserve_operator.constants import GROUP, PLURAL
from rtbserve_operator.handlers import REGISTRY

REPO_ROOT = Path(__file__).resolve().parents[2]
RBAC_PATH = REPO_ROOT / "operator" / "rbac.yaml"


def test_a_scope_is_required() -> None:
    with pytest.raises(SystemExit):
        parse_args([])
    with pytest.raises(SystemExit):
        parse_args(["--namespace", "a", "--all-namespaces"])
    args = parse_args(["-n", "a", "-n", "b"])
    assert args.namespace == ["a", "b"]
    assert parse_args(["-A"]).all_namespaces is True


def test_defaults_and_peering() -> None:
    args = parse_args(["-A"])
    assert (args.metrics_port, args.liveness_port) == (9100, 8081)
    assert args.peering is None
    settings = build_settings(args)
    assert settings.peering.standalone is True
    peered = build_settings(parse_args(["-A", "--peering", "rtbserve"]))
    assert peered.peering.standalone is False
    assert peered.peering.name == "rtbserve"


def test_kopf_keeps_its_bookkeeping_in_our_annotations_and_watches_only_owned_objects() -> None:
    settings = build_settings(parse_args(["-A", "--workers", "3"]))
    progress = settings.persistence.progress_storage
    diffbase = settings.persistence.diffbase_storage
    assert isinstance(progress, kopf.AnnotationsProgressStorage)
    assert isinstance(diffbase, kopf.AnnotationsDiffBaseStorage)
    assert progress.prefix == f"operator.{GROUP}"
    assert diffbase.prefix == f"operator.{GROUP}"
    selectors = {repr(k): v for k, v in settings.watching.label_selectors.items()}
    assert len(selectors) == 2
    assert set(selectors.values()) == {"app.kubernetes.io/managed-by=rtbserve-operator"}
    assert settings.execution.max_workers == 3


def resource_name(selector: Any) -> str | None:
    assert selector is not None
    name: str | None = selector.plural or selector.any_name
    return name


def test_handlers_roll_out_only_on_create_or_spec_change_and_need_no_finalizer() -> None:
    changing = list(REGISTRY._changing.get_all_handlers())
    rollout = [h for h in changing if str(h.id).startswith("rollout")]
    assert sorted(str(h.reason) for h in rollout) == ["create", "update"]
    update = next(h for h in rollout if str(h.reason) == "update")
    assert update.field == ("spec",)
    # the one other: a new capacity profile moves the HPA target, and nothing else
    (capacity,) = [h for h in changing if not str(h.id).startswith("rollout")]
    assert capacity.field == ("status", "capacity")
    assert not any(h.requires_finalizer for h in changing)
    assert not list(REGISTRY._spawning.get_all_handlers())  # no timers/daemons: no finalizers
    watched = {resource_name(h.selector) for h in REGISTRY._watching.get_all_handlers()}
    assert watched == {"deployments", "pods", "services"}
    for handler in changing:
        assert handler.selector is not None
        assert handler.selector.group == GROUP
        assert resource_name(handler.selector) == PLURAL


def test_command_line_help_runs() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "rtbserve", "operator", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    assert "--all-namespaces" in out
    assert "--metrics-port" in out


@pytest.fixture(scope="module")
def rbac() -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(RBAC_PATH.read_text()) if d]


def test_rbac_is_least_privilege(rbac: list[dict[str, Any]]) -> None:
    rules = [r for d in rbac if d["kind"] == "ClusterRole" for r in d["rules"]]
    granted = {
        (group, resource, verb)
        for rule in rules
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
    }
    for group, resource, verb in granted:
        assert "*" not in (group, resource, verb)
        assert resource not in {"secrets", "configmaps"}
        if resource == "pods":  # read only: their containers' states feed status
            assert verb in {"list", "watch"}
        assert verb not in {"escalate", "bind", "impersonate", "deletecollection"}
        if verb == "delete":
            assert resource == "horizontalpodautoscalers"
    needed = {
        (GROUP, PLURAL, "watch"),
        (GROUP, PLURAL, "patch"),
        (GROUP, f"{PLURAL}/status", "patch"),
        ("apps", "deployments", "create"),
        ("apps", "deployments", "patch"),
        ("apps", "deployments", "watch"),
        ("", "services", "patch"),
        ("autoscaling", "horizontalpodautoscalers", "patch"),
        ("policy", "poddisruptionbudgets", "patch"),
        ("", "events", "create"),
        ("", "pods", "watch"),
    }
    assert needed <= granted


def test_rbac_binds_the_operator_service_account(rbac: list[dict[str, Any]]) -> None:
    (account,) = [d for d in rbac if d["kind"] == "ServiceAccount"]
    roles = {d["metadata"]["name"] for d in rbac if d["kind"] == "ClusterRole"}
    bindings = [d for d in rbac if d["kind"] == "ClusterRoleBinding"]
    assert {b["roleRef"]["name"] for b in bindings} == roles
    for binding in bindings:
        assert binding["subjects"] == [
            {
                "kind": "ServiceAccount",
                "name": account["metadata"]["name"],
                "namespace": account["metadata"]["namespace"],
            }
        ]
