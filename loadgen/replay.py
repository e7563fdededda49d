"""Replay source: OpenRTB bid requests from JSON-lines files, local or on S3, plain or gzipped.

Each non-blank line is either a bid request object, sent byte for byte as it is in the file,
or a training record `{"request": {...}, "bidders": [...], "bids": [...]}`, whose request is
sent with its candidate bidders and whose `bids` are the ground truth for filtering quality.
Gzip is recognised by its magic bytes, whatever the name. Order is kept.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import orjson

from loadgen.exit_codes import ExitCode, LoadgenError
from loadgen.s3io import is_s3_uri, iter_object_chunks
from loadgen.traffic import TrafficItem

_CHUNK = 1 << 20
_GZIP_MAGIC = b"\x1f\x8b"


def _bad(uri: str, message: str) -> LoadgenError:
    return LoadgenError(ExitCode.BAD_INPUT, f"replay file {uri}: {message}")


def _file_chunks(uri: str) -> Iterator[bytes]:
    path = Path(uri.removeprefix("file://"))
    try:
        with path.open("rb") as handle:
            while chunk := handle.read(_CHUNK):
                yield chunk
    except FileNotFoundError:
        raise _bad(uri, "not found") from None
    except IsADirectoryError:
        raise _bad(uri, "is a directory, not a file") from None
    except OSError as exc:
        raise _bad(uri, f"cannot be read ({exc.strerror})") from None


def _gunzip(uri: str, chunks: Iterator[bytes]) -> Iterator[bytes]:
    """Decompress every gzip member (concatenated .gz files are valid gzip)."""
    decoder = zlib.decompressobj(16 + zlib.MAX_WBITS)
    in_member = False
    try:
        for chunk in chunks:
            data = chunk
            while data:
                in_member = True
                yield decoder.decompress(data)
                if not decoder.eof:
                    break
                data = decoder.unused_data
                decoder = zlib.decompressobj(16 + zlib.MAX_WBITS)
                in_member = False
    except zlib.error as exc:
        raise _bad(uri, f"is not valid gzip ({exc})") from None
    if in_member:
        raise _bad(uri, "is truncated (the gzip stream ends early)")


def _maybe_gunzip(uri: str, chunks: Iterator[bytes]) -> Iterator[bytes]:
    first = next(chunks, b"")
    rest: Iterable[bytes] = chunks

    def all_chunks() -> Iterator[bytes]:
        yield first
        yield from rest

    return _gunzip(uri, all_chunks()) if first.startswith(_GZIP_MAGIC) else all_chunks()


def _lines(chunks: Iterator[bytes]) -> Iterator[bytes]:
    pending = b""
    for chunk in chunks:
        if not chunk:
            continue
        parts = (pending + chunk).split(b"\n")
        pending = parts.pop()
        yield from parts
    if pending:
        yield pending


def _string_list(uri: str, lineno: int, obj: dict[str, Any], key: str) -> tuple[str, ...]:
    value = obj.get(key, [])
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise _bad(uri, f"line {lineno}: {key!r} must be a list of bidder names")
    return tuple(value)


def parse_line(uri: str, lineno: int, line: bytes, bidders: tuple[str, ...]) -> TrafficItem:
    try:
        obj = orjson.loads(line)
    except orjson.JSONDecodeError as exc:
        raise _bad(uri, f"line {lineno}: not valid JSON ({exc})") from None
    if not isinstance(obj, dict):
        kind = "an array" if isinstance(obj, list) else type(obj).__name__
        raise _bad(uri, f"line {lineno}: expected a JSON object (a bid request), got {kind}")
    if isinstance(obj.get("request"), dict) and ("bidders" in obj or "bids" in obj):
        candidates = _string_list(uri, lineno, obj, "bidders") or bidders
        bids = frozenset(_string_list(uri, lineno, obj, "bids")) if "bids" in obj else None
        return TrafficItem(orjson.dumps(obj["request"]), candidates, bids)
    return TrafficItem(line.strip(), bidders)


def read_replay(
    uri: str, limit: int | None = None, bidders: tuple[str, ...] = ()
) -> list[TrafficItem]:
    """The first `limit` bid requests of a local or s3:// JSON-lines file, in file order.

    `bidders` is the candidate list for lines that carry none (empty: all the model knows).
    """
    chunks = iter_object_chunks(uri) if is_s3_uri(uri) else _file_chunks(uri)
    items: list[TrafficItem] = []
    for lineno, line in enumerate(_lines(_maybe_gunzip(uri, chunks)), start=1):
        if limit is not None and len(items) >= limit:
            break
        if line.strip():
            items.append(parse_line(uri, lineno, line, bidders))
    if not items:
        raise _bad(uri, "holds no bid requests")
    return items
