"""Thrift framed + binary-protocol bytes for `ModelServer.score`, written and read by hand.

The hot loop cannot afford a Thrift library call per request, so every request frame is encoded
once before the run (`encode_score_call`) and only its 4-byte sequence id is patched per send.
Replies are classified from their first bytes (`REPLY_HEAD`, `REPLY_RESULT`): success, which
declared exception, or a TApplicationException. Full decoding (`forward_flags`,
`exception_message`) is only done for the sampled share of replies that need it.

Layout of a strict binary message inside a frame (big-endian):
    i32 frame length | i32 0x8001_00TT (version | message type) | i32 name length | name
    | i32 sequence id | struct (fields: i8 type, i16 id, value ... i8 STOP)
"""

from __future__ import annotations

import importlib.util
import struct
from collections.abc import Sequence
from functools import cache
from pathlib import Path
from types import ModuleType

import thriftpy2
from thriftpy2.thrift import TApplicationException

METHOD = b"score"
_VERSION_1 = 0x80010000
_CALL, _REPLY, _EXCEPTION = 1, 2, 3


def _signed(value: int) -> int:
    return value - (1 << 32) if value >= 1 << 31 else value


#: first i32 of a reply / of an application exception, read as a signed int by `REPLY_HEAD`
REPLY_VERSION_TYPE = _signed(_VERSION_1 | _REPLY)
EXCEPTION_VERSION_TYPE = _signed(_VERSION_1 | _EXCEPTION)
#: (frame length, version|type, method-name length) at the start of every reply frame
REPLY_HEAD = struct.Struct(">iii")
#: (sequence id, first field's type, first field's id) right after the method name
REPLY_RESULT = struct.Struct(">ibh")
#: offset of the sequence id inside a frame from `encode_score_call`
SEQID_OFFSET = 4 + 4 + 4 + len(METHOD)
SEQID = struct.Struct(">i")
#: smallest valid reply frame body: header, empty name, seqid, STOP
MIN_FRAME_BODY = 4 + 4 + 4 + 1

T_STOP, T_BOOL, T_BYTE, T_DOUBLE, T_I16, T_I32, T_I64 = 0, 2, 3, 4, 6, 8, 10
T_STRING, T_STRUCT, T_MAP, T_SET, T_LIST = 11, 12, 13, 14, 15
_FIXED_SIZE = {T_BOOL: 1, T_BYTE: 1, T_DOUBLE: 8, T_I16: 2, T_I32: 4, T_I64: 8}
_I32 = struct.Struct(">i")
_FIELD = struct.Struct(">bh")
_LIST = struct.Struct(">bi")
_MAP = struct.Struct(">bbi")


class ProtocolError(ValueError):
    """Bytes that are not a well-formed binary-protocol reply."""


def idl_path() -> Path:
    """`model_server/rtbserve.thrift`, found through the installed `model_server` package."""
    spec = importlib.util.find_spec("model_server")
    for location in (spec.submodule_search_locations or []) if spec else []:
        candidate = Path(location) / "rtbserve.thrift"
        if candidate.is_file():
            return candidate
    raise FileNotFoundError("model_server/rtbserve.thrift not found: is rtbserve installed?")


@cache
def thrift_module() -> ModuleType:
    return thriftpy2.load(str(idl_path()), module_name="rtbserve_loadgen_thrift")


@cache
def score_exception_names() -> dict[int, str]:
    """Field id in `score`'s result struct -> declared exception name, read from the IDL."""
    spec = thrift_module().ModelServer.score_result.thrift_spec
    return {fid: entry[2].__name__ for fid, entry in spec.items() if fid != 0}


_APP_EXCEPTION_NAMES = {
    value: name
    for name, value in vars(TApplicationException).items()
    if name.isupper() and isinstance(value, int)
}


def encode_score_call(payload: bytes, bidders: Sequence[str], seqid: int = 0) -> bytes:
    """One complete framed `score(bid_request, bidders)` call."""
    body = bytearray()
    body += struct.pack(">Ii", _VERSION_1 | _CALL, len(METHOD)) + METHOD
    body += SEQID.pack(seqid)
    body += _FIELD.pack(T_STRING, 1) + _I32.pack(len(payload)) + payload
    body += _FIELD.pack(T_LIST, 2) + _LIST.pack(T_STRING, len(bidders))
    for bidder in bidders:
        encoded = bidder.encode()
        body += _I32.pack(len(encoded)) + encoded
    body += bytes([T_STOP])  # end of the args struct
    return _I32.pack(len(body)) + bytes(body)


