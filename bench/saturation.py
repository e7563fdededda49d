"""Saturation search: the highest offered rate a server sustains within a latency bound.

The same search drives every system, so their figures are comparable: double the rate until a
run fails (p99 over the bound, an error, or the server not keeping up with the offered rate),
then bisect between the highest passing and the lowest failing rate. A second search under a
stricter bound starts from the first one's runs, so it only bisects what they left open.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from bench.config import SearchConfig
from bench.measurements import RunMeasurement

# Below this rate a server is reported as failing the bound altogether.
MIN_RATE = 10.0


@dataclass(frozen=True)
class Criterion:
    p99_ms: float
    min_delivered: float

    def passes(self, run: RunMeasurement) -> bool:
        return run.meets(self.p99_ms, self.min_delivered)


@dataclass
class SearchOutcome:
    rate: float | None
    # Runs made by this search (not those it started from).
    steps: list[RunMeasurement] = field(default_factory=list)


def bounds(
    runs: Sequence[RunMeasurement], criterion: Criterion
) -> tuple[float | None, float | None]:
    """(highest passing, lowest failing) offered rate among `runs`; a passing rate above the
    lowest failing one is noise and ignored, since the search only probes below a failure."""
    failed = min((r.offered_rps for r in runs if not criterion.passes(r)), default=None)
    ok = max(
        (
            r.offered_rps
            for r in runs
            if criterion.passes(r) and (failed is None or r.offered_rps < failed)
        ),
        default=None,
    )
    return ok, failed


def next_rate(
    ok: float | None,
    failed: float | None,
    cfg: SearchConfig,
    tolerance: float | None = None,
    min_rate: float = MIN_RATE,
) -> float | None:
    """The next rate to try, given the best passing and lowest failing rates so far; None: stop."""
    if ok is None and failed is None:
        return min(cfg.start_rate, cfg.max_rate)
    if failed is None:
        assert ok is not None
        return None if ok >= cfg.max_rate else min(ok * 2.0, cfg.max_rate)
    if ok is None:
        lower = failed / 2.0
        return None if lower < min_rate else lower
    if (failed - ok) <= (cfg.tolerance if tolerance is None else tolerance) * ok:
        return None
    return (ok + failed) / 2.0


def find_saturation(
    measure: Callable[[float], RunMeasurement],
    cfg: SearchConfig,
    criterion: Criterion,
    *,
    prior: Sequence[RunMeasurement] = (),
    on_step: Callable[[RunMeasurement, bool], None] | None = None,
    tolerance: float | None = None,
    min_rate: float = MIN_RATE,
) -> SearchOutcome:
    """Run `measure(rate)` at the rates the search picks; return the highest passing rate.

    `tolerance` overrides cfg.tolerance; below `min_rate` the search gives up.
    """
    outcome = SearchOutcome(rate=None)
    runs = list(prior)
    ok, failed = bounds(runs, criterion)
    rate = next_rate(ok, failed, cfg, tolerance, min_rate)
    while rate is not None and len(outcome.steps) < cfg.max_steps:
        run = measure(rate)
        outcome.steps.append(run)
        runs.append(run)
        if on_step is not None:
            on_step(run, criterion.passes(run))
        ok, failed = bounds(runs, criterion)
        rate = next_rate(ok, failed, cfg, tolerance, min_rate)
    outcome.rate = ok
    return outcome
