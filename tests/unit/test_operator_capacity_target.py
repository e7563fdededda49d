"""The HPA's requests/s target from the serving model's measured capacity (capacity_target)."""

from __future__ import annotations

from typing import Any

import pytest
from rtbserve_operator.builders import build_hpa
from rtbserve_operator.capacity_target import CAPACITY_MEASURED, resolve
from rtbserve_operator.spec import AutoscalingSpec, InferenceModel

SHA = "cd" * 32
OTHER = "ef" * 32


def _auto(**fields: Any) -> AutoscalingSpec:
    return AutoscalingSpec.model_validate({"maxReplicas": 10, **fields})


def _profile(sha: str = SHA, rps_2ms: float | None = 10_000.0, **changes: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "kind": "rtbserve.io/capacity-profile",
        "version": 1,
        "measured_at": "2026-12-07T12:00:00+00:00",
        "model": {"name": "m", "version": "v2", "sha256": sha, "trees": 60, "max_depth": 6,
                  "features": 55},
        "pod": {"workers": 2, "cpu_limit": 2.0, "cpu_model": "Neoverse V1", "arch": "arm64"},
        "bidders_per_request": 16,
        "slos": [{"p99_ms": 2.0, "requests_per_second": rps_2ms},
                 {"p99_ms": 10.0, "requests_per_second": 14_000.0}],
        "curve": [],
    }  # fmt: skip
    doc.update(changes)
    return doc


RPS = _auto(metric="requestsPerSecond")


def test_measured_capacity_sets_the_target() -> None:
    target = resolve(RPS, SHA, _profile(), None)
    assert target.value == 7000  # 70% of 10,000
    assert "70% of 10,000 req/s at p99 <= 2 ms" in target.source
    assert target.condition is not None
    assert (target.condition.type, target.condition.status) == (CAPACITY_MEASURED, "True")


def test_share_and_objective_are_the_spec_s() -> None:
    auto = _auto(metric="requestsPerSecond", capacityShare=0.5, capacitySloP99Ms=10)
    assert resolve(auto, SHA, _profile(), None).value == 7000  # 50% of 14,000


def test_a_hand_set_target_always_wins() -> None:
    auto = _auto(metric="requestsPerSecond", targetRequestsPerSecond=123)
    target = resolve(auto, SHA, _profile(), None)
    assert (target.value, target.source, target.condition) == (123, "spec.autoscaling", None)


def test_cpu_metric_has_no_rps_target() -> None:
    assert resolve(_auto(), SHA, _profile(), None).value is None


def test_no_profile_yet_and_no_previous_target_is_cpu_only() -> None:
    target = resolve(RPS, SHA, None, None)
    assert target.value is None
    assert target.condition is not None
    assert (target.condition.status, target.condition.reason) == ("False", "ProfileMissing")


def test_a_new_model_without_a_profile_keeps_the_previous_target() -> None:
    previous = resolve(RPS, OTHER, _profile(sha=OTHER), None).to_status()
    target = resolve(RPS, SHA, _profile(sha=OTHER), previous)
    assert target.value == 7000
    assert target.source == previous["source"]
    assert target.condition is not None
    assert target.condition.reason == "ProfileOfOtherModel"
    assert "keeps 7000 req/s per pod" in target.condition.message
    # and when its own profile arrives, the target follows it
    assert resolve(RPS, SHA, _profile(rps_2ms=20_000.0), previous).value == 14_000


@pytest.mark.parametrize(
    ("capacity", "reason"),
    [
        (_profile(version=2), "ProfileInvalid"),
        ({"kind": "rtbserve.io/capacity-profile", "version": 1}, "ProfileInvalid"),
        (_profile(rps_2ms=None), "ProfileMissing"),  # no rate met 2 ms
    ],
)
def test_bad_profiles_change_nothing(capacity: dict[str, Any], reason: str) -> None:
    previous = {"targetRequestsPerSecond": 500, "source": "an earlier measurement"}
    target = resolve(RPS, SHA, capacity, previous)
    assert (target.value, target.source) == (500, "an earlier measurement")
    assert target.condition is not None
    assert target.condition.reason == reason


def test_the_hpa_carries_the_resolved_target() -> None:
    im = InferenceModel.model_validate(
        {
            "name": "m", "namespace": "ns", "uid": "u", "generation": 1, "image": "img",
            "spec": {"artifact": {"uri": "s3://bucket/m/"},
                     "autoscaling": {"maxReplicas": 10, "metric": "requestsPerSecond"}},
        }
    )  # fmt: skip
    cpu_only = build_hpa(im)
    assert cpu_only is not None
    assert [m["type"] for m in cpu_only["spec"]["metrics"]] == ["Resource"]
    hpa = build_hpa(im, 7000)
    assert hpa is not None
    pods = hpa["spec"]["metrics"][1]["pods"]
    assert pods["target"] == {"type": "AverageValue", "averageValue": "7000"}
