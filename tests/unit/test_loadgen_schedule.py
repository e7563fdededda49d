"""Arrival schedules: counts and intended send times."""

from __future__ import annotations

import numpy as np
import pytest

from loadgen.schedule import RateSchedule, parse_duration, parse_rate


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("10s", 10.0), ("500ms", 0.5), ("250us", 250e-6), ("2m", 120.0), ("1.5", 1.5)],
)
def test_parse_duration(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "ten", "5 days", "-1s"])
def test_parse_duration_rejects(text: str) -> None:
    with pytest.raises(ValueError, match="not a duration"):
        parse_duration(text)


def test_parse_rate() -> None:
    assert parse_rate("2000") == 2000.0
    assert parse_rate("20k") == 20000.0
    with pytest.raises(ValueError, match="must be positive"):
        parse_rate("0")


def test_fixed_rate_times_are_evenly_spaced() -> None:
    s = RateSchedule.fixed(1000, 5.0)
    assert s.total_requests == 5000
    times = s.times(np.arange(s.total_requests, dtype=np.int64))
    assert times[0] == 0.0
    assert np.allclose(np.diff(times), 0.001)
    assert times[-1] < 5.0


def test_steps_change_rate_at_boundaries() -> None:
    s = RateSchedule.steps([100, 200, 400], 2.0)
    assert s.total_requests == 1400
    assert s.duration == 6.0
    times = s.times(np.arange(s.total_requests, dtype=np.int64))
    counts = np.histogram(times, bins=[0, 2, 4, 6])[0]
    assert counts.tolist() == [200, 400, 800]
    assert [s.rate_at(t) for t in (1, 3, 5)] == [100, 200, 400]


def test_ramp_count_and_monotonic_times() -> None:
    s = RateSchedule.ramp(1000, 3000, 4.0)
    assert s.total_requests == 8000  # mean 2000/s over 4 s
    times = s.times(np.arange(s.total_requests, dtype=np.int64))
    assert np.all(np.diff(times) > 0)
    first, last = np.histogram(times, bins=[0, 1, 3, 4])[0][[0, 2]]
    assert first == pytest.approx(1250, abs=2)  # integral of the rate over [0, 1]
    assert last == pytest.approx(2750, abs=2)
    assert s.rate_at(2.0) == pytest.approx(2000)


def test_request_limit_shortens_the_schedule() -> None:
    s = RateSchedule.fixed(1000, 10.0, max_requests=2500)
    assert s.total_requests == 2500
    assert s.duration == pytest.approx(2.5)


def test_warmup_goes_first_and_keeps_measured_times() -> None:
    measured = RateSchedule.steps([1000, 2000], 1.0)
    full, count = measured.with_warmup(0.5)
    assert count == 500
    assert full.total_requests == count + measured.total_requests
    times = full.times(np.arange(count, full.total_requests, dtype=np.int64)) - 0.5
    expected = measured.times(np.arange(measured.total_requests, dtype=np.int64))
    assert np.allclose(times, expected)
