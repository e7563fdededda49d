"""The benchmark's small parts: CPU accounting, wire helpers, loadgen reports, workloads, pins."""

from __future__ import annotations

import math
import struct
from pathlib import Path

import pytest

from bench.cpu import CLOCK_TICKS, busiest_window, core_busy_seconds
from bench.drivers import LoadgenDriver, loadgen_measurement
from bench.echo_limit import score_call, score_reply, thrift_module
from bench.measurements import RunMeasurement, SystemResult
from bench.peer_driver import fp32_raw, thrift_reply_ok, v2_json_body
from bench.prepare import pinned_versions
from bench.venvs import PEER_ENVS, PeerEnv, requirements_hash
from bench.workload import candidate_lists
from loadgen.options import parse_config

STAT = """cpu  100 0 50 1000 10 0 5 0 0 0
cpu0 40 2 20 500 5 1 2 3 0 0
cpu1 60 0 30 500 5 0 3 0 0 0
intr 12345
"""


def test_core_busy_counts_everything_but_idle_and_iowait() -> None:
    # cpu0: user 40 + nice 2 + system 20 + irq 1 + softirq 2 + steal 3 = 68 ticks.
    assert core_busy_seconds(0, STAT) == pytest.approx(68 / CLOCK_TICKS)
    assert core_busy_seconds(1, STAT) == pytest.approx(93 / CLOCK_TICKS)
    with pytest.raises(ValueError, match="cpu7"):
        core_busy_seconds(7, STAT)


def test_busiest_window_skips_idle_start_and_end() -> None:
    times = [0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0]
    # Idle for a second, busy (1 core) for four, idle again.
    values = [0.0, 0.0, 1.0, 2.0, 3.0, 4.0, 4.0]
    start, end = busiest_window(times, values, 3.0) or (-1, -1)
    assert (values[end] - values[start]) / (times[end] - times[start]) == pytest.approx(1.0)
    assert busiest_window(times, values, 10.0) is None


def test_other_load_is_core_busy_minus_the_server() -> None:
    run = RunMeasurement(1, 1, 1, 1, 1, 1, 1, 0, 1, server_cpu_cores=0.6, server_core_busy=0.9)
    assert run.other_load_on_server_core == pytest.approx(0.3)
    assert RunMeasurement(1, 1, 1, 1, 1, 1, 1, 0, 1).other_load_on_server_core is None


def test_system_result_round_trips_through_dicts() -> None:
    run = RunMeasurement(100, 99, 0.1, 0.5, 0.9, 1.2, 990, 0, 10.0, driver_late_share=0.01)
    result = SystemResult("rtbserve", 16, 100, 120, {"0.5": run}, "saturation", [run], "n")
    assert SystemResult.from_dict(result.to_dict()) == result


def test_thrift_reply_classification() -> None:
    thrift = thrift_module()
    frame = score_reply(thrift, "r1", "v1", [("dsp-01", 0.5, True)])
    assert thrift_reply_ok(frame[4:])
    # The same reply typed EXCEPTION, and a result whose first field is an exception (id 1).
    as_exception = bytearray(frame[4:])
    as_exception[3] = 3
    assert not thrift_reply_ok(bytes(as_exception))
    name_len = struct.unpack("!i", frame[8:12])[0]
    field_at = 4 + 4 + 4 + name_len + 4  # past frame length, version, name and seqid
    declared = bytearray(frame)
    declared[field_at + 1 : field_at + 3] = (1).to_bytes(2, "big")
    assert not thrift_reply_ok(bytes(declared[4:]))
    assert not thrift_reply_ok(b"\x80\x01")


def test_score_call_is_a_framed_strict_binary_call() -> None:
    thrift = thrift_module()
    frame = score_call(thrift, b'{"id":"1"}', ["dsp-01", "dsp-02"])
    assert struct.unpack("!i", frame[:4])[0] == len(frame) - 4
    assert frame[4:8] == b"\x80\x01\x00\x01"  # version 1, CALL
    assert frame[12:17] == b"score"
    assert b'{"id":"1"}' in frame
    assert b"dsp-02" in frame


