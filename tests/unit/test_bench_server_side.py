"""The bench's view of the server itself: its latency histogram, warm cores, the sizing basis."""

from __future__ import annotations

import os
import struct
import subprocess
import time
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from bench import warm_cores
from bench.cpu import CpuSampler
from bench.measurements import RunMeasurement, SystemResult
from bench.report import BenchReport
from bench.server_latency import delta, parse_buckets, quantile
from bench.sizing_table import basis_of
from bench.summary import render_summary
from model_server.metrics import ServerCollector, WorkerStats


def exposition(latencies: list[float]) -> str:
    """What a real rtbserve /metrics shows after answering calls that took `latencies`."""
    stats = WorkerStats()
    for seconds in latencies:
        stats.request("score", seconds)
    collector = ServerCollector({"name": "m", "version": "v", "sha256": "s", "backend": "native"})
    collector.update(0, stats)
    registry = CollectorRegistry()
    registry.register(collector)
    return generate_latest(registry).decode()


def test_buckets_come_from_the_servers_own_exposition() -> None:
    buckets = parse_buckets(exposition([0.0003] * 90 + [0.004] * 10))
    assert buckets is not None
    assert buckets[-1] == (float("inf"), 100.0)
    counts = dict(buckets)
    assert counts[0.00025] == 0
    assert counts[0.0005] == 90
    assert counts[0.005] == 100
    assert parse_buckets("# nothing here\n") is None


def test_quantiles_interpolate_within_the_bucket() -> None:
    buckets = parse_buckets(exposition([0.0003] * 90 + [0.004] * 10))
    assert buckets is not None
    # Rank 50 of 90 in (0.25 ms, 0.5 ms]: 0.25 + 0.25 * 50/90 ms.
    assert quantile(buckets, 0.5) == pytest.approx(0.00025 + 0.00025 * 50 / 90)
    # Rank 99 is the 9th of 10 in (3 ms, 5 ms].
    assert quantile(buckets, 0.99) == pytest.approx(0.003 + 0.002 * 9 / 10)
    assert quantile([(0.001, 0.0), (float("inf"), 0.0)], 0.99) is None
    # Beyond the last finite bound all that can be said is "at least that".
    assert quantile([(0.001, 0.0), (float("inf"), 5.0)], 0.5) == 0.001
    with pytest.raises(ValueError, match="q must be"):
        quantile(buckets, 1.5)


def test_a_runs_histogram_is_the_difference_of_two_scrapes() -> None:
    before = parse_buckets(exposition([0.0003] * 10))
    after = parse_buckets(exposition([0.0003] * 10 + [0.004] * 5))
    assert before is not None
    assert after is not None
    run = delta(before, after)
    assert run[-1][1] == 5
    assert quantile(run, 0.5) == pytest.approx(0.003 + 0.002 * 2.5 / 5)
    with pytest.raises(ValueError, match="different buckets"):
        delta(before[:-1], after)


def test_cpu_sampler_leaves_out_the_filler_on_the_core() -> None:
    ticks = iter(range(1000))
    sampler = CpuSampler(lambda: 0.0, core=0, interval=0.05, filler_cpu=lambda core: 1e6)
    plain = CpuSampler(lambda: float(next(ticks)), core=0, interval=0.05)
    for each in (sampler, plain):
        for _ in range(5):
            each._sample()
    # The filler's (huge) CPU seconds are subtracted from every busy sample of core 0.
    assert len(sampler.busy) == len(plain.busy) == 5
    assert all(b < -1e5 for b in sampler.busy)
    assert all(b >= 0 for b in plain.busy)


def _policy_and_state(pid: int) -> tuple[int, str]:
    stat = Path(f"/proc/{pid}/stat").read_text()
    return os.sched_getscheduler(pid), stat[stat.rindex(")") + 2]


