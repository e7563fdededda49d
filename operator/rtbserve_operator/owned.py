"""Send the built objects to the API server.

The Deployment is written with a JSON patch of exactly the fields the operator owns, so an
HPA's replica count is never touched (the field is simply absent) and annotations others add
(revision numbers, `kubectl rollout` bookkeeping) are kept. Service, HPA and PDB carry no such
shared fields and use server-side apply.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from rtbserve_operator.builders import (
    build_deployment,
    build_hpa,
    build_load_test_job,
    build_pdb,
    build_service,
    initial_replicas,
)
from rtbserve_operator.constants import LABEL_MANAGED_BY, MANAGED_BY
from rtbserve_operator.identity import ModelIdentity
from rtbserve_operator.kube import DEPLOYMENTS, HPAS, JOBS, SERVICES, KubeApi
from rtbserve_operator.spec import InferenceModel

# Sets ownerReferences on a built object (kopf.adopt bound to the InferenceModel).
Adopt = Callable[[dict[str, Any]], None]


def _pointer(*parts: str) -> str:
    """An RFC 6901 JSON pointer."""
    return "".join("/" + p.replace("~", "~0").replace("/", "~1") for p in parts)


def _map_ops(
    current: Mapping[str, Any], desired: Mapping[str, str], *path: str
) -> list[dict[str, Any]]:
    """Set each desired key of a string map, leaving keys set by others in place."""
    if not current:
        return [{"op": "add", "path": _pointer(*path), "value": dict(desired)}] if desired else []
    return [
        {"op": "add", "path": _pointer(*path, key), "value": value}
        for key, value in desired.items()
        if current.get(key) != value
    ]


def deployment_patch(
    current: Mapping[str, Any], desired: Mapping[str, Any]
) -> list[dict[str, Any]]:
    """JSON patch ops turning `current` into `desired` in the fields the operator owns.

    Every key of desired `spec` is replaced whole (the pod template included, so removed
    env vars or tolerations really go away); `spec.replicas` is written only when desired
    has it, i.e. when no HPA owns it.
    """
    ops: list[dict[str, Any]] = []
    cur_meta = current.get("metadata", {})
    want_meta = desired.get("metadata", {})
    ops += _map_ops(
        cur_meta.get("labels") or {}, want_meta.get("labels") or {}, "metadata", "labels"
    )
    ops += _map_ops(
        cur_meta.get("annotations") or {},
        want_meta.get("annotations") or {},
        "metadata",
        "annotations",
    )
    have_uids = {ref.get("uid") for ref in cur_meta.get("ownerReferences") or []}
    for ref in want_meta.get("ownerReferences") or []:
        if ref.get("uid") in have_uids:
            continue
        if cur_meta.get("ownerReferences"):
            ops.append({"op": "add", "path": "/metadata/ownerReferences/-", "value": ref})
        else:
            ops.append({"op": "add", "path": "/metadata/ownerReferences", "value": [ref]})
            have_uids.add(ref.get("uid"))
    cur_spec = current.get("spec", {})
    for key, value in desired.get("spec", {}).items():
        if cur_spec.get(key) != value:
            ops.append({"op": "add", "path": _pointer("spec", key), "value": value})
    return ops


class OwnershipConflictError(Exception):
    """An object with the InferenceModel's name exists and belongs to something else.
    `retryable`: it belongs to an earlier InferenceModel of the same name, which garbage
    collection is about to remove."""

    def __init__(self, message: str, retryable: bool) -> None:
        super().__init__(message)
        self.retryable = retryable


def check_ours(current: Mapping[str, Any], im: InferenceModel) -> None:
    """Refuse to take over an object this InferenceModel does not own (never adopt strangers)."""
    meta = current.get("metadata", {})
    what = f"{current.get('kind', 'object')} {im.namespace}/{meta.get('name')}"
    controller = next((r for r in meta.get("ownerReferences") or [] if r.get("controller")), None)
    if controller is None:
        if (meta.get("labels") or {}).get(LABEL_MANAGED_BY) != MANAGED_BY:
            raise OwnershipConflictError(
                f"{what} exists and was not created by the operator; delete or rename it",
                retryable=False,
            )
        return  # ours, orphaned (e.g. `kubectl delete --cascade=orphan`): adopt it again
    if controller.get("uid") == im.uid:
        return
    earlier = controller.get("kind") == "InferenceModel" and controller.get("name") == im.name
    raise OwnershipConflictError(
        f"{what} is controlled by {controller.get('kind')} {controller.get('name')}"
        + (" (an earlier object of this name, being garbage-collected)" if earlier else ""),
        retryable=earlier,
    )


@dataclass(frozen=True)
class Applied:
    deployment: dict[str, Any]
    service: dict[str, Any]
    action: Literal["created", "updated", "unchanged"]


def apply_deployment(
    kube: KubeApi, im: InferenceModel, identity: ModelIdentity, adopt: Adopt
) -> tuple[dict[str, Any], Literal["created", "updated", "unchanged"]]:
    desired = build_deployment(im, identity)
    adopt(desired)
    current = kube.get(DEPLOYMENTS, im.namespace, im.name)
    if current is None:
        body = {**desired, "spec": {"replicas": initial_replicas(im), **desired["spec"]}}
        return kube.create(body), "created"
    check_ours(current, im)
    ops = deployment_patch(current, desired)
    if not ops:
        return current, "unchanged"
    patched = kube.json_patch(DEPLOYMENTS, im.namespace, im.name, ops)
    # The API server skips writes that change nothing once defaults are applied.
    changed = patched["metadata"].get("generation") != current["metadata"].get("generation")
    return patched, "updated" if changed else "unchanged"


def start_load_test(
    kube: KubeApi, im: InferenceModel, identity: ModelIdentity, adopt: Adopt
) -> str | None:
    """Create the load-test Job of `im` running `identity` unless it exists; its name or None.

    A Job is never changed: its name carries the model and the settings, so a finished run
    stays as it is (its result in status.lastLoadTest) until a new model or new settings.
    """
    job = build_load_test_job(im, identity)
    if job is None:
        return None
    name: str = job["metadata"]["name"]
    if kube.get(JOBS, im.namespace, name) is None:
        adopt(job)
        kube.create(job)
    return name


def apply_hpa(kube: KubeApi, im: InferenceModel, rps_target: int | None, adopt: Adopt) -> None:
    """The HPA of `im` with `rps_target` requests/s per pod (None: CPU only), or none."""
    hpa = build_hpa(im, rps_target)
    if hpa is None:
        kube.delete(HPAS, im.namespace, im.name)
    else:
        adopt(hpa)
        kube.apply(hpa)


def apply_all(
    kube: KubeApi,
    im: InferenceModel,
    identity: ModelIdentity,
    adopt: Adopt,
    rps_target: int | None = None,
) -> Applied:
    """Create or update the Deployment, Service, HPA and PDB of `im` to run `identity`.

    Idempotent: running it again with the same inputs changes nothing.
    """
    deployment, action = apply_deployment(kube, im, identity, adopt)
    existing_service = kube.get(SERVICES, im.namespace, im.name)
    if existing_service is not None:
        check_ours(existing_service, im)
    service = build_service(im)
    adopt(service)
    applied_service = kube.apply(service)
    apply_hpa(kube, im, rps_target, adopt)
    pdb = build_pdb(im)
    adopt(pdb)
    kube.apply(pdb)
    start_load_test(kube, im, identity, adopt)
    return Applied(deployment=deployment, service=applied_service, action=action)
