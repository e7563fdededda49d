"""The server's own latency histogram, read from its Prometheus endpoint around a run.

The client's figures include the loopback network, both ends' scheduling and the load
generator itself; the server's histogram (`rtbserve_request_latency_seconds`: last byte in to
reply written) leaves those out. Side by side they show where a high p99 comes from. Quantiles
are interpolated within Prometheus buckets, as `histogram_quantile()` does, so they are only
as fine as the buckets (model_server/metrics.py: LATENCY_BUCKETS).
"""

from __future__ import annotations

import math
import urllib.request
from collections.abc import Sequence

from prometheus_client.parser import text_string_to_metric_families

LATENCY_METRIC = "rtbserve_request_latency_seconds"

# Cumulative counts per upper bound (seconds, +Inf last), as the endpoint exposes them.
Buckets = list[tuple[float, float]]


def parse_buckets(text: str, metric: str = LATENCY_METRIC) -> Buckets | None:
    """The histogram's cumulative buckets from Prometheus text, or None when it is absent."""
    for family in text_string_to_metric_families(text):
        if family.name != metric:
            continue
        buckets = [
            (float(s.labels["le"]), float(s.value))
            for s in family.samples
            if s.name == f"{metric}_bucket"
        ]
        return sorted(buckets) or None
    return None


def scrape_buckets(url: str, timeout: float = 5.0) -> Buckets | None:
    """The latency histogram now, or None when the endpoint cannot be read."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return parse_buckets(response.read().decode())
    except (OSError, ValueError):
        return None


def delta(before: Buckets, after: Buckets) -> Buckets:
    """What was observed between two scrapes of the same histogram."""
    if [b for b, _ in before] != [b for b, _ in after]:
        raise ValueError("the two scrapes have different buckets")
    return [(bound, a - b) for (bound, b), (_, a) in zip(before, after, strict=True)]


def quantile(buckets: Sequence[tuple[float, float]], q: float) -> float | None:
    """The q-quantile in seconds, linear within its bucket; None with no observations.

    A quantile in the +Inf bucket is reported as the highest finite bound (a lower bound).
    """
    if not 0.0 <= q <= 1.0:
        raise ValueError(f"q must be in [0, 1], got {q}")
    if not buckets or buckets[-1][1] <= 0:
        return None
    rank = q * buckets[-1][1]
    lower_bound, lower_count = 0.0, 0.0
    for bound, count in buckets:
        if count >= rank:
            if math.isinf(bound):
                return lower_bound
            in_bucket = count - lower_count
            if in_bucket <= 0:
                return bound
            return lower_bound + (bound - lower_bound) * (rank - lower_count) / in_bucket
        lower_bound, lower_count = bound, count
    return lower_bound
