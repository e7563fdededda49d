"""What happens when an InferenceModel's spec is new: verify the artifact, then roll it out.

Called only for a created object or a changed spec (never periodically), so a
`kubectl rollout undo` of the Deployment stands until the spec changes again.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import kopf
from kubernetes.client.exceptions import ApiException

from rtbserve_operator.capacity_target import resolve
from rtbserve_operator.conditions import ARTIFACT_VERIFIED, Condition, find
from rtbserve_operator.identity import ModelIdentity, same_model, to_verify
from rtbserve_operator.kube import KubeApi
from rtbserve_operator.metrics import ERRORS, ROLLOUTS
from rtbserve_operator.owned import OwnershipConflictError, apply_all, apply_hpa
from rtbserve_operator.reporting import as_body, post_event, write_status
from rtbserve_operator.spec import InferenceModel, InvalidSpecError
from rtbserve_operator.status import Problem
from rtbserve_operator.verify import ArtifactUnusableError, verify_artifact

MAX_RETRY_DELAY_SECONDS = 300
# kopf re-runs a delayed handler only when its delay is over, even if the spec changed
# meanwhile; a short cap keeps a fixed spec from waiting long behind a missing artifact.
MAX_ARTIFACT_RETRY_DELAY_SECONDS = 60
KopfLogger = logging.Logger | logging.LoggerAdapter[Any]


@dataclass(frozen=True)
class OperatorContext:
    """What every handler needs; kopf hands it over in `memo`."""

    kube: KubeApi
    scratch_dir: Path
    default_image: str
    namespaces: tuple[str, ...] | None = None  # None: all namespaces


def retry_delay(retry: int, first: float = 5, cap: float = MAX_RETRY_DELAY_SECONDS) -> float:
    """Exponential backoff for kopf.TemporaryError: first, 2 * first, 4 * first ... up to cap."""
    return float(min(first * 2 ** min(retry, 16), cap))


def _reject(
    kube: KubeApi, body: Mapping[str, Any], generation: int, problem: Problem
) -> kopf.PermanentError:
    meta = body["metadata"]
    write_status(
        kube, meta["namespace"], meta["name"], rollout_error=problem, observed_generation=generation
    )
    post_event(body, warning=True, reason=problem.reason, message=problem.message)
    return kopf.PermanentError(f"{problem.reason}: {problem.message}")


def roll_out(
    ctx: OperatorContext, body: Mapping[str, Any], *, retry: int, logger: KopfLogger
) -> None:
    meta = body["metadata"]
    namespace, name = meta["namespace"], meta["name"]
    generation = int(meta.get("generation", 0))
    try:
        im = InferenceModel.from_body(body, ctx.default_image)
    except InvalidSpecError as exc:
        raise _reject(ctx.kube, body, generation, Problem("InvalidSpec", str(exc))) from exc

    uri = im.spec.artifact.uri
    pinned = ModelIdentity.from_status((body.get("status") or {}).get("artifact"))
    new_model = not same_model(im.spec.artifact, pinned)
    if retry == 0 and new_model:
        verifying = Condition(ARTIFACT_VERIFIED, "Unknown", "Verifying", f"verifying {uri}")
        write_status(ctx.kube, namespace, name, verified=verifying)
    try:
        identity = verify_artifact(to_verify(im.spec.artifact, pinned), ctx.scratch_dir)
    except ArtifactUnusableError as problem:
        logger.warning("artifact %s rejected: %s", uri, problem)
        rejected = Condition(ARTIFACT_VERIFIED, "False", problem.reason, problem.message)
        write_status(
            ctx.kube,
            namespace,
            name,
            verified=rejected,
            observed_generation=generation,
            rollout_error=None,
        )
        before = find((body.get("status") or {}).get("conditions"), ARTIFACT_VERIFIED)
        # A retry that fails the same way only logs: the condition already says it.
        if retry == 0 or before is None or before.reason != problem.reason:
            post_event(
                body,
                warning=True,
                reason=problem.reason,
                message=f"{problem.message}; the running model is left unchanged",
            )
        if problem.retryable:
            ERRORS.labels(kind="s3").inc()
            raise kopf.TemporaryError(
                str(problem),
                delay=retry_delay(retry, first=10, cap=MAX_ARTIFACT_RETRY_DELAY_SECONDS),
            ) from problem
        raise kopf.PermanentError(str(problem)) from problem

    logger.info("verified %s: %s", uri, identity.describe())
    verified = Condition(
        ARTIFACT_VERIFIED, "True", "Verified", f"{identity.describe()} from {identity.uri}"
    )
    status = body.get("status") or {}
    target = resolve(
        im.spec.autoscaling, identity.sha256, status.get("capacity"), status.get("autoscaling")
    )
    try:
        applied = apply_all(
            ctx.kube,
            im,
            identity,
            adopt=lambda obj: kopf.adopt(obj, owner=as_body(body)),
            rps_target=target.value,
        )
    except OwnershipConflictError as exc:
        if exc.retryable:
            raise kopf.TemporaryError(str(exc), delay=retry_delay(retry)) from exc
        raise _reject(ctx.kube, body, generation, Problem("OwnershipConflict", str(exc))) from exc
    except ApiException as exc:
        if exc.status in (400, 422):  # the API server refuses what this spec produces
            message = f"the API server refused an owned object: {exc.reason}: {exc.body}"
            raise _reject(ctx.kube, body, generation, Problem("InvalidObject", message)) from exc
        ERRORS.labels(kind="api").inc()
        raise kopf.TemporaryError(
            f"Kubernetes API error {exc.status}: {exc.reason}", delay=retry_delay(retry)
        ) from exc

    ROLLOUTS.labels(action=applied.action).inc()
    write_status(
        ctx.kube,
        namespace,
        name,
        verified=verified,
        artifact=identity,
        observed_generation=generation,
        rollout_error=None,
        autoscaling=target,
    )
    if applied.action == "unchanged":
        post_event(body, warning=False, reason="Verified", message=verified.message)
    else:
        post_event(
            body,
            warning=False,
            reason="RollingOut",
            message=f"{applied.action} Deployment {name} for {identity.describe()}",
        )


def retarget(ctx: OperatorContext, body: Mapping[str, Any], *, logger: KopfLogger) -> None:
    """status.capacity changed: the HPA's requests/s target follows the new measurement."""
    meta = body["metadata"]
    status = body.get("status") or {}
    pinned = ModelIdentity.from_status(status.get("artifact"))
    if pinned is None:
        return  # nothing verified yet: the rollout sets the target when it applies the HPA
    try:
        im = InferenceModel.from_body(body, ctx.default_image)
    except InvalidSpecError:
        return  # the rollout handler reports it
    before = status.get("autoscaling") or {}
    target = resolve(
        im.spec.autoscaling, pinned.sha256, status.get("capacity"), status.get("autoscaling")
    )
    if im.spec.autoscaling is not None and (
        target.value != before.get("targetRequestsPerSecond")
        or target.source != before.get("source")
    ):
        apply_hpa(ctx.kube, im, target.value, lambda obj: kopf.adopt(obj, owner=as_body(body)))
        logger.info("HPA target %s req/s per pod (%s)", target.value, target.source)
        if target.condition is not None and target.value is not None:
            post_event(
                body,
                warning=not target.condition.true,
                reason=target.condition.reason,
                message=target.condition.message,
            )
    write_status(ctx.kube, meta["namespace"], meta["name"], autoscaling=target)


def refresh(ctx: OperatorContext, namespace: str | None, owner: str | None) -> None:
    """Re-derive an InferenceModel's status after one of its objects changed."""
    if namespace and owner:
        write_status(ctx.kube, namespace, owner)
