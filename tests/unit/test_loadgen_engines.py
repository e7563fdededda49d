"""The native sending loop against servers that misbehave on purpose, beside its Python reference.

Each server here is a real Thrift-framed socket server on loopback whose replies the test
scripts: late reading (so the kernel takes only part of what is sent), garbage frames,
replies to no request, exceptions between successes in one read. Both loops must count the
same things the same way.
"""

from __future__ import annotations

import socket
import struct
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, cast

import pytest
import thriftpy2.protocol
import thriftpy2.transport
from hdrh.histogram import HdrHistogram
from thriftpy2.thrift import TMessageType

from loadgen import wire
from loadgen.connections import Connection, Target
from loadgen.engine import SEND_BATCH, SendOptions, Worker, native_loop
from loadgen.pool import EncodedPool, encode_pool
from loadgen.records import WorkerResult
from loadgen.runner import RunSpec, build_plans
from loadgen.schedule import RateSchedule
from loadgen.traffic import synthetic_items

pytestmark = [pytest.mark.native, pytest.mark.timeout(120)]
ENGINES = ["native", "python"]
_HEAD = struct.Struct(">iii")

#: (call number from 0, sequence id) -> the bytes to answer that call with
Answer = Callable[[int, int], bytes]


def _encode(result: Any, seq: int) -> bytes:
    buf: Any = cast(Any, thriftpy2.transport).TMemoryBuffer()
    proto: Any = cast(Any, thriftpy2.protocol).TBinaryProtocol(buf)
    proto.write_message_begin("score", TMessageType.REPLY, seq)
    result.write(proto)
    proto.write_message_end()
    body: bytes = buf.getvalue()
    return struct.pack(">i", len(body)) + body


def success(seq: int) -> bytes:
    idl = wire.thrift_module()
    scores = [idl.BidderScore(bidder="dsp-01", probability=0.5, forward=True)]
    response = idl.ScoreResponse(request_id="x", model_version="1", scores=scores)
    return _encode(idl.ModelServer.score_result(success=response), seq)


def unknown_bidder(seq: int) -> bytes:
    idl = wire.thrift_module()
    exc = idl.UnknownBidder(message="no such bidder", bidders=["dsp-99"])
    return _encode(idl.ModelServer.score_result(unknown_bidder=exc), seq)


class ScriptedServer:
    """Answers every framed call on every connection with what `answer` returns; all the
    replies to the calls found in one read leave in one write."""

    def __init__(self, answer: Answer, *, rcvbuf: int = 0, pause_s: float = 0.0) -> None:
        self.answer = answer
        self.pause_s = pause_s
        self.calls = 0
        self.lock = threading.Lock()
        self.listener = socket.socket()
        if rcvbuf:  # inherited by accepted sockets: the client's sends only partly fit
            self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(64)
        self.port = self.listener.getsockname()[1]
        self.stopping = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self.stopping:
            try:
                sock, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(sock,), daemon=True).start()

    def _serve(self, sock: socket.socket) -> None:
        time.sleep(self.pause_s)
        inbuf = b""
        with sock:
            while not self.stopping:
                try:
                    data = sock.recv(1 << 16)
                except OSError:
                    return
                if not data:
                    return
                inbuf += data
                out, pos = [], 0
                while len(inbuf) - pos >= 12:
                    flen, _, nlen = _HEAD.unpack_from(inbuf, pos)
                    if pos + 4 + flen > len(inbuf):
                        break
                    seq = struct.unpack_from(">i", inbuf, pos + 12 + nlen)[0]
                    with self.lock:
                        call, self.calls = self.calls, self.calls + 1
                    out.append(self.answer(call, seq))
                    pos += 4 + flen
                inbuf = inbuf[pos:]
                try:
                    sock.sendall(b"".join(out))
                except OSError:
                    return

    def close(self) -> None:
        self.stopping = True
        self.listener.close()


@pytest.fixture
def scripted() -> Iterator[Callable[..., ScriptedServer]]:
    servers: list[ScriptedServer] = []

    def start(answer: Answer, **knobs: Any) -> ScriptedServer:
        server = ScriptedServer(answer, **knobs)
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.close()


@pytest.fixture(scope="module")
def pool() -> EncodedPool:
    return encode_pool(synthetic_items(500, seed=5))


class _Sink:
    def tick(self, tick: object) -> None:
        pass

    def second(self, report: object) -> None:
        pass


class _WatchedConnection(Connection):
    """Remembers whether it ever waited for the kernel to take more bytes (EPOLLOUT)."""

    __slots__ = ("_writing", "waited_to_write")

    def __init__(self) -> None:
        self.waited_to_write = False
        super().__init__()

    @property  # type: ignore[override]
    def writing(self) -> bool:
        return self._writing

    @writing.setter
    def writing(self, value: bool) -> None:
        self._writing = value
        self.waited_to_write = self.waited_to_write or value


def _worker(
    server: ScriptedServer, pool: EncodedPool, schedule: RateSchedule, engine: str, **options: Any
) -> Worker:
    opts = SendOptions(**{"connections": 2, "engine": engine, **options})
    spec = RunSpec(Target("127.0.0.1", server.port), schedule, opts, 1)
    worker = Worker(build_plans(spec, pool)[0], _Sink())
    worker.conns = [_WatchedConnection() for _ in worker.conns]
    worker.connect_all()
    return worker


