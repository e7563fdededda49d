"""Status conditions the Kubernetes way: type, status, reason, message, lastTransitionTime."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

ARTIFACT_VERIFIED = "ArtifactVerified"
PROGRESSING = "Progressing"
AVAILABLE = "Available"
READY = "Ready"
DEGRADED = "Degraded"
ROLLED_BACK = "RolledBack"
# The HPA's requests/s target follows a measured capacity profile (capacity_target.py).
CAPACITY_MEASURED = "CapacityMeasured"
CONDITION_TYPES = (
    ARTIFACT_VERIFIED,
    PROGRESSING,
    AVAILABLE,
    READY,
    DEGRADED,
    ROLLED_BACK,
    CAPACITY_MEASURED,
)

Status = Literal["True", "False", "Unknown"]


@dataclass(frozen=True)
class Condition:
    type: str
    status: Status
    reason: str
    message: str = ""

    @property
    def true(self) -> bool:
        return self.status == "True"

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Condition:
        status = str(data.get("status", "Unknown"))
        return cls(
            type=str(data["type"]),
            status=status if status in ("True", "False") else "Unknown",  # type: ignore[arg-type]
            reason=str(data.get("reason", "")),
            message=str(data.get("message", "")),
        )


def now_rfc3339() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def find(conditions: Iterable[Mapping[str, Any]] | None, type_: str) -> Condition | None:
    for data in conditions or ():
        if data.get("type") == type_:
            return Condition.from_dict(data)
    return None


def merge(
    old: Sequence[Mapping[str, Any]] | None,
    new: Iterable[Condition],
    *,
    now: str,
    generation: int,
) -> list[dict[str, Any]]:
    """The new condition list; lastTransitionTime moves only when a condition's status changes."""
    previous = {str(c.get("type")): c for c in old or ()}
    out = []
    for cond in new:
        before = previous.get(cond.type)
        changed = before is None or before.get("status") != cond.status
        out.append(
            {
                "type": cond.type,
                "status": cond.status,
                "reason": cond.reason,
                "message": cond.message,
                "lastTransitionTime": (
                    now if before is None or changed else before.get("lastTransitionTime", now)
                ),
                "observedGeneration": generation,
            }
        )
    return out


@dataclass(frozen=True)
class Transition:
    type: str
    before: str | None  # None: the condition did not exist
    after: Condition


def transitions(
    old: Sequence[Mapping[str, Any]] | None, new: Sequence[Mapping[str, Any]]
) -> list[Transition]:
    """Conditions whose status changed between two lists (what deserves an event)."""
    previous = {str(c.get("type")): str(c.get("status")) for c in old or ()}
    out = []
    for data in new:
        cond = Condition.from_dict(data)
        before = previous.get(cond.type)
        if before != cond.status:
            out.append(Transition(cond.type, before, cond))
    return out
