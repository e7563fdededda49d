"""A capacity profile written by a real saturation search against a real `rtbserve serve`.

The objectives are chosen so that the outcome does not depend on the machine's speed: every
probe meets p99 <= 10 s (the search climbs to --max-rate and stops there) and none meets
p99 <= 1 µs (no reply crosses a socket that fast).
"""

from __future__ import annotations

import platform
from pathlib import Path
from typing import Any

import pytest

from loadgen import capacity_profile as cp
from model_server.machine import kubernetes_arch

pytestmark = pytest.mark.timeout(300)


def test_profile_from_a_real_search(
    tiny_artifact: Any, start_rtbserve: Any, run_loadgen: Any, tmp_path: Path
) -> None:
    out = tmp_path / "profile.json"
    with start_rtbserve(tiny_artifact.path) as server:
        run = run_loadgen(
            "--target", f"{server.host}:{server.thrift_port}", "--seed", "11",
            "--synthetic-bidders", "8", "--find-saturation", "--profile-out", str(out),
            "--profile-slo", "1us,10s", "--rate", "50", "--max-rate", "200",
            "--step-duration", "1s", "--warmup", "0s",
        )  # fmt: skip
    assert run.code == 0, run.stderr
    assert "capacity profile: p99 <= 0.001 ms: none, p99 <= 10000 ms: 200 req/s" in run.stdout
    profile = cp.read_profile(str(out))
    model = tiny_artifact.manifest
    assert profile.model.sha256 == tiny_artifact.sha256
    assert (profile.model.name, profile.model.version) == (model.name, model.version)
    assert (profile.model.trees, profile.model.max_depth) == (20, 4)
    assert profile.model.features == len(model.feature_names)
    assert profile.pod.workers == 1
    assert profile.pod.arch == kubernetes_arch(platform.machine())
    assert profile.pod.cpu_limit > 0
    assert profile.bidders_per_request == 8
    assert [(s.p99_ms, s.requests_per_second) for s in profile.slos] == [
        (0.001, None), (10_000.0, 200.0),
    ]  # fmt: skip
    rates = [p.rate for p in profile.curve]
    assert rates == sorted(rates)
    assert max(rates) == 200
    climbed = [p for p in profile.curve if p.rate >= 50]  # 50 by both searches, then 100, 200
    assert sorted({p.rate for p in climbed}) == [50, 100, 200]
    assert all(p.healthy and p.error_ratio == 0 for p in climbed)
    assert all(p.p50_ms <= p.p99_ms <= p.p999_ms for p in profile.curve)


def test_profile_out_needs_a_search(run_loadgen: Any, tmp_path: Path) -> None:
    run = run_loadgen("--target", "127.0.0.1:1", "--profile-out", str(tmp_path / "p.json"))
    assert run.code == 2
    assert "--profile-out records a saturation search" in run.stderr
