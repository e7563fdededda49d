"""Every fuzz target's seeds and kept regressions, replayed through its differential check.

The checks (tests/fuzz/oracles.py) compare the native code with the pure-Python reference;
here they run without atheris, so `make test` replays every input that ever failed. The
last tests show the checks can fail: a changed score, decision or error is reported.
"""

from __future__ import annotations

import struct

import pytest

from model_server import thrift_contract as tc
from model_server.fast_codec import MalformedFrameError, encode_call, generic_call
from model_server.thrift_bounds import OutsideProtocolError, RunsPastEndError, check_call_bounds
from tests.fuzz import corpus, oracles

pytestmark = pytest.mark.native

TARGETS = sorted(oracles.TARGETS)


@pytest.mark.parametrize("target", TARGETS)
def test_seed_corpus_agrees(target: str) -> None:
    check = oracles.TARGETS[target]
    inputs = list(corpus.seeds(target, oracles.subject().bidder_lists))
    assert len(inputs) > 100
    for data in inputs:
        check(data)


@pytest.mark.parametrize("target", TARGETS)
def test_kept_regressions_agree(target: str) -> None:
    for path in corpus.regressions(target):
        oracles.TARGETS[target](path.read_bytes())


def test_regressions_are_kept_for_the_targets_that_found_them() -> None:
    assert len(corpus.regressions("call")) >= 3
    assert len(corpus.regressions("frame")) >= 5


def _cut_score_call() -> bytes:
    """A `score` call whose bid request claims 29 bytes and has 17: the first finding."""
    whole = encode_call(tc.ModelServer, "score", 56, bid_request=b'{"id":"a","imp":[{"id":"1"}]}')
    return whole[4:][: 13 + 4 + 3 + 4 + 17]


def test_a_cut_call_is_refused_before_thriftpy2_reads_past_the_frame() -> None:
    frame = _cut_score_call()
    with pytest.raises(RunsPastEndError):
        check_call_bounds(frame, tc.ModelServer)
    seen: list[bytes] = []

    class Handler:
        def score(self, bid_request: bytes, bidders: list[str]) -> None:
            seen.append(bid_request)

    from thriftpy2.thrift import TProcessor

    with pytest.raises(MalformedFrameError, match="runs past the end"):
        generic_call(TProcessor(tc.ModelServer, Handler()), frame)
    assert seen == []  # the handler never saw bytes from beyond the frame


@pytest.mark.parametrize(
    ("tail", "why"),
    [
        (b"\x0f\x00\x02\x00\x7f\xff\xff\xff\x00", "elements of type 0"),  # list of STOPs
        (b"\x0f\x00\x02\x01\x7f\xff\xff\xff\x00", "elements of type 1"),  # list of VOIDs
        (b"\x0f\x00\x02\x0b\xff\xff\xff\xff\x00", "negative size"),
        (b"\x0b\x00\x02\x00\x00\x00\x01x\x00", "sent as a string"),  # a string for a list
        (b"\x2a\x00\x07\x00", "unknown type 42"),
    ],
)
def test_calls_outside_the_protocol_are_refused(tail: bytes, why: str) -> None:
    head = struct.pack(">Ii", 0x80010001, 5) + b"score" + struct.pack(">i", 1)
    with pytest.raises(OutsideProtocolError, match=why):
        check_call_bounds(head + tail, tc.ModelServer)


def test_nesting_past_the_limit_is_refused() -> None:
    head = struct.pack(">Ii", 0x80010001, 4) + b"info" + struct.pack(">i", 1)
    deep = b"\x0c\x00\x01" * 70 + b"\x00" * 71
    with pytest.raises(OutsideProtocolError, match="nested deeper"):
        check_call_bounds(head + deep, tc.ModelServer)


def _reply_with(reply: bytes, old: bytes, new: bytes) -> bytes:
    assert old in reply
    return reply.replace(old, new, 1)


def test_the_call_check_reports_a_changed_score() -> None:
    subject = oracles.subject()
    data = next(s for s in corpus.seeds("call", subject.bidder_lists) if s[0] % 2 == 1)
    framed = oracles.call_input(data)
    fast = oracles.fast_reply(framed)
    ref = oracles.reference_reply(framed)
    assert isinstance(fast, bytes)
    assert isinstance(ref, bytes)
    a, b = oracles.decode_reply(fast), oracles.decode_reply(ref)
    assert oracles._same(a, b, subject.thresholds)
    scores = a[3]["success"]["scores"]
    assert scores, "the seed names no bidders"
    scores[0]["probability"] += 1e-5
    assert not oracles._same(a, b, subject.thresholds)
    scores[0]["probability"] -= 1e-5
    scores[0]["forward"] = not scores[0]["forward"]
    far = abs(scores[0]["probability"] - subject.thresholds[scores[0]["bidder"]]) > 1e-6
    assert oracles._same(a, b, subject.thresholds) is (not far)


def test_the_call_check_reports_a_reply_from_one_side_only(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    data = b"\x01\x02" + b'{"id":"a","imp":[{"id":"1"}]}'
    oracles.check_call(data)
    monkeypatch.setattr(oracles, "fast_reply", lambda framed: MalformedFrameError)
    with pytest.raises(oracles.DisagreementError, match="one side closed"):
        oracles.check_call(data)


def test_the_encode_check_reports_a_changed_feature(monkeypatch: pytest.MonkeyPatch) -> None:
    raw = corpus.requests(1)[0]
    oracles.check_encode(raw)
    pipe = oracles.subject().pipeline
    real = pipe._encode_python

    def off_by_one(req: object, now: float) -> tuple[list[float], list[int]]:
        values, columns = real(req, now)  # type: ignore[arg-type]
        return [values[0] + 1.0, *values[1:]], columns

    monkeypatch.setattr(pipe, "_encode_python", off_by_one)
    with pytest.raises(oracles.DisagreementError, match="encode"):
        oracles.check_encode(raw)


def test_a_floor_of_1e308_is_scored_not_an_internal_error() -> None:
    """Found by the call target: the floor band's log of 1e308 x 100 was infinite."""
    data = b"\x01\x02" + b'{"id":"a","imp":[{"id":"1","bidfloor":1e308}]}'
    reply = oracles.fast_reply(oracles.call_input(data))
    assert isinstance(reply, bytes)
    kind, name, _, result = oracles.decode_reply(reply)
    assert (kind, name) == ("reply", "score")
    assert result["success"]["request_id"] == "a"
