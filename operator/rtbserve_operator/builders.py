"""Pure functions from an InferenceModel (+ the verified model identity) to its owned objects.

No I/O here: handlers call these, adopt the results (ownerReferences) and send them.
"""

from __future__ import annotations

import copy
import hashlib
import math
import re
from typing import Any

from rtbserve_operator.constants import (
    ANNOTATION_CHANGE_CAUSE,
    APP_NAME,
    HTTP_PORT,
    HTTP_PORT_NAME,
    LABEL_COMPONENT,
    LABEL_INFERENCE_MODEL,
    LABEL_INSTANCE,
    LABEL_MANAGED_BY,
    LABEL_NAME,
    MANAGED_BY,
    RPS_METRIC,
    RUN_AS_USER,
    THRIFT_PORT,
    THRIFT_PORT_NAME,
    TMP_MOUNT_PATH,
    TMP_VOLUME,
)
from rtbserve_operator.defaults import (
    DEFAULT_AFFINITY,
    DEFAULT_NODE_SELECTOR,
    DEFAULT_RESOURCES,
    DEFAULT_TOLERATIONS,
    SPREAD_TOPOLOGY_KEYS,
)
from rtbserve_operator.identity import ModelIdentity
from rtbserve_operator.spec import InferenceModel

CONTAINER_NAME = "model-server"
REVISION_HISTORY_LIMIT = 10
# Time for pods to become ready before the Deployment reports ProgressDeadlineExceeded.
PROGRESS_DEADLINE_SECONDS = 600
# Extra grace beyond preStop + drain, for the process to close sockets and exit.
TERMINATION_MARGIN_SECONDS = 10
# The startup probe allows this long to download and load a model before liveness applies.
STARTUP_BUDGET_SECONDS = 300
STARTUP_PERIOD_SECONDS = 2

NLB_ANNOTATIONS: dict[str, str] = {
    "service.beta.kubernetes.io/aws-load-balancer-type": "external",
    "service.beta.kubernetes.io/aws-load-balancer-nlb-target-type": "ip",
    "service.beta.kubernetes.io/aws-load-balancer-scheme": "internal",
    "service.beta.kubernetes.io/aws-load-balancer-attributes": (
        "load_balancing.cross_zone.enabled=true"
    ),
}
NLB_TARGET_TYPE = "service.beta.kubernetes.io/aws-load-balancer-nlb-target-type"


def selector_labels(im: InferenceModel) -> dict[str, str]:
    """The Deployment/PDB selector: immutable once created, so only stable keys."""
    return model_server_selector(im.name)


def model_server_selector(name: str) -> dict[str, str]:
    """The labels every model-server pod of InferenceModel `name` carries."""
    return {LABEL_NAME: APP_NAME, LABEL_INFERENCE_MODEL: name}


def common_labels(im: InferenceModel) -> dict[str, str]:
    return {
        **selector_labels(im),
        LABEL_INSTANCE: im.name,
        LABEL_COMPONENT: "model-server",
        LABEL_MANAGED_BY: MANAGED_BY,
    }


def _metadata(im: InferenceModel, **extra: Any) -> dict[str, Any]:
    return {"name": im.name, "namespace": im.namespace, "labels": common_labels(im), **extra}


def change_cause(identity: ModelIdentity) -> str:
    """Shown by `kubectl rollout history` for the revision that runs this model."""
    return f"model {identity.describe()} from {identity.uri}"


def cpu_cores(quantity: str | int | float) -> float | None:
    """A CPU quantity ("2", "1500m", 0.5) in cores; None if it is not a plain CPU amount."""
    text = str(quantity).strip()
    match = re.fullmatch(r"(\d+(?:\.\d*)?|\.\d+)(m?)", text)
    if not match:
        return None
    value = float(match.group(1))
    return value / 1000 if match.group(2) else value


