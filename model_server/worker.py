"""A worker process: one event loop that reads framed Thrift calls and answers each in full.

Several workers listen on the same port (SO_REUSEPORT: the kernel spreads new connections over
them) and each uses one core: the event loop thread is also the prediction thread, so a call
is decoded, scored and answered without any hand-off between threads.

The supervisor (model_server/server.py) talks to a worker over a pipe:
    worker -> supervisor: ("ready", id), ("stats", id, snapshot), ("fatal", id, message)
    supervisor -> worker: "drain" (close connections after their next reply), "stop"

Connections are closed only between calls: when they reach --conn-max-age-seconds or
--conn-max-requests, while draining, and on stop. A frame larger than --max-frame-bytes, a
frame that does not decode, or a client stalled mid-frame for --read-timeout-seconds closes
only that connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import signal
import socket
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.connection import Connection
from time import perf_counter
from typing import Any, cast

import numpy as np
import orjson

from model_server import logs
from model_server import thrift_contract as tc
from model_server.artifact import load_artifact
from model_server.fast_codec import MalformedFrameError, encode_call
from model_server.logs import kv
from model_server.metrics import (
    FRAME_TOO_LARGE,
    MALFORMED_FRAME,
    READ_TIMEOUT,
    WorkerStats,
    stats_to_wire,
)
from model_server.predictor import make_predictor
from model_server.service import FrameHandler, ScoringService
from model_server.synthetic import TrafficGenerator

log = logging.getLogger(__name__)

STATS_INTERVAL = 0.5  # seconds between snapshots sent to the supervisor
SWEEP_INTERVAL = 0.25  # seconds between checks for stalled and over-age connections
DRAIN_IDLE_GRACE = 1.0  # seconds a new connection may stay silent while draining
STOP_GRACE = 2.0  # seconds a connection mid-frame gets to finish it after "stop"
LISTEN_BACKLOG = 4096

# A frame's 4-byte big-endian signed length, read in place: (length,).
_frame_length = struct.Struct(">i").unpack_from


@dataclass(frozen=True)
class WorkerSpec:
    """Everything a worker needs; picklable, sent to the new process."""

    worker_id: int
    artifact_dir: str
    sha256: str
    backend: str
    host: str
    port: int
    max_bidders: int
    max_batch: int
    max_frame_bytes: int
    read_timeout_seconds: float
    conn_max_age_seconds: float
    conn_max_requests: int
    log_level: str
    warmup_requests: int = 200
    workers: int = 1  # how many the server runs, for the info call


def listening_socket(host: str, port: int, listen: bool = True) -> socket.socket:
    """A TCP socket bound with SO_REUSEPORT, so every worker can bind the same port."""
    family, _, _, _, addr = socket.getaddrinfo(
        host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )[0]
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind(addr)
        if listen:
            sock.listen(LISTEN_BACKLOG)
            sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


class ThriftConnection(asyncio.Protocol):
    """One client connection: frames in, replies out, in order."""

    def __init__(self, worker: Worker) -> None:
        self.worker = worker
        # Bound once: data_received runs for every call.
        self._handle = worker.handler.handle
        score_path = worker.handler.score_path
        self._known_call = None if score_path is None else score_path.call
        self._stats = worker.stats
        self._limit = worker.spec.max_frame_bytes
        self.transport: asyncio.Transport | None = None
        self._write: Callable[[bytes], object]  # the transport's write, once connected
        self.buffer = bytearray()
        self.opened = time.monotonic()
        self.partial_since = 0.0  # when the buffered incomplete frame started arriving
        self.calls = 0
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, but have its interface.
        self.transport = cast(asyncio.Transport, transport)
        self._write = self.transport.write
        self.worker.connections.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.worker.connections.discard(self)

    def close(self) -> None:
        """Close after the replies already written have been sent."""
        if not self.closed and self.transport is not None:
            self.closed = True
            self.transport.close()

    def drop(self, kind: str, reason: str) -> None:
        """Close because of a bad or stalled client, counting it as an error of `kind`."""
        self.worker.stats.error(kind)
        log.warning("closing connection", extra=kv(reason=reason, error=kind))
        if not self.closed and self.transport is not None:
            self.closed = True
            self.transport.abort()

    def data_received(self, data: bytes) -> None:
        if self.closed:
            return
        # The usual call, one whole remembered `score` call in one read, is answered (written
        # and counted) in one native step; everything else takes the general path below.
        if self._known_call is not None and not self.buffer and self._known_call(data, self._write):
            self.calls += 1
            if self.worker.should_close(self):
                self.close()
            return
        if self.buffer:
            self.buffer += data
            if not self._frame_complete(self.buffer):
                return
            data = bytes(self.buffer)
            self.buffer.clear()
        end = len(data)
        limit = self._limit
        size = _frame_length(data)[0] if end >= 4 else -1
        if 0 < size <= limit and size + 4 == end:  # the usual case: exactly one whole frame
            if not self._answer(data[4:]):
                return
            pos = end
        else:
            pos = self._answer_many(data, limit)
            if pos < 0:
                return
        if pos < end:
            self.buffer += data[pos:]
            self.partial_since = time.monotonic()
            return
        if self.worker.should_close(self):
            self.close()

    def _frame_complete(self, buf: bytearray) -> bool:
        if len(buf) < 4:
            return False
        size: int = _frame_length(buf)[0]
        # An invalid length is "complete" so that data_received rejects it now.
        return size <= 0 or size > self._limit or len(buf) >= size + 4

    def _answer_many(self, data: bytes, limit: int) -> int:
        """Answer every whole frame in `data` with one write; where the rest starts (-1: dropped).

        Several frames arrive together when a client pipelines or the worker falls behind;
        one write for all their replies saves a system call per extra frame.
        """
        pos, end = 0, len(data)
        replies: list[bytes] = []
        answered: list[tuple[str, float]] = []  # (method, started) of each call in `replies`
        dropped = False
        handle = self._handle
        while end - pos >= 4:
            (size,) = _frame_length(data, pos)
            if size <= 0 or size > limit:
                self._flush(replies, answered)  # what was answered before still goes out
                self.drop(
                    FRAME_TOO_LARGE if size > limit else MALFORMED_FRAME,
                    f"frame length {size} is outside 1..{limit}",
                )
                return -1
            if end - pos - 4 < size:
                break
            started = perf_counter()
            frame = data[pos + 4 : pos + 4 + size]
            pos += 4 + size
            try:
                method, reply = handle(frame)
            except MalformedFrameError as exc:
                self._flush(replies, answered)
                self.drop(MALFORMED_FRAME, str(exc))
                dropped = True
                break
            if reply:
                replies.append(reply)
            answered.append((method, started))
        if not dropped:
            self._flush(replies, answered)
        return -1 if dropped else pos

    def _flush(self, replies: list[bytes], answered: list[tuple[str, float]]) -> None:
        assert self.transport is not None
        if replies:
            self.transport.write(b"".join(replies) if len(replies) > 1 else replies[0])
        done = perf_counter()
        stats = self._stats
        for method, started in answered:
            stats.request(method, done - started)
        self.calls += len(answered)
        replies.clear()
        answered.clear()

    def _answer(self, frame: bytes) -> bool:
        started = perf_counter()
        try:
            method, reply = self._handle(frame)
        except MalformedFrameError as exc:
            self.drop(MALFORMED_FRAME, str(exc))
            return False
        assert self.transport is not None
        if reply:
            self.transport.write(reply)
        self.calls += 1
        self._stats.request(method, perf_counter() - started)
        return True


class Worker:
    """The event loop side of a worker process."""

    def __init__(
        self, spec: WorkerSpec, control: Connection, handler: FrameHandler, stats: WorkerStats
    ) -> None:
        self.spec = spec
        self.control = control
        self.handler = handler
        self.stats = stats
        self.connections: set[ThriftConnection] = set()
        self.draining = False
        self.stopping = False
        self._stopped = asyncio.Event()
        self._server: asyncio.base_events.Server | None = None

    def should_close(self, conn: ThriftConnection) -> bool:
        """Between calls: is it time for this connection to go?"""
        spec = self.spec
        if self.draining or self.stopping:
            return True
        if spec.conn_max_requests and conn.calls >= spec.conn_max_requests:
            return True
        return bool(
            spec.conn_max_age_seconds
            and time.monotonic() - conn.opened >= spec.conn_max_age_seconds
        )

    def _sweep(self) -> None:
        now = time.monotonic()
        timeout = self.spec.read_timeout_seconds
        for conn in list(self.connections):
            if conn.closed:
                continue
            if conn.buffer:
                if now - conn.partial_since >= timeout:
                    conn.drop(READ_TIMEOUT, f"no complete frame within {timeout}s")
            elif self.should_close(conn) and (
                # While draining, a connection that has not made its first call yet was
                # probably opened to make one: let it, and close after the reply.
                not self.draining or conn.calls > 0 or now - conn.opened >= DRAIN_IDLE_GRACE
            ):
                conn.close()

    def _send(self, message: tuple[Any, ...]) -> None:
        with contextlib.suppress(OSError, ValueError):
            self.control.send(message)

    def _send_stats(self) -> None:
        self.handler.fold_native_counts()
        self._send(("stats", self.spec.worker_id, stats_to_wire(self.stats)))

    def _on_control(self) -> None:
        try:
            message = self.control.recv()
        except (EOFError, OSError):
            # The supervisor is gone: nobody will tell this worker to stop, so stop now.
            message = "stop"
        if message == "drain":
            self.draining = True
        elif message == "stop":
            self.stopping = True
            self._stopped.set()

    async def _ticker(self) -> None:
        next_stats = time.monotonic() + STATS_INTERVAL
        while not self.stopping:
            await asyncio.sleep(SWEEP_INTERVAL)
            self._sweep()
            if time.monotonic() >= next_stats:
                self._send_stats()
                next_stats = time.monotonic() + STATS_INTERVAL

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        loop.add_reader(self.control.fileno(), self._on_control)
        sock = listening_socket(self.spec.host, self.spec.port)
        self._server = await loop.create_server(lambda: ThriftConnection(self), sock=sock)
        ticker = asyncio.create_task(self._ticker())
        self._send(("ready", self.spec.worker_id))
        log.info("worker ready", extra=kv(worker=self.spec.worker_id, pid=os.getpid()))
        await self._stopped.wait()
        await self._shutdown()
        ticker.cancel()
        loop.remove_reader(self.control.fileno())
        self._send_stats()

    async def _shutdown(self) -> None:
        """Stop accepting; close idle connections; give ones mid-frame a moment to finish."""
        assert self._server is not None
        self._server.close()
        for conn in list(self.connections):
            if not conn.buffer:
                conn.close()
        deadline = time.monotonic() + min(STOP_GRACE, self.spec.read_timeout_seconds)
        while self.connections and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
            for conn in list(self.connections):
                if not conn.buffer:
                    conn.close()
        for conn in list(self.connections):
            if conn.transport is not None:
                conn.transport.abort()
        await asyncio.sleep(0)  # let the transports run connection_lost


def warm_up(service: ScoringService, handler: FrameHandler, n: int, seed: int) -> None:
    """Run the whole scoring path, Thrift frames included, on synthetic requests.

    The first calls through a path are slow (lazy imports, numpy's caches, new templates);
    a worker reports ready only after this, and fails if any result is off.
    """
    gen = TrafficGenerator(seed=seed, n_bidders=min(16, len(service.bidders)))
    subset = service.bidders[: min(16, len(service.bidders), service.max_bidders)][::-1]
    for i, synthetic in enumerate(gen.requests(n)):
        raw = orjson.dumps(synthetic.request)
        names = [] if i % 2 else subset
        scored = service.score(raw, names)
        if not np.all(np.isfinite(scored.probabilities)):
            raise RuntimeError("warm-up produced a non-finite probability")
        call = encode_call(tc.ModelServer, "score", i, bid_request=raw, bidders=names)
        _, reply = handler.handle(call[4:])
        if not reply:
            raise RuntimeError("warm-up call produced no reply")
    handler.handle(encode_call(tc.ModelServer, "info", n)[4:])


def _build(spec: WorkerSpec) -> tuple[FrameHandler, WorkerStats]:
    model = load_artifact(spec.artifact_dir, spec.sha256)
    predictor = make_predictor(model.booster, spec.backend)
    service = ScoringService(model, predictor, spec.max_bidders, spec.max_batch)
    stats = WorkerStats()
    handler = FrameHandler(service, stats, spec.max_frame_bytes, workers=spec.workers)
    warm_up(service, handler, spec.warmup_requests, seed=spec.worker_id)
    stats.reset()  # serving counts from zero
    # Everything loaded so far lives as long as the worker. Moved out of the collector's
    # reach, it is not traversed again: a full collection then takes microseconds instead of
    # tens of milliseconds, which would otherwise land on some request's latency.
    gc.collect()
    gc.freeze()
    return handler, stats


def worker_main(spec: WorkerSpec, control: Connection) -> None:
    """Process entry point (multiprocessing target)."""
    # The supervisor decides when workers stop; a Ctrl-C or a SIGTERM to the process group
    # must not cut a worker short while it drains.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    logs.configure(spec.log_level)
    try:
        handler, stats = _build(spec)
    except Exception as exc:
        log.exception("worker failed to start", extra=kv(worker=spec.worker_id))
        with contextlib.suppress(OSError, ValueError):
            control.send(("fatal", spec.worker_id, f"{type(exc).__name__}: {exc}"))
        raise SystemExit(1) from None
    _run_loop(Worker(spec, control, handler, stats))


def _run_loop(worker: Worker) -> None:
    try:
        import uvloop
    except ImportError:  # uvloop is a dependency; asyncio's loop is a slower fallback
        asyncio.run(worker.run())
        return
    uvloop.run(worker.run())
