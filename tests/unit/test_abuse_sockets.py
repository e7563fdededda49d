"""Hostile bytes over real sockets against `rtbserve serve` with two workers.

Each abusive input goes on its own connection. After each: every worker is the same process
(same PIDs), a good request is answered, and the server answered with a typed Thrift error
(an IDL exception or a TApplicationException) or closed the connection, never anything else.
At the end the workers' memory has grown by a bounded amount (printed with the count of
inputs tried).
"""

from __future__ import annotations

import socket
import struct
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from thriftpy2.protocol.binary import TBinaryProtocol
from thriftpy2.thrift import TApplicationException, TMessageType
from thriftpy2.transport.memory import TMemoryBuffer

from model_server import thrift_contract as tc
from model_server.fast_codec import encode_call
from model_server.synthetic import TrafficGenerator
from tests.server_fixtures import RunningServer, running_rtbserve

pytestmark = [pytest.mark.native, pytest.mark.timeout(600)]

MAX_FRAME = 16 << 20  # room for the 10 MiB string inside a frame
RSS_GROWTH_LIMIT = 256 << 20
GOOD = orjson.dumps(TrafficGenerator(seed=4, n_bidders=8).requests(1).__next__().request)


@pytest.fixture(scope="module")
def server(tiny_artifact: Any) -> Iterator[RunningServer]:
    with running_rtbserve(
        tiny_artifact.path,
        "--workers",
        "2",
        "--max-frame-bytes",
        str(MAX_FRAME),
        "--read-timeout-seconds",
        "2",
        "--max-bidders",
        "64",
    ) as running:
        yield running


def _worker_pids(server: RunningServer) -> set[int]:
    pids = {int(line["pid"]) for line in server.logs("worker ready")}
    assert len(pids) == 2, pids
    return pids


def _rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS for {pid}")


def _connect(server: RunningServer, timeout: float = 30.0) -> socket.socket:
    sock = socket.create_connection((server.host, server.thrift_port), timeout=timeout)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def _read_reply(sock: socket.socket) -> bytes | None:
    """One framed reply, or None when the server closed the connection."""
    head = _recv(sock, 4)
    if head is None:
        return None
    (size,) = struct.unpack(">i", head)
    body = _recv(sock, size)
    assert body is not None, "the server closed the connection mid-reply"
    return body


def _recv(sock: socket.socket, n: int) -> bytes | None:
    chunks = b""
    while len(chunks) < n:
        try:
            chunk = sock.recv(n - len(chunks))
        except ConnectionResetError:
            return None
        if not chunk:
            return None
        chunks += chunk
    return chunks


def _typed_error(body: bytes) -> str:
    """The name of the typed error a reply carries; fails on a reply that carries none."""
    proto = TBinaryProtocol(TMemoryBuffer(body))
    name, mtype, _ = proto.read_message_begin()
    if mtype == TMessageType.EXCEPTION:
        exc = TApplicationException()
        exc.read(proto)
        return f"TApplicationException({exc.type})"
    result = getattr(tc.ModelServer, f"{name}_result")()
    result.read(proto)
    raised = [k for k, v in vars(result).items() if k != "success" and v is not None]
    assert raised, f"a success reply to an abusive {name} call: {result}"
    return type(getattr(result, raised[0])).__name__


def _send(server: RunningServer, data: bytes) -> str:
    """Send `data` on a new connection; the typed error it got, or "closed"."""
    with _connect(server) as sock:
        try:
            sock.sendall(data)
        except (BrokenPipeError, ConnectionResetError):
            return "closed"
        body = _read_reply(sock)
        return "closed" if body is None else _typed_error(body)


def _score(raw: bytes, names: list[Any] | None = None) -> bytes:
    return encode_call(tc.ModelServer, "score", 1, bid_request=raw, bidders=names or [])