def _resources(im: InferenceModel) -> dict[str, dict[str, str]]:
    if im.spec.resources is None:
        return {k: dict(v) for k, v in DEFAULT_RESOURCES.items()}
    out: dict[str, dict[str, str]] = {}
    if im.spec.resources.requests:
        out["requests"] = {k: str(v) for k, v in im.spec.resources.requests.items()}
    if im.spec.resources.limits:
        out["limits"] = {k: str(v) for k, v in im.spec.resources.limits.items()}
    return out


def server_workers(im: InferenceModel) -> int | None:
    """Explicit workers, else one per requested CPU: the server would otherwise use every
    CPU of the node and oversubscribe it when several pods share a node."""
    if im.spec.server.workers is not None:
        return im.spec.server.workers
    cpu = _resources(im).get("requests", {}).get("cpu")
    cores = cpu_cores(cpu) if cpu is not None else None
    return max(1, math.floor(cores)) if cores else None


def _env(im: InferenceModel, identity: ModelIdentity) -> list[dict[str, str]]:
    server = im.spec.server
    env = {
        "RTBSERVE_MODEL_URI": identity.uri,
        "RTBSERVE_MODEL_SHA256": identity.sha256,
    }
    if identity.version_id:
        env["RTBSERVE_MODEL_VERSION_ID"] = identity.version_id
    env |= {
        "RTBSERVE_THRIFT_PORT": str(THRIFT_PORT),
        "RTBSERVE_HTTP_PORT": str(HTTP_PORT),
    }
    workers = server_workers(im)
    if workers is not None:
        env["RTBSERVE_WORKERS"] = str(workers)
    env |= {
        "RTBSERVE_DRAIN_SECONDS": str(server.drain_seconds),
        "RTBSERVE_CONN_MAX_AGE_SECONDS": str(server.conn_max_age_seconds),
        "RTBSERVE_CONN_MAX_REQUESTS": str(server.conn_max_requests),
        "RTBSERVE_MAX_BIDDERS": str(server.max_bidders),
        "RTBSERVE_MAX_BATCH": str(server.max_batch),
        "RTBSERVE_LOG_LEVEL": server.log_level,
    }
    out = [{"name": k, "value": v} for k, v in env.items()]
    out += [{"name": e.name, "value": e.value} for e in im.spec.env]
    return out


def _http_probe(path: str, *, period: int, failures: int, timeout: int = 1) -> dict[str, Any]:
    return {
        "httpGet": {"path": path, "port": HTTP_PORT_NAME, "scheme": "HTTP"},
        "periodSeconds": period,
        "failureThreshold": failures,
        "timeoutSeconds": timeout,
    }


