"""`rtbserve capacity`: pods, vCPUs, nodes and cost for a rate, from a measured profile.

    rtbserve capacity --profile profile.json --rate 400k --slo-p99 2ms --instance c7g.2xlarge
    rtbserve capacity --profile s3://bucket/models/m/v3/capacity.json --rate 1M --output values
    rtbserve capacity --profile profile.json --rate 1M --output eksctl
    rtbserve capacity --profile inferencemodel/ssp-filter -n rtb --rate 400k

The profile comes from `rtbserve loadgen --find-saturation --profile-out`. The fleet is spread
over --zones zones and holds the rate with one of them lost; each pod runs at the HPA's target
share of its measured capacity. When the profile was measured on another CPU than the
instance type's, the output says so.
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Sequence
from pathlib import Path

import orjson
import yaml
from rich.console import Console
from rich.table import Table

from loadgen.capacity_profile import CapacityProfile, ProfileError, read_profile
from loadgen.schedule import parse_duration, parse_rate
from rtbserve import sizing

NODE_GROUP = "graviton-inference"  # eksctl/cluster.yaml's serving node group
MAX_REPLICAS_FACTOR = 1.5  # the HPA's ceiling above the sized fleet, for bursts past --rate


def _rate(text: str) -> float:
    """'400000', '400k' or '1M' requests per second."""
    if text[-1:] in ("M", "m"):
        return parse_rate(text[:-1]) * 1e6
    return parse_rate(text)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="rtbserve capacity",
        description=__doc__.splitlines()[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--profile",
        required=True,
        help="capacity profile: a file, an s3:// URI, or inferencemodel/NAME (its status.capacity)",
    )
    p.add_argument(
        "-n", "--namespace", help="the InferenceModel's namespace (default: the kubeconfig's)"
    )
    p.add_argument("--rate", required=True, type=_rate, help="peak req/s, e.g. 400k, 1M")
    p.add_argument("--slo-p99", type=parse_duration, default=0.002, help="default 2ms")
    p.add_argument("--instance", default="c7g.2xlarge", help="EC2 instance type of the nodes")
    p.add_argument("--zones", type=int, default=3, help="availability zones (default 3)")
    p.add_argument(
        "--target-share",
        type=float,
        default=sizing.DEFAULT_TARGET_SHARE,
        help="share of the measured capacity each pod runs at (the HPA's target; default 0.7)",
    )
    p.add_argument(
        "--daemonset-vcpus",
        type=float,
        default=sizing.DEFAULT_DAEMONSET_VCPUS,
        help="vCPUs per node the DaemonSets take (default 0.25)",
    )
    p.add_argument("--prices", type=Path, default=sizing.DEFAULT_PRICES, help="price list YAML")
    p.add_argument("--output", choices=("table", "values", "eksctl", "json"), default="table")
    return p


def _max_replicas(plan: sizing.Plan) -> int:
    return min(1000, math.ceil(plan.pods * MAX_REPLICAS_FACTOR))


def values_snippet(plan: sizing.Plan, profile: CapacityProfile) -> str:
    """The InferenceModel spec (and chart values) for the plan."""
    spec = {
        "spec": {
            "autoscaling": {
                "minReplicas": plan.pods,
                "maxReplicas": _max_replicas(plan),
                "targetRequestsPerSecond": max(1, math.floor(plan.hpa_target)),
            },
            "resources": {"requests": {"cpu": f"{plan.pod_vcpus:g}"}},
        }
    }
    head = (
        f"# rtbserve capacity: {plan.rate:,.0f} req/s, {plan.zones} zones (one may be lost), "
        f"{profile.model.name} {profile.model.version} ({profile.model.sha256[:12]})\n"
    )
    return head + yaml.safe_dump(spec, sort_keys=False)


def eksctl_snippet(plan: sizing.Plan) -> str:
    """The serving node group's sizes for eksctl/cluster.yaml."""
    max_nodes = math.ceil(math.ceil(_max_replicas(plan) / plan.zones) / plan.pods_per_node)
    group = {
        "managedNodeGroups": [
            {
                "name": NODE_GROUP,
                "instanceType": plan.instance.name,
                "minSize": plan.nodes,
                "desiredCapacity": plan.nodes,
                "maxSize": max_nodes * plan.zones,
            }
        ]
    }
    return yaml.safe_dump(group, sort_keys=False)


