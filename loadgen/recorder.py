"""What one worker measures: the latency histogram, the per-second series, errors, quality.

Everything is keyed by the request's intended send time, measured from `warm` (the end of
the warm-up); requests due before it are not recorded. The hot loop only appends each
latency to its second's array; a second's latencies go into the HDR histogram in one batch
when the second is closed (`record_batch`), which is far cheaper than a call per reply.
"""

from __future__ import annotations

import ctypes
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
#: the live view's recent p99 is taken from at most this many of the last second's latencies
RECENT_SAMPLE = 2048
#: record_batch scatters fewer values than this one by one, and counts more densely
_SCATTER_BELOW = 128


def new_histogram() -> HdrHistogram:
    return HdrHistogram(HIST_LOWEST_US, HIST_HIGHEST_US, HIST_DIGITS)


def record_batch(hist: HdrHistogram, values: npt.NDArray[np.int64]) -> None:
    """Record many values at once, exactly as one `record_value` call per value would.

    The bucket index of every value is computed by numpy and the counts are added straight into
    the histogram's count array, so the cost is a few vector operations whatever the number of
    distinct values: the load generator calls this every few milliseconds from its sending loop.
    Values outside the trackable range are skipped, as `record_value` skips them.
    """
    if not values.size:
        return
    values = values[values >= 0]
    # HDR layout: bucket = bit_length(v | sub_bucket_mask) - unit_magnitude - (m + 1), with
    # m = sub_bucket_half_count_magnitude; sub-bucket = v >> (bucket + unit_magnitude); the
    # count index = ((bucket + 1) << m) + sub-bucket - sub_bucket_half_count (bit_length is
    # exact through float64 below 2**52, far above the histogram's highest value)
    bits = np.floor(np.log2(values | hist.sub_bucket_mask)).astype(np.int64) + 1
    bucket = bits - hist.unit_magnitude - (hist.sub_bucket_half_count_magnitude + 1)
    sub_bucket = values >> (bucket + hist.unit_magnitude)
    index = ((bucket + 1) << hist.sub_bucket_half_count_magnitude) + sub_bucket
    index -= hist.sub_bucket_half_count
    inside = index < hist.counts_len
    if not inside.all():
        values, index = values[inside], index[inside]
    if not values.size:
        return
    counts = np.frombuffer(hist.counts, dtype=f"u{ctypes.sizeof(hist.counts._type_)}")
    if values.size < _SCATTER_BELOW:
        np.add.at(counts, index, 1)
    else:  # a dense count of every index beats a scatter once there are many values
        counts += np.bincount(index, minlength=hist.counts_len).astype(counts.dtype)
    hist.total_count += int(values.size)
    hist.min_value = min(hist.min_value, int(values.min()))
    hist.max_value = max(hist.max_value, int(values.max()))


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
        #: how many of each second's latencies are already in the histogram
        self.sec_recorded = [0] * nsec
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
            self._record_new(s)
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

    def _record_new(self, second: int) -> None:
        latencies = self.sec_lat[second]
        done = self.sec_recorded[second]
        if len(latencies) > done:
            offset = done * latencies.itemsize
            record_batch(self.hist, np.frombuffer(latencies, dtype=np.int64, offset=offset))
            self.sec_recorded[second] = len(latencies)

    def record_pending(self, now: float) -> None:
        """Move the latencies that arrived since the last call into the histogram."""
        if now < self.warm:
            return
        for second in range(self.reported, min(self.nsec - 1, int(now - self.warm)) + 1):
            self._record_new(second)

    def recent_p99_us(self, now: float) -> int:
        """p99 so far of the requests due in the last full second, for the live view: from a
        sample of at most RECENT_SAMPLE latencies, so the figure costs the loop little."""
        recent = int(now - self.warm) - 1
        if 0 <= recent < self.nsec and len(self.sec_lat[recent]):
            latencies = np.frombuffer(self.sec_lat[recent], dtype=np.int64)
            sample = latencies[:: max(1, len(latencies) // RECENT_SAMPLE)]
            return int(np.percentile(sample, 99))
        return 0

    def completions_per_second(self) -> list[int]:
        counts = list(self.completions)
        while counts and counts[-1] == 0:
            counts.pop()
        return counts
