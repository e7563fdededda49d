"""Saturation search: the highest rate at which p99 latency stays within an objective.

Short fixed-rate probes: double the rate from the start rate until a probe fails (or halve it
until one passes), then bisect between the best passing and the lowest failing rate until they
are within `precision` of each other. A probe passes when its p99 is within the objective,
its error share is within the limit, it reached its rate and the generator kept its schedule.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from loadgen.aggregate import RunResult

#: a probe must deliver this share of its target rate to pass
MIN_ACHIEVED_SHARE = 0.95


@dataclass
class Probe:
    rate: float
    result: RunResult
    passed: bool
    reasons: list[str]


@dataclass
class SaturationResult:
    slo_p99_ms: float
    probes: list[Probe] = field(default_factory=list)

    @property
    def best(self) -> Probe | None:
        passing = [p for p in self.probes if p.passed]
        return max(passing, key=lambda p: p.rate) if passing else None

    @property
    def saturation_rate(self) -> float | None:
        best = self.best
        return best.rate if best else None

    @property
    def limited_by_generator(self) -> bool:
        """True when the lowest failing probe failed only because the generator fell behind."""
        failing = [p for p in self.probes if not p.passed]
        if not failing:
            return False
        lowest = min(failing, key=lambda p: p.rate)
        return all(reason.startswith("generator") for reason in lowest.reasons)


def judge(result: RunResult, slo_p99_ms: float, max_error_ratio: float) -> list[str]:
    """Why a probe failed; empty when it passed."""
    reasons = []
    p99 = result.percentile_ms(99)
    if result.ok == 0:
        reasons.append("no successful replies")
    elif p99 > slo_p99_ms:
        reasons.append(f"p99 {p99:.3f} ms > {slo_p99_ms:g} ms")
    if result.error_ratio > max_error_ratio:
        reasons.append(f"errors {result.error_ratio:.2%} > {max_error_ratio:.2%}")
    if result.dropped:
        reasons.append(f"generator behind schedule ({result.dropped} sends dropped)")
    if result.achieved_rate < MIN_ACHIEVED_SHARE * result.target_rate:
        reasons.append(
            f"achieved {result.achieved_rate:.0f}/s < {MIN_ACHIEVED_SHARE:.0%} of "
            f"{result.target_rate:.0f}/s"
        )
    return reasons


def find_saturation(
    run_probe: Callable[[float], RunResult],
    *,
    slo_p99_ms: float,
    start_rate: float,
    max_rate: float,
    precision: float = 0.05,
    max_error_ratio: float = 0.01,
    max_probes: int = 20,
    min_rate: float = 1.0,
    on_probe: Callable[[Probe], None] | None = None,
) -> SaturationResult:
    search = SaturationResult(slo_p99_ms)

    def probe(rate: float) -> bool:
        result = run_probe(rate)
        reasons = judge(result, slo_p99_ms, max_error_ratio)
        entry = Probe(rate, result, not reasons, reasons)
        search.probes.append(entry)
        if on_probe is not None:
            on_probe(entry)
        return entry.passed

    rate = min(start_rate, max_rate)
    lo: float | None = None
    hi: float | None = None
    if probe(rate):
        lo = rate
        while len(search.probes) < max_probes and lo < max_rate:
            rate = min(lo * 2.0, max_rate)
            if probe(rate):
                lo = rate
            else:
                hi = rate
                break
    else:
        hi = rate
        while len(search.probes) < max_probes and hi / 2.0 >= min_rate:
            rate = hi / 2.0
            if probe(rate):
                lo = rate
                break
            hi = rate
    if lo is None or hi is None:
        return search  # nothing passed, or even max_rate passed
    while len(search.probes) < max_probes and (hi - lo) / lo > precision:
        rate = round((lo + hi) / 2.0)
        if rate in (lo, hi):
            break
        if probe(rate):
            lo = rate
        else:
            hi = rate
    return search
