"""Prometheus metrics of the model server (names in docs/contracts.md).

The hot path must not pay for a metrics library: each worker process counts into plain Python
ints (`WorkerStats`, well under a microsecond a call) and sends a snapshot to the supervisor
every half second. The supervisor's `ServerCollector` adds the workers' snapshots up when
Prometheus scrapes /metrics. A worker that exits has its last snapshot folded into a retired
total, so the counters never go backwards when a worker is replaced.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from threading import Lock
from typing import Any

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

# Seconds; the interesting region for this server is 50 µs to 5 ms.
LATENCY_BUCKETS: tuple[float, ...] = (
    0.00005,
    0.0001,
    0.00025,
    0.0005,
    0.00075,
    0.001,
    0.0015,
    0.002,
    0.003,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    1.0,
)
BIDDER_BUCKETS: tuple[float, ...] = (1, 2, 4, 8, 16, 24, 32, 48, 64, 128, 256)

# Error types besides the Thrift exceptions (InvalidJson, MissingField, UnknownBidder,
# TooManyBidders, BatchTooLarge).
FRAME_TOO_LARGE = "FrameTooLarge"
MALFORMED_FRAME = "MalformedFrame"
READ_TIMEOUT = "ReadTimeout"
INTERNAL = "Internal"


@dataclass
class Histogram:
    """Cumulative-on-export histogram: counts[i] is observations <= bounds[i] (last: +Inf)."""

    bounds: tuple[float, ...]
    counts: list[int] = field(default_factory=list)
    total: float = 0.0

    def __post_init__(self) -> None:
        if not self.counts:
            self.counts = [0] * (len(self.bounds) + 1)

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1
        self.total += value

    def add(self, other: Histogram) -> None:
        for i, c in enumerate(other.counts):
            self.counts[i] += c
        self.total += other.total

    def reset(self) -> None:
        self.counts = [0] * (len(self.bounds) + 1)
        self.total = 0.0

    def copy(self) -> Histogram:
        return Histogram(self.bounds, list(self.counts), self.total)


@dataclass
class WorkerStats:
    """What one worker counted since it started; `snapshot()` is what it sends."""

    requests: dict[str, int] = field(default_factory=dict)
    errors: dict[str, int] = field(default_factory=dict)
    latency: Histogram = field(default_factory=lambda: Histogram(LATENCY_BUCKETS))
    bidders: Histogram = field(default_factory=lambda: Histogram(BIDDER_BUCKETS))

    def request(self, method: str, seconds: float) -> None:
        requests = self.requests
        requests[method] = requests.get(method, 0) + 1
        latency = self.latency  # Histogram.observe, inlined: this runs for every call
        latency.counts[bisect_left(latency.bounds, seconds)] += 1
        latency.total += seconds

    def error(self, kind: str) -> None:
        self.errors[kind] = self.errors.get(kind, 0) + 1

    def add(self, other: WorkerStats) -> None:
        for k, v in other.requests.items():
            self.requests[k] = self.requests.get(k, 0) + v
        for k, v in other.errors.items():
            self.errors[k] = self.errors.get(k, 0) + v
        self.latency.add(other.latency)
        self.bidders.add(other.bidders)

    def reset(self) -> None:
        self.requests.clear()
        self.errors.clear()
        self.latency.reset()
        self.bidders.reset()

    def snapshot(self) -> WorkerStats:
        return WorkerStats(
            dict(self.requests), dict(self.errors), self.latency.copy(), self.bidders.copy()
        )


def _histogram(name: str, doc: str, hist: Histogram) -> HistogramMetricFamily:
    buckets: list[tuple[str, float]] = []
    running = 0
    for bound, count in zip(hist.bounds, hist.counts, strict=False):
        running += count
        buckets.append((repr(float(bound)), running))
    running += hist.counts[-1]
    buckets.append(("+Inf", running))
    return HistogramMetricFamily(name, doc, buckets=buckets, sum_value=hist.total)


class ServerCollector(Collector):
    """Adds up the workers' latest snapshots for each scrape."""

    def __init__(
        self, model_labels: Mapping[str, str], startup: Mapping[str, float] | None = None
    ) -> None:
        self._lock = Lock()
        self._live: dict[int, WorkerStats] = {}
        self._retired = WorkerStats()
        self._model_labels = dict(model_labels)
        self._startup = dict(startup or {})

    def update(self, worker_id: int, stats: WorkerStats) -> None:
        with self._lock:
            self._live[worker_id] = stats

    def retire(self, worker_id: int) -> None:
        """The worker exited: keep what it counted, forget the worker."""
        with self._lock:
            stats = self._live.pop(worker_id, None)
            if stats is not None:
                self._retired.add(stats)

    def totals(self) -> WorkerStats:
        with self._lock:
            total = self._retired.snapshot()
            for stats in self._live.values():
                total.add(stats)
        return total

    def collect(self) -> Iterator[Metric]:
        total = self.totals()
        requests = CounterMetricFamily(
            "rtbserve_requests", "Thrift calls answered, by method.", labels=["method"]
        )
        for method, n in sorted(total.requests.items()):
            requests.add_metric([method], n)
        yield requests
        errors = CounterMetricFamily(
            "rtbserve_errors", "Rejected calls and dropped connections, by type.", labels=["type"]
        )
        for kind, n in sorted(total.errors.items()):
            errors.add_metric([kind], n)
        yield errors
        yield _histogram(
            "rtbserve_request_latency_seconds",
            "Time from a call's last byte received to its response written.",
            total.latency,
        )
        yield _histogram(
            "rtbserve_bidders_per_call", "Candidate bidders scored per request.", total.bidders
        )
        info = GaugeMetricFamily(
            "rtbserve_model_info",
            "The model being served (always 1).",
            labels=["name", "version", "sha256", "backend"],
        )
        labels = self._model_labels
        info.add_metric(
            [labels["name"], labels["version"], labels["sha256"], labels["backend"]], 1.0
        )
        yield info
        startup = GaugeMetricFamily(
            "rtbserve_startup_seconds",
            "Seconds each start-up phase took: download (fetch and verify the artifact), load "
            "(parse the model, build the predictor).",
            labels=["phase"],
        )
        for phase, seconds in sorted(self._startup.items()):
            startup.add_metric([phase], seconds)
        yield startup


def stats_to_wire(stats: WorkerStats) -> dict[str, Any]:
    """A plain dict (cheap to pickle over the worker's pipe)."""
    return {
        "requests": stats.requests,
        "errors": stats.errors,
        "latency": (stats.latency.counts, stats.latency.total),
        "bidders": (stats.bidders.counts, stats.bidders.total),
    }


def stats_from_wire(d: Mapping[str, Any]) -> WorkerStats:
    lat_counts, lat_total = d["latency"]
    bid_counts, bid_total = d["bidders"]
    return WorkerStats(
        dict(d["requests"]),
        dict(d["errors"]),
        Histogram(LATENCY_BUCKETS, list(lat_counts), float(lat_total)),
        Histogram(BIDDER_BUCKETS, list(bid_counts), float(bid_total)),
    )
