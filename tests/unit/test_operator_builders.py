"""The pure builders: InferenceModel (+ verified identity) -> Deployment, Service, HPA, PDB."""

from __future__ import annotations

from typing import Any

import pytest
from rtbserve_operator.builders import (
    NLB_ANNOTATIONS,
    build_deployment,
    build_hpa,
    build_pdb,
    build_service,
    change_cause,
    cpu_cores,
    initial_replicas,
    selector_labels,
)
from rtbserve_operator.defaults import DEFAULT_NODE_SELECTOR, DEFAULT_TOLERATIONS
from rtbserve_operator.identity import ModelIdentity, identity_of_deployment
from rtbserve_operator.spec import InferenceModel

SHA_A = "a" * 64
IDENTITY = ModelIdentity(
    uri="s3://models/ctr/1/", sha256=SHA_A, version_id="v-123", name="ctr", version="1"
)


def make_im(spec: dict[str, Any] | None = None, name: str = "ctr") -> InferenceModel:
    body = {
        "apiVersion": "rtbserve.io/v1alpha1",
        "kind": "InferenceModel",
        "metadata": {"name": name, "namespace": "rtb", "uid": "uid-1", "generation": 3},
        "spec": {"artifact": {"uri": "s3://models/ctr/1/"}, **(spec or {})},
    }
    return InferenceModel.from_body(body, default_image="rtbserve:test")


def pod_spec(deployment: dict[str, Any]) -> dict[str, Any]:
    spec: dict[str, Any] = deployment["spec"]["template"]["spec"]
    return spec


def container(deployment: dict[str, Any]) -> dict[str, Any]:
    c: dict[str, Any] = pod_spec(deployment)["containers"][0]
    return c


def env(deployment: dict[str, Any]) -> dict[str, str]:
    return {e["name"]: e["value"] for e in container(deployment)["env"]}


def test_identity_is_in_the_pod_template_env_and_annotations() -> None:
    dep = build_deployment(make_im(), IDENTITY)
    values = env(dep)
    assert values["RTBSERVE_MODEL_URI"] == IDENTITY.uri
    assert values["RTBSERVE_MODEL_SHA256"] == SHA_A
    assert values["RTBSERVE_MODEL_VERSION_ID"] == "v-123"
    annotations = dep["spec"]["template"]["metadata"]["annotations"]
    assert annotations["rtbserve.io/model-sha256"] == SHA_A
    assert annotations["rtbserve.io/model-version"] == "1"
    # What status reads back as "serving" is exactly what was built in.
    assert identity_of_deployment(dep) == IDENTITY


def test_a_different_model_changes_the_pod_template_but_not_the_selector() -> None:
    other = ModelIdentity("s3://models/ctr/2/", "b" * 64, None, "ctr", "2")
    a = build_deployment(make_im(), IDENTITY)
    b = build_deployment(make_im(), other)
    assert a["spec"]["template"] != b["spec"]["template"]
    assert a["spec"]["selector"] == b["spec"]["selector"]
    assert "RTBSERVE_MODEL_VERSION_ID" not in env(b)


def test_change_cause_names_the_model_for_rollout_history() -> None:
    dep = build_deployment(make_im(), IDENTITY)
    cause = dep["metadata"]["annotations"]["kubernetes.io/change-cause"]
    assert cause == change_cause(IDENTITY)
    assert "ctr 1" in cause
    assert SHA_A[:12] in cause
    assert IDENTITY.uri in cause
    assert dep["spec"]["revisionHistoryLimit"] >= 10


def test_no_replicas_when_an_hpa_owns_them() -> None:
    im = make_im({"autoscaling": {"minReplicas": 3, "maxReplicas": 9}})
    dep = build_deployment(im, IDENTITY)
    assert "replicas" not in dep["spec"]
    assert initial_replicas(im) == 3


def test_fixed_replicas_without_autoscaling() -> None:
    assert build_deployment(make_im(), IDENTITY)["spec"]["replicas"] == 2
    im = make_im({"replicas": 5})
    assert build_deployment(im, IDENTITY)["spec"]["replicas"] == 5
    assert initial_replicas(im) == 5
    assert build_hpa(im) is None


