"""Fleet projection arithmetic."""

from __future__ import annotations

import math

import pytest

from bench.fleet import (
    HOURS_PER_MONTH,
    INSTANCE_TYPES,
    FleetAssumptions,
    InstanceType,
    project_fleet,
)

EIGHT = InstanceType("test.2xlarge", "Graviton", 8, 16, 0.30)


def test_projection_counts_vcpus_pods_nodes_and_cost() -> None:
    a = FleetAssumptions(target_rps=1_000_000, utilisation=0.5, workers_per_pod=7)
    f = project_fleet(10_000, EIGHT, a)
    # 10,000 req/s per core run at 50% -> 5,000 planned -> 200 vCPUs.
    assert f.planned_rps_per_core == 5_000
    assert f.vcpus == 200
    assert f.pods == math.ceil(200 / 7) == 29
    assert f.pods_per_node == 1  # 8 vCPUs - 1 reserved fit one 7-worker pod
    assert f.nodes == 29
    assert f.usd_per_hour == pytest.approx(29 * 0.30)
    assert f.usd_per_month == pytest.approx(29 * 0.30 * HOURS_PER_MONTH)
    # $8.70 an hour for 3.6e9 requests an hour.
    assert f.usd_per_million_requests == pytest.approx(29 * 0.30 / 3600)


def test_smaller_pods_pack_several_per_node() -> None:
    a = FleetAssumptions(target_rps=100_000, utilisation=1.0, workers_per_pod=3)
    f = project_fleet(10_000, EIGHT, a)
    assert f.vcpus == 10
    assert f.pods == 4
    assert f.pods_per_node == 2  # floor((8 - 1) / 3)
    assert f.nodes == 2


def test_faster_cores_need_fewer_nodes() -> None:
    a = FleetAssumptions()
    slow = project_fleet(5_000, EIGHT, a)
    fast = project_fleet(20_000, EIGHT, a)
    assert fast.vcpus < slow.vcpus
    assert fast.usd_per_hour < slow.usd_per_hour


@pytest.mark.parametrize(
    ("per_core", "assumptions", "message"),
    [
        (0, FleetAssumptions(), "positive"),
        (1000, FleetAssumptions(utilisation=0), "utilisation"),
        (1000, FleetAssumptions(utilisation=1.5), "utilisation"),
        (1000, FleetAssumptions(workers_per_pod=0), "workers_per_pod"),
        (1000, FleetAssumptions(workers_per_pod=8), "does not fit"),
    ],
)
def test_bad_inputs_are_refused_clearly(
    per_core: float, assumptions: FleetAssumptions, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        project_fleet(per_core, EIGHT, assumptions)


def test_assumed_instance_types_are_graviton_with_prices() -> None:
    assert set(INSTANCE_TYPES) == {"c7g.2xlarge", "c8g.2xlarge"}
    for name, instance in INSTANCE_TYPES.items():
        assert instance.name == name
        assert instance.processor.startswith("Graviton")
        assert instance.vcpus == 8
        assert 0.1 < instance.usd_per_hour < 1.0
