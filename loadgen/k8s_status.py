"""Record a run's summary in its InferenceModel's `status.lastLoadTest`.

A JSON merge patch through the status subresource, so only `lastLoadTest` changes and the
operator's own status fields are left alone. Configuration: in-cluster (service account)
when running in a pod, else KUBECONFIG / ~/.kube/config.

`status.lastLoadTest` (the CRD must allow these fields):
    time             string, RFC 3339 (UTC): when the run finished
    targetRate       number: scheduled requests per second (mean over the run)
    achievedRate     number: successful replies per second
    p50Ms, p99Ms     number: latency percentiles in milliseconds
    errors           integer: failed requests
    requests         integer: requests scheduled in the measured window
    durationSeconds  number: measured window length
    pods, failedPods integer: a merged run of many pods: how many, and how many failed
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, timedelta
from pathlib import Path
from typing import Any

from loadgen.aggregate import RunResult
from loadgen.exit_codes import ExitCode, LoadgenError

GROUP = "rtbserve.io"
VERSION = "v1alpha1"
PLURAL = "inferencemodels"
_SA_NAMESPACE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")


def last_load_test(result: RunResult, shards: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """The status summary; `shards`: each pod's status, for a merged run of many pods."""
    finished = result.started_at + timedelta(seconds=result.elapsed_s)
    pods = (
        {}
        if shards is None
        else {"pods": len(shards), "failedPods": sum(s["status"] != "ok" for s in shards)}
    )
    return pods | {
        "time": finished.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "targetRate": round(result.target_rate, 3),
        "achievedRate": round(result.achieved_rate, 3),
        "p50Ms": round(result.percentile_ms(50), 3),
        "p99Ms": round(result.percentile_ms(99), 3),
        "errors": result.error_count,
        "requests": result.scheduled,
        "durationSeconds": round(result.duration_s, 3),
    }


def _load_config() -> str | None:
    """Load client configuration; returns the kubeconfig's namespace when it names one."""
    from kubernetes import config as kube_config

    config: Any = kube_config  # the client's config helpers are untyped
    if os.environ.get("KUBERNETES_SERVICE_HOST"):
        config.load_incluster_config()
        return None
    try:
        config.load_kube_config()
        _, context = config.list_kube_config_contexts()
    except config.ConfigException as exc:
        raise LoadgenError(
            ExitCode.PUBLISH_FAILED,
            f"no Kubernetes configuration (in-cluster or KUBECONFIG): {exc}",
        ) from None
    namespace = (context or {}).get("context", {}).get("namespace")
    return namespace if isinstance(namespace, str) else None


def default_namespace(kubeconfig_namespace: str | None) -> str:
    if _SA_NAMESPACE.is_file():
        return _SA_NAMESPACE.read_text().strip()
    return kubeconfig_namespace or "default"


def write_last_load_test(name: str, namespace: str | None, summary: dict[str, Any]) -> str:
    """Patch `status.lastLoadTest` of InferenceModel `namespace/name`; returns the namespace."""
    return _patch_status(name, namespace, "lastLoadTest", summary)


def write_capacity(name: str, namespace: str | None, profile: dict[str, Any]) -> str:
    """Patch `status.capacity` (a capacity profile, loadgen/capacity_profile.py): the operator
    sets the HPA's requests/s target from it. Returns the namespace."""
    return _patch_status(name, namespace, "capacity", profile)


def read_capacity(name: str, namespace: str | None) -> tuple[str, dict[str, Any]]:
    """`status.capacity` of InferenceModel `namespace/name`, and the namespace read."""
    from kubernetes import client

    ns = _connect(namespace)
    with _api_errors(ns, name, "read the InferenceModel", verb="get", resource="inferencemodels"):
        obj: Any = client.CustomObjectsApi().get_namespaced_custom_object(
            GROUP, VERSION, ns, PLURAL, name
        )
    capacity = (obj.get("status") or {}).get("capacity")
    if not isinstance(capacity, dict):
        raise LoadgenError(
            ExitCode.PUBLISH_FAILED,
            f"InferenceModel {ns}/{name} has no status.capacity yet: run its load test with "
            "--find-saturation --profile-out (the operator's loadTest does)",
        )
    return ns, capacity


def _patch_status(name: str, namespace: str | None, field: str, value: dict[str, Any]) -> str:
    from kubernetes import client

    ns = _connect(namespace)
    with _api_errors(
        ns, name, f"write status.{field}", verb="patch", resource="inferencemodels/status"
    ):
        client.CustomObjectsApi().patch_namespaced_custom_object_status(
            GROUP,
            VERSION,
            ns,
            PLURAL,
            name,
            {"status": {field: value}},
            _content_type="application/merge-patch+json",
        )
    return ns


def _connect(namespace: str | None) -> str:
    """Load the client configuration; the namespace to use (given, or the pod's/kubeconfig's)."""
    kubeconfig_namespace = _load_config()
    return namespace or default_namespace(kubeconfig_namespace)


@contextmanager
def _api_errors(ns: str, name: str, action: str, *, verb: str, resource: str) -> Iterator[None]:
    """API and connection failures as a LoadgenError that says what to do."""
    from kubernetes.client.exceptions import ApiException
    from urllib3.exceptions import HTTPError

    try:
        yield
    except ApiException as exc:
        reason = {
            404: f"InferenceModel {ns}/{name} not found (is the CRD installed, the name right?)",
            403: f"forbidden: the service account needs '{verb}' on {resource}",
            422: f"the API server rejected it: {exc.body}",
        }.get(exc.status or 0, f"HTTP {exc.status}: {exc.reason}")
        raise LoadgenError(ExitCode.PUBLISH_FAILED, f"cannot {action}: {reason}") from None
    except (HTTPError, OSError) as exc:
        raise LoadgenError(
            ExitCode.PUBLISH_FAILED, f"cannot reach the Kubernetes API: {exc}"
        ) from None