def as_json(plan: sizing.Plan, profile: CapacityProfile, warning: str | None) -> bytes:
    return orjson.dumps(
        {
            "rate": plan.rate,
            "capacity_per_pod": plan.capacity_per_pod,
            "hpa_target_rps": plan.hpa_target,
            "zones": plan.zones,
            "pods": plan.pods,
            "pods_per_zone": plan.pods_per_zone,
            "vcpus": plan.vcpus,
            "instance": plan.instance.name,
            "pods_per_node": plan.pods_per_node,
            "nodes": plan.nodes,
            "nodes_per_zone": plan.nodes_per_zone,
            "monthly_cost": round(plan.monthly_cost, 2),
            "headroom": round(plan.headroom, 4),
            "headroom_zone_lost": round(plan.headroom_zone_lost, 4),
            "model_sha256": profile.model.sha256,
            "warning": warning,
        },
        option=orjson.OPT_INDENT_2,
    )


def print_table(
    console: Console,
    plan: sizing.Plan,
    profile: CapacityProfile,
    prices: sizing.PriceList,
    slo_ms: float,
) -> None:
    m, pod = profile.model, profile.pod
    table = Table(title=f"{plan.rate:,.0f} req/s at p99 <= {slo_ms:g} ms on {plan.instance.name}")
    table.add_column("", style="bold")
    table.add_column("")
    rows = [
        ("model", f"{m.name} {m.version} ({m.sha256[:12]}), {m.trees} trees, {m.features} feat."),
        ("measured pod", f"{pod.workers} worker(s), {pod.cpu_limit:g} vCPU, {pod.cpu_model}"),
        ("measured at", f"{profile.measured_at}, {profile.bidders_per_request:g} bidders/request"),
        ("capacity per pod", f"{plan.capacity_per_pod:,.0f} req/s at p99 <= {slo_ms:g} ms"),
        ("HPA target", f"{plan.hpa_target:,.0f} req/s per pod ({plan.target_share:.0%})"),
        ("pods", f"{plan.pods} ({plan.pods_per_zone} in each of {plan.zones} zones)"),
        ("vCPUs", f"{plan.vcpus:g} ({plan.pod_vcpus:g} a pod)"),
        (
            "nodes",
            f"{plan.nodes} {plan.instance.name} ({plan.nodes_per_zone} a zone, "
            f"{plan.pods_per_node} pods a node)",
        ),
        (
            "monthly cost",
            f"{plan.monthly_cost:,.0f} {prices.currency} on demand "
            f"({prices.source.split(':')[0]}, recorded {prices.recorded})",
        ),
        ("headroom", f"{plan.headroom:+.0%} before every pod is at its measured capacity"),
        (
            "one zone lost",
            f"{plan.headroom_zone_lost:+.0%}: the other {max(plan.zones - 1, 1)} zones still "
            + ("hold the rate" if plan.headroom_zone_lost >= 0 else "do NOT hold the rate"),
        ),
    ]
    if plan.zones == 1:
        rows[-1] = ("one zone lost", "one zone only: losing it loses the service")
    for name, value in rows:
        table.add_row(name, value)
    console.print(table)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    out = Console(highlight=False)
    err = Console(stderr=True, highlight=False, soft_wrap=True)
    try:
        profile = read_profile(args.profile, args.namespace)
        prices = sizing.load_prices(args.prices)
        instance = prices.instance(args.instance)
        slo_ms = args.slo_p99 * 1000.0
        plan = sizing.plan(
            args.rate,
            profile.capacity(slo_ms),
            profile.pod.cpu_limit,
            instance,
            zones=args.zones,
            target_share=args.target_share,
            daemonset_vcpus=args.daemonset_vcpus,
            hours_per_month=prices.hours_per_month,
        )
    except (ProfileError, sizing.SizingError) as exc:
        err.print(f"rtbserve capacity: {exc}", markup=False)
        return 2
    warning = sizing.cpu_mismatch(instance, profile.pod.arch, profile.pod.cpu_model)
    if args.output == "table":
        print_table(out, plan, profile, prices, slo_ms)
    elif args.output == "values":
        sys.stdout.write(values_snippet(plan, profile))
    elif args.output == "eksctl":
        sys.stdout.write(eksctl_snippet(plan))
    else:
        sys.stdout.write(as_json(plan, profile, warning).decode() + "\n")
    if warning:
        err.print(
            f"warning: {warning}; measure a pod on {instance.name} for its own figures "
            "(rtbserve loadgen --find-saturation --profile-out)",
            markup=False,
        )
    return 0
