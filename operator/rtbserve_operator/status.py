"""Pure derivation of an InferenceModel's status from what the cluster really runs.

Inputs: the InferenceModel (its spec and the identity the operator last verified and rolled
out), its Deployment, its Service and its pods (whose containers say why they cannot run).
Output: a JSON merge patch for `.status`. Fields written by others (`lastLoadTest`, by
loadgen) are never part of the patch, so they are never clobbered.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Any

from rtbserve_operator.capacity_target import CAPACITY_MEASURED, RpsTarget
from rtbserve_operator.conditions import (
    ARTIFACT_VERIFIED,
    AVAILABLE,
    DEGRADED,
    PROGRESSING,
    READY,
    ROLLED_BACK,
    Condition,
    find,
    merge,
)
from rtbserve_operator.identity import ModelIdentity, identity_of_deployment
from rtbserve_operator.pods import PodProblem, pod_problem_of


@dataclass(frozen=True)
class Problem:
    """Why the last spec could not be rolled out (invalid spec, objects the API refused)."""

    reason: str
    message: str

    def to_status(self) -> dict[str, str]:
        return {"reason": self.reason, "message": self.message}

    @classmethod
    def from_status(cls, data: Mapping[str, Any] | None) -> Problem | None:
        if not data or not data.get("reason"):
            return None
        return cls(str(data["reason"]), str(data.get("message", "")))


class _Keep(Enum):
    KEEP = "keep"


#: status_patch(rollout_error=KEEP) leaves the stored rolloutError as it is.
KEEP = _Keep.KEEP


@dataclass(frozen=True)
class Rollout:
    """Where a Deployment's rollout stands (the same rules as `kubectl rollout status`)."""

    complete: bool
    failed: bool
    message: str


def rollout_of(deployment: Mapping[str, Any]) -> Rollout:
    meta = deployment.get("metadata", {})
    spec = deployment.get("spec", {})
    status = deployment.get("status") or {}
    desired = int(spec.get("replicas", 1))
    updated = int(status.get("updatedReplicas", 0))
    total = int(status.get("replicas", 0))
    available = int(status.get("availableReplicas", 0))
    if int(status.get("observedGeneration", 0)) < int(meta.get("generation", 0)):
        return Rollout(False, False, "waiting for the Deployment controller to see the change")
    progressing = find(status.get("conditions"), "Progressing")
    if progressing and progressing.reason == "ProgressDeadlineExceeded":
        return Rollout(False, True, progressing.message or "rollout exceeded its progress deadline")
    if updated < desired:
        return Rollout(False, False, f"{updated} of {desired} pods run the new revision")
    if total > updated:
        return Rollout(False, False, f"{total - updated} old pods are terminating")
    if available < updated:
        return Rollout(False, False, f"{available} of {updated} new pods are available")
    return Rollout(True, False, f"{desired} pods run the current revision")


def endpoint_of(service: Mapping[str, Any] | None) -> str | None:
    """host:port clients should dial: the load balancer's name once provisioned, else in-cluster."""
    if not service:
        return None
    meta = service.get("metadata", {})
    spec = service.get("spec", {})
    port = next(
        (p.get("port") for p in spec.get("ports", []) if p.get("name") == "thrift"),
        None,
    )
    if spec.get("type") == "LoadBalancer":
        ingress = (service.get("status") or {}).get("loadBalancer", {}).get("ingress") or []
        host = next((i.get("hostname") or i.get("ip") for i in ingress if i), None)
        if not host:
            return None
    else:
        host = f"{meta.get('name')}.{meta.get('namespace')}.svc"
    return f"{host}:{port}" if port else host


def _verification(status: Mapping[str, Any], given: Condition | None) -> Condition:
    if given is not None:
        return given
    stored = find(status.get("conditions"), ARTIFACT_VERIFIED)
    return stored or Condition(ARTIFACT_VERIFIED, "Unknown", "Pending", "not verified yet")


