"""Hand-written Thrift binary encoding for the `score` call, the server's hot path.

thriftpy2's Cython protocol spends ~10 µs decoding a 16-bidder `score` call and ~40 µs encoding
its reply, mostly building one Python object per BidderScore. Here the call is decoded with
`struct` and the reply assembled from per-bidder byte prefixes computed once, a few µs each.
Only `score` takes this path; every other call, and any `score` frame this decoder does not
recognise field by field, goes through thriftpy2 (`generic_call`), so the wire format stays
thriftpy2's. Tests check the bytes against thriftpy2's encoder.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray
from thriftpy2.protocol import TCyBinaryProtocol
from thriftpy2.thrift import TApplicationException, TMessageType, TProcessor
from thriftpy2.transport import TCyMemoryBuffer

VERSION_1 = 0x80010000
VERSION_MASK = 0xFFFF0000
T_STOP, T_BOOL, T_DOUBLE, T_STRING, T_STRUCT, T_LIST = 0, 2, 4, 11, 12, 15

_I32 = struct.Struct(">i")
_U32 = struct.Struct(">I")
_I16 = struct.Struct(">h")


def binary_protocol(buffer: Any) -> Any:
    """thriftpy2's Cython binary protocol over `buffer` (untyped in thriftpy2)."""
    return TCyBinaryProtocol(buffer)  # type: ignore[no-untyped-call]


class MalformedFrameError(ValueError):
    """The frame is not a Thrift binary message; the connection it came on is closed."""


def parse_message_header(frame: bytes) -> tuple[str, int, int, int]:
    """(method name, message type, seqid, offset of the arguments struct)."""
    try:
        (first,) = _U32.unpack_from(frame, 0)
        if first & 0x80000000:  # strict header: version | type, then the name
            if first & VERSION_MASK != VERSION_1:
                raise MalformedFrameError(f"bad Thrift protocol version {first >> 16:#x}")
            mtype = first & 0xFF
            (n,) = _I32.unpack_from(frame, 4)
            start = 8
        else:  # old, non-strict header: the name, then the type
            n = first
            start = 4
            mtype = -1
        if n < 0 or start + n > len(frame):
            raise MalformedFrameError("method name runs past the frame")
        name = frame[start : start + n].decode()
        pos = start + n
        if mtype < 0:
            mtype = frame[pos]
            pos += 1
        (seqid,) = _I32.unpack_from(frame, pos)
    except (struct.error, IndexError, UnicodeDecodeError) as exc:
        raise MalformedFrameError(f"truncated or invalid message header: {exc}") from None
    return name, mtype, seqid, pos + 4


def decode_score_args(frame: bytes, pos: int) -> tuple[bytes, list[bytes]] | None:
    """(bid_request, bidder names as bytes) of a `score` call; None for anything unusual.

    None means "let thriftpy2 decode it": unknown fields, fields in an unexpected type, a
    missing field. A frame that ends early raises MalformedFrameError.
    """
    end = len(frame)
    bid_request: bytes | None = None
    bidders: list[bytes] | None = None
    try:
        while True:
            ftype = frame[pos]
            if ftype == T_STOP:
                pos += 1
                break
            (fid,) = _I16.unpack_from(frame, pos + 1)
            pos += 3
            if fid == 1 and ftype == T_STRING:
                (n,) = _I32.unpack_from(frame, pos)
                pos += 4
                if n < 0 or pos + n > end:
                    raise MalformedFrameError("bid_request runs past the frame")
                bid_request = frame[pos : pos + n]
                pos += n
            elif fid == 2 and ftype == T_LIST and frame[pos] == T_STRING:
                (count,) = _I32.unpack_from(frame, pos + 1)
                pos += 5
                if count < 0 or pos + 4 * count > end:
                    raise MalformedFrameError("bidders list runs past the frame")
                bidders = []
                for _ in range(count):
                    (n,) = _I32.unpack_from(frame, pos)
                    pos += 4
                    if n < 0 or pos + n > end:
                        raise MalformedFrameError("a bidder name runs past the frame")
                    bidders.append(frame[pos : pos + n])
                    pos += n
            else:
                return None
    except (struct.error, IndexError) as exc:
        raise MalformedFrameError(f"truncated score call: {exc}") from None
    if bid_request is None or bidders is None or pos != end:
        return None
    return bid_request, bidders


def _string(data: bytes) -> bytes:
    return _I32.pack(len(data)) + data


@dataclass(frozen=True)
class _ReplyTemplate:
    """The scores list of a reply for one bidder selection, with holes for the values."""

    tail: bytes  # from the list header to the end of the message
    double_pos: NDArray[np.intp]  # where each probability's 8 bytes go, flattened
    bool_pos: NDArray[np.intp]  # where each forward flag goes


