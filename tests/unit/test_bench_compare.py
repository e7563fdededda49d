"""bench.compare_servers: the side-by-side summary of two server versions."""

from __future__ import annotations

from bench.compare_servers import Run, cpu_us_per_request, render, summarize
from bench.measurements import RunMeasurement


def _m(rate: float, p99: float, cores: float | None, errors: int = 0) -> RunMeasurement:
    return RunMeasurement(
        rate, rate, 0.2, p99, p99 * 2, p99 * 3, int(rate * 4), errors, 4.0, server_cpu_cores=cores
    )


def test_cpu_per_request_is_cores_over_rate() -> None:
    assert cpu_us_per_request(_m(8000, 1.0, 0.8)) == 100.0
    assert cpu_us_per_request(_m(8000, 1.0, None)) is None


def test_sides_can_be_named() -> None:
    runs = [Run("python", 8000, 0, _m(8000, 3.0, 0.88)), Run("native", 8000, 0, _m(8000, 1.0, 0.8))]
    (eight,) = summarize(runs, 2.0, ("python", "native"))
    table = render([eight], 2.0, ("python", "native"))
    assert "python → native" in table
    assert "| 8,000 | 110 → 100 | 3.00 → 1.00 | 0/1 → 1/1 |" in table


def test_summary_takes_medians_and_counts_runs_within_the_slo() -> None:
    runs = [
        Run("before", 8000, 0, _m(8000, 3.0, 0.88)),
        Run("before", 8000, 1, _m(8000, 1.5, 0.80)),
        Run("before", 8000, 2, _m(8000, 2.5, 0.96)),
        Run("after", 8000, 0, _m(8000, 0.9, 0.70)),
        Run("after", 8000, 1, _m(8000, 1.1, 0.72)),
        Run("after", 8000, 2, _m(8000, 0.8, 0.68, errors=3)),  # errors fail the SLO too
        Run("after", 6000, 0, _m(6000, 0.5, None)),
    ]
    six, eight = summarize(runs, 2.0)
    assert six.rate == 6000
    assert six.cpu_us == {"after": None}
    assert eight.cpu_us == {"before": 110.0, "after": 87.5}
    assert eight.p99_ms == {"before": 2.5, "after": 0.9}
    assert eight.within_slo == {"before": (1, 3), "after": (2, 3)}
    table = render([six, eight], 2.0)
    assert "| 8,000 | 110 → 88 | 2.50 → 0.90 | 1/3 → 2/3 |" in table
    assert "| 6,000 | — → — | — → 0.50 | 0/0 → 1/1 |" in table
    assert "p99 ≤ 2 ms" in table