def test_warm_cores_run_idle_priority_loops_pinned_pausable_and_always_stopped(
    tmp_path: Path,
) -> None:
    core = sorted(os.sched_getaffinity(0))[0]
    with warm_cores.keep_warm([core, core], tmp_path, prefer_kernel_poll=False) as cores:
        assert cores == [core]
        assert warm_cores.method() == warm_cores.IDLE_LOOP
        assert warm_cores.warm_cores() == [core]
        spinner = warm_cores._SPINNERS[core]
        deadline = time.monotonic() + 10
        while _policy_and_state(spinner.pid)[0] != os.SCHED_IDLE and time.monotonic() < deadline:
            time.sleep(0.02)  # the loop sets its own policy and affinity as it starts
        assert _policy_and_state(spinner.pid)[0] == os.SCHED_IDLE
        assert os.sched_getaffinity(spinner.pid) == {core}
        with warm_cores.paused():
            assert _policy_and_state(spinner.pid)[1] == "T"
        assert _policy_and_state(spinner.pid)[1] in "RS"
        assert warm_cores.filler_cpu_seconds(core) >= 0.0
    assert spinner.poll() is not None
    assert warm_cores.method() is None
    assert warm_cores.warm_cores() == []
    assert warm_cores.filler_cpu_seconds(core) == 0.0
    with warm_cores.keep_warm([core], tmp_path, enabled=False) as none:
        assert none == []
        assert warm_cores.warm_cores() == []


def _latency_target_us() -> int:
    """The PM QoS CPU latency target now in force (reading the device returns it)."""
    with open(warm_cores.QOS_DEVICE, "rb") as device:
        return int(struct.unpack("i", device.read(4))[0])


def test_polling_idle_is_found_in_cpuidle_states(tmp_path: Path) -> None:
    for core, names in ((0, ["POLL", "C1"]), (1, ["C1"])):
        for k, name in enumerate(names):
            state = tmp_path / f"cpu{core}" / "cpuidle" / f"state{k}"
            state.mkdir(parents=True)
            (state / "name").write_text(name + "\n")
    assert warm_cores.polling_idle_available([0], tmp_path)
    assert not warm_cores.polling_idle_available([0, 1], tmp_path)  # core 1 has no POLL
    assert not warm_cores.polling_idle_available([2], tmp_path)  # no cpuidle at all
    assert not warm_cores.polling_idle_available([], tmp_path)


