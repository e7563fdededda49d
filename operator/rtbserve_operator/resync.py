"""A periodic re-derivation of every InferenceModel's status (status only, never rollouts)."""

from __future__ import annotations

import asyncio

from kubernetes.client.exceptions import ApiException

from rtbserve_operator.constants import API_VERSION, PLURAL
from rtbserve_operator.kube import Kind
from rtbserve_operator.reconcile import KopfLogger, OperatorContext, refresh
from rtbserve_operator.reporting import StatusConflictError

INFERENCE_MODELS = Kind(API_VERSION, PLURAL)


def resync_all(ctx: OperatorContext, logger: KopfLogger) -> int:
    """Refresh the status of every InferenceModel the operator watches; returns how many."""
    count = 0
    for namespace in ctx.namespaces or (None,):
        for im in ctx.kube.list(INFERENCE_MODELS, namespace):
            meta = im["metadata"]
            try:
                refresh(ctx, meta["namespace"], meta["name"])
            except (ApiException, StatusConflictError) as exc:
                logger.warning("status resync of %s/%s: %s", meta["namespace"], meta["name"], exc)
            count += 1
    return count


async def run_forever(ctx: OperatorContext, interval: float, logger: KopfLogger) -> None:
    while True:
        await asyncio.sleep(interval)
        try:
            await asyncio.to_thread(resync_all, ctx, logger)
        except Exception as exc:  # the API may be briefly unreachable; try again next round
            logger.warning("status resync failed: %s", exc)
