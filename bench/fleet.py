"""Fleet projection on paper: from one core's saturation throughput to Graviton nodes and dollars.

One rtbserve worker is one process on one vCPU. Graviton vCPUs are whole physical cores (no
SMT), so a per-core figure carries over one to one; a figure measured on another CPU is a proxy.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

HOURS_PER_MONTH = 730.0


@dataclass(frozen=True)
class InstanceType:
    name: str
    processor: str
    vcpus: int
    memory_gib: int
    # On-demand Linux price in us-east-1, as assumed by the projection (check current pricing).
    usd_per_hour: float


INSTANCE_TYPES: dict[str, InstanceType] = {
    "c7g.2xlarge": InstanceType("c7g.2xlarge", "Graviton3", 8, 16, 0.289),
    "c8g.2xlarge": InstanceType("c8g.2xlarge", "Graviton4", 8, 16, 0.31904),
}


@dataclass(frozen=True)
class FleetAssumptions:
    target_rps: float = 1_000_000.0
    # Plan to run each core at this share of its measured saturation (the rest is headroom).
    utilisation: float = 0.65
    # Workers (= vCPUs requested) per pod.
    workers_per_pod: int = 7
    # vCPUs per node kept for the kubelet, the CNI, daemonsets and the kernel's network work.
    reserved_vcpus_per_node: float = 1.0


@dataclass(frozen=True)
class FleetProjection:
    instance: InstanceType
    per_core_rps: float
    planned_rps_per_core: float
    vcpus: int
    pods: int
    pods_per_node: int
    nodes: int
    usd_per_hour: float
    usd_per_month: float
    usd_per_million_requests: float


def project_fleet(
    per_core_rps: float, instance: InstanceType, assumptions: FleetAssumptions
) -> FleetProjection:
    """How many vCPUs, pods and nodes serve `target_rps`, and what they cost on demand."""
    if per_core_rps <= 0:
        raise ValueError(f"per-core throughput must be positive, got {per_core_rps}")
    if not 0 < assumptions.utilisation <= 1:
        raise ValueError(f"utilisation must be in (0, 1], got {assumptions.utilisation}")
    if assumptions.workers_per_pod < 1:
        raise ValueError(f"workers_per_pod must be >= 1, got {assumptions.workers_per_pod}")
    usable = instance.vcpus - assumptions.reserved_vcpus_per_node
    pods_per_node = math.floor(usable / assumptions.workers_per_pod)
    if pods_per_node < 1:
        raise ValueError(
            f"a {assumptions.workers_per_pod}-worker pod does not fit on {instance.name} "
            f"({instance.vcpus} vCPUs, {assumptions.reserved_vcpus_per_node} reserved)"
        )
    planned = per_core_rps * assumptions.utilisation
    vcpus = math.ceil(assumptions.target_rps / planned)
    pods = math.ceil(vcpus / assumptions.workers_per_pod)
    nodes = math.ceil(pods / pods_per_node)
    per_hour = nodes * instance.usd_per_hour
    requests_per_hour = assumptions.target_rps * 3600.0
    return FleetProjection(
        instance=instance,
        per_core_rps=per_core_rps,
        planned_rps_per_core=planned,
        vcpus=vcpus,
        pods=pods,
        pods_per_node=pods_per_node,
        nodes=nodes,
        usd_per_hour=per_hour,
        usd_per_month=per_hour * HOURS_PER_MONTH,
        usd_per_million_requests=per_hour / (requests_per_hour / 1e6),
    )
