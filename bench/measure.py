"""One system at one bidder count: capacity and saturation searches, then latency at shares."""

from __future__ import annotations

from collections.abc import Callable

from bench.config import BenchConfig
from bench.drivers import Driver
from bench.measurements import RunMeasurement, SystemResult, load_point_key
from bench.saturation import MIN_RATE, Criterion, find_saturation

Log = Callable[[str], None]


def describe(run: RunMeasurement) -> str:
    text = (
        f"{run.offered_rps:>9,.0f} req/s offered, {run.achieved_rps:>9,.0f} delivered, "
        f"p50 {run.p50_ms:7.3f} ms, p99 {run.p99_ms:8.3f} ms, p99.9 {run.p999_ms:8.3f} ms"
    )
    if run.errors:
        text += f", {run.errors} errors"
    if run.server_cpu_cores is not None:
        text += f", server {run.server_cpu_cores:.2f} cores"
    other = run.other_load_on_server_core
    if other is not None and other >= 0.05:
        text += f" [yellow](others {other:.2f} on its core)[/yellow]"
    if run.driver_lag_p99_ms is not None:
        text += f", driver lag p99 {run.driver_lag_p99_ms:.3f} ms"
    return text


def measure_system(
    system: str, bidders: int, driver: Driver, cfg: BenchConfig, log: Log
) -> SystemResult:
    search = cfg.search

    def step(rate: float) -> RunMeasurement:
        return driver.measure(rate, search.step_seconds, cfg.warmup_seconds)

    def on_step(tag: str) -> Callable[[RunMeasurement, bool], None]:
        def show(run: RunMeasurement, passed: bool) -> None:
            log(f"  {tag}  {describe(run)}  {'[green]ok[/green]' if passed else '[red]over[/red]'}")

        return show

    capacity = find_saturation(
        step,
        search,
        Criterion(search.capacity_p99_ms, search.min_delivered),
        on_step=on_step(f"capacity (p99 ≤ {search.capacity_p99_ms:g} ms)"),
        tolerance=search.capacity_tolerance,
    )
    floor = (
        MIN_RATE if capacity.rate is None else max(MIN_RATE, capacity.rate * search.slo_floor_share)
    )
    saturation = find_saturation(
        step,
        search,
        Criterion(search.slo_p99_ms, search.min_delivered),
        prior=capacity.steps,
        on_step=on_step(f"saturation (p99 ≤ {search.slo_p99_ms:g} ms)"),
        min_rate=floor,
        attempts=search.slo_attempts,
    )
    result = SystemResult(
        system,
        bidders,
        saturation.rate,
        capacity_rps=capacity.rate,
        search_steps=capacity.steps + saturation.steps,
    )
    log(
        f"  saturation {_rate(saturation.rate)} req/s (p99 ≤ {search.slo_p99_ms:g} ms), "
        f"capacity {_rate(capacity.rate)} req/s (p99 ≤ {search.capacity_p99_ms:g} ms)"
    )
    basis = saturation.rate
    if basis is None:
        result.note = (
            f"p99 over {search.slo_p99_ms:g} ms at every rate tried, down to "
            f"{min(r.offered_rps for r in result.search_steps):,.0f} req/s"
        )
        basis = capacity.rate
        result.points_basis = "capacity"
    if basis is None:
        return result
    for share in cfg.load_points:
        run = driver.measure(basis * share, cfg.point_seconds, cfg.warmup_seconds)
        result.points[load_point_key(share)] = run
        log(f"  at {share:>4.0%} of {result.points_basis}  {describe(run)}")
    return result


def _rate(rate: float | None) -> str:
    return "—" if rate is None else f"{rate:,.0f}"
