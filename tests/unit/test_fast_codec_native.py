"""The score call's shortcuts against their references.

The native `known_score_call` against its Python form, byte by byte on real, cut, mutated and
unusual frames; remembered bidder lists against thriftpy2's own processing of the same frame;
the inline OpenRTB check and the inline latency histogram against the plain code.
"""

from __future__ import annotations

import functools
import math
import random
import struct
from typing import Any

import orjson
import pytest

from model_server import thrift_contract as tc
from model_server.errors import RequestError
from model_server.fast_codec import (
    SCORE_CALL_HEAD,
    encode_bidders_tail,
    encode_call,
    generic_call,
    known_score_call_py,
    split_plain_score_call,
)
from model_server.metrics import LATENCY_BUCKETS, Histogram, WorkerStats
from model_server.native import _codec
from model_server.openrtb import parse_bid_request, validate_bid_request
from model_server.service import FrameHandler, ScoringService
from model_server.synthetic import TrafficGenerator

pytestmark = pytest.mark.native


@functools.cache
def _requests() -> list[bytes]:
    return [orjson.dumps(sr.request) for sr in TrafficGenerator(seed=5, n_bidders=8).requests(8)]


def _call(seqid: int, raw: bytes, names: list[str]) -> bytes:
    return encode_call(tc.ModelServer, "score", seqid, bid_request=raw, bidders=names)[4:]


def _frames(service: ScoringService) -> list[bytes]:
    """Plain calls, every cut of one, every one-byte change of its head, and odd shapes."""
    b = service.bidders
    calls = [
        _call(i, raw, names)
        for i, (raw, names) in enumerate(
            zip(_requests(), [[], b[:1], b[1:5][::-1], [b[2]] * 2, b[:3]], strict=False)
        )
    ]
    call = calls[2]
    frames = list(calls)
    frames += [call[:cut] for cut in range(len(call))]
    for pos in range(40):
        for value in (0x00, 0x0B, 0x7F, 0x80, 0xFF):
            frames.append(call[:pos] + bytes([value]) + call[pos + 1 :])
    frames += [call + b"\x00", b"", SCORE_CALL_HEAD, b"\x00" * 64]
    frames.append(call[:20] + struct.pack(">i", -1) + call[24:])  # negative string length
    frames.append(call[:20] + struct.pack(">i", 2**31 - 1) + call[24:])  # past the frame
    return frames


def test_native_known_score_call_is_the_python_one(service: ScoringService) -> None:
    frames = _frames(service)
    # Remember the rest of the first three calls, as the server would.
    known: dict[bytes, Any] = {}
    for frame in frames[:3]:
        plain = split_plain_score_call(frame)
        assert plain is not None
        known[plain[2]] = object()
    hits = 0
    for frame in frames:
        native = _codec.known_score_call(frame, known)
        python = known_score_call_py(frame, known)
        assert native == python
        if native is not None and python is not None:
            hits += 1
            assert type(native[1]) is bytes
            assert native[2] is python[2]
    assert hits >= 3


def test_native_known_score_call_checks_its_arguments() -> None:
    with pytest.raises(TypeError):
        _codec.known_score_call(bytearray(b"x"), {})  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        _codec.known_score_call(b"x", [])  # type: ignore[arg-type]


def test_bidders_tail_is_how_thriftpy2_ends_a_score_call(service: ScoringService) -> None:
    for names in ([], service.bidders[:1], service.bidders[::-1], ["é-dsp", "x" * 300]):
        frame = _call(7, _requests()[0], names)
        plain = split_plain_score_call(frame)
        assert plain is not None
        assert plain[:2] == (7, _requests()[0])
        assert plain[2] == encode_bidders_tail([n.encode() for n in names])


