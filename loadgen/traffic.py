"""Traffic items and the synthetic source.

A `TrafficItem` is one bid request as the auction server would send it: the raw JSON bytes,
the candidate bidders to score (empty: every bidder the model knows) and, when known, which
of them really bid (the ground truth for filtering quality).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import orjson


@dataclass(frozen=True)
class TrafficItem:
    payload: bytes
    bidders: tuple[str, ...] = ()
    bids: frozenset[str] | None = None


# Training draws stream 0; load tests draw this one, so they score held-out traffic.
LOAD_STREAM = 1


def synthetic_items(
    count: int, seed: int = 0, n_bidders: int = 16, part: int = 0
) -> list[TrafficItem]:
    """`count` requests from the generator shared with training, with their ground truth
    (`part`: a pod of a sharded run, each drawing a stream of its own)."""
    from model_server.synthetic import TrafficGenerator

    # Same world as training (seed), a stream the trainer never draws from, and request times
    # pinned to now: the server scores with its own clock, so the ground truth must use it too.
    stream = LOAD_STREAM if part == 0 else LOAD_STREAM + 1000 + part
    generator = TrafficGenerator(seed=seed, n_bidders=n_bidders, stream=stream, at=time.time())
    bidders = tuple(generator.bidders)
    return [
        TrafficItem(orjson.dumps(sr.request), bidders, frozenset(sr.bids))
        for sr in generator.requests(count)
    ]
