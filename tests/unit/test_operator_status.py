"""Status derivation: what really serves, rollbacks, rejections, readiness, endpoint."""

from __future__ import annotations

from typing import Any

from rtbserve_operator.builders import build_deployment, build_service
from rtbserve_operator.conditions import Condition, find, merge, transitions
from rtbserve_operator.identity import ModelIdentity
from rtbserve_operator.spec import InferenceModel
from rtbserve_operator.status import (
    Problem,
    changes_anything,
    endpoint_of,
    rollout_of,
    status_patch,
)

A = ModelIdentity("s3://models/ctr/1/", "a" * 64, "va", "ctr", "1")
B = ModelIdentity("s3://models/ctr/2/", "b" * 64, "vb", "ctr", "2")
NOW = "2026-01-01T00:00:00Z"
LATER = "2026-01-01T00:05:00Z"
VERIFIED = Condition("ArtifactVerified", "True", "Verified", "ok")


def im_body(status: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "apiVersion": "rtbserve.io/v1alpha1",
        "kind": "InferenceModel",
        "metadata": {"name": "ctr", "namespace": "rtb", "uid": "u", "generation": 2},
        "spec": {"artifact": {"uri": A.uri}},
        "status": status or {},
    }


def deployment(identity: ModelIdentity, *, ready: int = 2, rolling: bool = False) -> dict[str, Any]:
    im = InferenceModel.from_body(im_body(), default_image="img")
    dep = build_deployment(im, identity)
    dep["metadata"]["generation"] = 4
    dep["status"] = {
        "observedGeneration": 4,
        "replicas": 3 if rolling else 2,
        "updatedReplicas": 1 if rolling else 2,
        "readyReplicas": ready,
        "availableReplicas": ready,
        "conditions": [
            {
                "type": "Available",
                "status": "True" if ready else "False",
                "reason": "MinimumReplicasAvailable" if ready else "MinimumReplicasUnavailable",
            },
            {"type": "Progressing", "status": "True", "reason": "NewReplicaSetAvailable"},
        ],
    }
    return dep


def conditions(patch: dict[str, Any]) -> dict[str, Condition]:
    return {c["type"]: Condition.from_dict(c) for c in patch["conditions"]}


def test_ready_when_the_verified_model_is_fully_rolled_out() -> None:
    patch = status_patch(
        im_body(),
        deployment(A),
        None,
        now=NOW,
        verified=VERIFIED,
        artifact=A,
        observed_generation=2,
    )
    conds = conditions(patch)
    assert conds["Ready"].true
    assert conds["Available"].true
    assert not conds["Progressing"].true
    assert not conds["Degraded"].true
    assert not conds["RolledBack"].true
    assert patch["artifact"]["sha256"] == A.sha256
    assert patch["serving"]["sha256"] == A.sha256
    assert patch["serving"]["versionId"] == "va"
    assert (patch["readyReplicas"], patch["replicas"]) == (2, 2)
    assert patch["observedGeneration"] == 2
    assert all(c["lastTransitionTime"] == NOW for c in patch["conditions"])


def test_rollout_in_progress_is_progressing_not_ready() -> None:
    patch = status_patch(
        im_body(), deployment(B, rolling=True), None, now=NOW, verified=VERIFIED, artifact=B
    )
    conds = conditions(patch)
    assert conds["Progressing"].true
    assert conds["Progressing"].reason == "RollingOut"
    assert not conds["Ready"].true
    assert not conds["RolledBack"].true


def test_undo_is_reported_as_rolled_back_not_reverted() -> None:
    # The operator rolled out B; someone ran `kubectl rollout undo`: the template runs A.
    stored = status_patch(im_body(), deployment(B), None, now=NOW, verified=VERIFIED, artifact=B)
    after_undo = status_patch(im_body(stored), deployment(A), None, now=LATER)
    conds = conditions(after_undo)
    assert conds["RolledBack"].true
    assert conds["RolledBack"].reason == "DeploymentRolledBack"
    assert "ctr 1" in conds["RolledBack"].message
    assert "ctr 2" in conds["RolledBack"].message
    assert not conds["Ready"].true
    # The pinned artifact is untouched (no `artifact` in the patch); serving says A.
    assert "artifact" not in after_undo
    assert after_undo["serving"]["sha256"] == A.sha256
    # It is an event-worthy transition.
    changed = {t.type: t for t in transitions(stored["conditions"], after_undo["conditions"])}
    assert changed["RolledBack"].after.true
    assert changed["RolledBack"].before == "False"


def test_a_rejected_artifact_keeps_serving_and_says_why() -> None:
    stored = status_patch(im_body(), deployment(A), None, now=NOW, verified=VERIFIED, artifact=A)
    rejected = Condition("ArtifactVerified", "False", "ChecksumMismatch", "sha256 is x, expected y")
    patch = status_patch(im_body(stored), deployment(A), None, now=LATER, verified=rejected)
    conds = conditions(patch)
    assert conds["ArtifactVerified"].status == "False"
    assert conds["ArtifactVerified"].reason == "ChecksumMismatch"
    assert conds["Degraded"].true
    assert "still serving ctr 1" in conds["Degraded"].message
    assert conds["Ready"].reason == "ChecksumMismatch"
    assert not conds["RolledBack"].true
    assert patch["serving"]["sha256"] == A.sha256


