"""The HPA's requests/s target follows the serving model's measured capacity, on a real cluster.

The capacity profile is written into status.capacity as the load test writes it
(`rtbserve loadgen --profile-out ... --inference-model NAME`); here kubectl writes it, since
kwok runs no containers. The operator sets the target from it, keeps the previous one (and
says so) for a new model without a profile or for a bad profile, and a hand-set target wins.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from typing import Any

import pytest

from tests.e2e.test_operator_lifecycle import SETTLE, Models, spec_for, unique
from tests.operator_fixtures import OperatorHarness, PublishedModels, wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]

AUTO = {"minReplicas": 1, "maxReplicas": 5, "metric": "requestsPerSecond"}


@pytest.fixture
def models(kube_cluster: Any, running_operator: OperatorHarness) -> Models:
    return Models(kube_cluster, running_operator.namespace)


def _profile(sha: str, rps_2ms: float, version: int = 1) -> dict[str, Any]:
    return {
        "kind": "rtbserve.io/capacity-profile",
        "version": version,
        "measured_at": "2026-12-07T12:00:00+00:00",
        "model": {"name": "m", "version": "v", "sha256": sha, "trees": 20, "max_depth": 4,
                  "features": 55},
        "pod": {"workers": 1, "cpu_limit": 1.0, "cpu_model": "Neoverse V1", "arch": "arm64"},
        "bidders_per_request": 8,
        "slos": [{"p99_ms": 2.0, "requests_per_second": rps_2ms},
                 {"p99_ms": 10.0, "requests_per_second": rps_2ms * 1.5}],
        "curve": [],
    }  # fmt: skip


def _write_capacity(models: Models, name: str, profile: dict[str, Any]) -> None:
    body = json.dumps({"status": {"capacity": profile}})
    models.kubectl("patch", "inferencemodel", name, "--subresource=status", "--type=merge",
                   "-p", body)  # fmt: skip


def _quantity(text: str) -> str:
    """A Kubernetes quantity as a plain integer string (the API server writes 7000 as 7k)."""
    scale = {"k": 1000, "M": 1_000_000}.get(text[-1:], 1)
    return str(int(float(text.rstrip("kM")) * scale))


def _rps_target(models: Models, name: str) -> str | None:
    hpa = models.json("get", "hpa", name)
    for metric in hpa["spec"]["metrics"]:
        if metric["type"] == "Pods":
            return _quantity(str(metric["pods"]["target"]["averageValue"]))
    return None


def _capacity_cli(models: Models, *args: str) -> subprocess.CompletedProcess[str]:
    """`rtbserve capacity` with this cluster's kubeconfig, as a user runs it."""
    env = os.environ | {"KUBECONFIG": str(models.cluster.kubeconfig)}
    return subprocess.run(
        [sys.executable, "-m", "rtbserve", "capacity", *args],
        env=env, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip


def _wait_target(models: Models, name: str, value: str | None) -> dict[str, Any]:
    def check() -> dict[str, Any] | None:
        status = models.get(name).get("status", {})
        reported = (status.get("autoscaling") or {}).get("targetRequestsPerSecond")
        hpa_ok = _rps_target(models, name) == value
        ok = hpa_ok and (str(reported) if reported is not None else None) == value
        return status if ok else None

    found: dict[str, Any] = wait_until(check, SETTLE, f"{name}: HPA target {value}", interval=1)
    return found


def test_hpa_target_set_kept_and_updated_as_profiles_arrive(
    models: Models, published_models: PublishedModels
) -> None:
    first, second = published_models.first, published_models.second
    name = unique("cap")
    models.apply(name, spec_for(first.uri, autoscaling=AUTO))
    # no profile yet: CPU only, and the condition says why
    models.wait_condition(name, "CapacityMeasured", "False", "ProfileMissing")
    _wait_target(models, name, None)
    missing = _capacity_cli(models, "--profile", f"im/{name}", "-n", models.ns, "--rate", "1M")
    assert missing.returncode == 2
    assert "has no status.capacity yet" in missing.stderr

    _write_capacity(models, name, _profile(first.sha256, 10_000))
    status = _wait_target(models, name, "7000")
    assert "70% of 10,000 req/s at p99 <= 2 ms" in status["autoscaling"]["source"]
    models.wait_condition(name, "CapacityMeasured", "True", "Measured")
    wide = models.kubectl("get", "inferencemodel", name, "-o", "wide").stdout
    assert "RPS-TARGET" in wide
    assert "7000" in wide

    # the sizing command reads the same measurement from the InferenceModel
    sized = _capacity_cli(models, "--profile", f"inferencemodel/{name}", "-n", models.ns,
                          "--rate", "100k", "--output", "json")  # fmt: skip
    assert sized.returncode == 0, sized.stderr
    assert json.loads(sized.stdout)["model_sha256"] == first.sha256
    assert json.loads(sized.stdout)["capacity_per_pod"] == 10_000

    _write_capacity(models, name, _profile(first.sha256, 20_000))  # a new measurement
    _wait_target(models, name, "14000")

    # a new model: its profile is not there yet, so the target stays, and says so
    models.patch_spec(name, {"artifact": {"uri": second.uri}})
    models.wait_condition(name, "CapacityMeasured", "False", "ProfileOfOtherModel")
    _wait_target(models, name, "14000")
    assert models.template_sha(name) == second.sha256

    _write_capacity(models, name, _profile(second.sha256, 5_000))
    _wait_target(models, name, "3500")

    # a profile this operator cannot read changes nothing
    _write_capacity(models, name, _profile(second.sha256, 50_000, version=2))
    cond = models.wait_condition(name, "CapacityMeasured", "False", "ProfileInvalid")
    assert "profile version 2" in cond["message"]
    _wait_target(models, name, "3500")

    # a hand-set target always wins
    models.patch_spec(name, {"autoscaling": {**AUTO, "targetRequestsPerSecond": 123}})
    _wait_target(models, name, "123")


def test_a_real_saturation_search_sets_the_hpa_target(
    models: Models,
    published_models: PublishedModels,
    small_artifact: Any,
    start_rtbserve: Any,
    run_loadgen: Any,
) -> None:
    """The load test's search writes status.capacity; the operator sets the HPA from it.

    The objective is p99 <= 10 s, which every probe meets, so the search climbs to --max-rate
    whatever the machine's speed and the target is known: 70% of 200 req/s.
    """
    name = unique("measured")
    auto = {**AUTO, "capacitySloP99Ms": 10_000}
    models.apply(name, spec_for(published_models.first.uri, autoscaling=auto))
    models.wait_condition(name, "CapacityMeasured", "False", "ProfileMissing")
    env = {"KUBECONFIG": str(models.cluster.kubeconfig)}
    with start_rtbserve(small_artifact) as server, tempfile.TemporaryDirectory() as work:
        run = run_loadgen(
            "--target", f"{server.host}:{server.thrift_port}", "--synthetic-bidders", "4",
            "--seed", "7", "--find-saturation", "--profile-out", f"{work}/profile.json",
            "--profile-slo", "1us,10s", "--rate", "50", "--max-rate", "200",
            "--step-duration", "1s", "--warmup", "0s",
            "--inference-model", name, "--namespace", models.ns, env=env,
        )  # fmt: skip
    assert run.code == 0, run.stderr
    assert f"status.capacity written to InferenceModel {models.ns}/{name}" in run.stdout
    status = _wait_target(models, name, "140")
    assert "70% of 200 req/s at p99 <= 10000 ms" in status["autoscaling"]["source"]
    assert status["capacity"]["model"]["sha256"] == published_models.first.sha256
    models.wait_condition(name, "CapacityMeasured", "True", "Measured")