def test_without_polling_idle_the_loops_keep_cores_warm(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # a kernel without a cpuidle driver halts idle cores whatever the latency request says
    monkeypatch.setattr(warm_cores, "polling_idle_available", lambda cores: False)
    core = sorted(os.sched_getaffinity(0))[0]
    with warm_cores.keep_warm([core], tmp_path) as cores:
        assert cores == [core]
        assert warm_cores.method() == warm_cores.IDLE_LOOP
        assert not warm_cores._QOS
        assert warm_cores.warm_cores() == [core]
    assert warm_cores.method() is None


def test_kernel_poll_holds_a_zero_wakeup_latency_request_while_warm(tmp_path: Path) -> None:
    if not os.access(warm_cores.QOS_DEVICE, os.W_OK):
        pytest.skip(f"{warm_cores.QOS_DEVICE} cannot be written here (needs root)")
    core = sorted(os.sched_getaffinity(0))[0]
    if not warm_cores.polling_idle_available([core]):
        pytest.skip("no cpuidle POLL state on this kernel: idle cores halt whatever is asked")
    with warm_cores.keep_warm([core, core], tmp_path) as cores:
        assert cores == [core]
        assert warm_cores.method() == warm_cores.KERNEL_POLL
        assert warm_cores.warm_cores() == []  # no busy loop: the kernel's idle task polls
        assert warm_cores.filler_cpu_seconds(core) == 0.0
        # The kernel's aggregate wake-up latency target, read back from the device: held at
        # 0 us, so cpuidle may enter only POLL (whether the core idles meanwhile is the load's).
        assert _latency_target_us() == 0
        with warm_cores.paused():
            assert warm_cores.method() == warm_cores.KERNEL_POLL
            assert not warm_cores._QOS  # released while paused
        assert len(warm_cores._QOS) == 1
    assert warm_cores.method() is None
    assert not warm_cores._QOS
    # A device that cannot be written means the busy-loop method.
    assert warm_cores._request_zero_wakeup_latency(tmp_path / "missing" / "device") is None


def _rtbserve(saturation: float | None, capacity: float | None) -> SystemResult:
    run = RunMeasurement(
        4000, 4000, 0.3, 1.5, 3.0, 5.0, 40_000, 0, 10.0, server_p50_ms=0.1, server_p99_ms=0.42
    )
    return SystemResult("rtbserve", 16, saturation, capacity, points={"0.5": run})


def _report(*systems: SystemResult) -> BenchReport:
    return BenchReport(
        date="2026-11-23",
        started_at="2026-11-23T12:00:00Z",
        machine={},
        settings={"slo_p99_ms": 2.0, "load_points": [0.5], "warm_cores": True},
        systems=list(systems),
    )


def test_fleet_is_sized_from_saturation_else_from_capacity_and_says_which() -> None:
    met = basis_of(_report(_rtbserve(10_000, 12_000)))
    assert met is not None
    assert (met.requests_per_second, met.p99_ms, met.met_slo) == (10_000, 2.0, True)
    missed_report = _report(_rtbserve(None, 9_000))
    missed = basis_of(missed_report)
    assert missed is not None
    assert (missed.requests_per_second, missed.p99_ms, missed.met_slo) == (9_000, 50.0, False)
    text = render_summary(missed_report, None)
    assert "no rate met the SLO in this run" in text
    assert "9,000 req/s" in text
    assert basis_of(_report(_rtbserve(None, None))) is None


def test_summary_puts_the_servers_latency_beside_the_clients() -> None:
    text = render_summary(_report(_rtbserve(8_000, 10_000)), None)
    assert "### Server-side latency" in text
    assert "0.300 / 1.500 / 3.000" in text  # client p50 / p99 / p99.9
    assert "0.100 / 0.420 / —" in text  # server-side, p99.9 not read
    assert "kept awake" in text


@pytest.mark.parametrize("bad", [[], ["x"], ["-1"], ["1", "2"]])
def test_idle_loop_refuses_a_bad_core(tmp_path: Path, bad: list[str]) -> None:
    binary = warm_cores.build_idle_loop(tmp_path)
    done = subprocess.run(
        [str(binary), *bad], check=False, capture_output=True, text=True, timeout=10
    )
    assert done.returncode == 2
    assert "idle_loop" in done.stderr or "usage" in done.stderr


def test_cpu_sampler_drops_readings_it_cannot_date() -> None:
    """A reading held up midway (the sampler runs at the lowest priority) is left out, so a
    server that used 0.5 core is not reported as using more from a late sample.

    The clock is injected: every third reading is held up 30 ms between the sampler's two
    clock reads, and the samples are taken 20 ms apart, whatever this machine's speed."""
    now = [0.0]
    calls = iter(range(10**6))

    def server_cpu() -> float:
        used = now[0] * 0.5  # the server runs at half a core
        if next(calls) % 3 == 1:
            now[0] += 0.03  # held up after reading: the value is 30 ms older than the end
        return used

    sampler = CpuSampler(server_cpu, core=None, interval=0.02, clock=lambda: now[0])
    for _ in range(30):
        sampler._sample()
        now[0] += 0.02
    assert sampler.dropped == 10
    assert len(sampler.times) == 20
    use = sampler.use_over(0.2)
    assert use is not None
    # Kept samples are dated at the middle of an instant reading: exactly half a core.
    assert use.server_cores == pytest.approx(0.5, abs=1e-9)
