"""Saturation search: the highest offered rate a server sustains within a latency bound.

The same search drives every system, so their figures are comparable: double the rate until a
run fails (p99 over the bound, an error, or the server not keeping up with the offered rate),
then bisect between the highest passing and the lowest failing rate. A second search under a
stricter bound starts from the first one's runs, so it only bisects what they left open.

On a shared machine a run can fail for reasons that have nothing to do with the server (a
neighbour's burst lands in its p99). Such noise only ever makes a run worse, so a search can
ask for each failure to be confirmed: a rate counts as failed only when `attempts` runs at it
all failed, and as passed when any run at it passed.
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


def _verdicts(runs: Sequence[RunMeasurement], criterion: Criterion) -> dict[float, list[bool]]:
    """Pass/fail of every run, grouped by offered rate."""
    verdicts: dict[float, list[bool]] = {}
    for r in runs:
        verdicts.setdefault(r.offered_rps, []).append(criterion.passes(r))
    return verdicts


def bounds(
    runs: Sequence[RunMeasurement], criterion: Criterion
) -> tuple[float | None, float | None]:
    """(highest passing, lowest failing) offered rate among `runs`; a rate passes when any of
    its runs passed. A passing rate above the lowest failing one is noise and ignored, since
    the search only probes below a failure."""
    verdicts = _verdicts(runs, criterion)
    failed = min((rate for rate, v in verdicts.items() if not any(v)), default=None)
    ok = max(
        (rate for rate, v in verdicts.items() if any(v) and (failed is None or rate < failed)),
        default=None,
    )
    return ok, failed


def unconfirmed_failure(
    runs: Sequence[RunMeasurement], criterion: Criterion, attempts: int
) -> float | None:
    """The lowest failing rate when it has failed fewer than `attempts` times (so it is to be
    run again before the search believes it), else None."""
    _, failed = bounds(runs, criterion)
    if failed is None:
        return None
    return failed if len(_verdicts(runs, criterion)[failed]) < attempts else None


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
    attempts: int = 1,
) -> SearchOutcome:
    """Run `measure(rate)` at the rates the search picks; return the highest passing rate.

    `tolerance` overrides cfg.tolerance; below `min_rate` the search gives up. With
    `attempts` > 1 a failing rate is run again (up to that many times in all) before the
    search takes it as the failure to bisect towards.
    """
    outcome = SearchOutcome(rate=None)
    runs = list(prior)

    def pick() -> float | None:
        again = unconfirmed_failure(runs, criterion, attempts)
        if again is not None:
            return again
        ok, failed = bounds(runs, criterion)
        return next_rate(ok, failed, cfg, tolerance, min_rate)

    rate = pick()
    while rate is not None and len(outcome.steps) < cfg.max_steps:
        run = measure(rate)
        outcome.steps.append(run)
        runs.append(run)
        if on_step is not None:
            on_step(run, criterion.passes(run))
        rate = pick()
    outcome.rate = bounds(runs, criterion)[0]
    return outcome