def _assert_healthy(server: RunningServer, pids: set[int]) -> None:
    assert _worker_pids(server) == pids
    for pid in pids:
        assert Path(f"/proc/{pid}").exists(), f"worker {pid} is gone"
    for _ in range(4):  # both workers take connections: ask more than once
        with _connect(server) as sock:
            sock.sendall(_score(GOOD, ["dsp-01", "dsp-02"]))
            body = _read_reply(sock)
        assert body is not None
        proto = TBinaryProtocol(TMemoryBuffer(body))
        _, mtype, _ = proto.read_message_begin()
        result = tc.ModelServer.score_result()
        result.read(proto)
        assert mtype == TMessageType.REPLY
        assert result.success is not None
        assert len(result.success.scores) == 2


def _field(ftype: int, fid: int, payload: bytes) -> bytes:
    return struct.pack(">bh", ftype, fid) + payload


def _call(name: str, args: bytes) -> bytes:
    body = struct.pack(">Ii", 0x80010001, len(name)) + name.encode() + struct.pack(">i", 1) + args
    return struct.pack(">i", len(body)) + body


def _inputs() -> list[tuple[str, bytes, set[str]]]:
    """(what, bytes, the answers allowed) for every abusive input."""
    whole = _score(GOOD)
    closed = {"closed"}
    invalid = {"InvalidJson"}
    cases: list[tuple[str, bytes, set[str]]] = []
    for cut in (1, 3, 4, 5, 12, 20, 40, len(whole) // 2, len(whole) - 1):
        cases.append((f"frame cut at {cut}", whole[:cut], closed))
    cases += [
        ("2 GiB length prefix", b"\x7f\xff\xff\xff" + whole[4:], closed),
        ("negative length", b"\xff\xff\xff\xfe" + whole[4:], closed),
        ("zero length", b"\x00\x00\x00\x00" + whole, closed),
        ("length past the bytes sent", struct.pack(">i", len(whole)) + whole[4:40], closed),
        ("unknown method", _call("steal", b"\x00"), {"TApplicationException(1)"}),
        ("empty method name", _call("", b"\x00"), {"TApplicationException(1)"}),
        ("not a Thrift message", struct.pack(">i", 8) + b"GET / HT", closed),
        # wrong field types: thriftpy2 skips them, and the call lacks its bid request
        (
            "bid_request as i32",
            _call("score", _field(8, 1, b"\x00\x00\x00\x07") + b"\x00"),
            invalid | {"MissingField"},
        ),
        (
            "bidders as list<i32>",
            _call(
                "score",
                _field(11, 1, struct.pack(">i", len(GOOD)) + GOOD)
                + _field(15, 2, b"\x08\x00\x00\x00\x01\x00\x00\x00\x02")
                + b"\x00",
            ),
            {"ok"},
        ),
        (
            "a string where a list is declared",
            _call("score", _field(11, 2, b"\x00\x00\x00\x01x") + b"\x00"),
            closed,
        ),
        ("nested 100,000 deep", _score(b"[" * 100_000 + b"]" * 100_000), invalid),
        ("object nested 100,000 deep", _score(b'{"a":' * 100_000 + b"1" + b"}" * 100_000), invalid),
        (
            "10 MiB string",
            _score(b'{"id":"' + b"x" * (10 << 20) + b'","imp":[{"id":"1"}]}'),
            {"ok"},
        ),
        ("invalid UTF-8", _score(b'{"id":"\xff\xfe","imp":[{"id":"1"}]}'), invalid),
        ("lone surrogate", _score(b'{"id":"\\ud800","imp":[{"id":"1"}]}'), invalid | {"ok"}),
        ("NaN", _score(b'{"id":"a","imp":[{"id":"1","bidfloor":NaN}]}'), invalid),
        ("Infinity", _score(b'{"id":"a","imp":[{"id":"1","bidfloor":Infinity}]}'), invalid),
        ("1e400", _score(b'{"id":"a","imp":[{"id":"1","bidfloor":1e400}]}'), invalid | {"ok"}),
        ("empty request", _score(b""), invalid),
        ("no imp", _score(b'{"id":"a"}'), {"MissingField", "InvalidJson"}),
        ("empty bidder list", _score(GOOD, []), {"ok"}),
        ("duplicate bidders", _score(GOOD, ["dsp-01"] * 5), {"ok"}),
        ("unknown bidder", _score(GOOD, ["dsp-01", "evil"]), {"UnknownBidder"}),
        (
            "10,000 bidders",
            _score(GOOD, [f"dsp-{i % 8 + 1:02d}" for i in range(10_000)]),
            {"TooManyBidders"},
        ),
        ("non-UTF-8 bidder", _score(GOOD, [b"\xff\xfe"]), {"UnknownBidder"}),
        (
            "batch of garbage",
            encode_call(
                tc.ModelServer,
                "score_batch",
                1,
                requests=[tc.ScoreRequest(bid_request=b"[" * 1000)] * 4,
            ),
            {"ok"},
        ),
        (
            "batch too large",
            encode_call(
                tc.ModelServer,
                "score_batch",
                1,
                requests=[tc.ScoreRequest(bid_request=GOOD)] * 1000,
            ),
            {"BatchTooLarge"},
        ),
    ]
    return cases


def _outcome(server: RunningServer, data: bytes) -> str:
    try:
        return _send(server, data)
    except AssertionError as exc:
        if "a success reply" in str(exc):
            return "ok"
        raise


def test_abusive_inputs_get_typed_errors_or_a_close_and_lose_no_worker(
    server: RunningServer,
) -> None:
    pids = _worker_pids(server)
    _assert_healthy(server, pids)
    rss_before = sum(_rss(p) for p in pids)
    tried = 0
    for what, data, allowed in _inputs():
        got = _outcome(server, data) if not _is_cut(what) else _send_cut(server, data)
        assert got in allowed, f"{what}: got {got}, expected one of {sorted(allowed)}"
        _assert_healthy(server, pids)
        tried += 1
    rss_after = sum(_rss(p) for p in pids)
    print(
        f"\nabuse: {tried} inputs tried, 0 workers lost, "
        f"workers' RSS {rss_before >> 20} MiB -> {rss_after >> 20} MiB "
        f"({(rss_after - rss_before) / 2**20:+.1f} MiB)"
    )
    assert rss_after - rss_before < RSS_GROWTH_LIMIT


def _is_cut(what: str) -> bool:
    return what.startswith("frame cut")


def _send_cut(server: RunningServer, data: bytes) -> str:
    """A cut frame, then the client goes quiet: the server closes after its read timeout."""
    with _connect(server) as sock:
        sock.sendall(data)
        body = _read_reply(sock)
    assert body is None
    return "closed"


def test_two_thousand_idle_connections_do_not_stop_service(server: RunningServer) -> None:
    pids = _worker_pids(server)
    idle = [_connect(server) for _ in range(2000)]
    try:
        _assert_healthy(server, pids)
    finally:
        for sock in idle:
            sock.close()
    _assert_healthy(server, pids)
    print(f"\nabuse: 2000 idle connections held, {len(pids)} workers kept")


def test_a_client_sending_one_byte_a_second_is_cut_off_and_others_are_served(
    server: RunningServer,
) -> None:
    pids = _worker_pids(server)
    whole = _score(GOOD)
    with _connect(server) as slow:
        sent = 0
        closed = False
        for byte in whole[:10]:
            try:
                slow.sendall(bytes([byte]))
            except (BrokenPipeError, ConnectionResetError):
                closed = True
                break
            sent += 1
            _assert_healthy(server, pids)  # others are served while it trickles
            time.sleep(1.0)
        if not closed:
            slow.settimeout(30.0)
            closed = _recv(slow, 1) is None
    assert closed, "the server kept a connection stalled mid-frame past its read timeout"
    assert sent < len(whole)
    _assert_healthy(server, pids)
