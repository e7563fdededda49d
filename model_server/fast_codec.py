"""Hand-written Thrift binary encoding for the `score` call, the server's hot path.

thriftpy2's Cython protocol spends ~10 µs decoding a 16-bidder `score` call and ~40 µs encoding
its reply, mostly building one Python object per BidderScore. Here the call is decoded with
`struct` and the reply assembled from per-bidder byte prefixes computed once, a few µs each.
Only `score` takes this path; every other call, and any `score` frame this decoder does not
recognise field by field, goes through thriftpy2 (`generic_call`), so the wire format stays
thriftpy2's. Tests check the bytes against thriftpy2's encoder.

On the server's path a call whose bytes after the bid request were seen before is matched
whole (`known_score_call`, native in model_server/native/codec.c; the worker answers such a
call entirely in native code, model_server/native/score_path.h), and a reply is one native call
(`ScoreReplyEncoder.encode_scores`, which writes the float32 probabilities and their forward
flags into the cached reply bytes); `encode` is the numpy form that `encode_scores` is tested
against. `reply_layout` packs a reply template for the native score path.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np
from numpy.typing import NDArray
from thriftpy2.protocol import TCyBinaryProtocol
from thriftpy2.thrift import TApplicationException, TMessageType, TProcessor
from thriftpy2.transport import TCyMemoryBuffer

from model_server.thrift_bounds import FrameBoundsError, check_call_bounds

_score_reply: Callable[..., bytes] | None
try:  # the reply in one C call (model_server/native/request_path.h); numpy when not built
    from model_server.native._forest import score_reply as _score_reply
except ImportError:  # pragma: no cover - depends on the build
    _score_reply = None

_V = TypeVar("_V")

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
        # Not UTF-8: still a name no method has, answered as thriftpy2 answers it (unknown).
        name = frame[start : start + n].decode("utf-8", "replace")
        pos = start + n
        if mtype < 0:
            mtype = frame[pos]
            pos += 1
        (seqid,) = _I32.unpack_from(frame, pos)
    except (struct.error, IndexError, UnicodeDecodeError) as exc:
        raise MalformedFrameError(f"truncated or invalid message header: {exc}") from None
    return name, mtype, seqid, pos + 4


# A strict CALL message for `score` up to its seqid, which every thriftpy2 client writes.
SCORE_CALL_HEAD = _U32.pack(VERSION_1 | TMessageType.CALL) + _I32.pack(5) + b"score"
# After the seqid: the header of field 1 (bid_request, a string) and the string's length.
_PLAIN_ARGS = struct.Struct(">i3si")
_BID_REQUEST_FIELD = b"\x0b\x00\x01"
_PLAIN_START = len(SCORE_CALL_HEAD) + _PLAIN_ARGS.size


def split_plain_score_call(frame: bytes) -> tuple[int, bytes, bytes] | None:
    """(seqid, bid_request, the rest) of a `score` call that starts the way clients write it.

    That is a strict header, then field 1 with its whole string. The rest is every byte after
    the string; the caller checks it (`encode_bidders_tail`). None for any other frame.
    """
    if not frame.startswith(SCORE_CALL_HEAD) or len(frame) < _PLAIN_START:
        return None
    seqid, field, n = _PLAIN_ARGS.unpack_from(frame, len(SCORE_CALL_HEAD))
    end = _PLAIN_START + n
    if field != _BID_REQUEST_FIELD or n < 0 or end > len(frame):
        return None
    return seqid, frame[_PLAIN_START:end], frame[end:]


def known_score_call_py(frame: bytes, known: dict[bytes, _V]) -> tuple[int, bytes, _V] | None:
    """(seqid, bid_request, value) when the frame's rest after a plainly written bid request
    (`split_plain_score_call`) is a key of `known`; None otherwise.

    The reference for the native `known_score_call`, which the server uses when it is built.
    """
    plain = split_plain_score_call(frame)
    if plain is None:
        return None
    seqid, bid_request, tail = plain
    value = known.get(tail)
    return None if value is None else (seqid, bid_request, value)


known_score_call: Callable[[bytes, dict[bytes, Any]], tuple[int, bytes, Any] | None]
try:  # the same in one C call (model_server/native/codec.c)
    from model_server.native._codec import known_score_call as _native_known_score_call

    known_score_call = _native_known_score_call
except ImportError:  # pragma: no cover - depends on the build
    known_score_call = known_score_call_py


def encode_bidders_tail(names: Sequence[bytes]) -> bytes:
    """Field 2 (bidders) and the arguments' stop byte, byte for byte as thriftpy2 writes them.

    A frame whose rest (`split_plain_score_call`) is exactly this decodes to these names.
    """
    items = b"".join([_I32.pack(len(name)) + name for name in names])
    return b"\x0f\x00\x02\x0b" + _I32.pack(len(names)) + items + b"\x00"


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
class ReplyTemplate:
    """The scores list of a reply for one bidder selection, with holes for the values."""

    key: tuple[int, ...]  # the selection: model indices of the scored bidders, in order
    tail: bytes  # from the list header to the end of the message
    double_pos: NDArray[np.intp]  # where each probability's 8 bytes go, flattened
    bool_pos: NDArray[np.intp]  # where each forward flag goes
    positions: tuple[int, ...]  # where each probability starts (its flag is _FLAG_OFFSET on)
    thresholds: NDArray[np.float64]  # each scored bidder's threshold (NaN: none given)
    layout: bytes  # all of the above for native code: see reply_layout


def reply_layout(
    key: Sequence[int], positions: Sequence[int], thresholds: NDArray[np.float64], tail: bytes
) -> bytes:
    """A template as model_server/native/score_path.h reads it: n, the n bidder indices, the n
    positions (int32), the n thresholds (float64), little endian; then the tail."""
    n = len(key)
    return struct.pack(f"<i{n}i{n}i{n}d", n, *key, *positions, *thresholds.tolist()) + tail


# From the start of a BidderScore's probability to its forward flag: 8 value bytes, then the
# bool field's 3-byte header.
_FLAG_OFFSET = 11


class ScoreReplyEncoder:
    """Encodes `score` replies for one model: bidder names and model version are fixed.

    Everything of a reply but the request id and the values depends only on which bidders were
    scored, so each selection's bytes are built once (`ReplyTemplate`) and a reply is a copy
    of them with the probabilities and flags written in by numpy.
    """

    MAX_TEMPLATES = 4096  # distinct bidder selections remembered; then the cache starts over

    def __init__(
        self,
        bidders: Sequence[str],
        model_version: str,
        thresholds: Sequence[float] | None = None,
    ) -> None:
        # Everything of a BidderScore before its probability's 8 bytes.
        self._prefix = [b"\x0b\x00\x01" + _string(b.encode()) + b"\x04\x00\x02" for b in bidders]
        self._version_field = b"\x0b\x00\x02" + _string(model_version.encode())
        self._head = _U32.pack(VERSION_1 | TMessageType.REPLY) + _string(b"score")
        # Frame length, message header, seqid, success + request_id field headers, id length.
        self._head_struct = struct.Struct(f">i{len(self._head)}si6si")
        # The frame length less the request id and the tail: header, seqid, field headers.
        self._fixed_size = len(self._head) + 4 + 3 + 3 + 4
        self._thresholds = np.array(
            thresholds if thresholds is not None else [np.nan] * len(bidders), dtype=np.float64
        )
        if self._thresholds.shape != (len(bidders),):
            raise ValueError("thresholds must have one entry per bidder")
        self._templates: dict[tuple[int, ...], ReplyTemplate] = {}

    @property
    def reply_head(self) -> bytes:
        """A `score` reply's message header (version and type, method name), before the seqid."""
        return self._head

    def _template(self, key: tuple[int, ...]) -> ReplyTemplate:
        parts = [self._version_field, b"\x0f\x00\x03\x0c", _I32.pack(len(key))]
        size = sum(map(len, parts))
        double_pos: list[int] = []
        bool_pos: list[int] = []
        positions: list[int] = []
        for b in key:
            parts.append(self._prefix[b])
            size += len(self._prefix[b])
            positions.append(size)
            double_pos.extend(range(size, size + 8))
            # 8 value bytes, then field 3 (bool) header, the flag and the struct's stop byte.
            parts.append(bytes(8) + b"\x02\x00\x03\x00\x00")
            bool_pos.append(size + _FLAG_OFFSET)
            size += 13
        parts.append(b"\x00\x00")  # stop: ScoreResponse, then the result struct
        tail = b"".join(parts)
        thresholds = np.ascontiguousarray(self._thresholds[list(key)])
        template = ReplyTemplate(
            key,
            tail,
            np.asarray(double_pos, dtype=np.intp),
            np.asarray(bool_pos, dtype=np.intp),
            tuple(positions),
            thresholds,
            reply_layout(key, positions, thresholds, tail),
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
        template = self.template(bidder_idx)
        tail = bytearray(template.tail)
        view = np.frombuffer(tail, dtype=np.uint8)
        view[template.double_pos] = probabilities.astype(">f8").view(np.uint8)
        view[template.bool_pos] = forward
        return self._header(seqid, request_id.encode(), len(tail)) + tail

    def _header(self, seqid: int, rid: bytes, tail_len: int) -> bytes:
        """Everything of a reply before its scores list (`tail_len` bytes follow it)."""
        # success: ScoreResponse; field 1 request_id
        return (
            self._head_struct.pack(
                self._fixed_size + len(rid) + tail_len,
                self._head,
                seqid,
                b"\x0c\x00\x00\x0b\x00\x01",
                len(rid),
            )
            + rid
        )

    def template(self, bidder_idx: Sequence[int]) -> ReplyTemplate:
        """The reply template of one bidder selection (built on first use, then remembered)."""
        key = tuple(bidder_idx)
        return self._templates.get(key) or self._template(key)

    def encode_scores(
        self,
        seqid: int,
        request_id: str,
        bidder_idx: Sequence[int],
        probabilities: NDArray[np.float32],
    ) -> bytes:
        """`encode` with the forward flags taken from the thresholds given at construction.

        The same bytes as ``encode(seqid, request_id, bidder_idx, p, p >= thresholds)`` with
        ``p = probabilities.astype(np.float64)``, in one native call where it is built.
        """
        return self.encode_with(self.template(bidder_idx), seqid, request_id, probabilities)

    def encode_with(
        self,
        template: ReplyTemplate,
        seqid: int,
        request_id: str,
        probabilities: NDArray[np.float32],
    ) -> bytes:
        """`encode_scores` for a selection whose template the caller already holds."""
        if _score_reply is None:
            p = probabilities.astype(np.float64)
            return self.encode(seqid, request_id, template.key, p, p >= template.thresholds)
        tail = template.tail
        head = self._header(seqid, request_id.encode(), len(tail))
        return _score_reply(
            head, tail, template.positions, _FLAG_OFFSET, probabilities, template.thresholds
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
    Raises MalformedFrameError when thriftpy2 cannot decode the frame, or when the call does
    not fit in it (checked first: thriftpy2's decoder would read past the frame's end).
    """
    try:
        check_call_bounds(frame, processor._service)
    except FrameBoundsError as exc:
        raise MalformedFrameError(str(exc)) from None
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