def _run(worker: Worker) -> WorkerResult:
    result = worker.run(time.time() + 0.05)
    assert result.engine == worker.opts.engine
    return result


def test_the_native_loop_is_built() -> None:
    # setup.py builds it at install; without it every run would quietly use the Python loop
    assert native_loop is not None


@pytest.mark.parametrize("engine", ENGINES)
def test_bytes_the_kernel_does_not_take_are_sent_later(
    engine: str, scripted: Callable[..., ScriptedServer], pool: EncodedPool
) -> None:
    # 10 MB of calls while the server reads nothing: more than the socket buffers hold
    server = scripted(lambda call, seq: success(seq), rcvbuf=4096, pause_s=0.6)
    schedule = RateSchedule.fixed(20_000, 0.5)
    opts = {"connections": 1, "max_inflight": 20_000, "timeout": 5.0}
    worker = _worker(server, pool, schedule, engine, **opts)
    result = _run(worker)
    assert result.errors == {}
    assert result.ok == result.sent == result.scheduled == 10_000
    assert any(cast(_WatchedConnection, c).waited_to_write for c in worker.conns)
    assert server.calls == 10_000
    assert HdrHistogram.decode(result.histogram).get_max_value() >= 400_000  # us: they waited


@pytest.mark.parametrize("engine", ENGINES)
def test_a_garbage_frame_is_a_protocol_error_and_the_run_goes_on(
    engine: str, scripted: Callable[..., ScriptedServer], pool: EncodedPool
) -> None:
    garbage = struct.pack(">iii", 5, 0, 0) + b"\x00" * 5  # a frame too short to be a reply

    def answer(call: int, seq: int) -> bytes:
        return garbage if call == 100 else success(seq)

    server = scripted(answer)
    result = _run(_worker(server, pool, RateSchedule.fixed(500, 1.0), engine, timeout=1.0))
    assert result.errors.get("ProtocolError", 0) >= 1
    assert "bad reply frame header" in result.error_examples["ProtocolError"]
    assert result.disconnects.get("ProtocolError") == 1
    # what was in flight on the closed connection failed with it; everything else came back
    assert result.ok + sum(result.errors.values()) == result.scheduled == 500
    assert result.ok >= 400


@pytest.mark.parametrize("engine", ENGINES)
def test_replies_to_no_request_are_counted_as_strays(
    engine: str, scripted: Callable[..., ScriptedServer], pool: EncodedPool
) -> None:
    server = scripted(lambda call, seq: success(seq) + success(seq))  # every reply twice
    result = _run(_worker(server, pool, RateSchedule.fixed(400, 1.0), engine))
    assert result.ok == result.scheduled == 400
    assert result.stray_replies == 400
    assert result.errors == {}


@pytest.mark.parametrize("engine", ENGINES)
def test_exceptions_between_successes_in_one_read(
    engine: str, scripted: Callable[..., ScriptedServer], pool: EncodedPool
) -> None:
    def answer(call: int, seq: int) -> bytes:
        return unknown_bidder(seq) if seq % 3 == 0 else success(seq)

    server = scripted(answer, pause_s=0.2)  # replies pile up, then arrive many per read
    result = _run(_worker(server, pool, RateSchedule.fixed(600, 1.0), engine, quality_every=1))
    assert result.errors == {"UnknownBidder": 200}
    assert result.error_examples["UnknownBidder"] == "no such bidder"
    assert result.ok == 400
    assert result.quality.replies == 400  # every success parsed, no exception counted as one
    assert result.quality.pairs == 400


def test_both_loops_see_the_same_run(
    scripted: Callable[..., ScriptedServer], pool: EncodedPool
) -> None:
    """The same schedule against the same server: identical counts and quality."""
    server = scripted(lambda call, seq: unknown_bidder(seq) if seq % 7 == 0 else success(seq))
    results = {
        engine: _run(_worker(server, pool, RateSchedule.fixed(1000, 1.5), engine, quality_every=3))
        for engine in ENGINES
    }
    native, python = results["native"], results["python"]
    for field in ("scheduled", "sent", "ok", "errors", "dropped", "stray_replies", "quality"):
        assert getattr(native, field) == getattr(python, field), field
    assert native.ok == 1500 - len(range(0, 1500, 7))


def test_a_loop_far_behind_still_reads_replies(
    scripted: Callable[..., ScriptedServer], pool: EncodedPool
) -> None:
    """Behind schedule, the loop sends at most SEND_BATCH requests between looks at the
    replies, so the connections drain and it is not stuck reporting Overloaded."""
    server = scripted(lambda call, seq: success(seq))
    worker = _worker(
        server, pool, RateSchedule.fixed(1_000_000, 0.3), "native", max_inflight=SEND_BATCH
    )
    result = _run(worker)
    assert result.ok > 10 * 2 * SEND_BATCH  # far more than the connections hold at once


def test_a_clock_of_its_own_runs_the_python_loop_and_says_so(
    scripted: Callable[..., ScriptedServer], pool: EncodedPool
) -> None:
    # the native loop reads CLOCK_MONOTONIC itself, so only the Python loop can use another
    server = scripted(lambda call, seq: success(seq))
    worker = _worker(server, pool, RateSchedule.fixed(200, 0.5), "native")
    started = time.monotonic()
    result = worker.run(time.time() + 0.05, clock=lambda: time.monotonic() - started)
    assert result.engine == "python"
    assert result.ok == result.scheduled == 100