def test_v2_bodies_send_missing_features_as_null_and_raw_as_little_endian() -> None:
    rows: list[list[float | None]] = [[1.0, math.nan], [None, 2.5]]
    body = v2_json_body(rows, "features")
    assert b'"shape":[2,2]' in body
    assert b'"data":[1.0,null,null,2.5]' in body
    raw = fp32_raw(rows)
    values = struct.unpack("<4f", raw)
    assert values[0] == 1.0
    assert math.isnan(values[1])
    assert math.isnan(values[2])
    assert values[3] == 2.5


def test_loadgen_report_maps_to_a_measurement() -> None:
    report = {
        "target_rate": 5000.0,
        "achieved_rate": 4990.0,
        "duration_s": 10.0,
        "latency_ms": {"p50": 0.2, "p99": 0.9, "p99_9": 1.5, "max": 3.0},
        "requests": {"ok": 49_900, "errors": 3, "dropped": 7},
        "generator": {"late_share": 0.02},
    }
    run = loadgen_measurement(report)
    assert run.offered_rps == 5000.0
    assert run.achieved_rps == 4990.0
    assert (run.p50_ms, run.p99_ms, run.p999_ms, run.max_ms) == (0.2, 0.9, 1.5, 3.0)
    assert run.requests == 49_900
    assert run.errors == 10  # dropped sends count as failures
    assert run.driver_late_share == 0.02
    assert not run.meets(2.0, 0.97)


def test_candidate_lists_are_distinct_seeded_and_bounded() -> None:
    bidders = [f"dsp-{i:02d}" for i in range(1, 17)]
    lists = candidate_lists(bidders, 4, 50, seed=3)
    assert len(lists) == 50
    assert all(len(set(c)) == 4 and set(c) <= set(bidders) for c in lists)
    assert lists == candidate_lists(bidders, 4, 50, seed=3)
    assert lists != candidate_lists(bidders, 4, 50, seed=4)
    assert all(sorted(c) == bidders for c in candidate_lists(bidders, 16, 5, seed=1))
    with pytest.raises(ValueError, match="model knows 16"):
        candidate_lists(bidders, 17, 1, seed=1)


def test_peer_pins_are_exact_and_hashed(tmp_path: Path) -> None:
    pins = pinned_versions(PEER_ENVS["mlserver"].requirements)
    assert pins["mlserver"] == "1.7.1"
    assert pins["mlserver-xgboost"] == "1.7.1"
    for env in PEER_ENVS.values():
        for raw in env.requirements.read_text().splitlines():
            line = raw.split("#")[0].strip()
            assert not line or "==" in line, f"{env.requirements.name}: {line!r} is not pinned"
    req = tmp_path / "r.txt"
    req.write_text("a==1\n")
    env = PeerEnv("x", req)
    before = requirements_hash(env)
    req.write_text("a==2\n")
    assert requirements_hash(env) != before


def test_loadgen_driver_arguments_are_what_loadgen_accepts(tmp_path: Path) -> None:
    driver = LoadgenDriver(
        argv=["rtbserve"],
        replay=tmp_path / "replay.jsonl",
        target="127.0.0.1:9090",
        connections=16,
        core=1,
        server=None,  # type: ignore[arg-type]  # not started: only the arguments are built
    )
    (tmp_path / "replay.jsonl").write_text("")
    config = parse_config(driver.loadgen_args(2500.0, 3.0, 1.0, tmp_path / "run.json"))
    assert config.options.connections == 16
    assert config.options.warmup == 1.0
    assert config.options.quality_every == 0
    # the generator polls between sends, since the load core is its own
    assert config.options.spin_below == pytest.approx(0.0005)
    assert config.schedule.duration == 3.0
    assert config.schedule.rate_at(1.5) == 2500.0
    assert config.workers == 1
