"""What one worker measures: the latency histogram, the per-second series, errors, quality.

Everything is keyed by the request's intended send time, measured from `warm` (the end of
the warm-up); requests due before it are not recorded. The hot loop only appends each
latency to its second's array; a second's latencies go into the HDR histogram in one batch
when the second is closed (`record_batch`), which is far cheaper than a call per reply.
"""

from __future__ import annotations

import math
from array import array

import numpy as np
import numpy.typing as npt
from hdrh.histogram import HdrHistogram

from loadgen import wire
from loadgen.records import Quality, SecondReport

#: latency histograms track 1 us .. 1 h with 3 significant digits
HIST_LOWEST_US = 1
HIST_HIGHEST_US = 3_600_000_000
HIST_DIGITS = 3


def new_histogram() -> HdrHistogram:
    return HdrHistogram(HIST_LOWEST_US, HIST_HIGHEST_US, HIST_DIGITS)


def record_batch(hist: HdrHistogram, values: npt.NDArray[np.int64]) -> None:
    """Record many values with one `record_value(v, count)` per distinct histogram bucket.

    Each value is first lowered to the first value of its bucket, which is what the
    histogram stores anyway: counts, min and max come out exactly as with a call per value.
    """
    if not values.size:
        return
    # HDR: the bucket of v starts at (v >> s) << s, s = bit_length(v | sub_bucket_mask) - (m + 1)
    # with m = sub_bucket_half_count_magnitude (bit_length is exact in float64 below 2**52)
    bits = np.floor(np.log2(values | hist.sub_bucket_mask)).astype(np.int64) + 1
    shift = bits - (hist.sub_bucket_half_count_magnitude + 1)
    lowest, counts = np.unique((values >> shift) << shift, return_counts=True)
    for value, count in zip(lowest.tolist(), counts.tolist(), strict=True):
        hist.record_value(value, count)


class Recorder:
    def __init__(
        self,
        measured_seconds: float,
        timeout: float,
        truth: list[int] | None,
        pool_size: int,
        stride: int,
    ) -> None:
        self.warm = 0.0
        self.timeout = timeout
        self.truth = truth
        self.pool_size = pool_size
        self.stride = stride
        self.hist = new_histogram()
        self.nsec = max(1, math.ceil(measured_seconds - 1e-9))
        nsec = self.nsec
        #: latencies (us) of successful replies, by intended second; emptied once reported
        self.sec_lat = [array("q") for _ in range(nsec)]
        self.sec_sent = [0] * nsec
        self.sec_err = [0] * nsec
        self.sec_drop = [0] * nsec
        self.sec_late = [0] * nsec
        self.reported = 0  # seconds already handed to the sink
        #: replies and errors by the wall-clock second they completed in
        self.completions = [0] * (nsec + math.ceil(timeout) + 8)
        self.ok = 0
        self.errors: dict[str, int] = {}
        self.examples: dict[str, str] = {}
        self.quality = Quality()
        self.last_completion = 0.0

    def second_of(self, t: float) -> int:
        return min(int(t - self.warm), self.nsec - 1)

    def completed(self, now: float) -> None:
        measured = now - self.warm
        self.last_completion = max(self.last_completion, measured)
        index = int(measured) if measured > 0 else 0
        self.completions[min(index, len(self.completions) - 1)] += 1

    def error(self, key: str, t: float, now: float, example: str = "") -> None:
        """A request due at `t` failed at `now` (warm-up requests are not counted)."""
        if t < self.warm:
            return
        self.completed(now)
        self.errors[key] = self.errors.get(key, 0) + 1
        self.examples.setdefault(key, example)
        self.sec_err[self.second_of(t)] += 1

    def explain(self, key: str, example: str) -> None:
        """The message to show for an error type unless an earlier one was kept."""
        if not self.examples.get(key):
            self.examples[key] = example

    def sent(self, t: float, late: bool) -> None:
        """A send outside the hot loop (from the backlog)."""
        second = self.second_of(t)
        self.sec_sent[second] += 1
        if late:
            self.sec_late[second] += 1

    def count_quality(self, buf: bytes, pos: int, seq: int) -> None:
        """Filtering quality from the ScoreResponse at `pos`, answering request `seq`."""
        try:
            flags = wire.forward_flags(buf, pos)
        except wire.ProtocolError:
            return
        q = self.quality
        q.replies += 1
        q.pairs += len(flags)
        q.filtered += flags.count(False)
        if self.truth is not None:
            mask = self.truth[(seq % self.pool_size) // self.stride]
            for k, forward in enumerate(flags):
                if mask >> k & 1:
                    q.bids += 1
                    q.bids_kept += forward

    def closed_seconds(self, now: float, worker: int) -> list[SecondReport]:
        """Seconds whose requests can no longer be answered, each reported once."""
        horizon = now - self.warm - self.timeout - 1.01
        reports = []
        while self.reported < self.nsec and self.reported <= horizon:
            s = self.reported
            record_batch(self.hist, np.frombuffer(self.sec_lat[s], dtype=np.int64))
            reports.append(
                SecondReport(
                    worker=worker,
                    second=s,
                    sent=self.sec_sent[s],
                    ok=len(self.sec_lat[s]),
                    errors=self.sec_err[s],
                    dropped=self.sec_drop[s],
                    late=self.sec_late[s],
                    latencies_us=self.sec_lat[s].tobytes(),
                )
            )
            self.sec_lat[s] = array("q")
            self.reported += 1
        return reports

    def recent_p99_us(self, now: float) -> int:
        """p99 so far of the requests due in the last full second (for the live view)."""
        recent = int(now - self.warm) - 1
        if 0 <= recent < self.nsec and len(self.sec_lat[recent]):
            return int(np.percentile(np.frombuffer(self.sec_lat[recent], dtype=np.int64), 99))
        return 0

    def completions_per_second(self) -> list[int]:
        counts = list(self.completions)
        while counts and counts[-1] == 0:
            counts.pop()
        return counts