def derive_conditions(
    verified: Condition,
    pinned: ModelIdentity | None,
    deployment: Mapping[str, Any] | None,
    problem: Problem | None = None,
    stuck: PodProblem | None = None,
) -> list[Condition]:
    serving = identity_of_deployment(deployment)
    if deployment is None:
        waiting = "no Deployment yet: it is created once an artifact is verified"
        if problem is not None:
            ready = Condition(READY, "False", problem.reason, problem.message)
            degraded = Condition(DEGRADED, "True", problem.reason, problem.message)
        elif verified.status == "False":
            ready = Condition(READY, "False", verified.reason, verified.message)
            degraded = Condition(DEGRADED, "True", "ArtifactRejected", verified.message)
        else:
            ready = Condition(READY, "False", "NoDeployment", waiting)
            degraded = Condition(DEGRADED, "False", "NoDeployment", waiting)
        return [
            verified,
            Condition(PROGRESSING, "False", "NoDeployment", waiting),
            Condition(AVAILABLE, "False", "NoDeployment", waiting),
            ready,
            degraded,
            Condition(ROLLED_BACK, "False", "NoDeployment", waiting),
        ]

    rollout = rollout_of(deployment)
    dstatus = deployment.get("status") or {}
    desired = int(deployment.get("spec", {}).get("replicas", 1))
    ready_count = int(dstatus.get("readyReplicas", 0))
    serving_text = serving.describe() if serving else "an unknown model"

    rolled_back = pinned is not None and serving is not None and serving.sha256 != pinned.sha256
    if rolled_back:
        assert pinned is not None
        rolled = Condition(
            ROLLED_BACK,
            "True",
            "DeploymentRolledBack",
            f"the Deployment runs {serving_text}, not {pinned.describe()} from the spec "
            "(e.g. after `kubectl rollout undo`); the operator leaves it so. Point "
            "spec.artifact at the model you want to keep.",
        )
    else:
        rolled = Condition(ROLLED_BACK, "False", "ServingSpecModel", f"serving {serving_text}")

    if rollout.failed:
        progressing = Condition(PROGRESSING, "False", "ProgressDeadlineExceeded", rollout.message)
    elif rollout.complete:
        progressing = Condition(PROGRESSING, "False", "RolloutComplete", rollout.message)
    else:
        progressing = Condition(PROGRESSING, "True", "RollingOut", rollout.message)

    dep_available = find(dstatus.get("conditions"), "Available")
    if dep_available is None:
        available = Condition(AVAILABLE, "Unknown", "Pending", "the Deployment reports nothing yet")
    else:
        available = Condition(
            AVAILABLE, dep_available.status, dep_available.reason, dep_available.message
        )

    replica_failure = find(dstatus.get("conditions"), "ReplicaFailure")
    if problem is not None:
        degraded = Condition(
            DEGRADED, "True", problem.reason, f"{problem.message}; still serving {serving_text}"
        )
    elif verified.status == "False":
        degraded = Condition(
            DEGRADED,
            "True",
            "ArtifactRejected",
            f"{verified.message}; still serving {serving_text}",
        )
    elif stuck is not None:
        degraded = Condition(
            DEGRADED, "True", stuck.reason, f"{stuck.message}; still serving {serving_text}"
        )
    elif rollout.failed:
        degraded = Condition(DEGRADED, "True", "ProgressDeadlineExceeded", rollout.message)
    elif replica_failure is not None and replica_failure.true:
        degraded = Condition(DEGRADED, "True", "ReplicaFailure", replica_failure.message)
    elif rollout.complete and ready_count < desired:
        degraded = Condition(
            DEGRADED, "True", "ReplicasUnavailable", f"{ready_count} of {desired} pods are ready"
        )
    else:
        degraded = Condition(DEGRADED, "False", "AsExpected", "")

    if problem is not None:
        ready = Condition(READY, "False", problem.reason, problem.message)
    elif verified.status != "True":
        ready = Condition(READY, "False", verified.reason, verified.message)
    elif rolled_back:
        ready = Condition(READY, "False", "RolledBack", rolled.message)
    elif not rollout.complete and stuck is not None:
        ready = Condition(READY, "False", stuck.reason, f"{rollout.message}; {stuck.message}")
    elif not rollout.complete:
        ready = Condition(READY, "False", "RollingOut", rollout.message)
    elif not available.true or ready_count < desired:
        ready = Condition(
            READY, "False", "ReplicasUnavailable", f"{ready_count} of {desired} pods are ready"
        )
    else:
        ready = Condition(
            READY, "True", "ModelServing", f"{ready_count} of {desired} pods serve {serving_text}"
        )
    return [verified, progressing, available, ready, degraded, rolled]


