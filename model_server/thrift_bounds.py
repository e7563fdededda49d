"""Check that a Thrift binary call lies wholly inside its frame before thriftpy2 decodes it.

thriftpy2's Cython decoder (0.7) does not check a string's or a container's length against
the bytes it was given: a call whose string length runs past the end of the frame decodes to
bytes read from beyond the buffer (found by the `call` fuzz target, tests/fuzz/). Every frame
the general path hands to thriftpy2 (`fast_codec.generic_call`) is walked here first, in
pure Python: each length must fit in what is left, each type must be one the binary protocol
defines, and nesting stops at MAX_DEPTH. The walk costs a few µs for the calls that take the
general path (`info`, `score_batch`, unusual `score` frames); the usual `score` call never
comes here.
"""

from __future__ import annotations

import struct
from typing import Any

MAX_DEPTH = 64

T_STOP, T_VOID, T_BOOL, T_BYTE, T_DOUBLE, T_I16, T_I32, T_I64 = 0, 1, 2, 3, 4, 6, 8, 10
T_STRING, T_STRUCT, T_MAP, T_SET, T_LIST = 11, 12, 13, 14, 15
T_BINARY = 18  # thriftpy2's own type code for `binary`: read as a string
_BYTES = (T_STRING, T_BINARY)

# Bytes a value of each fixed-size type takes.
_FIXED = {T_BOOL: 1, T_BYTE: 1, T_DOUBLE: 8, T_I16: 2, T_I32: 4, T_I64: 8}
# The fewest bytes any value of each type takes: how many a count can claim at most.
_SMALLEST = {**_FIXED, T_STRING: 4, T_BINARY: 4, T_STRUCT: 1, T_MAP: 6, T_SET: 5, T_LIST: 5}

_I16 = struct.Struct(">h")
_I32 = struct.Struct(">i")
_U32 = struct.Struct(">I")


class FrameBoundsError(ValueError):
    """The call does not fit in its frame, or uses a type the binary protocol does not have."""


class RunsPastEndError(FrameBoundsError):
    """A length or count claims more bytes than the frame has left."""


class OutsideProtocolError(FrameBoundsError):
    """A type the binary protocol does not define, a container of values that take no bytes
    (STOP or VOID: a count bounded by nothing, which thriftpy2 would loop over), or nesting
    past MAX_DEPTH. Refused, although thriftpy2 would skip some of these."""


def check_call_bounds(frame: bytes, service: Any = None) -> None:
    """Raise FrameBoundsError unless the message header and its argument struct fit `frame`.

    With `service` (a thriftpy2 service), each field is walked as thriftpy2 will read it,
    from the method's argument spec: thriftpy2 reads a field sent as a string as the type
    its spec declares, so such a field (a string where a list is declared) is refused.
    """
    _Walk(frame, service).message()


# A thriftpy2 spec: a struct's `thrift_spec` (field id -> (type, name, [sub-spec,] required)),
# or a container's element spec (a type code, or (type code, sub-spec)).
Spec = Any