class ScoreReplyEncoder:
    """Encodes `score` replies for one model: bidder names and model version are fixed.

    Everything of a reply but the request id and the values depends only on which bidders were
    scored, so each selection's bytes are built once (`_ReplyTemplate`) and a reply is a copy
    of them with the probabilities and flags written in by numpy.
    """

    MAX_TEMPLATES = 4096  # distinct bidder selections remembered; then the cache starts over

    def __init__(self, bidders: Sequence[str], model_version: str) -> None:
        # Everything of a BidderScore before its probability's 8 bytes.
        self._prefix = [b"\x0b\x00\x01" + _string(b.encode()) + b"\x04\x00\x02" for b in bidders]
        self._version_field = b"\x0b\x00\x02" + _string(model_version.encode())
        self._head = _U32.pack(VERSION_1 | TMessageType.REPLY) + _string(b"score")
        self._templates: dict[tuple[int, ...], _ReplyTemplate] = {}

    def _template(self, key: tuple[int, ...]) -> _ReplyTemplate:
        parts = [self._version_field, b"\x0f\x00\x03\x0c", _I32.pack(len(key))]
        size = sum(map(len, parts))
        double_pos: list[int] = []
        bool_pos: list[int] = []
        for b in key:
            parts.append(self._prefix[b])
            size += len(self._prefix[b])
            double_pos.extend(range(size, size + 8))
            # 8 value bytes, then field 3 (bool) header, the flag and the struct's stop byte.
            parts.append(bytes(8) + b"\x02\x00\x03\x00\x00")
            bool_pos.append(size + 11)
            size += 13
        parts.append(b"\x00\x00")  # stop: ScoreResponse, then the result struct
        template = _ReplyTemplate(
            b"".join(parts),
            np.asarray(double_pos, dtype=np.intp),
            np.asarray(bool_pos, dtype=np.intp),
        )
        if len(self._templates) >= self.MAX_TEMPLATES:
            self._templates.clear()
        self._templates[key] = template
        return template

    def encode(
        self,
        seqid: int,
        request_id: str,
        bidder_idx: Sequence[int],
        probabilities: NDArray[np.float64],
        forward: NDArray[np.bool_],
    ) -> bytes:
        """A framed reply with one BidderScore per entry of `bidder_idx`."""
        key = tuple(bidder_idx)
        template = self._templates.get(key) or self._template(key)
        tail = bytearray(template.tail)
        view = np.frombuffer(tail, dtype=np.uint8)
        view[template.double_pos] = probabilities.astype(">f8").view(np.uint8)
        view[template.bool_pos] = forward
        rid = request_id.encode()
        head_len = len(self._head) + 4 + 3 + 3 + 4 + len(rid)
        return b"".join(
            (
                _I32.pack(head_len + len(tail)),
                self._head,
                _I32.pack(seqid),
                b"\x0c\x00\x00\x0b\x00\x01",  # success: ScoreResponse; field 1 request_id
                _I32.pack(len(rid)),
                rid,
                tail,
            )
        )


def framed(payload: bytes) -> bytes:
    return _I32.pack(len(payload)) + payload


def generic_call(
    processor: TProcessor,
    frame: bytes,
    on_internal_error: Callable[[str, Exception], None] | None = None,
) -> tuple[str, bytes]:
    """Handle any call through thriftpy2's processor: (method, framed reply or b"").

    An exception the method does not declare becomes a TApplicationException INTERNAL_ERROR
    reply (and is passed to `on_internal_error`); the caller gets no detail it could leak.
    Raises MalformedFrameError when thriftpy2 cannot decode the frame.
    """
    iprot = binary_protocol(TCyMemoryBuffer(frame))
    out = TCyMemoryBuffer()
    oprot = binary_protocol(out)
    try:
        api, seqid, result, call = processor.process_in(iprot)
    except Exception as exc:
        raise MalformedFrameError(f"undecodable call: {type(exc).__name__}: {exc}") from None
    if isinstance(result, TApplicationException):
        processor.send_exception(oprot, api, result, seqid)
        return api, framed(out.getvalue())
    assert call is not None
    try:
        result.success = call()
    except TApplicationException as exc:
        processor.send_exception(oprot, api, exc, seqid)
        return api, framed(out.getvalue())
    except Exception as exc:
        if not processor.handle_exception(exc, result):
            if on_internal_error is not None:
                on_internal_error(api, exc)
            error = TApplicationException(
                TApplicationException.INTERNAL_ERROR, f"internal error in {api}"
            )
            processor.send_exception(oprot, api, error, seqid)
            return api, framed(out.getvalue())
    if result.oneway:
        return api, b""
    processor.send_result(oprot, api, result, seqid)
    return api, framed(out.getvalue())


def encode_reply(service: Any, method: str, seqid: int, result: Any) -> bytes:
    """A framed REPLY message carrying `result` (a `<method>_result` struct)."""
    out = TCyMemoryBuffer()
    prot = binary_protocol(out)
    prot.write_message_begin(method, TMessageType.REPLY, seqid)
    result.write(prot)
    prot.write_message_end()
    return framed(out.getvalue())


def encode_exception(method: str, seqid: int, kind: int, message: str) -> bytes:
    """A framed EXCEPTION message carrying a TApplicationException."""
    out = TCyMemoryBuffer()
    prot = binary_protocol(out)
    prot.write_message_begin(method, TMessageType.EXCEPTION, seqid)
    TApplicationException(kind, message).write(prot)
    prot.write_message_end()
    return framed(out.getvalue())


def encode_call(service: Any, method: str, seqid: int, **kwargs: Any) -> bytes:
    """A framed CALL message (what a client sends): for warm-up and tests."""
    out = TCyMemoryBuffer()
    prot = binary_protocol(out)
    prot.write_message_begin(method, TMessageType.CALL, seqid)
    getattr(service, f"{method}_args")(**kwargs).write(prot)
    prot.write_message_end()
    return framed(out.getvalue())
