"""The native score path (model_server/native/score_path.h) against the general path.

`ScorePath.call` answers a remembered `score` call in one native step; `FrameHandler.handle`
is its reference: every reply it writes must be the bytes `handle` returns for the same frame,
and every call it declines must leave nothing written and nothing counted.
"""

from __future__ import annotations

import functools
import random
import struct
import time
from pathlib import Path
from typing import Any

import orjson
import pytest

from model_server import thrift_contract as tc
from model_server.errors import RequestError
from model_server.fast_codec import encode_call
from model_server.metrics import BIDDER_BUCKETS, LATENCY_BUCKETS, WorkerStats
from model_server.native import _forest
from model_server.native._forest import ScorePath
from model_server.predictor import NativePredictor, make_predictor
from model_server.service import FrameHandler, ScoringService
from model_server.synthetic import TrafficGenerator

pytestmark = pytest.mark.native

IAB_EXAMPLES = Path(__file__).resolve().parents[2].parent / "shared" / "openrtb-2.6"


@functools.cache
def _requests(n: int = 300) -> list[bytes]:
    gen = TrafficGenerator(seed=21, n_bidders=8)
    return [orjson.dumps(sr.request) for sr in gen.requests(n)]


def _framed(seqid: int, raw: bytes, names: list[str]) -> bytes:
    return encode_call(tc.ModelServer, "score", seqid, bid_request=raw, bidders=names)


class Writes:
    def __init__(self) -> None:
        self.sent: list[bytes] = []

    def __call__(self, data: bytes) -> None:
        self.sent.append(data)


def _primed(
    service: ScoringService, names: list[str], stats: WorkerStats | None = None
) -> tuple[FrameHandler, ScorePath]:
    """A handler whose general path has seen (and remembered) a call naming `names`."""
    handler = FrameHandler(service, stats or WorkerStats())
    assert handler.score_path is not None, "the native score path was not built"
    handler.handle(_framed(0, _requests()[0], names)[4:])
    return handler, handler.score_path


def _lists(service: ScoringService) -> list[list[str]]:
    b = service.bidders
    return [[], b[:1], b[:6], b[2:5][::-1], [b[3]] * 2]


def test_known_calls_get_the_general_paths_bytes(service: ScoringService) -> None:
    lists = _lists(service)
    handler, path = _primed(service, lists[0])  # a list's first call is decoded in full
    for names in lists[1:]:
        handler.handle(_framed(0, _requests()[0], names)[4:])
    writes = Writes()
    for i, raw in enumerate(_requests()):
        names = lists[i % len(lists)]
        data = _framed(i + 1, raw, names)
        assert path.call(data, writes), i
        assert writes.sent[-1] == handler.handle(data[4:])[1], i
    assert len(writes.sent) == len(_requests())


def test_iab_examples_get_the_general_paths_bytes(service: ScoringService) -> None:
    files = sorted(IAB_EXAMPLES.glob("*.json")) if IAB_EXAMPLES.is_dir() else []
    if not files:
        pytest.skip(f"IAB OpenRTB 2.6 examples not found at {IAB_EXAMPLES} (../shared)")
    names = service.bidders[:4]
    handler, path = _primed(service, names)
    for seqid, f in enumerate(files, 1):
        writes = Writes()
        data = _framed(seqid, f.read_bytes(), names)
        assert path.call(data, writes), f.name
        assert writes.sent == [handler.handle(data[4:])[1]], f.name


def _valid(service: ScoringService, raw: bytes) -> bool:
    try:
        service.score_indices(raw, [0])
    except RequestError:
        return False
    return True


def test_changed_requests_are_answered_exactly_when_the_general_path_scores_them(
    service: ScoringService,
) -> None:
    names = service.bidders[:3]
    handler, path = _primed(service, names)
    rng = random.Random(7)
    shapes = [
        b"",
        b"[",
        b"[]",
        b"null",
        b'{"id": "a"}',
        b'{"id": 1, "imp": [{"id": "1"}]}',
        b'{"id": "a", "imp": []}',
        b'{"id": "a", "imp": [{"id": 1}]}',
        b'{"id": "a", "imp": [{"id": "1"}, 2]}',
        b'{"id": "a", "imp": [{"id": "1"}, {"id": "2"}]}',
        b'{"id": "\\u00e9\\ud83d\\ude00", "imp": [{"id": "1"}]}',
        b'{"id": "a", "imp": [{"id": "1"}], "id": "b"}',
        b'{"id": "a", "imp": [{"id": "1"}]} x',
    ]
    mutated = []
    for raw in _requests()[:40]:
        for _ in range(25):
            b = bytearray(raw)
            b[rng.randrange(len(b))] = rng.choice(b'{}[]",:0123456789.eE-+ tfnaz\\\xff')
            mutated.append(bytes(b))
    accepted = declined = 0
    for seqid, raw in enumerate(shapes + mutated, 1):
        writes = Writes()
        data = _framed(seqid, raw, names)
        answered = path.call(data, writes)
        expected = handler.handle(data[4:])[1]
        if answered:
            accepted += 1
            assert writes.sent == [expected], raw
        else:
            declined += 1
            assert writes.sent == [], raw
        assert answered == _valid(service, raw), raw
    assert accepted > 100
    assert declined > 100


