"""Merging workers: one latency histogram, one per-second series, one set of counters."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import numpy as np
from hdrh.histogram import HdrHistogram

from loadgen.recorder import new_histogram, record_batch
from loadgen.records import Quality, SecondReport, WorkerResult
from loadgen.schedule import RateSchedule


def merge_histograms(encoded: Iterable[bytes]) -> HdrHistogram:
    """Sum of the workers' encoded histograms (counts add bucket by bucket)."""
    merged = new_histogram()
    for blob in encoded:
        merged.decode_and_add(blob)
    return merged


@dataclass
class SecondRow:
    """The requests due in one second of the measured window, over all workers."""

    second: int
    target_rate: float
    sent: int
    ok: int
    errors: int
    dropped: int
    late: int
    #: replies and errors that completed during this second of wall time
    completed: int
    p50_ms: float | None
    p99_ms: float | None
    max_ms: float | None


class SeriesBuilder:
    """Collects each worker's `SecondReport`s; a second is final once every worker sent it."""

    def __init__(self, workers: int, schedule: RateSchedule, keep_histograms: bool = False) -> None:
        self.workers = workers
        self.schedule = schedule
        self._parts: dict[int, list[SecondReport]] = {}
        self.rows: dict[int, SecondRow] = {}
        #: each second's latencies as an encoded HDR histogram, when `keep_histograms` (a
        #: sharded run's seconds merge exactly through them)
        self.keep_histograms = keep_histograms
        self.histograms: dict[int, bytes] = {}

    def add(self, report: SecondReport) -> SecondRow | None:
        parts = self._parts.setdefault(report.second, [])
        parts.append(report)
        if len(parts) < self.workers:
            return None
        del self._parts[report.second]
        row = self._row(report.second, parts)
        self.rows[row.second] = row
        return row

    def _row(self, second: int, parts: list[SecondReport]) -> SecondRow:
        lat = np.concatenate([np.frombuffer(p.latencies_us, dtype=np.int64) for p in parts])
        if self.keep_histograms:
            hist = new_histogram()
            record_batch(hist, lat)
            self.histograms[second] = hist.encode()
        p50 = p99 = peak = None
        if lat.size:
            p50, p99 = (float(v) / 1000.0 for v in np.percentile(lat, [50, 99]))
            peak = float(lat.max()) / 1000.0
        end = min(second + 1.0, self.schedule.duration)
        return SecondRow(
            second=second,
            target_rate=self.schedule.rate_at((second + end) / 2.0),
            sent=sum(p.sent for p in parts),
            ok=int(lat.size),
            errors=sum(p.errors for p in parts),
            dropped=sum(p.dropped for p in parts),
            late=sum(p.late for p in parts),
            completed=0,
            p50_ms=p50,
            p99_ms=p99,
            max_ms=peak,
        )

    def finish(self, completions: list[int]) -> list[SecondRow]:
        """Every second in order, with wall-clock completions filled in."""
        for second in sorted(self._parts):  # workers that stopped early
            self.rows[second] = self._row(second, self._parts.pop(second))
        rows = [self.rows[s] for s in sorted(self.rows)]
        for row in rows:
            row.completed = completions[row.second] if row.second < len(completions) else 0
        return rows


