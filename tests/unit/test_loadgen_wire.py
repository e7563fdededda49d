"""The hand-written Thrift bytes against thriftpy2's own encoder and decoder."""

from __future__ import annotations

import struct
from typing import Any

import pytest
import thriftpy2.protocol
import thriftpy2.transport
from thriftpy2.thrift import TApplicationException, TMessageType

from loadgen import wire

pytestmark = pytest.mark.native

IDL: Any = wire.thrift_module()
transport: Any = thriftpy2.transport
protocol: Any = thriftpy2.protocol


def _framed_message(name: str, mtype: int, seqid: int, payload: Any) -> bytes:
    buf = transport.TMemoryBuffer()
    proto = protocol.TBinaryProtocol(buf)
    proto.write_message_begin(name, mtype, seqid)
    payload.write(proto)
    proto.write_message_end()
    body: bytes = buf.getvalue()
    return struct.pack(">i", len(body)) + body


def _decode_call(frame: bytes) -> tuple[str, int, int, Any]:
    (length,) = struct.unpack_from(">i", frame)
    assert length == len(frame) - 4
    proto = protocol.TBinaryProtocol(transport.TMemoryBuffer(frame[4:]))
    name, mtype, seqid = proto.read_message_begin()
    args = IDL.ModelServer.score_args()
    args.read(proto)
    return name, mtype, seqid, args


def test_score_call_decodes_with_thriftpy2() -> None:
    payload = b'{"id":"r1","imp":[{"id":"1"}]}'
    frame = wire.encode_score_call(payload, ["dsp-01", "dsp-02"], seqid=7)
    name, mtype, seqid, args = _decode_call(frame)
    assert (name, mtype, seqid) == ("score", TMessageType.CALL, 7)
    assert args.bid_request == payload
    assert args.bidders == ["dsp-01", "dsp-02"]


def test_sequence_id_patched_in_place() -> None:
    frame = bytearray(wire.encode_score_call(b"{}", []))
    wire.SEQID.pack_into(frame, wire.SEQID_OFFSET, 123456)
    _, _, seqid, args = _decode_call(bytes(frame))
    assert seqid == 123456
    assert args.bidders == []


def _reply_fields(frame: bytes) -> tuple[int, int, int, int, int, int]:
    flen, vt, nlen = wire.REPLY_HEAD.unpack_from(frame, 0)
    seq, ftype, fid = wire.REPLY_RESULT.unpack_from(frame, 12 + nlen)
    return flen, vt, nlen, seq, ftype, fid


def test_success_reply_classified_and_flags_read() -> None:
    scores = [
        IDL.BidderScore(bidder=f"dsp-{k}", probability=k / 10, forward=k % 3 == 0) for k in range(7)
    ]
    result = IDL.ModelServer.score_result(
        success=IDL.ScoreResponse(request_id="r", model_version="v", scores=scores)
    )
    frame = _framed_message("score", TMessageType.REPLY, 42, result)
    flen, vt, nlen, seq, ftype, fid = _reply_fields(frame)
    assert flen == len(frame) - 4
    assert (vt, seq, ftype, fid) == (wire.REPLY_VERSION_TYPE, 42, wire.T_STRUCT, 0)
    flags = wire.forward_flags(frame, 16 + nlen + 3)
    assert flags == [k % 3 == 0 for k in range(7)]


@pytest.mark.parametrize(
    ("field", "exc"),
    [
        ("invalid_json", lambda: IDL.InvalidJson(message="bad json")),
        ("missing_field", lambda: IDL.MissingField(message="no imp", field="imp")),
        ("unknown_bidder", lambda: IDL.UnknownBidder(message="who", bidders=["x"])),
        ("too_many_bidders", lambda: IDL.TooManyBidders(message="many", limit=1, requested=2)),
    ],
)
def test_declared_exceptions_named_from_the_idl(field: str, exc: Any) -> None:
    error = exc()
    frame = _framed_message(
        "score", TMessageType.REPLY, 1, IDL.ModelServer.score_result(**{field: error})
    )
    _, _, nlen, _, ftype, fid = _reply_fields(frame)
    assert ftype == wire.T_STRUCT
    assert wire.score_exception_names()[fid] == type(error).__name__
    assert wire.exception_message(frame, 16 + nlen + 3) == error.message


def test_application_exception_decoded() -> None:
    exc = TApplicationException(TApplicationException.INTERNAL_ERROR, "kaboom")
    frame = _framed_message("score", TMessageType.EXCEPTION, 3, exc)
    _, vt, nlen, seq, _, _ = _reply_fields(frame)
    assert vt == wire.EXCEPTION_VERSION_TYPE
    assert seq == 3
    assert wire.application_exception(frame, 16 + nlen) == ("INTERNAL_ERROR", "kaboom")


def test_truncated_reply_is_a_protocol_error() -> None:
    scores = [IDL.BidderScore(bidder="dsp-01", probability=0.5, forward=True)]
    result = IDL.ModelServer.score_result(
        success=IDL.ScoreResponse(request_id="r", model_version="v", scores=scores)
    )
    frame = _framed_message("score", TMessageType.REPLY, 1, result)
    nlen = wire.REPLY_HEAD.unpack_from(frame, 0)[2]
    with pytest.raises(wire.ProtocolError):
        wire.forward_flags(frame[:-8], 16 + nlen + 3)