def _restricted_container_security() -> dict[str, Any]:
    return {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "runAsNonRoot": True,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def _container(im: InferenceModel, identity: ModelIdentity) -> dict[str, Any]:
    container: dict[str, Any] = {
        "name": CONTAINER_NAME,
        "image": im.image,
        "imagePullPolicy": im.spec.image_pull_policy,
        # Explicit command: the contract is `rtbserve serve` configured by env, whatever the
        # image's entrypoint is.
        "command": ["rtbserve"],
        "args": ["serve"],
        "env": _env(im, identity),
        "ports": [
            {"name": THRIFT_PORT_NAME, "containerPort": THRIFT_PORT, "protocol": "TCP"},
            {"name": HTTP_PORT_NAME, "containerPort": HTTP_PORT, "protocol": "TCP"},
        ],
        "resources": _resources(im),
        "startupProbe": _http_probe(
            "/healthz",
            period=STARTUP_PERIOD_SECONDS,
            failures=STARTUP_BUDGET_SECONDS // STARTUP_PERIOD_SECONDS,
        ),
        "readinessProbe": _http_probe("/readyz", period=2, failures=2),
        "livenessProbe": _http_probe("/healthz", period=10, failures=3, timeout=2),
        "securityContext": _restricted_container_security(),
        "volumeMounts": [{"name": TMP_VOLUME, "mountPath": TMP_MOUNT_PATH}],
    }
    if im.spec.server.pre_stop_sleep_seconds:
        container["lifecycle"] = {
            "preStop": {"sleep": {"seconds": im.spec.server.pre_stop_sleep_seconds}}
        }
    return container


def _default_topology_spread(im: InferenceModel) -> list[dict[str, Any]]:
    # matchLabelKeys: each revision (pod-template-hash) is spread on its own during rollouts.
    return [
        {
            "maxSkew": 1,
            "topologyKey": key,
            "whenUnsatisfiable": "ScheduleAnyway",
            "labelSelector": {"matchLabels": selector_labels(im)},
            "matchLabelKeys": ["pod-template-hash"],
        }
        for key in SPREAD_TOPOLOGY_KEYS
    ]


def _pod_spec(im: InferenceModel, identity: ModelIdentity) -> dict[str, Any]:
    spec = im.spec
    server = spec.server
    pod: dict[str, Any] = {
        # IRSA / Pod Identity inject their own token volume; the API token is not needed.
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": RUN_AS_USER,
            "runAsGroup": RUN_AS_USER,
            "fsGroup": RUN_AS_USER,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        # The server drains on SIGTERM for drainSeconds; give it that plus preStop and a margin.
        "terminationGracePeriodSeconds": (
            server.pre_stop_sleep_seconds + server.drain_seconds + TERMINATION_MARGIN_SECONDS
        ),
        "nodeSelector": dict(
            DEFAULT_NODE_SELECTOR if spec.node_selector is None else spec.node_selector
        ),
        "affinity": copy.deepcopy(DEFAULT_AFFINITY if spec.affinity is None else spec.affinity),
        "tolerations": (
            copy.deepcopy(DEFAULT_TOLERATIONS)
            if spec.tolerations is None
            else [t.model_dump(by_alias=True, exclude_none=True) for t in spec.tolerations]
        ),
        "topologySpreadConstraints": (
            _default_topology_spread(im)
            if spec.topology_spread_constraints is None
            else copy.deepcopy(spec.topology_spread_constraints)
        ),
        "containers": [_container(im, identity)],
        "volumes": [{"name": TMP_VOLUME, "emptyDir": {"sizeLimit": str(spec.tmp_size_limit)}}],
    }
    if spec.service_account_name:
        pod["serviceAccountName"] = spec.service_account_name
    if spec.priority_class_name:
        pod["priorityClassName"] = spec.priority_class_name
    if spec.image_pull_secrets:
        pod["imagePullSecrets"] = [{"name": s.name} for s in spec.image_pull_secrets]
    return pod


def build_deployment(im: InferenceModel, identity: ModelIdentity) -> dict[str, Any]:
    """The model-server Deployment running `identity`.

    With autoscaling, `spec.replicas` is left out: the HPA owns it (see `initial_replicas`).
    """
    pod_annotations = {
        **im.spec.pod_annotations,
        "kubectl.kubernetes.io/default-container": CONTAINER_NAME,
        "prometheus.io/scrape": "true",
        "prometheus.io/port": str(HTTP_PORT),
        "prometheus.io/path": "/metrics",
        **identity.annotations(),
    }
    spec: dict[str, Any] = {
        "revisionHistoryLimit": REVISION_HISTORY_LIMIT,
        "progressDeadlineSeconds": PROGRESS_DEADLINE_SECONDS,
        "selector": {"matchLabels": selector_labels(im)},
        "strategy": {
            "type": "RollingUpdate",
            "rollingUpdate": {
                "maxSurge": im.spec.rollout.max_surge,
                "maxUnavailable": im.spec.rollout.max_unavailable,
            },
        },
        "template": {
            "metadata": {
                "labels": {**im.spec.pod_labels, **common_labels(im)},
                "annotations": pod_annotations,
            },
            "spec": _pod_spec(im, identity),
        },
    }
    if not im.spec.autoscaled:
        spec = {"replicas": im.spec.fixed_replicas, **spec}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": _metadata(im, annotations={ANNOTATION_CHANGE_CAUSE: change_cause(identity)}),
        "spec": spec,
    }


def initial_replicas(im: InferenceModel) -> int:
    """Replicas for a Deployment being created; later updates leave an HPA's count alone."""
    if im.spec.autoscaling is not None:
        return im.spec.autoscaling.min_replicas
    return im.spec.fixed_replicas


