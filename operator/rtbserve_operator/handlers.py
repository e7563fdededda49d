"""kopf handlers: thin wrappers that hand each event to `reconcile`.

Sync handlers on purpose: kopf runs them in its thread pool, so the blocking S3 downloads,
checksums and model loads never stall the event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import kopf

from rtbserve_operator import reconcile, resync
from rtbserve_operator.constants import (
    GROUP,
    LABEL_INFERENCE_MODEL,
    LABEL_MANAGED_BY,
    MANAGED_BY,
    PLURAL,
    VERSION,
)
from rtbserve_operator.metrics import RECONCILES
from rtbserve_operator.reconcile import KopfLogger

REGISTRY = kopf.OperatorRegistry()
OWNED = {LABEL_MANAGED_BY: MANAGED_BY}
# Status is re-derived on every owned-object event; a periodic pass is the safety net for an
# event whose status write failed.
STATUS_RESYNC_SECONDS = 60.0


def _ctx(memo: Any) -> reconcile.OperatorContext:
    ctx: reconcile.OperatorContext = memo["ctx"]
    return ctx


def _counted(handler: str, fn: Any, *args: Any, **kwargs: Any) -> None:
    try:
        fn(*args, **kwargs)
    except kopf.TemporaryError:
        RECONCILES.labels(handler=handler, result="retry").inc()
        raise
    except kopf.PermanentError:
        RECONCILES.labels(handler=handler, result="failed").inc()
        raise
    except Exception:
        RECONCILES.labels(handler=handler, result="error").inc()
        raise
    RECONCILES.labels(handler=handler, result="ok").inc()


# field="spec": metadata or status changes (ours, loadgen's) never trigger a rollout.
@kopf.on.create(GROUP, VERSION, PLURAL, registry=REGISTRY, id="rollout")
@kopf.on.update(GROUP, VERSION, PLURAL, field="spec", registry=REGISTRY, id="rollout")
def rollout(body: kopf.Body, retry: int, memo: Any, logger: KopfLogger, **_: Any) -> None:
    _counted("rollout", reconcile.roll_out, _ctx(memo), body, retry=retry, logger=logger)


# A new capacity profile (written by the load test) moves the HPA's requests/s target.
@kopf.on.field(GROUP, VERSION, PLURAL, field="status.capacity", registry=REGISTRY, id="capacity")
def capacity(body: kopf.Body, memo: Any, logger: KopfLogger, **_: Any) -> None:
    _counted("capacity", reconcile.retarget, _ctx(memo), body, logger=logger)


@kopf.on.login(registry=REGISTRY)
def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
    """In a pod its ServiceAccount, elsewhere KUBECONFIG (exec plugins such as
    `aws eks get-token` included), through the official client's own configuration loading.
    (kopf registers this by default only in its global registry, not in ours.)"""
    info: kopf.ConnectionInfo | None = kopf.login_via_client(**kwargs)
    return info


@kopf.on.startup(registry=REGISTRY)
async def start_status_resync(memo: Any, logger: KopfLogger, **_: Any) -> None:
    """Status only, never the Deployment. (Not a kopf.timer: timers put a finalizer on every
    InferenceModel, and deletion would then hang whenever the operator is down.)"""
    memo["resync"] = asyncio.create_task(
        resync.run_forever(_ctx(memo), STATUS_RESYNC_SECONDS, logger)
    )


@kopf.on.cleanup(registry=REGISTRY)
async def stop_status_resync(memo: Any, **_: Any) -> None:
    task = memo.get("resync")
    if task is not None:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


@kopf.on.event("apps", "v1", "deployments", labels=OWNED, registry=REGISTRY)
def deployment_changed(namespace: str | None, labels: kopf.Labels, memo: Any, **_: Any) -> None:
    _counted(
        "deployment", reconcile.refresh, _ctx(memo), namespace, labels.get(LABEL_INFERENCE_MODEL)
    )


# A container stuck pulling its image or crashing is reported at once, not at the Deployment's
# progress deadline. (Load-test pods carry no inferencemodel label, so they refresh nothing.)
@kopf.on.event("v1", "pods", labels=OWNED, registry=REGISTRY)
def pod_changed(namespace: str | None, labels: kopf.Labels, memo: Any, **_: Any) -> None:
    _counted("pod", reconcile.refresh, _ctx(memo), namespace, labels.get(LABEL_INFERENCE_MODEL))


@kopf.on.event("v1", "services", labels=OWNED, registry=REGISTRY)
def service_changed(namespace: str | None, labels: kopf.Labels, memo: Any, **_: Any) -> None:
    _counted("service", reconcile.refresh, _ctx(memo), namespace, labels.get(LABEL_INFERENCE_MODEL))
