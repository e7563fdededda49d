"""`rtbserve capacity`: the sizing arithmetic against hand-worked cases, the profile's checks,
and the command's outputs."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml

from loadgen import capacity_profile as cp
from rtbserve import capacity_cli, sizing

SHA = "ab" * 32


def _profile(**changes: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "kind": cp.KIND,
        "version": 1,
        "measured_at": "2026-12-07T12:00:00+00:00",
        "model": {"name": "m", "version": "v1", "sha256": SHA, "trees": 60, "max_depth": 6,
                  "features": 55},
        "pod": {"workers": 2, "cpu_limit": 2.0, "cpu_model": "Neoverse V1 (AWS Graviton3)",
                "arch": "arm64"},
        "bidders_per_request": 16,
        "slos": [{"p99_ms": 2.0, "requests_per_second": 10_000.0},
                 {"p99_ms": 10.0, "requests_per_second": 14_000.0}],
        "curve": [],
    }  # fmt: skip
    doc.update(changes)
    return doc


def _graviton(name: str = "c7g.2xlarge") -> sizing.Instance:
    return sizing.load_prices().instance(name)


def test_price_list_names_its_source_and_date() -> None:
    prices = sizing.load_prices()
    assert prices.source.startswith("AWS EC2 On-Demand")
    assert prices.recorded == "2026-12-07"
    c7g = prices.instance("c7g.2xlarge")
    assert (c7g.vcpus, c7g.arch, c7g.hourly) == (8, "arm64", 0.29)


def test_kube_reserved_follows_the_eks_formula() -> None:
    assert sizing.kube_reserved_vcpus(1) == pytest.approx(0.06)
    assert sizing.kube_reserved_vcpus(2) == pytest.approx(0.07)
    assert sizing.kube_reserved_vcpus(4) == pytest.approx(0.08)
    assert sizing.kube_reserved_vcpus(8) == pytest.approx(0.09)


def test_hand_worked_three_zones() -> None:
    # 400,000 req/s, 10,000 per pod at 70% -> 7,000 a pod -> 58 pods carry it. One zone may
    # be lost, so two zones carry all: 29 a zone, 87 in all. An 8-vCPU node has
    # 8 - 0.09 - 0.25 = 7.66 allocatable: three 2-vCPU pods. 29 pods -> 10 nodes a zone.
    plan = sizing.plan(400_000, 10_000, 2.0, _graviton())
    assert plan.pods_per_zone == 29
    assert plan.pods == 87
    assert plan.vcpus == 174
    assert plan.pods_per_node == 3
    assert plan.nodes_per_zone == 10
    assert plan.nodes == 30
    assert plan.monthly_cost == pytest.approx(30 * 0.29 * 730)
    assert plan.hpa_target == pytest.approx(7_000)
    assert plan.headroom == pytest.approx(87 * 10_000 / 400_000 - 1)
    # with a zone lost: 58 pods at 10,000 = 580,000 >= 400,000
    assert plan.headroom_zone_lost == pytest.approx(58 * 10_000 / 400_000 - 1)
    assert plan.headroom_zone_lost > 0


def test_the_lost_zone_is_what_the_fleet_is_sized_for() -> None:
    one_zone = sizing.plan(70_000, 10_000, 2.0, _graviton(), zones=1)
    three = sizing.plan(70_000, 10_000, 2.0, _graviton(), zones=3)
    assert one_zone.pods == 10  # 70,000 / 7,000
    assert three.pods_per_zone == 5  # two zones carry 10 pods
    assert three.pods == 15
    # the zones left after a loss run every pod at exactly the target share
    assert three.pods_per_zone * 2 * three.hpa_target == pytest.approx(70_000)
    assert three.headroom_zone_lost == pytest.approx(1 / 0.7 - 1)


def test_a_pod_too_big_for_the_node_is_refused() -> None:
    with pytest.raises(sizing.SizingError, match=r"does not fit on c7g\.xlarge"):
        sizing.plan(1000, 1000, 4.0, _graviton("c7g.xlarge"))


@pytest.mark.parametrize(
    ("args", "message"),
    [((0, 1, 1), "rate"), ((1, 0, 1), "capacity"), ((1, 1, 1), "zone")],
)
def test_bad_inputs_are_refused(args: tuple[float, float, float], message: str) -> None:
    rate, capacity, _ = args
    with pytest.raises(sizing.SizingError, match=message):
        sizing.plan(rate, capacity, 1.0, _graviton(), zones=0 if message == "zone" else 3)


def test_cpu_mismatch_is_said_plainly() -> None:
    c7g, c7i = _graviton(), _graviton("c7i.2xlarge")
    assert sizing.cpu_mismatch(c7g, "arm64", "Neoverse V1 (AWS Graviton3)") is None
    assert "not that CPU's" in (sizing.cpu_mismatch(c7g, "amd64", "AMD EPYC") or "")
    assert "may differ" in (sizing.cpu_mismatch(c7g, "arm64", "Neoverse N1 (AWS Graviton2)") or "")
    assert sizing.cpu_mismatch(c7i, "amd64", "Intel(R) Xeon(R) Platinum 8488C") is None


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"version": 2}, "profile version 2"),
        ({"kind": "something/else"}, "kind"),
        ({"model": {"name": "m"}}, "model.version: Field required"),
        ({"slos": []}, "slos"),
        ({"pod": {"workers": 0, "cpu_limit": 2, "cpu_model": "x", "arch": "arm64"}}, "workers"),
    ],
)
def test_bad_profiles_are_refused_with_the_reason(
    change: dict[str, Any], message: str, tmp_path: Path
) -> None:
    path = tmp_path / "p.json"
    path.write_bytes(orjson.dumps(_profile(**change)))
    with pytest.raises(cp.ProfileError, match=message):
        cp.read_profile(str(path))


def test_a_profile_without_the_slo_asked_says_what_it_has() -> None:
    profile = cp.CapacityProfile.model_validate(_profile())
    assert profile.capacity(2.0) == 10_000
    with pytest.raises(cp.ProfileError, match=r"no figure for p99 <= 5 ms \(it has 2 ms, 10 ms\)"):
        profile.capacity(5.0)


def test_an_unmet_objective_may_be_null_or_absent() -> None:
    """status.capacity is written by a JSON merge patch, which drops a null: both read alike."""
    unmet = [
        {"p99_ms": 0.001, "requests_per_second": None},
        {"p99_ms": 2.0, "requests_per_second": 9.0},
    ]
    for slos in (unmet, [{"p99_ms": 0.001}, unmet[1]]):
        profile = cp.CapacityProfile.model_validate(_profile(slos=slos))
        assert profile.capacity(2.0) == 9.0
        with pytest.raises(cp.ProfileError, match=r"no probed rate met p99 <= 0\.001 ms"):
            profile.capacity(0.001)


def _run(tmp_path: Path, capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    path = tmp_path / "profile.json"
    path.write_bytes(orjson.dumps(_profile()))
    code = capacity_cli.main(["--profile", str(path), *args])
    out, err = capsys.readouterr()
    return code, out, err


def test_table_output(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = _run(tmp_path, capsys, "--rate", "400k", "--instance", "c7g.2xlarge")
    assert code == 0
    assert "87 (29 in each of 3 zones)" in out
    assert "30 c7g.2xlarge" in out
    assert "6,351 USD" in out  # 30 x 0.29 x 730
    assert "still hold the rate" in out
    assert err == ""  # measured on Graviton3: nothing to warn of


def test_values_output_is_an_inference_model_spec(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = _run(tmp_path, capsys, "--rate", "400k", "--output", "values")
    assert code == 0
    spec = yaml.safe_load(out)["spec"]
    assert spec["autoscaling"] == {
        "minReplicas": 87, "maxReplicas": math.ceil(87 * 1.5), "targetRequestsPerSecond": 7000,
    }  # fmt: skip
    assert spec["resources"] == {"requests": {"cpu": "2"}}


def test_eksctl_output_sizes_the_serving_node_group(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = _run(tmp_path, capsys, "--rate", "400k", "--output", "eksctl")
    assert code == 0
    (group,) = yaml.safe_load(out)["managedNodeGroups"]
    assert group["name"] == "graviton-inference"
    assert (group["minSize"], group["desiredCapacity"]) == (30, 30)
    # maxReplicas 131 -> 44 a zone -> 15 nodes a zone
    assert group["maxSize"] == 45


def test_a_profile_from_another_cpu_is_flagged(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = _run(tmp_path, capsys, "--rate", "1M", "--instance", "c7i.2xlarge")
    assert code == 0
    assert "warning: the profile was measured on arm64" in err


def test_unknown_instance_and_slo_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = _run(tmp_path, capsys, "--rate", "1M", "--instance", "z9.huge")
    assert code == 2
    assert "no instance type 'z9.huge'" in err
    code, _, err = _run(tmp_path, capsys, "--rate", "1M", "--slo-p99", "1ms")
    assert code == 2
    assert "no figure for p99 <= 1 ms" in err
