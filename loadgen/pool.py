"""The request pool: traffic items encoded once into Thrift frames before the run.

Global request `i` sends pool item `i % len(pool)`. A worker `w` of `W` only ever sends items
`j` with `j % gcd(W, len(pool)) == w % gcd(...)`, so it is handed just those.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from loadgen import wire
from loadgen.traffic import TrafficItem


@dataclass(frozen=True)
class EncodedPool:
    frames: list[bytes]
    #: per item: bit k set when candidate bidder k really bid; None when not known for all
    truth: list[int] | None
    #: mean candidate bidders named per request (0: requests name none, so the model's all)
    bidders_per_request: float = 0.0

    def __len__(self) -> int:
        return len(self.frames)

    def share(self, worker: int, workers: int) -> tuple[int, list[bytes], list[int] | None]:
        """(stride, frames, truth) for one worker."""
        stride = math.gcd(workers, len(self.frames))
        first = worker % stride
        truth = self.truth[first::stride] if self.truth is not None else None
        return stride, self.frames[first::stride], truth


def truth_mask(item: TrafficItem) -> int | None:
    if item.bids is None or not item.bidders:
        return None
    return sum(1 << k for k, bidder in enumerate(item.bidders) if bidder in item.bids)


def encode_pool(items: Sequence[TrafficItem]) -> EncodedPool:
    if not items:
        raise ValueError("the request pool is empty")
    frames = [wire.encode_score_call(item.payload, item.bidders) for item in items]
    masks = [truth_mask(item) for item in items]
    truth = None if any(m is None for m in masks) else [m for m in masks if m is not None]
    named = sum(len(item.bidders) for item in items) / len(items)
    return EncodedPool(frames, truth, named)