def status_patch(
    im: Mapping[str, Any],
    deployment: Mapping[str, Any] | None,
    service: Mapping[str, Any] | None,
    *,
    now: str,
    verified: Condition | None = None,
    artifact: ModelIdentity | None = None,
    observed_generation: int | None = None,
    rollout_error: Problem | _Keep | None = KEEP,
    autoscaling: RpsTarget | None = None,
    pods: Sequence[Mapping[str, Any]] = (),
) -> dict[str, Any]:
    """The `.status` merge patch. `pods` are the model-server pods of any revision.
    `verified`, `artifact`, `observed_generation`, `rollout_error` and `autoscaling` (the HPA's
    requests/s target and its condition) come from the rollout and capacity handlers; the
    Deployment/Service/Pod watchers leave them as stored."""
    status = im.get("status") or {}
    generation = int(im.get("metadata", {}).get("generation", 0))
    verified_cond = _verification(status, verified)
    pinned = artifact or ModelIdentity.from_status(status.get("artifact"))
    serving = identity_of_deployment(deployment)
    problem = (
        Problem.from_status(status.get("rolloutError"))
        if isinstance(rollout_error, _Keep)
        else rollout_error
    )
    conditions = derive_conditions(verified_cond, pinned, deployment, problem, pod_problem_of(pods))
    measured = (
        autoscaling.condition
        if autoscaling is not None
        else find(status.get("conditions"), CAPACITY_MEASURED)
    )
    if measured is not None:
        conditions = [*conditions, measured]
    dstatus = (deployment or {}).get("status") or {}
    patch: dict[str, Any] = {
        "conditions": merge(status.get("conditions"), conditions, now=now, generation=generation),
        "serving": serving.to_status() if serving else None,
        "replicas": int(deployment.get("spec", {}).get("replicas", 1)) if deployment else None,
        "readyReplicas": int(dstatus.get("readyReplicas", 0)) if deployment else None,
        "availableReplicas": int(dstatus.get("availableReplicas", 0)) if deployment else None,
        "updatedReplicas": int(dstatus.get("updatedReplicas", 0)) if deployment else None,
        "endpoint": endpoint_of(service),
    }
    if artifact is not None:
        patch["artifact"] = artifact.to_status()
    if observed_generation is not None:
        patch["observedGeneration"] = observed_generation
    if not isinstance(rollout_error, _Keep):
        patch["rolloutError"] = rollout_error.to_status() if rollout_error else None
    if autoscaling is not None:
        patch["autoscaling"] = autoscaling.to_status()
    return patch


def changes_anything(status: Mapping[str, Any], patch: Mapping[str, Any]) -> bool:
    """Whether applying `patch` would change `status` (skips no-op writes)."""
    for key, value in patch.items():
        current = status.get(key)
        if key == "conditions":
            strip = [{k: v for k, v in c.items() if k != "lastTransitionTime"} for c in value]
            have = [
                {k: v for k, v in c.items() if k != "lastTransitionTime"} for c in current or []
            ]
            if strip != have:
                return True
        elif isinstance(value, Mapping) and isinstance(current, Mapping):
            if any(current.get(k) != v for k, v in value.items()):
                return True
        elif current != value:
            return True
    return False