def test_restricted_pod_security() -> None:
    dep = build_deployment(make_im(), IDENTITY)
    pod = pod_spec(dep)
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] != 0
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert pod["automountServiceAccountToken"] is False
    sc = container(dep)["securityContext"]
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["capabilities"] == {"drop": ["ALL"]}
    # A read-only root still needs a writable /tmp: the server caches the model there.
    mounts = {m["mountPath"]: m["name"] for m in container(dep)["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert "emptyDir" in volumes[mounts["/tmp"]]
    assert volumes[mounts["/tmp"]]["emptyDir"]["sizeLimit"] == "2Gi"


def test_probes_and_drain() -> None:
    im = make_im({"server": {"drainSeconds": 20, "preStopSleepSeconds": 5}})
    dep = build_deployment(im, IDENTITY)
    c = container(dep)
    assert c["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert c["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert c["startupProbe"]["httpGet"]["path"] == "/healthz"
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert ports == {"thrift": 9090, "http": 8080}
    assert all(c[p]["httpGet"]["port"] == "http" for p in ("readinessProbe", "livenessProbe"))
    assert c["lifecycle"] == {"preStop": {"sleep": {"seconds": 5}}}
    assert pod_spec(dep)["terminationGracePeriodSeconds"] > 20 + 5
    assert env(dep)["RTBSERVE_DRAIN_SECONDS"] == "20"
    # Without a preStop sleep the server's own SIGTERM drain is relied on.
    assert "lifecycle" not in container(build_deployment(make_im(), IDENTITY))


def test_command_and_server_tuning_env() -> None:
    im = make_im(
        {
            "server": {"workers": 3, "connMaxAgeSeconds": 120, "maxBidders": 32},
            "env": [{"name": "AWS_REGION", "value": "us-east-1"}],
        }
    )
    dep = build_deployment(im, IDENTITY)
    assert container(dep)["command"] == ["rtbserve"]
    assert container(dep)["args"] == ["serve"]
    values = env(dep)
    assert values["RTBSERVE_WORKERS"] == "3"
    assert values["RTBSERVE_CONN_MAX_AGE_SECONDS"] == "120"
    assert values["RTBSERVE_MAX_BIDDERS"] == "32"
    assert values["RTBSERVE_THRIFT_PORT"] == "9090"
    assert values["AWS_REGION"] == "us-east-1"
    assert container(dep)["image"] == "rtbserve:test"


@pytest.mark.parametrize(
    ("cpu", "workers"), [("2", "2"), ("1500m", "1"), ("250m", "1"), (4, "4"), ("3.9", "3")]
)
def test_workers_default_to_whole_requested_cpus(cpu: Any, workers: str) -> None:
    im = make_im({"resources": {"requests": {"cpu": cpu, "memory": "1Gi"}}})
    assert env(build_deployment(im, IDENTITY))["RTBSERVE_WORKERS"] == workers


def test_no_workers_env_without_a_cpu_request() -> None:
    im = make_im({"resources": {"limits": {"memory": "1Gi"}}})
    assert "RTBSERVE_WORKERS" not in env(build_deployment(im, IDENTITY))


def test_cpu_cores() -> None:
    assert cpu_cores("500m") == 0.5
    assert cpu_cores(2) == 2.0
    assert cpu_cores("1Gi") is None


def test_default_placement_is_graviton_spread_over_zones() -> None:
    dep = build_deployment(make_im(), IDENTITY)
    pod = pod_spec(dep)
    assert pod["nodeSelector"] == DEFAULT_NODE_SELECTOR == {"kubernetes.io/arch": "arm64"}
    assert pod["tolerations"] == DEFAULT_TOLERATIONS
    preferred = pod["affinity"]["nodeAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"]
    assert preferred[0]["preference"]["matchExpressions"][0]["key"] == "rtbserve.io/pool"
    keys = [c["topologyKey"] for c in pod["topologySpreadConstraints"]]
    assert "topology.kubernetes.io/zone" in keys
    for constraint in pod["topologySpreadConstraints"]:
        assert constraint["labelSelector"]["matchLabels"] == selector_labels(make_im())
        assert constraint["matchLabelKeys"] == ["pod-template-hash"]


def test_placement_overrides_replace_the_defaults() -> None:
    affinity = {
        "nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {
                "nodeSelectorTerms": [
                    {"matchExpressions": [{"key": "x", "operator": "In", "values": ["y"]}]}
                ]
            }
        }
    }
    im = make_im(
        {
            "nodeSelector": {"kubernetes.io/arch": "amd64", "pool": "big"},
            "tolerations": [{"key": "dedicated", "operator": "Exists", "effect": "NoSchedule"}],
            "affinity": affinity,
            "topologySpreadConstraints": [],
        }
    )
    pod = pod_spec(build_deployment(im, IDENTITY))
    assert pod["nodeSelector"] == {"kubernetes.io/arch": "amd64", "pool": "big"}
    assert pod["tolerations"] == [
        {"key": "dedicated", "operator": "Exists", "effect": "NoSchedule"}
    ]
    assert pod["affinity"] == affinity
    assert pod["topologySpreadConstraints"] == []
    # An empty list is an override too: tolerate nothing.
    assert pod_spec(build_deployment(make_im({"tolerations": []}), IDENTITY))["tolerations"] == []


def test_builders_do_not_share_mutable_defaults() -> None:
    first = build_deployment(make_im(), IDENTITY)
    pod_spec(first)["tolerations"].append({"key": "junk"})
    pod_spec(first)["affinity"]["nodeAffinity"].clear()
    second = pod_spec(build_deployment(make_im(), IDENTITY))
    assert second["tolerations"] == DEFAULT_TOLERATIONS
    assert second["affinity"]["nodeAffinity"]


def test_service_is_an_internal_cross_zone_nlb_with_ip_targets() -> None:
    svc = build_service(make_im())
    annotations = svc["metadata"]["annotations"]
    assert annotations["service.beta.kubernetes.io/aws-load-balancer-type"] == "external"
    assert annotations["service.beta.kubernetes.io/aws-load-balancer-nlb-target-type"] == "ip"
    assert annotations["service.beta.kubernetes.io/aws-load-balancer-scheme"] == "internal"
    assert (
        annotations["service.beta.kubernetes.io/aws-load-balancer-attributes"]
        == "load_balancing.cross_zone.enabled=true"
    )
    assert svc["spec"]["type"] == "LoadBalancer"
    assert svc["spec"]["allocateLoadBalancerNodePorts"] is False
    ports = {p["name"]: (p["port"], p["targetPort"]) for p in svc["spec"]["ports"]}
    assert ports == {"thrift": (9090, "thrift"), "http-metrics": (8080, "http")}
    assert svc["spec"]["selector"] == selector_labels(make_im())


def test_service_annotation_overrides_and_cluster_ip() -> None:
    im = make_im(
        {
            "service": {
                "port": 19090,
                "annotations": {
                    "service.beta.kubernetes.io/aws-load-balancer-scheme": "internet-facing",
                    "service.beta.kubernetes.io/aws-load-balancer-nlb-target-type": "instance",
                    "example.com/team": "bidding",
                },
            }
        }
    )
    svc = build_service(im)
    annotations = svc["metadata"]["annotations"]
    assert annotations["service.beta.kubernetes.io/aws-load-balancer-scheme"] == "internet-facing"
    assert annotations["example.com/team"] == "bidding"
    assert annotations["service.beta.kubernetes.io/aws-load-balancer-type"] == "external"
    # Instance targets need node ports.
    assert svc["spec"]["allocateLoadBalancerNodePorts"] is True
    assert svc["spec"]["ports"][0]["port"] == 19090

    internal = build_service(make_im({"service": {"type": "ClusterIP"}}))
    assert internal["spec"]["type"] == "ClusterIP"
    assert not set(NLB_ANNOTATIONS) & set(internal["metadata"]["annotations"])
    assert "allocateLoadBalancerNodePorts" not in internal["spec"]


def test_hpa_cpu_and_requests_per_second() -> None:
    im = make_im(
        {
            "autoscaling": {
                "minReplicas": 3,
                "maxReplicas": 30,
                "targetCPUUtilizationPercentage": 55,
                "targetRequestsPerSecond": 20000,
            }
        }
    )
    hpa = build_hpa(im)
    assert hpa is not None
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": "ctr",
    }
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (3, 30)
    metrics = {m["type"]: m for m in hpa["spec"]["metrics"]}
    assert metrics["Resource"]["resource"]["target"]["averageUtilization"] == 55
    assert metrics["Pods"]["pods"]["metric"]["name"] == "rtbserve_requests_per_second"
    assert metrics["Pods"]["pods"]["target"] == {"type": "AverageValue", "averageValue": "20000"}
    cpu_only = build_hpa(make_im({"autoscaling": {"maxReplicas": 4}}))
    assert cpu_only is not None
    assert [m["type"] for m in cpu_only["spec"]["metrics"]] == ["Resource"]


