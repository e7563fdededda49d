"""Fleet sizing from a measured per-pod capacity: pods, vCPUs, nodes, cost and headroom.

Pure arithmetic, no I/O. The rate must hold with one zone lost: the pods are spread evenly
over the zones, and the zones left after a loss carry the whole rate, each pod at no more
than `target_share` of its measured capacity (the share the HPA aims at, so the autoscaler
and the sizing agree). A node fits as many pods as its allocatable vCPUs take whole: its
vCPUs less EKS's kube-reserved CPU and what the DaemonSets use.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

DEFAULT_PRICES = Path(__file__).with_name("instances.yaml")
DEFAULT_TARGET_SHARE = 0.7
DEFAULT_DAEMONSET_VCPUS = 0.25  # aws-node, kube-proxy, a log and a metrics agent


class SizingError(ValueError):
    """Inputs that cannot be sized; the message says which and why."""


@dataclass(frozen=True)
class Instance:
    name: str
    vcpus: int
    memory_gib: float
    arch: str
    cpu: str
    cpu_match: tuple[str, ...]
    hourly: float


@dataclass(frozen=True)
class PriceList:
    source: str
    recorded: str
    currency: str
    hours_per_month: float
    instances: dict[str, Instance]

    def instance(self, name: str) -> Instance:
        try:
            return self.instances[name]
        except KeyError:
            known = ", ".join(sorted(self.instances))
            raise SizingError(f"no instance type {name!r} in the price list ({known})") from None


def load_prices(path: Path = DEFAULT_PRICES) -> PriceList:
    try:
        doc: Any = yaml.safe_load(path.read_text())
        instances = {
            name: Instance(
                name=name,
                vcpus=int(spec["vcpus"]),
                memory_gib=float(spec["memory_gib"]),
                arch=str(spec["arch"]),
                cpu=str(spec["cpu"]),
                cpu_match=tuple(spec.get("cpu_match", [])),
                hourly=float(spec["hourly"]),
            )
            for name, spec in doc["instances"].items()
        }
        return PriceList(
            source=str(doc["source"]),
            recorded=str(doc["recorded"]),
            currency=str(doc.get("currency", "USD")),
            hours_per_month=float(doc.get("hours_per_month", 730)),
            instances=instances,
        )
    except (OSError, yaml.YAMLError, KeyError, TypeError, ValueError) as exc:
        raise SizingError(f"price list {path}: {exc}") from None


def kube_reserved_vcpus(vcpus: int) -> float:
    """EKS's kube-reserved CPU: 6% of the first core, 1% of the second, 0.5% of the next two,
    0.25% of the rest."""
    shares = [0.06, 0.01, 0.005, 0.005]
    return sum(shares[i] if i < len(shares) else 0.0025 for i in range(vcpus))


@dataclass(frozen=True)
class Plan:
    rate: float
    capacity_per_pod: float
    target_share: float
    pod_vcpus: float
    zones: int
    instance: Instance
    pods_per_zone: int
    pods_per_node: int
    nodes_per_zone: int
    monthly_cost: float

    @property
    def pods(self) -> int:
        return self.pods_per_zone * self.zones

    @property
    def nodes(self) -> int:
        return self.nodes_per_zone * self.zones

    @property
    def vcpus(self) -> float:
        return self.pods * self.pod_vcpus

    @property
    def hpa_target(self) -> float:
        """Requests/s per pod the HPA aims at: the share of the measured capacity."""
        return self.capacity_per_pod * self.target_share

    @property
    def headroom(self) -> float:
        """How far the rate can grow before every pod is at its measured capacity."""
        return self.pods * self.capacity_per_pod / self.rate - 1.0

    @property
    def headroom_zone_lost(self) -> float:
        surviving = self.pods_per_zone * max(self.zones - 1, 1)
        return surviving * self.capacity_per_pod / self.rate - 1.0


def plan(
    rate: float,
    capacity_per_pod: float,
    pod_vcpus: float,
    instance: Instance,
    *,
    zones: int = 3,
    target_share: float = DEFAULT_TARGET_SHARE,
    daemonset_vcpus: float = DEFAULT_DAEMONSET_VCPUS,
    hours_per_month: float = 730.0,
) -> Plan:
    if rate <= 0:
        raise SizingError("the rate must be above 0")
    if capacity_per_pod <= 0:
        raise SizingError("the measured capacity per pod must be above 0")
    if not 0 < target_share <= 1:
        raise SizingError("the target share must be in (0, 1]")
    if zones < 1:
        raise SizingError("at least one zone")
    # The zones left after one is lost carry the rate (with one zone, there is nothing to lose).
    carrying = zones - 1 if zones > 1 else 1
    pods_needed = math.ceil(rate / (capacity_per_pod * target_share))
    pods_per_zone = math.ceil(pods_needed / carrying)
    allocatable = instance.vcpus - kube_reserved_vcpus(instance.vcpus) - daemonset_vcpus
    pods_per_node = math.floor(allocatable / pod_vcpus + 1e-9)
    if pods_per_node < 1:
        raise SizingError(
            f"a pod of {pod_vcpus:g} vCPU does not fit on {instance.name} "
            f"({allocatable:.2f} allocatable vCPU)"
        )
    nodes_per_zone = math.ceil(pods_per_zone / pods_per_node)
    monthly = nodes_per_zone * zones * instance.hourly * hours_per_month
    return Plan(
        rate=rate,
        capacity_per_pod=capacity_per_pod,
        target_share=target_share,
        pod_vcpus=pod_vcpus,
        zones=zones,
        instance=instance,
        pods_per_zone=pods_per_zone,
        pods_per_node=pods_per_node,
        nodes_per_zone=nodes_per_zone,
        monthly_cost=monthly,
    )


def cpu_mismatch(instance: Instance, arch: str, cpu_model: str) -> str | None:
    """Why a profile measured on (arch, cpu_model) does not describe `instance`, or None."""
    if arch != instance.arch:
        return (
            f"the profile was measured on {arch} ({cpu_model}); {instance.name} is "
            f"{instance.arch} ({instance.cpu}): these figures are not that CPU's"
        )
    if instance.cpu_match and not any(m.lower() in cpu_model.lower() for m in instance.cpu_match):
        return (
            f"the profile was measured on {cpu_model}; {instance.name} runs {instance.cpu}: "
            f"the capacity there may differ"
        )
    return None
