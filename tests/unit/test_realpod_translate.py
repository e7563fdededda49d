"""The podman node's translation of a Pod (the operator's own Deployment template) and of
container states into a kubelet's pod status."""

from __future__ import annotations

from typing import Any

import pytest
from rtbserve_operator.builders import build_deployment
from rtbserve_operator.identity import ModelIdentity
from rtbserve_operator.spec import InferenceModel

from tests.realpod.translate import (
    ContainerState,
    HostView,
    play_manifest,
    pod_status,
    service_aliases,
)

A = ModelIdentity("s3://models/ctr/1/", "a" * 64, "va", "ctr", "1")
VIEW = HostView("kubernetes.default.svc", 6443, {"kubernetes.default.svc": "10.89.0.1"})


def api_pod() -> dict[str, Any]:
    body = {
        "metadata": {"name": "ctr", "namespace": "rtb", "uid": "u", "generation": 1},
        "spec": {"artifact": {"uri": A.uri}, "env": [{"name": "EXTRA", "value": "1"}]},
    }
    template = build_deployment(InferenceModel.from_body(body, "img:1"), A)["spec"]["template"]
    spec = template["spec"]
    spec["containers"][0]["env"].append(
        {"name": "POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}
    )
    meta = {"name": "ctr-abc12", "namespace": "rtb", "uid": "0123456789ab", **template["metadata"]}
    return {"metadata": meta, "spec": {**spec, "nodeName": "podman-graviton-0"}}


def test_the_played_pod_keeps_the_operators_security_and_env_but_not_its_probes() -> None:
    pod = api_pod()
    played = play_manifest(pod, VIEW, {"tmp": "/var/x/tmp"}, {"img:1": "img:1"})
    (container,) = played["spec"]["containers"]
    source = pod["spec"]["containers"][0]
    assert container["securityContext"] == source["securityContext"]
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert played["spec"]["securityContext"]["runAsUser"] == 10001
    assert container["command"] == ["rtbserve"]
    assert container["args"] == ["serve"]
    env = {e["name"]: e["value"] for e in container["env"]}
    assert env["RTBSERVE_MODEL_SHA256"] == A.sha256
    assert env["EXTRA"] == "1"
    assert env["POD"] == "ctr-abc12"
    assert env["KUBERNETES_SERVICE_HOST"] == "kubernetes.default.svc"
    assert env["KUBERNETES_SERVICE_PORT"] == "6443"
    assert not {"startupProbe", "readinessProbe", "livenessProbe", "ports"} & set(container)
    assert container["imagePullPolicy"] == "Never"
    assert played["spec"]["restartPolicy"] == "Never"
    assert played["spec"]["volumes"] == [
        {"name": "tmp", "hostPath": {"path": "/var/x/tmp", "type": "Directory"}}
    ]
    assert played["spec"]["hostAliases"] == [
        {"ip": "10.89.0.1", "hostnames": ["kubernetes.default.svc"]}
    ]
    assert played["metadata"]["name"] == "ctr-abc12-01234567"


def test_an_unsupported_field_reference_is_refused_by_name() -> None:
    pod = api_pod()
    pod["spec"]["containers"][0]["env"].append(
        {"name": "X", "valueFrom": {"fieldRef": {"fieldPath": "status.podIPs"}}}
    )
    with pytest.raises(ValueError, match=r"status\.podIPs"):
        play_manifest(pod, VIEW, {}, {"img:1": "img:1"})


def test_services_resolve_to_a_ready_endpoint_under_all_their_names() -> None:
    services = [{"metadata": {"name": "ctr", "namespace": "rtb"}}]
    slices = [
        {
            "metadata": {"name": "ctr-x", "labels": {"kubernetes.io/service-name": "ctr"}},
            "endpoints": [
                {"addresses": ["10.89.0.7"], "conditions": {"ready": False}},
                {"addresses": ["10.89.0.8"], "conditions": {"ready": True}},
            ],
        }
    ]
    aliases = service_aliases(services, slices)
    assert aliases == {
        "ctr": "10.89.0.8",
        "ctr.rtb": "10.89.0.8",
        "ctr.rtb.svc": "10.89.0.8",
        "ctr.rtb.svc.cluster.local": "10.89.0.8",
    }
    assert service_aliases(services, []) == {}


def status_of(pod: dict[str, Any], *states: ContainerState, ip: str | None = "10.89.0.9") -> Any:
    return pod_status(pod, states, pod_ip=ip, host_ip="10.89.0.1", start_time="t0", now="t1")


def test_pod_status_follows_the_containers() -> None:
    pod = api_pod()
    waiting = ContainerState("server", "img:1", waiting=("ImagePullBackOff", "Back-off"))
    status = status_of(pod, waiting, ip=None)
    assert status["phase"] == "Pending"
    assert status["containerStatuses"][0]["state"] == {
        "waiting": {"reason": "ImagePullBackOff", "message": "Back-off"}
    }
    running = ContainerState(
        "server", "img:1", running_since="t0", waiting=None, started=True, ready=True,
        container_id="c1", restarts=2, last_terminated={"exitCode": 3, "reason": "Error"},
    )  # fmt: skip
    status = status_of(pod, running)
    assert status["phase"] == "Running"
    assert status["podIP"] == "10.89.0.9"
    assert {c["type"]: c["status"] for c in status["conditions"]}["Ready"] == "True"
    (container,) = status["containerStatuses"]
    assert container["containerID"] == "podman://c1"
    assert container["restartCount"] == 2
    assert container["lastState"] == {"terminated": {"exitCode": 3, "reason": "Error"}}


def test_a_job_pod_ends_succeeded_or_failed_by_exit_code() -> None:
    pod = api_pod()
    pod["spec"]["restartPolicy"] = "Never"
    for code, phase in ((0, "Succeeded"), (1, "Failed")):
        done = ContainerState("loadgen", "img:1", waiting=None, terminated={"exitCode": code})
        assert status_of(pod, done)["phase"] == phase
