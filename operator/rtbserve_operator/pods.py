"""What the model-server pods themselves say when they cannot run: a pure reading of pod status.

A Deployment reports only counts: a pod stuck pulling a bad image, or a container that crashes
on start, shows there as "0 of 2 new pods are available" until the progress deadline passes
minutes later. The kubelet says why at once, in the container's waiting state; this module
turns that into the one problem the InferenceModel's status reports.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

# Waiting reasons the kubelet gives for a container that will not run without a change.
# (ContainerCreating and PodInitializing are normal and pass on their own.)
STUCK_REASONS = frozenset(
    {
        "ErrImagePull",
        "ImagePullBackOff",
        "InvalidImageName",
        "ErrImageNeverPull",
        "CrashLoopBackOff",
        "CreateContainerConfigError",
        "CreateContainerError",
        "RunContainerError",
    }
)
MESSAGE_LIMIT = 300


@dataclass(frozen=True)
class PodProblem:
    reason: str  # the kubelet's waiting reason, e.g. ImagePullBackOff
    message: str
    pods: int  # how many pods are stuck for this reason


def _last_exit(status: Mapping[str, Any]) -> str:
    terminated = (status.get("lastState") or {}).get("terminated") or {}
    if not terminated:
        return ""
    code = terminated.get("exitCode")
    why = terminated.get("reason") or "exited"
    return f" (last run: {why}, exit code {code})"


def _stuck_container(pod: Mapping[str, Any]) -> tuple[str, str] | None:
    status = pod.get("status") or {}
    for container in [
        *(status.get("initContainerStatuses") or []),
        *(status.get("containerStatuses") or []),
    ]:
        waiting = (container.get("state") or {}).get("waiting") or {}
        reason = waiting.get("reason")
        if reason in STUCK_REASONS:
            detail = str(waiting.get("message") or "")[:MESSAGE_LIMIT]
            text = f"container {container.get('name')}: {reason}"
            if detail:
                text += f": {detail}"
            return str(reason), text + _last_exit(container)
    return None


def pod_problem_of(pods: Iterable[Mapping[str, Any]]) -> PodProblem | None:
    """The first stuck reason among the pods (by name, so the message is stable), with how
    many pods share it; None when no container is stuck."""
    found: list[tuple[str, str, str]] = []
    for pod in pods:
        meta = pod.get("metadata") or {}
        if meta.get("deletionTimestamp"):
            continue
        stuck = _stuck_container(pod)
        if stuck is not None:
            found.append((str(meta.get("name", "")), *stuck))
    if not found:
        return None
    found.sort()
    name, reason, text = found[0]
    same = sum(1 for _, r, _ in found if r == reason)
    others = f" ({same - 1} more pods likewise)" if same > 1 else ""
    return PodProblem(reason, f"pod {name}: {text}{others}", same)