@dataclass
class RunResult:
    """A finished run, all workers merged."""

    target: str
    schedule: RateSchedule
    workers: int
    connections: int
    started_at: datetime
    histogram: HdrHistogram
    series: list[SecondRow]
    scheduled: int
    sent: int
    ok: int
    errors: dict[str, int] = field(default_factory=dict)
    error_examples: dict[str, str] = field(default_factory=dict)
    connect_errors: dict[str, int] = field(default_factory=dict)
    disconnects: dict[str, int] = field(default_factory=dict)
    dropped: int = 0
    late: int = 0
    retried: int = 0
    stray_replies: int = 0
    warmup_requests: int = 0
    max_lag_s: float = 0.0
    cpu_s: float = 0.0
    #: the sending loop the workers ran ("native" or "python"; both: "mixed")
    engine: str = "python"
    last_completion_s: float = 0.0
    quality: Quality = field(default_factory=Quality)
    #: each worker's own histogram, `encode()`d; `histogram` is their sum
    worker_histograms: list[bytes] = field(default_factory=list)
    #: set when the run stopped early (e.g. the target went away); results are partial
    aborted: str | None = None
    #: each second's latencies, `encode()`d, when the run kept them (`SeriesBuilder`)
    second_histograms: dict[int, bytes] = field(default_factory=dict)

    @property
    def duration_s(self) -> float:
        return self.schedule.duration

    @property
    def elapsed_s(self) -> float:
        """Measured wall time: the schedule, or longer if the last reply came after it."""
        return max(self.schedule.duration, self.last_completion_s)

    @property
    def target_rate(self) -> float:
        return self.schedule.mean_rate()

    @property
    def achieved_rate(self) -> float:
        """Successful replies per second of the measured window.

        Replies that arrive after the window (up to --timeout) still count: they answer
        requests due in it. A stopped run counts up to its last reply.
        """
        window = self.last_completion_s if self.aborted else self.schedule.duration
        return self.ok / window if window > 0 else 0.0

    @property
    def error_count(self) -> int:
        return sum(self.errors.values())

    @property
    def error_ratio(self) -> float:
        return self.error_count / self.scheduled if self.scheduled else 0.0

    def percentile_ms(self, percentile: float) -> float:
        if self.histogram.get_total_count() == 0:
            return 0.0
        return float(self.histogram.get_value_at_percentile(percentile)) / 1000.0

    @property
    def max_ms(self) -> float:
        return float(self.histogram.get_max_value()) / 1000.0 if self.ok else 0.0


def _engine(engines: Iterable[str]) -> str:
    """The one sending loop every worker ran, or "mixed"."""
    seen = set(engines)
    return seen.pop() if len(seen) == 1 else "mixed" if seen else "python"


def add_counts(dicts: Iterable[dict[str, int]]) -> dict[str, int]:
    """Counts by key over all `dicts`, largest first."""
    total: dict[str, int] = {}
    for d in dicts:
        for key, value in d.items():
            total[key] = total.get(key, 0) + value
    return dict(sorted(total.items(), key=lambda kv: -kv[1]))


def combined_counts(parts: Sequence[WorkerResult] | Sequence[RunResult]) -> dict[str, Any]:
    """The RunResult fields that workers (or whole runs) add up to: counts summed, the worst
    lag, the last completion, the first example of each error."""
    examples: dict[str, str] = {}
    quality = Quality()
    for r in parts:
        for key, message in r.error_examples.items():
            examples.setdefault(key, message)
        quality.add(r.quality)
    return {
        "scheduled": sum(r.scheduled for r in parts),
        "sent": sum(r.sent for r in parts),
        "ok": sum(r.ok for r in parts),
        "errors": add_counts(r.errors for r in parts),
        "error_examples": examples,
        "connect_errors": add_counts(r.connect_errors for r in parts),
        "disconnects": add_counts(r.disconnects for r in parts),
        "dropped": sum(r.dropped for r in parts),
        "late": sum(r.late for r in parts),
        "retried": sum(r.retried for r in parts),
        "stray_replies": sum(r.stray_replies for r in parts),
        "warmup_requests": sum(r.warmup_requests for r in parts),
        "max_lag_s": max((r.max_lag_s for r in parts), default=0.0),
        "cpu_s": sum(r.cpu_s for r in parts),
        "engine": _engine(r.engine for r in parts),
        "last_completion_s": max((r.last_completion_s for r in parts), default=0.0),
        "quality": quality,
    }


def merge_results(
    results: list[WorkerResult],
    *,
    target: str,
    schedule: RateSchedule,
    connections: int,
    started_at: datetime,
    series: SeriesBuilder,
) -> RunResult:
    width = max((len(r.completions_per_second) for r in results), default=0)
    completions = [
        sum(r.completions_per_second[s] for r in results if s < len(r.completions_per_second))
        for s in range(width)
    ]
    return RunResult(
        target=target,
        schedule=schedule,
        workers=len(results),
        connections=connections,
        started_at=started_at,
        histogram=merge_histograms(r.histogram for r in results),
        series=series.finish(completions),
        worker_histograms=[r.histogram for r in results],
        second_histograms=series.histograms,
        **combined_counts(results),
    )
