"""The Deployment update patch: owned fields replaced whole, replicas untouched under an HPA."""

from __future__ import annotations

import copy
from typing import Any

import jsonpatch
import pytest
from rtbserve_operator.builders import build_deployment
from rtbserve_operator.identity import ModelIdentity, identity_of_deployment
from rtbserve_operator.owned import OwnershipConflictError, check_ours, deployment_patch
from rtbserve_operator.spec import InferenceModel

A = ModelIdentity("s3://models/ctr/1/", "a" * 64, "va", "ctr", "1")
B = ModelIdentity("s3://models/ctr/2/", "b" * 64, None, "ctr", "2")
OWNER_REF = {
    "apiVersion": "rtbserve.io/v1alpha1",
    "kind": "InferenceModel",
    "name": "ctr",
    "uid": "uid-1",
    "controller": True,
    "blockOwnerDeletion": True,
}


def make_im(spec: dict[str, Any]) -> InferenceModel:
    body = {
        "metadata": {"name": "ctr", "namespace": "rtb", "uid": "uid-1", "generation": 1},
        "spec": {"artifact": {"uri": A.uri}, **spec},
    }
    return InferenceModel.from_body(body, default_image="img")


def desired(im: InferenceModel, identity: ModelIdentity) -> dict[str, Any]:
    dep = build_deployment(im, identity)
    dep["metadata"]["ownerReferences"] = [dict(OWNER_REF)]
    return dep


def live(im: InferenceModel, identity: ModelIdentity, replicas: int) -> dict[str, Any]:
    """What the API server holds: ours plus fields others wrote."""
    dep = desired(im, identity)
    dep["spec"]["replicas"] = replicas
    dep["metadata"]["annotations"]["deployment.kubernetes.io/revision"] = "4"
    dep["metadata"]["labels"]["team"] = "bidding"
    dep["metadata"]["resourceVersion"] = "123"
    dep["status"] = {"replicas": replicas}
    return dep


def apply(current: dict[str, Any], ops: list[dict[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = jsonpatch.apply_patch(copy.deepcopy(current), ops)
    return result


def test_new_model_under_hpa_replaces_the_template_and_leaves_replicas_alone() -> None:
    im = make_im({"autoscaling": {"minReplicas": 2, "maxReplicas": 20}})
    current = live(im, A, replicas=7)  # the HPA scaled to 7
    want = desired(im, B)
    ops = deployment_patch(current, want)
    assert not [op for op in ops if op["path"].startswith("/spec/replicas")]
    after = apply(current, ops)
    assert after["spec"]["replicas"] == 7
    assert after["spec"]["template"] == want["spec"]["template"]
    assert identity_of_deployment(after) == B
    annotations = after["metadata"]["annotations"]
    assert (
        annotations["kubernetes.io/change-cause"]
        == want["metadata"]["annotations"]["kubernetes.io/change-cause"]
    )
    assert annotations["deployment.kubernetes.io/revision"] == "4"  # others' keys stay
    assert after["metadata"]["labels"]["team"] == "bidding"
    # The old pin is gone from the container env, not merged into it.
    env = {e["name"] for e in after["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert "RTBSERVE_MODEL_VERSION_ID" not in env


def test_fixed_replicas_are_written() -> None:
    im = make_im({"replicas": 5})
    after = apply(
        live(im, A, replicas=2), deployment_patch(live(im, A, replicas=2), desired(im, A))
    )
    assert after["spec"]["replicas"] == 5


def test_patch_is_idempotent() -> None:
    im = make_im({"replicas": 3})
    current = live(im, A, replicas=1)
    after = apply(current, deployment_patch(current, desired(im, B)))
    assert deployment_patch(after, desired(im, B)) == []


def test_owner_reference_is_added_once_and_foreign_ones_kept() -> None:
    im = make_im({})
    current = live(im, A, replicas=2)
    foreign = {"apiVersion": "v1", "kind": "ConfigMap", "name": "x", "uid": "other"}
    current["metadata"]["ownerReferences"] = [foreign]
    after = apply(current, deployment_patch(current, desired(im, A)))
    assert after["metadata"]["ownerReferences"] == [foreign, OWNER_REF]
    assert not [
        op for op in deployment_patch(after, desired(im, A)) if "ownerReferences" in op["path"]
    ]
    bare = live(im, A, replicas=2)
    del bare["metadata"]["ownerReferences"]
    del bare["metadata"]["annotations"]
    after = apply(bare, deployment_patch(bare, desired(im, A)))
    assert after["metadata"]["ownerReferences"] == [OWNER_REF]
    assert "kubernetes.io/change-cause" in after["metadata"]["annotations"]


def test_annotation_keys_with_slashes_are_escaped() -> None:
    im = make_im({})
    current = live(im, A, replicas=2)
    ops = deployment_patch(current, desired(im, B))
    paths = {op["path"] for op in ops}
    assert "/metadata/annotations/kubernetes.io~1change-cause" in paths


def test_objects_of_others_are_never_taken_over() -> None:
    im = make_im({})
    ours = live(im, A, replicas=2)
    check_ours(ours, im)  # controlled by this InferenceModel

    orphan = copy.deepcopy(ours)
    del orphan["metadata"]["ownerReferences"]
    check_ours(orphan, im)  # made by the operator, orphaned: adopted again

    stranger = {"kind": "Deployment", "metadata": {"name": "ctr", "labels": {"app": "x"}}}
    with pytest.raises(OwnershipConflictError, match="not created by the operator") as info:
        check_ours(stranger, im)
    assert not info.value.retryable

    other = copy.deepcopy(ours)
    other["metadata"]["ownerReferences"] = [{**OWNER_REF, "kind": "Rollout", "uid": "u2"}]
    with pytest.raises(OwnershipConflictError, match="Rollout ctr") as info:
        check_ours(other, im)
    assert not info.value.retryable

    predecessor = copy.deepcopy(ours)
    predecessor["metadata"]["ownerReferences"] = [{**OWNER_REF, "uid": "old-uid"}]
    with pytest.raises(OwnershipConflictError, match="garbage-collected") as info:
        check_ours(predecessor, im)
    assert info.value.retryable