def test_other_calls_and_shapes_are_declined_untouched(service: ScoringService) -> None:
    names = service.bidders[:2]
    handler, path = _primed(service, names)
    raw = _requests()[1]
    unknown = _framed(1, raw, service.bidders[:5])  # a list never seen before
    known = _framed(2, raw, names)
    info = encode_call(tc.ModelServer, "info", 3)
    big = _framed(4, raw + b" " * 70_000, names)  # over the 64 KiB frame limit below
    cases = [
        unknown,
        info,
        known + known,  # two calls in one read
        known[:-1],  # a cut frame
        struct.pack(">i", len(known)) + known[4:],  # a length that disagrees
        b"",
        known[:3],
    ]
    limited = FrameHandler(service, WorkerStats(), max_frame_bytes=65536)
    assert limited.score_path is not None
    limited.handle(known[4:])
    assert limited.score_path.call(known, Writes())
    writes = Writes()
    assert not limited.score_path.call(big, writes)
    for data in cases:
        assert not path.call(data, writes), data[:40]
    assert not path.call(bytearray(known), writes)  # type: ignore[arg-type]  # bytes only
    assert writes.sent == []
    assert path.take_counts()[0] == 0
    # A bidder list is remembered only after the general path resolved it.
    handler.handle(unknown[4:])
    assert path.call(unknown, writes)


def test_counts_fold_into_the_worker_stats(service: ScoringService) -> None:
    stats = WorkerStats()
    names = service.bidders[:6]
    handler, path = _primed(service, names, stats)
    stats.reset()
    handler.fold_native_counts()
    assert stats.requests == {}  # nothing counted yet
    writes = Writes()
    for i in range(5):
        assert path.call(_framed(i, _requests()[i], names), writes)
    assert not path.call(_framed(9, b"[", names), writes)  # declined: not counted here
    handler.fold_native_counts()
    assert stats.requests == {"score": 5}
    assert sum(stats.latency.counts) == 5
    assert stats.latency.total > 0
    assert stats.latency.counts[-1] == 0  # no call took over a second
    six = BIDDER_BUCKETS.index(8)  # 6 bidders: bisect_left picks the bucket bounded by 8
    assert stats.bidders.counts[six] == 5
    assert stats.bidders.total == 30
    handler.fold_native_counts()  # taking resets: a second fold adds nothing
    assert stats.requests == {"score": 5}
    calls, latency, seconds, bidders, total = path.take_counts()
    assert (calls, sum(latency), seconds, sum(bidders), total) == (0, 0, 0.0, 0, 0.0)
    assert len(latency) == len(LATENCY_BUCKETS) + 1
    assert len(bidders) == len(BIDDER_BUCKETS) + 1


def test_a_failing_write_propagates_and_counts_nothing(service: ScoringService) -> None:
    names = service.bidders[:2]
    _, path = _primed(service, names)

    def broken(data: bytes) -> None:
        raise ConnectionResetError("gone")

    with pytest.raises(ConnectionResetError):
        path.call(_framed(1, _requests()[1], names), broken)
    assert path.take_counts()[0] == 0


def test_the_system_clock_is_read_natively_as_time_time_reads_it(tiny_artifact: Any) -> None:
    from model_server.artifact import load_artifact

    model = load_artifact(tiny_artifact.path)
    service = ScoringService(model, make_predictor(model.booster, "native"), 6, 4)
    parts = service.native_parts()
    assert parts is not None
    assert parts.clock is None
    names = service.bidders[:3]
    handler, path = _primed(service, names)
    for i, raw in enumerate(_requests()[:50]):
        writes = Writes()
        data = _framed(i, raw, names)
        hour = time.localtime().tm_hour, time.gmtime().tm_hour
        assert path.call(data, writes)
        expected = handler.handle(data[4:])[1]
        if (time.localtime().tm_hour, time.gmtime().tm_hour) == hour:  # not across an hour
            assert writes.sent == [expected], i


def test_construction_checks_its_parts(service: ScoringService) -> None:
    parts = service.native_parts()
    assert parts is not None

    def build(**changes: Any) -> Any:
        args: dict[str, Any] = {
            "encoder": parts.encoder,
            "forest": parts.forest,
            "known": {},
            "loads": orjson.loads,
            "clock": None,
            "reply_head": b"\x80\x01\x00\x02\x00\x00\x00\x05score",
            "max_frame": 1 << 20,
            "max_bidders": 8,
            "latency_bounds": LATENCY_BUCKETS,
            "bidder_bounds": BIDDER_BUCKETS,
        }
        args.update(changes)
        return _forest.ScorePath(**args)

    assert build().take_counts()[0] == 0
    assert isinstance(service.predictor, NativePredictor)
    f = service.predictor.arrays
    wider = _forest.Forest(
        f.left, f.feature, f.default_left, f.cond, f.roots, f.depths, f.n_features + 1,
        f.base_margin, _forest.TRANSFORM_SIGMOID,
    )  # fmt: skip
    with pytest.raises(ValueError, match="features"):
        build(forest=wider)
    with pytest.raises(ValueError, match="increasing"):
        build(latency_bounds=[0.1, 0.1])
    with pytest.raises(ValueError, match="positive"):
        build(max_bidders=0)
    with pytest.raises(TypeError):
        build(loads=3)
    with pytest.raises(TypeError):
        build(encoder=parts.forest)
    with pytest.raises(TypeError):
        build(known=[])
