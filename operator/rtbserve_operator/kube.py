"""A small dict-in, dict-out Kubernetes REST client on top of the official client's transport.

The generated typed client converts every object into model classes and back; the operator
builds plain manifests, so it speaks JSON directly: get, create, server-side apply, JSON
(merge) patch and delete, by path. Authentication and TLS come from kubernetes.config.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from kubernetes import client as _k8s_client
from kubernetes import config as _k8s_config
from kubernetes.client.exceptions import ApiException

from rtbserve_operator.constants import FIELD_MANAGER

JSON = "application/json"
MERGE_PATCH = "application/merge-patch+json"
JSON_PATCH = "application/json-patch+json"
APPLY_PATCH = "application/apply-patch+yaml"
# The client library's functions carry no annotations; use them as Any.
k8s_client: Any = _k8s_client
k8s_config: Any = _k8s_config
REQUEST_TIMEOUT_SECONDS = 30


@dataclass(frozen=True)
class Kind:
    """Where a namespaced resource lives in the REST API."""

    api_version: str  # "apps/v1", "v1"
    plural: str

    def path(
        self, namespace: str | None, name: str | None = None, subresource: str | None = None
    ) -> str:
        """The object's path; with neither namespace nor name, the cluster-wide collection."""
        root = "/api/v1" if self.api_version == "v1" else f"/apis/{self.api_version}"
        if namespace is None:
            return f"{root}/{self.plural}"
        path = f"{root}/namespaces/{namespace}/{self.plural}"
        if name is not None:
            path += f"/{name}"
        if subresource is not None:
            path += f"/{subresource}"
        return path


DEPLOYMENTS = Kind("apps/v1", "deployments")
SERVICES = Kind("v1", "services")
HPAS = Kind("autoscaling/v2", "horizontalpodautoscalers")
PDBS = Kind("policy/v1", "poddisruptionbudgets")
JOBS = Kind("batch/v1", "jobs")
PODS = Kind("v1", "pods")


def kind_of(obj: Mapping[str, Any]) -> Kind:
    plurals = {
        "Deployment": DEPLOYMENTS,
        "Service": SERVICES,
        "HorizontalPodAutoscaler": HPAS,
        "PodDisruptionBudget": PDBS,
        "Job": JOBS,
    }
    return plurals[str(obj["kind"])]


class KubeApi:
    """Thread-safe (urllib3 pool underneath): kopf runs sync handlers in a thread pool."""

    def __init__(self, api_client: Any) -> None:
        self._api = api_client

    @classmethod
    def from_environment(cls) -> KubeApi:
        """In-cluster service account when running in a pod, else KUBECONFIG / ~/.kube/config."""
        configuration = k8s_client.Configuration()
        try:
            k8s_config.load_incluster_config(client_configuration=configuration)
        except k8s_config.ConfigException:
            k8s_config.load_kube_config(client_configuration=configuration)
        return cls(k8s_client.ApiClient(configuration))

    def close(self) -> None:
        self._api.close()

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        content_type: str = JSON,
        query: Sequence[tuple[str, str]] = (),
    ) -> dict[str, Any]:
        headers = {"Accept": JSON, "Content-Type": content_type}
        method_, url, headers_, body_, post = self._api.param_serialize(
            method,
            path,
            query_params=list(query),
            header_params=headers,
            body=body,
            auth_settings=["BearerToken"],
        )
        response = self._api.call_api(
            method_, url, headers_, body_, post, _request_timeout=REQUEST_TIMEOUT_SECONDS
        )
        data: bytes = response.read()
        if not 200 <= response.status <= 299:
            raise ApiException(http_resp=response)
        return json.loads(data) if data else {}

    def get(self, kind: Kind, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            return self.request("GET", kind.path(namespace, name))
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise

    def list(
        self, kind: Kind, namespace: str | None, label_selector: str | None = None
    ) -> list[dict[str, Any]]:
        """Every object of `kind` in `namespace` (None: all namespaces), optionally only those
        matching `label_selector` ("key=value,...")."""
        items: list[dict[str, Any]] = []
        token = ""
        selector = [("labelSelector", label_selector)] if label_selector else []
        while True:
            query = [("limit", "500"), *selector] + ([("continue", token)] if token else [])
            page = self.request("GET", kind.path(namespace), query=query)
            items += page.get("items", [])
            token = page.get("metadata", {}).get("continue", "")
            if not token:
                return items

    def create(self, obj: Mapping[str, Any]) -> dict[str, Any]:
        kind = kind_of(obj)
        return self.request(
            "POST",
            kind.path(obj["metadata"]["namespace"]),
            dict(obj),
            query=[("fieldManager", FIELD_MANAGER)],
        )

    def apply(self, obj: Mapping[str, Any]) -> dict[str, Any]:
        """Server-side apply: fields we stop sending are removed, others' fields are kept."""
        kind = kind_of(obj)
        meta = obj["metadata"]
        return self.request(
            "PATCH",
            kind.path(meta["namespace"], meta["name"]),
            dict(obj),
            content_type=APPLY_PATCH,
            query=[("fieldManager", FIELD_MANAGER), ("force", "true")],
        )

    def json_patch(
        self, kind: Kind, namespace: str, name: str, ops: Sequence[Mapping[str, Any]]
    ) -> dict[str, Any]:
        return self.request(
            "PATCH",
            kind.path(namespace, name),
            [dict(op) for op in ops],
            content_type=JSON_PATCH,
            query=[("fieldManager", FIELD_MANAGER)],
        )

    def delete(self, kind: Kind, namespace: str, name: str) -> bool:
        """True if it was there."""
        try:
            self.request("DELETE", kind.path(namespace, name))
        except ApiException as exc:
            if exc.status == 404:
                return False
            raise
        return True

    def get_custom(
        self, group_version: str, plural: str, namespace: str, name: str
    ) -> dict[str, Any] | None:
        return self.get(Kind(group_version, plural), namespace, name)

    def merge_patch_status(
        self, group_version: str, plural: str, namespace: str, name: str, patch: Mapping[str, Any]
    ) -> dict[str, Any]:
        """A JSON merge patch of the status subresource (conditional if it names a
        metadata.resourceVersion: the server answers 409 when the object changed since)."""
        return self.request(
            "PATCH",
            Kind(group_version, plural).path(namespace, name, "status"),
            dict(patch),
            content_type=MERGE_PATCH,
            query=[("fieldManager", FIELD_MANAGER)],
        )