@pytest.mark.parametrize("native", [True, False])
def test_remembered_lists_answer_as_thriftpy2_does(
    service: ScoringService, native: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    if not native:
        monkeypatch.setattr("model_server.service.known_score_call", known_score_call_py)
    handler = FrameHandler(service, WorkerStats())
    b = service.bidders
    lists = [[], b[:2], b[1:6][::-1], [b[3]] * 2, ["nobody"], b[:1] * 7]
    for round_ in range(3):  # first call per list decodes it; later ones find it remembered
        for i, names in enumerate(lists):
            raw = _requests()[i] if (i + round_) % 4 else b'{"id": 3}'
            frame = _call(100 * round_ + i, raw, names)
            expected = generic_call(handler._processor, frame)
            assert handler.handle(frame) == expected
    # The unknown name and the over-long list are not remembered.
    assert len(handler._known_lists) == 4


def test_a_repeated_bid_request_field_is_decoded_in_full(service: ScoringService) -> None:
    # Field 1 again after the list: valid Thrift, the last value wins; never a remembered rest.
    handler = FrameHandler(service, WorkerStats())
    first, second = _requests()[:2]
    names = service.bidders[:2]
    plain = _call(1, first, names)
    handler.handle(plain)  # remembers the list's bytes
    odd = plain[:-1] + b"\x0b\x00\x01" + struct.pack(">i", len(second)) + second + b"\x00"
    for _ in range(2):
        assert handler.handle(odd) == generic_call(handler._processor, odd)
    assert len(handler._known_lists) == 1


def test_metrics_of_remembered_and_decoded_calls_are_the_same(service: ScoringService) -> None:
    counted = []
    for remembered in (False, True):
        stats = WorkerStats()
        handler = FrameHandler(service, stats)
        if remembered:
            handler.handle(_call(0, _requests()[0], service.bidders[:3]))
            stats.reset()
        handler.handle(_call(1, _requests()[1], service.bidders[:3]))
        handler.handle(_call(2, b"[", service.bidders[:3]))
        counted.append((stats.errors, stats.bidders.counts, stats.bidders.total))
    assert counted[0] == counted[1]
    assert counted[0][0] == {"InvalidJson": 1}


def _outcome(fn: Any, arg: Any) -> Any:
    try:
        return ("ok", fn(arg))
    except RequestError as exc:
        return (type(exc).__name__, exc.message, getattr(exc, "field", None))


@pytest.mark.parametrize(
    "obj",
    [
        {"id": "a", "imp": [{"id": "1"}]},
        {"id": "a", "imp": [{"id": "1"}, {"id": "2"}]},
        {"id": "a", "imp": [{"id": "1"}, {"id": 2}]},
        {"id": "a", "imp": [{"id": "1"}, 3]},
        {"id": "a", "imp": [{"id": 1}]},
        {"id": "a", "imp": [{}]},
        {"id": "a", "imp": ["x"]},
        {"id": "a", "imp": []},
        {"id": "a", "imp": {"id": "1"}},
        {"id": "a"},
        {"id": 1, "imp": [{"id": "1"}]},
        {"imp": [{"id": "1"}]},
        [],
        "s",
        1.5,
        None,
        True,
    ],
)
def test_inline_openrtb_check_is_validate_bid_request(obj: Any) -> None:
    raw = orjson.dumps(obj)
    assert _outcome(parse_bid_request, raw) == _outcome(validate_bid_request, orjson.loads(raw))


def test_inline_latency_histogram_is_observe() -> None:
    values = [0.0, 1e-9, math.inf, 5.0, *LATENCY_BUCKETS]
    values += [math.nextafter(v, 0) for v in LATENCY_BUCKETS]
    values += [math.nextafter(v, 1) for v in LATENCY_BUCKETS]
    values += [random.Random(4).uniform(0, 0.01) for _ in range(200)]
    stats = WorkerStats()
    reference = Histogram(LATENCY_BUCKETS)
    for v in values:
        stats.request("score", v)
        reference.observe(v)
    assert stats.latency.counts == reference.counts
    assert stats.latency.total == reference.total
    assert stats.requests == {"score": len(values)}
