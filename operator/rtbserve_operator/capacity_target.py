"""The HPA's requests-per-second target per pod, from the measured capacity of the model served.

With `spec.autoscaling.metric: requestsPerSecond` and no hand-set target, the target is
`capacityShare` (default 0.7) of what one pod of the serving model sustains at
`capacitySloP99Ms` (default 2 ms), read from `status.capacity`: the capacity profile the
load test wrote (`rtbserve loadgen --profile-out --inference-model`). A profile of another
model, or none, keeps the previous target and says so; a hand-set target always wins.
Pure: the handlers apply what `resolve` returns.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from loadgen.capacity_profile import ProfileError, parse_profile
from rtbserve_operator.conditions import CAPACITY_MEASURED, Condition
from rtbserve_operator.spec import AutoscalingSpec

__all__ = ["CAPACITY_MEASURED", "RpsTarget", "resolve"]


@dataclass(frozen=True)
class RpsTarget:
    """The per-pod target (None: CPU only), where it came from, and the condition to report."""

    value: int | None
    source: str
    condition: Condition | None

    def to_status(self) -> dict[str, Any]:
        return {"targetRequestsPerSecond": self.value, "source": self.source}


def _measured(reason: str, message: str, ok: bool) -> Condition:
    return Condition(CAPACITY_MEASURED, "True" if ok else "False", reason, message)


def resolve(
    auto: AutoscalingSpec | None,
    serving_sha256: str | None,
    capacity: Mapping[str, Any] | None,
    previous: Mapping[str, Any] | None,
) -> RpsTarget:
    """The target for `auto`, the model `serving_sha256`, `status.capacity` and the target
    in `status.autoscaling` (`previous`)."""
    if auto is None:
        return RpsTarget(None, "no autoscaling", None)
    if auto.target_requests_per_second is not None:
        return RpsTarget(auto.target_requests_per_second, "spec.autoscaling", None)
    if auto.metric != "requestsPerSecond":
        return RpsTarget(None, "CPU only", None)
    kept = (previous or {}).get("targetRequestsPerSecond")
    kept_value = int(kept) if isinstance(kept, int) and kept > 0 else None

    def keep(reason: str, why: str) -> RpsTarget:
        if kept_value is None:
            return RpsTarget(None, f"CPU only: {why}", _measured(reason, f"{why}; CPU only", False))
        source = str((previous or {}).get("source", "an earlier profile"))
        message = f"{why}; the HPA keeps {kept_value} req/s per pod ({source})"
        return RpsTarget(kept_value, source, _measured(reason, message, False))

    model = (serving_sha256 or "")[:12] or "the model"
    if not capacity:
        return keep("ProfileMissing", f"no capacity profile for {model} yet")
    try:
        profile = parse_profile(orjson.dumps(dict(capacity)), "status.capacity")
    except ProfileError as exc:
        return keep("ProfileInvalid", str(exc))
    if serving_sha256 and profile.model.sha256 != serving_sha256:
        return keep(
            "ProfileOfOtherModel",
            f"status.capacity measured {profile.model.sha256[:12]}, not the serving {model}",
        )
    try:
        rps = profile.capacity(auto.capacity_slo_p99_ms)
    except ProfileError as exc:
        return keep("ProfileMissing", str(exc))
    value = max(1, math.floor(rps * auto.capacity_share))
    source = (
        f"{auto.capacity_share:.0%} of {rps:,.0f} req/s at p99 <= "
        f"{auto.capacity_slo_p99_ms:g} ms, measured {profile.measured_at} for {model}"
    )
    return RpsTarget(
        value, source, _measured("Measured", f"target {value} req/s per pod: {source}", True)
    )