class _Walk:
    def __init__(self, frame: bytes, service: Any) -> None:
        self.service = service
        self.frame = frame
        self.end = len(frame)
        self.pos = 0

    def need(self, n: int, what: str) -> None:
        if n < 0:
            raise OutsideProtocolError(f"{what} of negative length {n} (at byte {self.pos})")
        if self.pos + n > self.end:
            raise RunsPastEndError(f"{what} runs past the end of the frame (at byte {self.pos})")

    def i32(self, what: str) -> int:
        self.need(4, what)
        (v,) = _I32.unpack_from(self.frame, self.pos)
        self.pos += 4
        return int(v)

    def byte(self, what: str) -> int:
        self.need(1, what)
        v = self.frame[self.pos]
        self.pos += 1
        return v

    def message(self) -> None:
        self.need(4, "message header")
        (first,) = _U32.unpack_from(self.frame, 0)
        if first & 0x80000000:  # strict: version | type, name, seqid
            self.pos = 4
            name = self.string("method name")
        else:  # old header: name, type, seqid
            name = self.string("method name")
            self.byte("message type")
        self.i32("seqid")
        args = getattr(self.service, f"{name.decode('utf-8', 'replace')}_args", None)
        self.value(T_STRUCT, 1, getattr(args, "thrift_spec", None))

    def string(self, what: str) -> bytes:
        n = self.i32(f"{what} length")
        self.need(n, what)
        self.pos += n
        return self.frame[self.pos - n : self.pos]

    def field(self, ftype: int, fid: int, spec: Spec, depth: int) -> None:
        """One field's value, walked as thriftpy2's read_struct reads it."""
        entry = None if spec is None else spec.get(fid)
        if entry is None:
            self.value(ftype, depth)  # skipped: read by its wire type
            return
        declared, sub = entry[0], (entry[2] if len(entry) == 4 else None)
        if ftype == declared or (ftype in _BYTES and declared in _BYTES):
            self.value(ftype, depth, sub)
        elif ftype in _BYTES:
            raise OutsideProtocolError(f"field {fid} is sent as a string, declared as {declared}")
        else:
            self.value(ftype, depth)  # skipped: read by its wire type

    def counted(self, what: str, *types: int) -> int:
        for t in types:
            if t in (T_STOP, T_VOID):
                raise OutsideProtocolError(f"{what} of elements of type {t}, which take no bytes")
            if t not in _SMALLEST:
                raise OutsideProtocolError(f"{what} of unknown element type {t}")
        count = self.i32(f"{what} size")
        if count < 0:
            raise OutsideProtocolError(f"{what} of negative size {count}")
        self.need(count * sum(_SMALLEST[t] for t in types), f"{what} of {count} elements")
        return count

    def value(self, ttype: int, depth: int, spec: Spec = None) -> None:
        """One value of wire type `ttype`; `spec`: what thriftpy2 reads it as (None: skipped)."""
        if depth > MAX_DEPTH:
            raise OutsideProtocolError(f"values nested deeper than {MAX_DEPTH}")
        size = _FIXED.get(ttype)
        if size is not None:
            self.need(size, f"value of type {ttype}")
            self.pos += size
        elif ttype in _BYTES:
            self.string("string")
        elif ttype == T_STRUCT:
            fields = getattr(spec, "thrift_spec", spec)  # a struct class, or its spec
            while (ftype := self.byte("field type")) != T_STOP:
                self.need(2, "field id")
                (fid,) = _I16.unpack_from(self.frame, self.pos)
                self.pos += 2
                if ftype == T_VOID:  # no value follows
                    continue
                if ftype not in _SMALLEST:
                    raise OutsideProtocolError(f"field of unknown type {ftype}")
                self.field(ftype, fid, fields, depth + 1)
        elif ttype == T_MAP:
            ktype, vtype = self.byte("map key type"), self.byte("map value type")
            count = self.counted("map", ktype, vtype)
            if ktype in _FIXED and vtype in _FIXED:
                self.pos += count * (_FIXED[ktype] + _FIXED[vtype])  # counted() checked it
                return
            for _ in range(count):
                self.value(ktype, depth + 1)
                self.value(vtype, depth + 1)
        elif ttype in (T_SET, T_LIST):
            etype = self.byte("element type")
            count = self.counted("list", etype)
            if etype in _FIXED:
                self.pos += count * _FIXED[etype]
                return
            declared, sub = spec if isinstance(spec, tuple) else (spec, None)
            if not (etype == declared or (etype in _BYTES and declared in _BYTES)):
                sub = None  # thriftpy2 skips the elements by their wire type
            for _ in range(count):
                self.value(etype, depth + 1, sub)
        else:
            raise OutsideProtocolError(f"value of unknown type {ttype}")