def service_annotations(im: InferenceModel) -> dict[str, str]:
    defaults = NLB_ANNOTATIONS if im.spec.service.type == "LoadBalancer" else {}
    return {**defaults, **im.spec.service.annotations}


def build_service(im: InferenceModel) -> dict[str, Any]:
    """Thrift (and metrics) in front of the pods; an internal AWS NLB with IP targets by default."""
    svc = im.spec.service
    annotations = service_annotations(im)
    spec: dict[str, Any] = {
        "type": svc.type,
        "selector": selector_labels(im),
        "ports": [
            {
                "name": THRIFT_PORT_NAME,
                "port": svc.port,
                "targetPort": THRIFT_PORT_NAME,
                "protocol": "TCP",
            },
            {
                "name": "http-metrics",
                "port": svc.metrics_port,
                "targetPort": HTTP_PORT_NAME,
                "protocol": "TCP",
            },
        ],
    }
    if svc.type == "LoadBalancer":
        # IP targets reach pods directly: node ports are only needed for instance targets.
        spec["allocateLoadBalancerNodePorts"] = annotations.get(NLB_TARGET_TYPE) != "ip"
        if svc.load_balancer_source_ranges:
            spec["loadBalancerSourceRanges"] = list(svc.load_balancer_source_ranges)
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _metadata(im, annotations=annotations),
        "spec": spec,
    }


def build_hpa(im: InferenceModel, rps_target: int | None = None) -> dict[str, Any] | None:
    """An autoscaling/v2 HPA on CPU (and requests/s per pod: `rps_target`, from
    capacity_target.resolve, else the hand-set target); None if not autoscaled."""
    auto = im.spec.autoscaling
    if auto is None:
        return None
    target = rps_target if rps_target is not None else auto.target_requests_per_second
    metrics: list[dict[str, Any]] = [
        {
            "type": "Resource",
            "resource": {
                "name": "cpu",
                "target": {
                    "type": "Utilization",
                    "averageUtilization": auto.target_cpu_utilization_percentage,
                },
            },
        }
    ]
    if target is not None:
        metrics.append(
            {
                "type": "Pods",
                "pods": {
                    "metric": {"name": RPS_METRIC},
                    "target": {
                        "type": "AverageValue",
                        "averageValue": str(target),
                    },
                },
            }
        )
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": _metadata(im),
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": im.name},
            "minReplicas": auto.min_replicas,
            "maxReplicas": auto.max_replicas,
            "metrics": metrics,
            "behavior": {
                "scaleDown": {"stabilizationWindowSeconds": auto.scale_down_stabilization_seconds}
            },
        },
    }


def build_pdb(im: InferenceModel) -> dict[str, Any]:
    """Voluntary disruptions (node drains, upgrades) take at most maxUnavailable pods at a time."""
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": _metadata(im),
        "spec": {
            "selector": {"matchLabels": selector_labels(im)},
            "maxUnavailable": im.spec.disruption_budget.max_unavailable,
            # Pods that are not ready anyway may be evicted, so they never block a drain.
            "unhealthyPodEvictionPolicy": "AlwaysAllow",
        },
    }


# ---- load test -----------------------------------------------------------------------------
LOADGEN_CONTAINER = "loadgen"
LOADGEN_JOB_ENV = "RTBSERVE_LOADGEN_JOB"
LABEL_LOAD_TEST_OF = "rtbserve.io/load-test-of"
# The eksctl cluster's load generators run on their own node group, apart from the servers.
LOADGEN_NODE_SELECTOR = {"kubernetes.io/arch": "arm64", "rtbserve.io/pool": "loadgen"}
LOADGEN_TOLERATIONS = [
    {"key": "rtbserve.io/pool", "operator": "Equal", "value": "loadgen", "effect": "NoSchedule"}
]
LOADGEN_DEADLINE_SECONDS = 3600


