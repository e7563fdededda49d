"""Merging per-worker HDR histograms and per-second series."""

from __future__ import annotations

import math
from array import array

import numpy as np

from loadgen.aggregate import SeriesBuilder, merge_histograms
from loadgen.recorder import HIST_HIGHEST_US, Recorder, new_histogram, record_batch
from loadgen.records import SecondReport
from loadgen.schedule import RateSchedule

PERCENTILES = [50.0, 90.0, 99.0, 99.9, 100.0]


def test_merged_histogram_is_the_sum_of_its_parts() -> None:
    rng = np.random.default_rng(7)
    parts = [rng.lognormal(mean=6 + k, sigma=1.0, size=5000).astype(np.int64) + 1 for k in range(3)]
    encoded = []
    for values in parts:
        h = new_histogram()
        for v in values.tolist():
            h.record_value(v)
        encoded.append(h.encode())
    merged = merge_histograms(encoded)
    everything = new_histogram()
    for v in np.concatenate(parts).tolist():
        everything.record_value(v)

    assert merged.get_total_count() == sum(len(p) for p in parts) == everything.get_total_count()
    for p in PERCENTILES:
        assert merged.get_value_at_percentile(p) == everything.get_value_at_percentile(p)
    # and each percentile is the exact rank's value, up to HDR's 3 significant digits
    ordered = np.sort(np.concatenate(parts))
    for p in PERCENTILES[:-1]:
        exact = int(ordered[int(p / 100 * len(ordered) + 0.5) - 1])
        assert merged.get_value_at_percentile(p) == merged.get_highest_equivalent_value(exact)
    assert merged.get_max_value() == everything.get_max_value()
    assert merged.get_min_value() == everything.get_min_value()


def test_series_waits_for_every_worker_and_merges_exactly() -> None:
    series = SeriesBuilder(2, RateSchedule.fixed(100, 2.0))
    a = array("q", [100, 200, 300])
    b = array("q", [400, 500])
    first = SecondReport(0, 0, sent=50, ok=3, errors=1, dropped=0, late=2, latencies_us=a.tobytes())
    second = SecondReport(
        1, 0, sent=50, ok=2, errors=0, dropped=1, late=0, latencies_us=b.tobytes()
    )
    assert series.add(first) is None
    row = series.add(second)
    assert row is not None
    assert (row.sent, row.ok, row.errors, row.dropped, row.late) == (100, 5, 1, 1, 2)
    assert row.p50_ms == 0.3
    assert row.max_ms == 0.5
    assert row.target_rate == 100


def test_batch_recording_equals_one_call_per_value() -> None:
    rng = np.random.default_rng(3)
    values = np.concatenate(
        [
            rng.integers(0, 3000, 2000),  # exact region and the first buckets
            rng.lognormal(8, 2.5, 20000).astype(np.int64),  # wide spread, many buckets
            np.array([1, 2047, 2048, 2049, 4095, 4096, 10**9, 2**31 + 12345]),
        ]
    ).astype(np.int64)
    one_by_one = new_histogram()
    for v in values.tolist():
        one_by_one.record_value(v)
    batched = new_histogram()
    record_batch(batched, values[: len(values) // 2])
    record_batch(batched, values[len(values) // 2 :])
    assert batched.get_total_count() == one_by_one.get_total_count() == len(values)
    assert batched.get_min_value() == one_by_one.get_min_value()
    assert batched.get_max_value() == one_by_one.get_max_value()
    for p in [0.0, 1.0, *PERCENTILES]:
        assert batched.get_value_at_percentile(p) == one_by_one.get_value_at_percentile(p)
    assert list(batched.counts) == list(one_by_one.counts)


def test_batch_recording_skips_what_one_call_per_value_skips() -> None:
    too_high = new_histogram().get_highest_equivalent_value(HIST_HIGHEST_US) * 4
    values = np.array([-5, 0, 7, 5000, too_high, 123_456], dtype=np.int64)
    one_by_one = new_histogram()
    for v in values.tolist():
        one_by_one.record_value(v)
    batched = new_histogram()
    record_batch(batched, values)
    assert batched.get_total_count() == one_by_one.get_total_count() == 4
    assert batched.get_max_value() == one_by_one.get_max_value()
    assert batched.get_min_value() == one_by_one.get_min_value() == 0
    assert list(batched.counts) == list(one_by_one.counts)


def test_recording_as_replies_arrive_equals_recording_each_second_whole() -> None:
    """record_pending moves latencies into the histogram while seconds are still open; what
    arrives later is added when the second closes, and nothing is counted twice."""
    rng = np.random.default_rng(11)
    incremental = Recorder(3.0, timeout=1.0, truth=None, pool_size=1, stride=1)
    whole = Recorder(3.0, timeout=1.0, truth=None, pool_size=1, stride=1)
    incremental.warm = whole.warm = 10.0
    incremental.record_pending(9.5)  # still warming up: nothing to do
    assert incremental.hist.get_total_count() == 0
    sent = 0
    for step in range(60):  # 50 ms steps over 3 s
        now = 10.0 + step * 0.05
        second = int(now - 10.0)
        batch = rng.lognormal(5, 1, 40).astype(np.int64)
        for rec in (incremental, whole):
            rec.sec_lat[second].extend(batch.tolist())
        sent += len(batch)
        incremental.record_pending(now)
    # the first second is recorded before it closes
    assert incremental.hist.get_total_count() >= 20 * 40
    late = array("q", [999_999])  # a slow reply still landing in the last second
    for rec in (incremental, whole):
        rec.sec_lat[2].extend(late)
        reports = rec.closed_seconds(math.inf, worker=0)
        assert [r.ok for r in reports] == [800, 800, 801]
    assert incremental.hist.get_total_count() == whole.hist.get_total_count() == sent + 1
    assert list(incremental.hist.counts) == list(whole.hist.counts)
    assert incremental.hist.get_max_value() == whole.hist.get_max_value()
