"""What a sending worker reports: live ticks, closed seconds, and its final result.

All are plain picklable dataclasses so they cross process boundaries unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Quality:
    """Filtering quality counted over the replies parsed in full (those with ground truth)."""

    replies: int = 0  # replies parsed
    pairs: int = 0  # (request, candidate bidder) pairs scored
    filtered: int = 0  # pairs with forward = false
    bids: int = 0  # pairs whose bidder really bid
    bids_kept: int = 0  # ... and were forwarded

    def add(self, other: Quality) -> None:
        self.replies += other.replies
        self.pairs += other.pairs
        self.filtered += other.filtered
        self.bids += other.bids
        self.bids_kept += other.bids_kept


@dataclass
class Tick:
    """A worker's cumulative counters, sent about once a second for the live view."""

    worker: int
    elapsed: float
    sent: int
    ok: int
    errors: int
    dropped: int
    late: int
    inflight: int
    #: p99 (microseconds) of the replies to the requests due in the last full second, 0 if none
    recent_p99_us: int


@dataclass
class SecondReport:
    """One worker's outcome for the requests due in one second of the measured window.

    A second is reported once no request due in it can still be answered (after --timeout).
    """

    worker: int
    second: int
    sent: int
    ok: int
    errors: int
    dropped: int
    late: int
    #: latency of every successful reply, microseconds, as array('q') bytes
    latencies_us: bytes


@dataclass
class WorkerResult:
    worker: int
    #: HdrHistogram of successful-reply latency (microseconds), `encode()`d
    histogram: bytes
    scheduled: int  # requests due in the measured window
    sent: int
    ok: int
    errors: dict[str, int] = field(default_factory=dict)
    error_examples: dict[str, str] = field(default_factory=dict)
    connect_errors: dict[str, int] = field(default_factory=dict)
    #: why established connections ended (server close, reset, timeout, protocol error)
    disconnects: dict[str, int] = field(default_factory=dict)
    dropped: int = 0  # not sent: the generator was more than --max-lag behind schedule
    late: int = 0  # sent more than --late-threshold after the intended time
    retried: int = 0  # re-sent once after the server closed the connection cleanly
    stray_replies: int = 0  # replies to requests already counted as timed out
    warmup_requests: int = 0
    max_lag_s: float = 0.0  # worst send delay behind schedule
    cpu_s: float = 0.0  # CPU time this worker's process spent in the run
    engine: str = "python"  # the sending loop that ran: "native" (C) or "python"
    #: seconds from the measured start to the last reply or error
    last_completion_s: float = 0.0
    #: replies and errors completed in each second of wall time (by completion time)
    completions_per_second: list[int] = field(default_factory=list)
    quality: Quality = field(default_factory=Quality)
    connections_opened: int = 0
    interrupted: bool = False  # stopped early by SIGINT/SIGTERM; counts are partial