def load_test_job_name(im: InferenceModel, identity: ModelIdentity) -> str:
    """`<model>-loadtest-<hash>`: one Job per model and load-test settings (a Job's pod template
    cannot change, so new settings or a new model mean a new Job)."""
    assert im.spec.load_test is not None
    settings = im.spec.load_test.model_dump_json(by_alias=True)
    digest = hashlib.sha256(f"{identity.sha256} {im.image} {settings}".encode()).hexdigest()
    return f"{im.name[:40].rstrip('-')}-loadtest-{digest[:8]}"


def _loadgen_args(im: InferenceModel) -> list[str]:
    lt = im.spec.load_test
    assert lt is not None
    args = [
        "loadgen",
        f"--target={im.name}.{im.namespace}.svc:{im.spec.service.port}",
        f"--rate={lt.rate}",
        f"--duration={lt.duration}",
        f"--connections={lt.connections}",
        f"--inference-model={im.name}",
        f"--namespace={im.namespace}",
        "--plain",
    ]
    if lt.pods > 1:
        assert lt.shard_store is not None
        args += [
            f"--shards={lt.pods}",
            f"--shard-store={lt.shard_store.rstrip('/')}/$({LOADGEN_JOB_ENV})/",
            "--merge",
        ]
    return args + list(lt.args)


def build_load_test_job(im: InferenceModel, identity: ModelIdentity) -> dict[str, Any] | None:
    """The Job that load-tests the model `identity` (None without spec.loadTest): with
    `pods` > 1 an Indexed Job whose pods each offer rate / pods and whose last pod merges."""
    lt = im.spec.load_test
    if lt is None:
        return None
    labels = {
        LABEL_INSTANCE: im.name,
        LABEL_COMPONENT: "loadgen",
        LABEL_MANAGED_BY: MANAGED_BY,
        LABEL_LOAD_TEST_OF: im.name,
    }
    env = [
        {
            "name": LOADGEN_JOB_ENV,
            "valueFrom": {
                "fieldRef": {"fieldPath": "metadata.labels['batch.kubernetes.io/job-name']"}
            },
        }
    ]
    pod: dict[str, Any] = {
        "restartPolicy": "Never",
        # The token is for the one API call it makes: patching status.lastLoadTest.
        "automountServiceAccountToken": True,
        "enableServiceLinks": False,
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": RUN_AS_USER,
            "runAsGroup": RUN_AS_USER,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "nodeSelector": dict(LOADGEN_NODE_SELECTOR),
        "tolerations": copy.deepcopy(LOADGEN_TOLERATIONS),
        "containers": [
            {
                "name": LOADGEN_CONTAINER,
                "image": im.image,
                "imagePullPolicy": im.spec.image_pull_policy,
                "command": ["rtbserve"],
                "args": _loadgen_args(im),
                "env": env,
                "resources": {
                    "requests": {"cpu": "1", "memory": "1Gi"},
                    "limits": {"memory": "1Gi"},
                },
                "securityContext": _restricted_container_security(),
                "volumeMounts": [{"name": TMP_VOLUME, "mountPath": TMP_MOUNT_PATH}],
            }
        ],
        "volumes": [{"name": TMP_VOLUME, "emptyDir": {"sizeLimit": "256Mi"}}],
    }
    if lt.service_account_name:
        pod["serviceAccountName"] = lt.service_account_name
    if im.spec.image_pull_secrets:
        pod["imagePullSecrets"] = [{"name": s.name} for s in im.spec.image_pull_secrets]
    spec: dict[str, Any] = {
        "backoffLimit": 0,
        "activeDeadlineSeconds": LOADGEN_DEADLINE_SECONDS,
        "template": {"metadata": {"labels": labels}, "spec": pod},
    }
    if lt.pods > 1:
        spec |= {"completionMode": "Indexed", "completions": lt.pods, "parallelism": lt.pods}
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": load_test_job_name(im, identity),
            "namespace": im.namespace,
            "labels": labels,
            "annotations": {"rtbserve.io/model-sha256": identity.sha256},
        },
        "spec": spec,
    }
