"""Write an InferenceModel's status from the cluster's current state, and announce changes.

Several handlers write the same status (the rollout handler, the Deployment and Service
watchers). Each write re-reads the InferenceModel, derives the whole status and patches it
conditionally on the resourceVersion it read, retrying on a conflict, so no writer loses
another's update. Events are posted only by the write that made a condition change.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, cast

import kopf
from kubernetes.client.exceptions import ApiException

from rtbserve_operator.builders import model_server_selector
from rtbserve_operator.conditions import DEGRADED, READY, ROLLED_BACK, now_rfc3339, transitions
from rtbserve_operator.constants import API_VERSION, PLURAL
from rtbserve_operator.kube import DEPLOYMENTS, PODS, SERVICES, KubeApi
from rtbserve_operator.metrics import ERRORS, STATUS_WRITES
from rtbserve_operator.status import changes_anything, status_patch

MAX_CONFLICT_RETRIES = 8
# Degraded reasons the rollout handler already posts its own event for.
_ANNOUNCED_ELSEWHERE = frozenset({"ArtifactRejected"})


class StatusConflictError(Exception):
    """The InferenceModel kept changing under us; the caller retries later."""


def as_body(obj: Mapping[str, Any]) -> kopf.Body:
    """A kopf Body view of a plain object (for events and ownerReferences)."""
    return obj if isinstance(obj, kopf.Body) else kopf.Body(cast(kopf.RawBody, dict(obj)))


def post_event(body: Mapping[str, Any], *, warning: bool, reason: str, message: str) -> None:
    """A Kubernetes event on the InferenceModel (queued by kopf, posted asynchronously)."""
    kopf.event(
        as_body(body), type="Warning" if warning else "Normal", reason=reason, message=message
    )


def announce(
    body: Mapping[str, Any],
    before: Sequence[Mapping[str, Any]] | None,
    after: Sequence[Mapping[str, Any]],
) -> None:
    for change in transitions(before, after):
        cond = change.after
        if change.type == ROLLED_BACK and cond.true:
            post_event(body, warning=True, reason="RolledBack", message=cond.message)
        elif change.type == ROLLED_BACK and change.before == "True":
            post_event(body, warning=False, reason="RollbackResolved", message=cond.message)
        elif change.type == READY and cond.true:
            post_event(body, warning=False, reason="Ready", message=cond.message)
        elif change.type == DEGRADED and cond.true and cond.reason not in _ANNOUNCED_ELSEWHERE:
            post_event(body, warning=True, reason=cond.reason, message=cond.message)


def write_status(
    kube: KubeApi, namespace: str, name: str, **from_rollout: Any
) -> dict[str, Any] | None:
    """Derive and store the status of InferenceModel `namespace/name`.

    `from_rollout` are status_patch's keyword arguments the rollout handler supplies
    (verified, artifact, observed_generation, rollout_error). Returns the updated object, or
    None when it no longer exists (or is being deleted).
    """
    for _ in range(MAX_CONFLICT_RETRIES):
        im = kube.get_custom(API_VERSION, PLURAL, namespace, name)
        if im is None or im["metadata"].get("deletionTimestamp"):
            return None
        deployment = kube.get(DEPLOYMENTS, namespace, name)
        service = kube.get(SERVICES, namespace, name)
        selector = ",".join(f"{k}={v}" for k, v in model_server_selector(name).items())
        pods = kube.list(PODS, namespace, selector) if deployment else []
        before = im.get("status") or {}
        patch = status_patch(im, deployment, service, now=now_rfc3339(), pods=pods, **from_rollout)
        if not changes_anything(before, patch):
            STATUS_WRITES.labels(result="unchanged").inc()
            return im
        body = {"metadata": {"resourceVersion": im["metadata"]["resourceVersion"]}, "status": patch}
        try:
            updated = kube.merge_patch_status(API_VERSION, PLURAL, namespace, name, body)
        except ApiException as exc:
            if exc.status == 409:
                STATUS_WRITES.labels(result="conflict").inc()
                continue
            if exc.status == 404:
                return None
            ERRORS.labels(kind="api").inc()
            raise
        STATUS_WRITES.labels(result="written").inc()
        announce(updated, before.get("conditions"), patch["conditions"])
        return updated
    raise StatusConflictError(f"{namespace}/{name} changed {MAX_CONFLICT_RETRIES} times in a row")
