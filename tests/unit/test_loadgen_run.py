"""Open-loop runs against real Thrift servers on loopback (in-process load generator)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

import orjson
import pytest
from hdrh.histogram import HdrHistogram

from loadgen.aggregate import RunResult
from loadgen.connections import Target
from loadgen.engine import SendOptions
from loadgen.pool import EncodedPool, encode_pool
from loadgen.replay import read_replay
from loadgen.runner import RunSpec, run_load
from loadgen.schedule import RateSchedule
from loadgen.traffic import TrafficItem, synthetic_items

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def items() -> list[TrafficItem]:
    return synthetic_items(3000, seed=11)


@pytest.fixture(scope="module")
def pool(items: list[TrafficItem]) -> EncodedPool:
    return encode_pool(items)


class Run(Protocol):
    def __call__(
        self,
        server: Any,
        pool: EncodedPool,
        schedule: RateSchedule,
        workers: int = 1,
        **options: Any,
    ) -> RunResult: ...


@pytest.fixture(params=["native", "python"])
def run(request: pytest.FixtureRequest) -> Run:
    """Every test here runs with both sending loops: the C one and its Python reference."""
    engine = request.param

    def run_with(
        server: Any,
        pool: EncodedPool,
        schedule: RateSchedule,
        workers: int = 1,
        **options: Any,
    ) -> RunResult:
        opts = SendOptions(**{"connections": 8, "engine": engine, **options})
        result = run_load(RunSpec(Target(server.host, server.port), schedule, opts, workers), pool)
        assert result.engine == engine
        return result

    return run_with


def test_achieved_rate_matches_target(run: Run, start_stub: Any, pool: EncodedPool) -> None:
    server = start_stub()
    result = run(server, pool, RateSchedule.fixed(600, 3.0))
    assert result.scheduled == result.sent == result.ok == 1800
    assert result.errors == {}
    assert result.dropped == 0
    assert result.achieved_rate == pytest.approx(600, rel=0.02)
    assert [row.sent for row in result.series] == [600, 600, 600]
    assert sum(row.ok for row in result.series) == 1800
    assert server.calls() == 1800  # the server saw each request exactly once


def test_stall_shows_in_the_tail_not_hidden(run: Run, start_stub: Any, pool: EncodedPool) -> None:
    # one 200 ms stall of the whole server, 1.5 s into a 3 s run at 400/s
    server = start_stub(stall_after=600, stall_ms=200)
    result = run(server, pool, RateSchedule.fixed(400, 3.0))
    assert result.ok == 1200
    assert result.dropped == 0
    # requests kept leaving on schedule during the stall ...
    assert [row.sent for row in result.series] == [400, 400, 400]
    # ... and every one of them waited: ~80 requests (6.7%) saw 0..200 ms extra
    assert result.max_ms >= 195
    assert result.percentile_ms(99) >= 100
    assert result.percentile_ms(50) < 50
    stalled = max(result.series, key=lambda row: row.max_ms or 0.0)
    assert stalled.second == 1


def test_two_workers_merge_into_one_histogram(run: Run, fast_stub: Any, pool: EncodedPool) -> None:
    result = run(fast_stub, pool, RateSchedule.fixed(2000, 2.0), workers=2, connections=4)
    assert result.workers == 2
    assert result.connections == 4
    assert result.ok == result.scheduled == 4000
    parts = [HdrHistogram.decode(blob) for blob in result.worker_histograms]
    counts = [part.get_total_count() for part in parts]
    assert counts == [2000, 2000]  # each worker sent every other request
    assert result.histogram.get_total_count() == sum(counts)
    assert result.histogram.get_max_value() == max(p.get_max_value() for p in parts)
    assert [row.sent for row in result.series] == [2000, 2000]


def test_filtering_quality_from_ground_truth(
    run: Run, start_stub: Any, items: list[TrafficItem], pool: EncodedPool
) -> None:
    forwarded = {f"dsp-{k:02d}" for k in range(1, 9)}
    server = start_stub(forward=sorted(forwarded))
    result = run(server, pool, RateSchedule.fixed(500, 2.0), quality_every=1)
    sent = items[:1000]  # requests 0..999 use pool items 0..999
    bids = sum(len(item.bids or ()) for item in sent)
    kept = sum(len((item.bids or frozenset()) & forwarded) for item in sent)
    q = result.quality
    assert q.replies == 1000
    assert q.pairs == 16 * 1000
    assert q.filtered == 8 * 1000
    assert (q.bids, q.bids_kept) == (bids, kept)


def test_quality_sample_parses_every_nth(run: Run, start_stub: Any, pool: EncodedPool) -> None:
    server = start_stub()
    result = run(server, pool, RateSchedule.fixed(500, 2.0), quality_every=10)
    assert result.quality.replies == 100
    assert result.quality.filtered == 0


def test_replay_keeps_file_order_and_loops(run: Run, start_stub: Any, tmp_path: Path) -> None:
    ids = [f"req-{k}" for k in range(50)]
    path = tmp_path / "replay.jsonl"
    path.write_bytes(b"".join(orjson.dumps({"id": i, "imp": [{"id": "1"}]}) + b"\n" for i in ids))
    seen = tmp_path / "seen.txt"
    server = start_stub(record_ids=seen)
    replay = encode_pool(read_replay(str(path)))
    result = run(server, replay, RateSchedule.fixed(200, 0.6), connections=1)
    assert result.ok == 120
    server.stop()
    assert seen.read_text().split() == (ids * 3)[:120]


def test_server_exceptions_counted_by_type(run: Run, start_stub: Any, pool: EncodedPool) -> None:
    server = start_stub(raise_name="UnknownBidder", raise_every=2)
    result = run(server, pool, RateSchedule.fixed(400, 1.0))
    assert result.ok == 200
    assert result.errors == {"UnknownBidder": 200}
    assert result.error_examples["UnknownBidder"] == "stub: unknown bidder(s)"
    assert result.histogram.get_total_count() == 200  # errors are not latencies
    assert sum(row.errors for row in result.series) == 200


def test_application_exception_named(run: Run, start_stub: Any, pool: EncodedPool) -> None:
    server = start_stub(raise_name="boom")
    result = run(server, pool, RateSchedule.fixed(200, 1.0))
    assert result.errors == {"TApplicationException:INTERNAL_ERROR": 200}
    assert result.error_examples["TApplicationException:INTERNAL_ERROR"] == "stub: boom"


def test_server_dying_mid_run_leaves_partial_results(
    run: Run, start_stub: Any, pool: EncodedPool
) -> None:
    server = start_stub(exit_after=301)
    result = run(server, pool, RateSchedule.fixed(200, 3.0), timeout=0.5)
    assert 250 <= result.ok <= 300
    assert result.ok + result.error_count == result.scheduled == 600
    assert set(result.errors) <= {"ConnectionRefused", "ConnectionReset", "ConnectionClosed"}
    assert result.errors.get("ConnectionRefused", 0) > 200  # the rest found nobody listening


def test_timeouts_close_the_connection_and_count(
    run: Run, start_stub: Any, pool: EncodedPool
) -> None:
    server = start_stub(delay_ms=400)
    result = run(server, pool, RateSchedule.fixed(20, 1.0), timeout=0.1, connections=2)
    assert result.ok == 0
    assert result.errors == {"Timeout": 20}


def test_generator_behind_is_reported_not_hidden(
    run: Run, fast_stub: Any, pool: EncodedPool
) -> None:
    # far beyond what one process can send: the lag grows past --max-lag and sends are dropped
    result = run(fast_stub, pool, RateSchedule.fixed(2_000_000, 0.5), max_lag=0.05)
    assert result.dropped > 0
    assert result.sent + result.dropped + result.error_count == result.scheduled
    assert result.max_lag_s > 0.05
    assert result.late > 0


def test_spinning_polls_instead_of_sleeping_and_changes_nothing_else(
    run: Run, start_stub: Any, pool: EncodedPool
) -> None:
    """With --spin-below above the gap between sends, the loop never sleeps (its CPU time is
    about its run time); without it, the same run sleeps through most of its gaps."""
    server = start_stub()
    schedule = RateSchedule.fixed(200, 2.0)  # a send every 5 ms
    sleeping = run(server, pool, schedule)
    spinning = run(server, pool, schedule, spin_below=0.01)
    for result in (sleeping, spinning):
        assert result.scheduled == result.sent == result.ok == 400
        assert result.errors == {}
        assert result.dropped == 0
    assert spinning.cpu_s > 0.5 * 2.0
    assert sleeping.cpu_s < 0.3 * 2.0
