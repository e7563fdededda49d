"""When each request is due: fixed, stepped and ramped arrival rates.

Request `i` (0-based) is due at the time `t` when the cumulative number of arrivals
N(t) = integral of rate(t) reaches `i`. Each worker takes every W-th request, so W workers
together keep exactly the global schedule.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

_DURATION = re.compile(r"^\s*([0-9]*\.?[0-9]+)\s*(us|µs|ms|s|m|h)?\s*$")
_UNIT_SECONDS = {"us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}
_RATE = re.compile(r"^\s*([0-9]*\.?[0-9]+)\s*([kK])?\s*$")


def parse_duration(text: str) -> float:
    """'10s', '500ms', '250us', '2m', '1h' or plain seconds -> seconds."""
    match = _DURATION.match(text)
    if not match:
        raise ValueError(f"not a duration: {text!r} (use e.g. 10s, 500ms, 250us, 2m)")
    return float(match.group(1)) * _UNIT_SECONDS[match.group(2)]


def parse_rate(text: str) -> float:
    """'2000' or '20k' requests per second."""
    match = _RATE.match(text)
    if not match:
        raise ValueError(f"not a rate: {text!r} (use e.g. 2000 or 20k)")
    rate = float(match.group(1)) * (1000.0 if match.group(2) else 1.0)
    if rate <= 0:
        raise ValueError(f"rate must be positive, got {text!r}")
    return rate


@dataclass(frozen=True)
class Segment:
    """The rate goes linearly from `start_rate` to `end_rate` over `duration` seconds."""

    start_rate: float
    end_rate: float
    duration: float

    @property
    def count(self) -> float:
        return (self.start_rate + self.end_rate) / 2.0 * self.duration

    def time_of(self, n: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        """Seconds into this segment when arrival number `n` (counted from its start) is due."""
        slope = (self.end_rate - self.start_rate) / self.duration
        if abs(slope) < 1e-12:
            result: npt.NDArray[np.float64] = n / self.start_rate
            return result
        # N(t) = a t + slope t^2 / 2 = n, solved for t >= 0
        a = self.start_rate
        return (np.sqrt(a * a + 2.0 * slope * n) - a) / slope


@dataclass(frozen=True)
class RateSchedule:
    segments: tuple[Segment, ...]
    #: stop after this many requests even if time is left
    max_requests: int | None = None

    def __post_init__(self) -> None:
        if not self.segments:
            raise ValueError("a schedule needs at least one segment")
        for seg in self.segments:
            if seg.duration <= 0 or seg.start_rate <= 0 or seg.end_rate <= 0:
                raise ValueError("rates and durations must be positive")

    @classmethod
    def fixed(cls, rate: float, duration: float, max_requests: int | None = None) -> RateSchedule:
        return cls((Segment(rate, rate, duration),), max_requests)

    @classmethod
    def steps(
        cls, rates: Sequence[float], step_duration: float, max_requests: int | None = None
    ) -> RateSchedule:
        return cls(tuple(Segment(r, r, step_duration) for r in rates), max_requests)

    @classmethod
    def ramp(
        cls, start: float, end: float, duration: float, max_requests: int | None = None
    ) -> RateSchedule:
        return cls((Segment(start, end, duration),), max_requests)

    def with_warmup(self, seconds: float) -> tuple[RateSchedule, int]:
        """This schedule preceded by `seconds` at its first rate; returns (schedule, warm-up count).

        The warm-up is trimmed to a whole number of requests so the measured part keeps its
        exact times.
        """
        if seconds <= 0:
            return self, 0
        rate = self.segments[0].start_rate
        count = math.ceil(rate * seconds - 1e-9)
        warm = Segment(rate, rate, count / rate)
        limit = None if self.max_requests is None else self.max_requests + count
        return RateSchedule((warm, *self.segments), limit), count

    @property
    def duration(self) -> float:
        """Seconds until the last request is due (the whole schedule, or the request limit)."""
        full = sum(seg.duration for seg in self.segments)
        if self.max_requests is None or self.max_requests >= self.total_requests_unbounded:
            return full
        return min(full, float(self.times(np.array([self.max_requests]))[0]))

    @property
    def total_requests_unbounded(self) -> int:
        # request i is sent when i < N(end); the epsilon keeps exact products (5.0 * 1000) exact
        return math.ceil(sum(seg.count for seg in self.segments) - 1e-9)

    @property
    def total_requests(self) -> int:
        total = self.total_requests_unbounded
        return total if self.max_requests is None else min(total, self.max_requests)

    @property
    def peak_rate(self) -> float:
        return max(max(seg.start_rate, seg.end_rate) for seg in self.segments)

    def mean_rate(self) -> float:
        return self.total_requests / self.duration if self.duration > 0 else 0.0

    def rate_at(self, t: float) -> float:
        start = 0.0
        for seg in self.segments:
            if t < start + seg.duration:
                return seg.start_rate + (seg.end_rate - seg.start_rate) * (t - start) / seg.duration
            start += seg.duration
        return self.segments[-1].end_rate

    def times(self, indices: npt.NDArray[np.int64]) -> npt.NDArray[np.float64]:
        """Intended send time (seconds from the start) of each request index."""
        n = indices.astype(np.float64)
        counts = np.cumsum([0.0] + [seg.count for seg in self.segments])
        starts = np.cumsum([0.0] + [seg.duration for seg in self.segments])
        which = np.clip(np.searchsorted(counts, n, side="right") - 1, 0, len(self.segments) - 1)
        out = np.empty_like(n)
        for k, seg in enumerate(self.segments):
            mask = which == k
            if mask.any():
                out[mask] = starts[k] + seg.time_of(n[mask] - counts[k])
        return out

    def describe(self) -> str:
        if len(self.segments) == 1:
            seg = self.segments[0]
            if seg.start_rate == seg.end_rate:
                return f"{seg.start_rate:g} req/s for {seg.duration:g}s"
            return f"ramp {seg.start_rate:g} -> {seg.end_rate:g} req/s over {seg.duration:g}s"
        rates = ",".join(f"{seg.start_rate:g}" for seg in self.segments)
        return f"steps {rates} req/s, {self.segments[0].duration:g}s each"