def test_rejection_before_any_deployment() -> None:
    rejected = Condition("ArtifactVerified", "False", "ArtifactNotFound", "no such object")
    patch = status_patch(im_body(), None, None, now=NOW, verified=rejected, observed_generation=2)
    conds = conditions(patch)
    assert conds["Degraded"].true
    assert conds["Ready"].reason == "ArtifactNotFound"
    assert patch["serving"] is None
    assert patch["readyReplicas"] is None


def test_a_rollout_problem_is_degraded_until_cleared() -> None:
    problem = Problem("InvalidObject", "the API server refused it")
    patch = status_patch(
        im_body(),
        deployment(A),
        None,
        now=NOW,
        verified=VERIFIED,
        artifact=A,
        rollout_error=problem,
    )
    assert conditions(patch)["Degraded"].reason == "InvalidObject"
    assert patch["rolloutError"] == {
        "reason": "InvalidObject",
        "message": "the API server refused it",
    }
    # Watchers keep it (KEEP) ...
    kept = status_patch(im_body(patch), deployment(A), None, now=LATER)
    assert conditions(kept)["Degraded"].reason == "InvalidObject"
    assert "rolloutError" not in kept
    # ... a successful rollout clears it.
    cleared = status_patch(im_body(patch), deployment(A), None, now=LATER, rollout_error=None)
    assert cleared["rolloutError"] is None
    assert conditions(cleared)["Ready"].true


def test_progress_deadline_and_missing_replicas_are_degraded() -> None:
    dep = deployment(A, rolling=True)
    dep["status"]["conditions"][1] = {
        "type": "Progressing",
        "status": "False",
        "reason": "ProgressDeadlineExceeded",
        "message": "ReplicaSet ctr-abc has timed out progressing.",
    }
    conds = conditions(status_patch(im_body(), dep, None, now=NOW, verified=VERIFIED, artifact=A))
    assert conds["Degraded"].reason == "ProgressDeadlineExceeded"
    assert conds["Progressing"].status == "False"

    short = deployment(A, ready=1)
    short["status"]["availableReplicas"] = 2
    conds = conditions(status_patch(im_body(), short, None, now=NOW, verified=VERIFIED, artifact=A))
    assert conds["Degraded"].reason == "ReplicasUnavailable"
    assert not conds["Ready"].true


def test_rollout_waits_for_the_controller_to_observe_the_change() -> None:
    dep = deployment(A)
    dep["metadata"]["generation"] = 5
    assert not rollout_of(dep).complete
    assert rollout_of(deployment(A)).complete


def test_last_transition_time_moves_only_on_status_change() -> None:
    first = merge(None, [Condition("Ready", "False", "RollingOut")], now=NOW, generation=1)
    same = merge(
        first, [Condition("Ready", "False", "ReplicasUnavailable")], now=LATER, generation=1
    )
    assert same[0]["lastTransitionTime"] == NOW
    flipped = merge(same, [Condition("Ready", "True", "ModelServing")], now=LATER, generation=2)
    assert flipped[0]["lastTransitionTime"] == LATER
    assert flipped[0]["observedGeneration"] == 2
    assert find(flipped, "Ready") == Condition("Ready", "True", "ModelServing", "")


def test_status_patch_never_touches_the_load_test_report() -> None:
    status = {"lastLoadTest": {"p99Ms": 1.2, "requests": 1000}}
    patch = status_patch(
        im_body(status), deployment(A), None, now=NOW, verified=VERIFIED, artifact=A
    )
    assert "lastLoadTest" not in patch


def test_unchanged_status_is_not_rewritten() -> None:
    patch = status_patch(im_body(), deployment(A), None, now=NOW, verified=VERIFIED, artifact=A)
    stored = {**patch, "lastLoadTest": {"p99Ms": 1.0}}
    again = status_patch(im_body(stored), deployment(A), None, now=LATER)
    assert not changes_anything(stored, again)
    moved = status_patch(im_body(stored), deployment(A, ready=1), None, now=LATER)
    assert changes_anything(stored, moved)


def test_endpoint_is_the_nlb_name_once_provisioned() -> None:
    im = InferenceModel.from_body(im_body(), default_image="img")
    svc = build_service(im)
    assert endpoint_of(svc) is None  # no load balancer yet
    svc["status"] = {"loadBalancer": {"ingress": [{"hostname": "k8s-rtb-ctr.elb.amazonaws.com"}]}}
    assert endpoint_of(svc) == "k8s-rtb-ctr.elb.amazonaws.com:9090"
    internal = build_service(
        InferenceModel.from_body(
            {**im_body(), "spec": {"artifact": {"uri": A.uri}, "service": {"type": "ClusterIP"}}},
            default_image="img",
        )
    )
    assert endpoint_of(internal) == "ctr.rtb.svc:9090"
    patch = status_patch(im_body(), deployment(A), svc, now=NOW, verified=VERIFIED, artifact=A)
    assert patch["endpoint"] == "k8s-rtb-ctr.elb.amazonaws.com:9090"
