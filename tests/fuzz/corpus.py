"""Seed inputs of each fuzz target, and the inputs that once failed (kept as regressions).

Seeds come from generated traffic (plain, and with an exchange's extras), odd shapes, and
IAB's example requests in ../shared/openrtb-2.6 where that folder exists. Regressions live
in tests/fuzz/regressions/<target>/, one file an input, and are replayed by the unit tests.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path

import orjson

from bench.workload import with_exchange_extras
from model_server import thrift_contract as tc
from model_server.fast_codec import encode_call
from model_server.synthetic import TrafficGenerator

HERE = Path(__file__).resolve().parent
REGRESSIONS = HERE / "regressions"
DICTIONARY = HERE / "openrtb.dict"
IAB_EXAMPLES = HERE.parents[2] / "shared" / "openrtb-2.6"

SHAPES = [
    b"",
    b"{}",
    b"[]",
    b"null",
    b'{"id":"a"}',
    b'{"id":"a","imp":[]}',
    b'{"id":"a","imp":[{"id":"1"}]}',
    b'{"id":"a","imp":[{"id":1}]}',
    b'{"id":"a","imp":[{"id":"1"}],"id":"b"}',
    b'{"id":"\\u00e9\\ud83d\\ude00","imp":[{"id":"1","bidfloor":1e308}]}',
    b'{"id":"a","imp":[{"id":"1","banner":{"w":-0,"h":1.5e3}}],"device":{"devicetype":true}}',
    b'{"id":"a","imp":[{"id":"1"}],"site":{"domain":"x.com","page":"https://y.com/p"}}',
    b'{"id":"a","imp":[{"id":"1"}],"app":{"bundle":"com.x","publisher":{"id":"p"}}}',
    b'{"id":"a","imp":[{"id":"1"}],"regs":{"coppa":1,"ext":{"gdpr":1,"us_privacy":"1YNN"}}}',
]


def iab_examples() -> list[bytes]:
    """IAB's example bid requests, when ../shared is present (empty otherwise)."""
    if not IAB_EXAMPLES.is_dir():
        return []
    return [f.read_bytes() for f in sorted(IAB_EXAMPLES.glob("*.json"))]


def requests(n: int = 120) -> list[bytes]:
    """Bid request bodies: generated traffic, with and without extras, shapes, IAB examples."""
    gen = TrafficGenerator(seed=17, n_bidders=8)
    out = []
    for k, sr in enumerate(gen.requests(n)):
        out.append(orjson.dumps(sr.request))
        if k % 4 == 0:
            out.append(orjson.dumps(with_exchange_extras(sr.request, seed=k)))
    return out + SHAPES + iab_examples()


def frames(bidder_lists: list[list[str]]) -> list[bytes]:
    """Frame bodies (no length prefix) of `score`, `score_batch` and `info` calls."""
    reqs = requests(40)
    out = [
        encode_call(tc.ModelServer, "score", i, bid_request=raw, bidders=names)[4:]
        for i, raw in enumerate(reqs)
        for names in bidder_lists[i % len(bidder_lists) :][:2]
    ]
    batch = [tc.ScoreRequest(bid_request=raw, bidders=bidder_lists[2]) for raw in reqs[:3]]
    out.append(encode_call(tc.ModelServer, "score_batch", 1, requests=batch)[4:])
    out.append(encode_call(tc.ModelServer, "info", 2)[4:])
    return out


def seeds(target: str, bidder_lists: list[list[str]]) -> Iterator[bytes]:
    """The seed corpus of `target` (see tests/fuzz/oracles.py for what each one takes)."""
    if target in ("scan", "encode"):
        yield from requests()
    elif target == "frame":
        yield from frames(bidder_lists)
    elif target == "call":
        for i, raw in enumerate(requests(60)):
            yield bytes([1 + 2 * (i % 100), i % len(bidder_lists)]) + raw
        for body in frames(bidder_lists):
            yield b"\x00" + body
    else:
        raise ValueError(f"no fuzz target {target!r}")


def regressions(target: str) -> list[Path]:
    """Every input of `target` that once failed, sorted by name."""
    folder = REGRESSIONS / target
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))


def keep_regression(target: str, data: bytes, root: Path = REGRESSIONS) -> Path:
    """Store a failing input under `root` (tests/fuzz/regressions) by its content hash."""
    folder = root / target
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / hashlib.sha1(data).hexdigest()
    path.write_bytes(data)
    return path