def test_pdb_selects_the_pods_and_never_blocks_drains_on_unready_pods() -> None:
    im = make_im({"disruptionBudget": {"maxUnavailable": "25%"}})
    pdb = build_pdb(im)
    dep = build_deployment(im, IDENTITY)
    assert pdb["spec"]["selector"] == dep["spec"]["selector"]
    assert pdb["spec"]["maxUnavailable"] == "25%"
    assert pdb["spec"]["unhealthyPodEvictionPolicy"] == "AlwaysAllow"
    assert build_pdb(make_im())["spec"]["maxUnavailable"] == 1


def test_every_object_is_named_labelled_and_in_the_model_namespace() -> None:
    im = make_im({"autoscaling": {"maxReplicas": 4}}, name="fraud")
    hpa = build_hpa(im)
    assert hpa is not None
    objects = [build_deployment(im, IDENTITY), build_service(im), hpa, build_pdb(im)]
    for obj in objects:
        assert obj["metadata"]["name"] == "fraud"
        assert obj["metadata"]["namespace"] == "rtb"
        assert obj["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "rtbserve-operator"
        assert obj["metadata"]["labels"]["rtbserve.io/inferencemodel"] == "fraud"
    template_labels = objects[0]["spec"]["template"]["metadata"]["labels"]
    assert selector_labels(im).items() <= template_labels.items()


def test_pod_labels_cannot_override_the_selector() -> None:
    im = make_im({"podLabels": {"rtbserve.io/inferencemodel": "other", "team": "bid"}})
    labels = build_deployment(im, IDENTITY)["spec"]["template"]["metadata"]["labels"]
    assert labels["rtbserve.io/inferencemodel"] == "ctr"
    assert labels["team"] == "bid"


def test_rollout_strategy_never_drops_capacity_by_default() -> None:
    strategy = build_deployment(make_im(), IDENTITY)["spec"]["strategy"]
    assert strategy == {
        "type": "RollingUpdate",
        "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": 0},
    }