def skip(buf: bytes, pos: int, ttype: int) -> int:
    """Offset just past one value of type `ttype` starting at `pos`."""
    size = _FIXED_SIZE.get(ttype)
    if size is not None:
        return pos + size
    if ttype == T_STRING:
        length: int = _I32.unpack_from(buf, pos)[0]
        return pos + 4 + length
    if ttype == T_STRUCT:
        while True:
            ftype = buf[pos]
            if ftype == T_STOP:
                return pos + 1
            pos = skip(buf, pos + 3, ftype)
    if ttype in (T_LIST, T_SET):
        etype, count = _LIST.unpack_from(buf, pos)
        pos += 5
        for _ in range(count):
            pos = skip(buf, pos, etype)
        return pos
    if ttype == T_MAP:
        ktype, vtype, count = _MAP.unpack_from(buf, pos)
        pos += 6
        for _ in range(count):
            pos = skip(buf, skip(buf, pos, ktype), vtype)
        return pos
    raise ProtocolError(f"unknown Thrift type {ttype}")


def _struct_fields(buf: bytes, pos: int) -> dict[int, tuple[int, int]]:
    """Field id -> (type, value offset) of the struct starting at `pos`."""
    fields: dict[int, tuple[int, int]] = {}
    while True:
        if buf[pos] == T_STOP:
            return fields
        ftype, fid = _FIELD.unpack_from(buf, pos)
        fields[fid] = (ftype, pos + 3)
        pos = skip(buf, pos + 3, ftype)


def _find_field(buf: bytes, pos: int, wanted: int) -> tuple[int, int]:
    """(type, value offset) of field `wanted` in the struct at `pos`, skipping only what
    comes before it; (T_STOP, 0) when absent."""
    while buf[pos] != T_STOP:
        ftype, fid = _FIELD.unpack_from(buf, pos)
        if fid == wanted:
            return ftype, pos + 3
        pos = skip(buf, pos + 3, ftype)
    return T_STOP, 0


def _read_string(buf: bytes, pos: int) -> str:
    length = _I32.unpack_from(buf, pos)[0]
    return bytes(buf[pos + 4 : pos + 4 + length]).decode("utf-8", "replace")


def forward_flags(buf: bytes, pos: int) -> list[bool]:
    """`forward` of every BidderScore in the ScoreResponse struct starting at `pos`, in order."""
    try:
        ftype, list_pos = _find_field(buf, pos, 3)
        if ftype != T_LIST:
            raise ProtocolError("ScoreResponse has no scores list")
        etype, count = _LIST.unpack_from(buf, list_pos)
        if etype != T_STRUCT:
            raise ProtocolError("ScoreResponse.scores is not a list of structs")
        flags: list[bool] = []
        pos = list_pos + 5
        for _ in range(count):
            # fast path: the layout every encoder writes (fields in id order, all set)
            if buf[pos] == T_STRING and buf[pos + 1] == 0 and buf[pos + 2] == 1:
                a = pos + 7 + _I32.unpack_from(buf, pos + 3)[0]  # just after the name
                if (
                    buf[a] == T_DOUBLE
                    and buf[a + 1] == 0
                    and buf[a + 2] == 2
                    and buf[a + 11] == T_BOOL
                    and buf[a + 12] == 0
                    and buf[a + 13] == 3
                    and buf[a + 15] == T_STOP
                ):
                    flags.append(buf[a + 14] != 0)
                    pos = a + 16
                    continue
            fields = _struct_fields(buf, pos)
            btype, bool_pos = fields.get(3, (T_STOP, 0))
            flags.append(btype == T_BOOL and buf[bool_pos] != 0)
            pos = skip(buf, pos, T_STRUCT)
        return flags
    except (IndexError, struct.error) as exc:
        raise ProtocolError(f"truncated ScoreResponse: {exc}") from None


def exception_message(buf: bytes, pos: int) -> str:
    """Field 1 (`message`) of the exception struct starting at `pos`, or '' when absent."""
    try:
        ftype, value_pos = _struct_fields(buf, pos).get(1, (T_STOP, 0))
        return _read_string(buf, value_pos) if ftype == T_STRING else ""
    except (IndexError, struct.error):
        return ""


def application_exception(buf: bytes, pos: int) -> tuple[str, str]:
    """(type name, message) of the TApplicationException struct starting at `pos`."""
    try:
        fields = _struct_fields(buf, pos)
        mtype, mpos = fields.get(1, (T_STOP, 0))
        ttype, tpos = fields.get(2, (T_STOP, 0))
        message = _read_string(buf, mpos) if mtype == T_STRING else ""
        code = _I32.unpack_from(buf, tpos)[0] if ttype == T_I32 else 0
    except (IndexError, struct.error):
        return "UNKNOWN", ""
    return _APP_EXCEPTION_NAMES.get(code, f"TYPE_{code}"), message
