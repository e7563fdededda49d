"""The saturation search, driven by simulated servers (no processes, no timing)."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from bench.config import SearchConfig
from bench.measurements import RunMeasurement
from bench.saturation import MIN_RATE, Criterion, bounds, find_saturation, next_rate


def simulated_server(
    capacity: float, base_p99_ms: float = 0.5
) -> tuple[Callable[[float], RunMeasurement], list[float]]:
    """A server whose p99 grows as load nears capacity and that delivers at most `capacity`."""
    calls: list[float] = []

    def measure(rate: float) -> RunMeasurement:
        calls.append(rate)
        load = rate / capacity
        p99 = base_p99_ms / max(1e-3, 1.0 - load) if load < 1 else 1000.0
        return RunMeasurement(
            offered_rps=rate,
            achieved_rps=min(rate, capacity),
            p50_ms=p99 / 3,
            p99_ms=p99,
            p999_ms=p99 * 1.5,
            max_ms=p99 * 2,
            requests=int(min(rate, capacity) * 4),
            errors=0,
            duration_s=4.0,
        )

    return measure, calls


def run(
    offered: float, p99: float, achieved: float | None = None, errors: int = 0
) -> RunMeasurement:
    return RunMeasurement(
        offered_rps=offered,
        achieved_rps=offered if achieved is None else achieved,
        p50_ms=p99 / 2,
        p99_ms=p99,
        p999_ms=p99,
        max_ms=p99,
        requests=100,
        errors=errors,
        duration_s=1.0,
    )


def test_finds_the_rate_where_p99_crosses_the_slo_within_tolerance() -> None:
    cfg = SearchConfig(start_rate=1000, tolerance=0.05, max_steps=30)
    measure, calls = simulated_server(capacity=20_000, base_p99_ms=0.5)
    # p99 = 0.5 / (1 - load) <= 2 ms  <=>  load <= 0.75: the true saturation is 15,000 req/s.
    outcome = find_saturation(measure, cfg, Criterion(2.0, 0.97))
    assert outcome.rate is not None
    assert 15_000 * (1 - cfg.tolerance) <= outcome.rate <= 15_000
    assert outcome.steps
    assert len(outcome.steps) == len(calls)


def test_second_search_reuses_the_first_searchs_runs() -> None:
    cfg = SearchConfig(start_rate=1000, tolerance=0.05, max_steps=30)
    measure, calls = simulated_server(capacity=20_000, base_p99_ms=0.5)
    loose = find_saturation(measure, cfg, Criterion(50.0, 0.97))
    calls_after_loose = len(calls)
    strict = find_saturation(measure, cfg, Criterion(2.0, 0.97), prior=loose.steps)
    assert loose.rate is not None
    assert strict.rate is not None
    assert strict.rate < loose.rate
    # Doubling up to the failure already happened; the strict search only bisects.
    assert len(calls) - calls_after_loose < calls_after_loose
    assert all(strict.rate < r.offered_rps or r.p99_ms <= 2.0 for r in strict.steps)


def test_a_server_that_never_meets_the_slo_has_no_saturation() -> None:
    cfg = SearchConfig(start_rate=1000, max_steps=30)
    measure, calls = simulated_server(capacity=20_000, base_p99_ms=5.0)
    outcome = find_saturation(measure, cfg, Criterion(2.0, 0.97))
    assert outcome.rate is None
    assert min(calls) >= MIN_RATE
    assert min(calls) < 2 * MIN_RATE  # it halved all the way down before giving up


def test_max_steps_bounds_the_search() -> None:
    cfg = SearchConfig(start_rate=1000, tolerance=0.0001, max_steps=4)
    measure, calls = simulated_server(capacity=20_000)
    find_saturation(measure, cfg, Criterion(2.0, 0.97))
    assert len(calls) == 4


def test_stops_at_max_rate_when_everything_passes() -> None:
    cfg = SearchConfig(start_rate=1000, max_rate=8000, max_steps=30)
    measure, calls = simulated_server(capacity=1e9)
    outcome = find_saturation(measure, cfg, Criterion(2.0, 0.97))
    assert outcome.rate == 8000
    assert calls == [1000, 2000, 4000, 8000]


@pytest.mark.parametrize(
    ("measurement", "passes"),
    [
        (run(1000, 1.9), True),
        (run(1000, 2.1), False),  # over the SLO
        (run(1000, 1.0, achieved=900), False),  # not keeping up with the offered rate
        (run(1000, 1.0, errors=1), False),  # any error fails a run
    ],
)
def test_criterion(measurement: RunMeasurement, passes: bool) -> None:
    assert Criterion(2.0, 0.97).passes(measurement) is passes


def test_bounds_ignore_a_pass_above_the_lowest_failure() -> None:
    runs = [run(1000, 1.0), run(4000, 5.0), run(8000, 1.0)]
    assert bounds(runs, Criterion(2.0, 0.97)) == (1000, 4000)


def test_next_rate_doubles_then_bisects_then_stops() -> None:
    cfg = SearchConfig(start_rate=500, tolerance=0.1, max_rate=1e6)
    assert next_rate(None, None, cfg) == 500
    assert next_rate(500, None, cfg) == 1000
    assert next_rate(1000, 2000, cfg) == 1500
    assert next_rate(1000, 1050, cfg) is None
    assert next_rate(None, 400, cfg) == 200
    assert next_rate(None, MIN_RATE, cfg) is None


def test_min_rate_and_tolerance_overrides() -> None:
    cfg = SearchConfig(start_rate=1000, tolerance=0.01, max_steps=30)
    measure, calls = simulated_server(capacity=20_000, base_p99_ms=5.0)
    find_saturation(measure, cfg, Criterion(2.0, 0.97), min_rate=200)
    assert calls == [1000, 500, 250]  # gives up before going under 200 req/s
    measure, coarse_calls = simulated_server(capacity=20_000)
    find_saturation(measure, cfg, Criterion(2.0, 0.97), tolerance=0.5)
    measure, fine_calls = simulated_server(capacity=20_000)
    find_saturation(measure, cfg, Criterion(2.0, 0.97))
    assert len(coarse_calls) < len(fine_calls)


def test_a_rate_passes_when_any_of_its_runs_passed() -> None:
    runs = [run(1000, 1.0), run(2000, 5.0), run(2000, 1.5), run(4000, 3.0), run(4000, 2.5)]
    assert bounds(runs, Criterion(2.0, 0.97)) == (2000, 4000)


def test_confirmed_failures_see_through_a_noisy_run() -> None:
    cfg = SearchConfig(start_rate=1000, tolerance=0.05, max_steps=40)
    measure, _ = simulated_server(capacity=20_000, base_p99_ms=0.5)
    spiked: list[float] = []

    def noisy(rate: float) -> RunMeasurement:
        # A neighbour's burst ruins the first run at 4,000 req/s, far below saturation.
        result = measure(rate)
        if rate == 4000 and not spiked:
            spiked.append(rate)
            return RunMeasurement(**{**result.__dict__, "p99_ms": 9.0})
        return result

    believed = find_saturation(noisy, cfg, Criterion(2.0, 0.97), attempts=1)
    spiked.clear()
    confirmed = find_saturation(noisy, cfg, Criterion(2.0, 0.97), attempts=2)
    assert believed.rate is not None
    assert believed.rate < 4000  # one bad run capped the plain search
    assert confirmed.rate is not None
    assert 15_000 * (1 - cfg.tolerance) <= confirmed.rate <= 15_000
    # The real failure was confirmed too: every failing rate the search relied on ran twice.
    failed_rates = [r.offered_rps for r in confirmed.steps if r.p99_ms > 2.0]
    lowest = min(r for r in failed_rates if failed_rates.count(r) >= 2)
    assert lowest > confirmed.rate
