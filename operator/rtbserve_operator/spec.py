"""The InferenceModel spec as typed, validated Python objects, with the operator's defaults.

The CRD's OpenAPI schema (crds/inferencemodel.yaml) is what the API server enforces; these models
enforce the same rules in the operator (a unit test checks that both accept the same examples)
and supply the defaults, so `kubectl get -o yaml` shows exactly what the user wrote.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    model_validator,
)
from pydantic.alias_generators import to_camel

from rtbserve_operator.defaults import DEFAULT_REPLICAS

S3_URI_PATTERN = r"^s3://[a-z0-9][a-z0-9.\-]{1,61}[a-z0-9](/.*)?$"
SHA256_PATTERN = r"^[0-9a-f]{64}$"
# Kubernetes resource.Quantity, as the core API's own OpenAPI schema spells it.
QUANTITY_PATTERN = (
    r"^(\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))"
    r"(([KMGTPE]i)|[numkMGTPE]|([eE](\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))))?$"
)
PERCENT_PATTERN = r"^[0-9]{1,3}%$"
RATE_PATTERN = r"^[0-9]+(\.[0-9]+)?k?(,[0-9]+(\.[0-9]+)?k?)*$"
DURATION_PATTERN = r"^[0-9]+(\.[0-9]+)?(us|ms|s|m|h)?$"
ENV_NAME_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]*$"
DNS_SUBDOMAIN_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"

# Environment variables the operator sets itself; `spec.env` may not override them.
RESERVED_ENV = frozenset(
    {
        "RTBSERVE_MODEL_URI",
        "RTBSERVE_MODEL_SHA256",
        "RTBSERVE_MODEL_VERSION_ID",
        "RTBSERVE_THRIFT_PORT",
        "RTBSERVE_HTTP_PORT",
        "RTBSERVE_WORKERS",
        "RTBSERVE_DRAIN_SECONDS",
        "RTBSERVE_CONN_MAX_AGE_SECONDS",
        "RTBSERVE_CONN_MAX_REQUESTS",
        "RTBSERVE_MAX_BIDDERS",
        "RTBSERVE_MAX_BATCH",
        "RTBSERVE_LOG_LEVEL",
    }
)

Quantity = Annotated[str, StringConstraints(pattern=QUANTITY_PATTERN)] | int | float
IntOrPercent = (
    Annotated[int, Field(ge=0)] | Annotated[str, StringConstraints(pattern=PERCENT_PATTERN)]
)
Sha256 = Annotated[str, StringConstraints(pattern=SHA256_PATTERN)]


class _Model(BaseModel):
    """camelCase on the wire, snake_case in Python; unknown fields are an error, not ignored."""

    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, extra="forbid", frozen=True
    )


class ArtifactSpec(_Model):
    uri: Annotated[str, StringConstraints(pattern=S3_URI_PATTERN, max_length=1024)]
    sha256: Sha256 | None = None
    version_id: Annotated[str, StringConstraints(min_length=1, max_length=1024)] | None = None


class AutoscalingSpec(_Model):
    min_replicas: int = Field(default=2, ge=1, le=1000)
    max_replicas: int = Field(ge=1, le=1000)
    target_cpu_utilization_percentage: int = Field(
        default=60, ge=1, le=100, alias="targetCPUUtilizationPercentage"
    )
    # Per-pod average of the `rtbserve_requests_per_second` Pods metric (needs a metrics adapter).
    target_requests_per_second: int | None = Field(default=None, ge=1)
    scale_down_stabilization_seconds: int = Field(default=300, ge=0, le=3600)
    # requestsPerSecond without a hand-set target: the target is capacity_share of the
    # serving model's measured capacity at capacity_slo_p99_ms (capacity_target.py).
    metric: Literal["cpu", "requestsPerSecond"] = "cpu"
    capacity_share: float = Field(default=0.7, gt=0, le=1)
    capacity_slo_p99_ms: float = Field(default=2.0, gt=0, alias="capacitySloP99Ms")

    @model_validator(mode="after")
    def _bounds(self) -> AutoscalingSpec:
        if self.min_replicas > self.max_replicas:
            raise ValueError(
                f"autoscaling.minReplicas ({self.min_replicas}) must be <= "
                f"maxReplicas ({self.max_replicas})"
            )
        return self


class ResourcesSpec(_Model):
    requests: dict[str, Quantity] = Field(default_factory=dict)
    limits: dict[str, Quantity] = Field(default_factory=dict)


class Toleration(_Model):
    key: str | None = None
    operator: Literal["Exists", "Equal"] | None = None
    value: str | None = None
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = None
    toleration_seconds: int | None = None


class EnvVar(_Model):
    name: Annotated[str, StringConstraints(pattern=ENV_NAME_PATTERN, max_length=256)]
    value: str = ""


class ServiceSpec(_Model):
    type: Literal["LoadBalancer", "ClusterIP", "NodePort"] = "LoadBalancer"
    port: int = Field(default=9090, ge=1, le=65535)
    metrics_port: int = Field(default=8080, ge=1, le=65535)
    # Merged over the NLB defaults; set a key to override one of them.
    annotations: dict[str, str] = Field(default_factory=dict)
    load_balancer_source_ranges: list[str] = Field(default_factory=list)


class ServerSpec(_Model):
    workers: int | None = Field(default=None, ge=1, le=256)
    drain_seconds: int = Field(default=15, ge=0, le=600)
    conn_max_age_seconds: int = Field(default=300, ge=0, le=86400)
    conn_max_requests: int = Field(default=0, ge=0)
    max_bidders: int = Field(default=64, ge=1, le=10000)
    max_batch: int = Field(default=256, ge=1, le=100000)
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    # Optional `lifecycle.preStop.sleep` (Kubernetes >= 1.30) before SIGTERM; the server
    # already drains on SIGTERM, so 0 (none) is the default.
    pre_stop_sleep_seconds: int = Field(default=0, ge=0, le=300)


class DisruptionBudgetSpec(_Model):
    max_unavailable: IntOrPercent = 1


class RolloutSpec(_Model):
    # Surge new pods first and never drop below the desired count: no capacity dip mid-rollout.
    max_surge: IntOrPercent = "25%"
    max_unavailable: IntOrPercent = 0


class LoadTestSpec(_Model):
    """`rtbserve loadgen` run as a Job against each newly verified model (see the CRD)."""

    pods: int = Field(default=1, ge=1, le=1000)
    rate: Annotated[str, StringConstraints(pattern=RATE_PATTERN)] = "1000"
    duration: Annotated[str, StringConstraints(pattern=DURATION_PATTERN)] = "60s"
    connections: int = Field(default=16, ge=1)
    shard_store: Annotated[str, StringConstraints(pattern=S3_URI_PATTERN)] | None = None
    service_account_name: (
        Annotated[str, StringConstraints(pattern=DNS_SUBDOMAIN_PATTERN, max_length=253)] | None
    ) = None
    args: list[str] = Field(default_factory=list)

    @model_validator(mode="after")
    def _store_for_pods(self) -> LoadTestSpec:
        if self.pods > 1 and self.shard_store is None:
            raise ValueError("pods > 1 needs shardStore")
        return self


class LocalObjectReference(_Model):
    name: Annotated[str, StringConstraints(min_length=1, max_length=253)]


class InferenceModelSpec(_Model):
    artifact: ArtifactSpec
    image: Annotated[str, StringConstraints(min_length=1)] | None = None
    image_pull_policy: Literal["Always", "IfNotPresent", "Never"] = "IfNotPresent"
    image_pull_secrets: list[LocalObjectReference] = Field(default_factory=list)
    replicas: int | None = Field(default=None, ge=0, le=1000)
    autoscaling: AutoscalingSpec | None = None
    resources: ResourcesSpec | None = None
    node_selector: dict[str, str] | None = None
    affinity: dict[str, Any] | None = None
    tolerations: list[Toleration] | None = None
    topology_spread_constraints: list[dict[str, Any]] | None = None
    priority_class_name: str | None = None
    service_account_name: (
        Annotated[str, StringConstraints(pattern=DNS_SUBDOMAIN_PATTERN, max_length=253)] | None
    ) = None
    pod_annotations: dict[str, str] = Field(default_factory=dict)
    pod_labels: dict[str, str] = Field(default_factory=dict)
    env: list[EnvVar] = Field(default_factory=list)
    service: ServiceSpec = Field(default_factory=ServiceSpec)
    server: ServerSpec = Field(default_factory=ServerSpec)
    disruption_budget: DisruptionBudgetSpec = Field(default_factory=DisruptionBudgetSpec)
    rollout: RolloutSpec = Field(default_factory=RolloutSpec)
    load_test: LoadTestSpec | None = None
    # Size of the pod's writable /tmp, which also holds the downloaded model.
    tmp_size_limit: Quantity = "2Gi"

    @model_validator(mode="after")
    def _consistent(self) -> InferenceModelSpec:
        if self.replicas is not None and self.autoscaling is not None:
            raise ValueError("set either replicas or autoscaling, not both")
        reserved = sorted({e.name for e in self.env} & RESERVED_ENV)
        if reserved:
            raise ValueError(
                f"env may not set {', '.join(reserved)}: the operator sets them from the spec"
            )
        return self

    @property
    def autoscaled(self) -> bool:
        return self.autoscaling is not None

    @property
    def fixed_replicas(self) -> int:
        return DEFAULT_REPLICAS if self.replicas is None else self.replicas


class InvalidSpecError(ValueError):
    """The InferenceModel's spec breaks a rule; the message names each offending field."""


class InferenceModel(BaseModel):
    """What the builders need of one InferenceModel object: identity plus parsed spec."""

    model_config = ConfigDict(frozen=True)

    name: str
    namespace: str
    uid: str
    generation: int
    spec: InferenceModelSpec
    image: str  # spec.image, or the operator's default image

    @classmethod
    def from_body(cls, body: Mapping[str, Any], default_image: str) -> InferenceModel:
        meta = body.get("metadata", {})
        spec = parse_spec(body.get("spec") or {})
        return cls(
            name=meta["name"],
            namespace=meta["namespace"],
            uid=meta.get("uid", ""),
            generation=int(meta.get("generation", 0)),
            spec=spec,
            image=spec.image or default_image,
        )


def parse_spec(raw: Mapping[str, Any]) -> InferenceModelSpec:
    """Validate a raw spec; raises InvalidSpecError with one line per problem."""
    try:
        return InferenceModelSpec.model_validate(dict(raw))
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            where = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in err["loc"])
            problems.append(f"spec{where}: {err['msg']}")
        raise InvalidSpecError("; ".join(problems)) from exc
