"""One worker's sending loop: open-loop, pipelined over many non-blocking connections.

Every request has an intended send time from the schedule. The loop appends due requests'
pre-encoded frames (sequence id patched in place) to a connection's output buffer whatever
the replies are doing, and a reply's latency is `reply time - intended time`, so waiting
caused by a slow server (or by this loop) is counted, never hidden.

Replies are matched by sequence id, so a server may answer pipelined calls in any order.
The loop waits on epoll; for waits under 2 ms it selects on the epoll fd itself, whose
timeout has microsecond resolution (epoll_wait's is milliseconds).
"""

from __future__ import annotations

import contextlib
import errno
import gc
import math
import select
import socket
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import numpy.typing as npt

from loadgen import wire
from loadgen.connections import (
    CONNECTING,
    DOWN,
    FIRST_BACKOFF_S,
    UP,
    Connection,
    Target,
    errno_key,
    error_key,
    resolve,
)
from loadgen.exit_codes import ExitCode, LoadgenError
from loadgen.recorder import Recorder
from loadgen.records import SecondReport, Tick, WorkerResult
from loadgen.schedule import RateSchedule

try:
    from loadgen.native import _send_loop as native_loop
except ImportError:  # built at install; without it the Python loop runs
    native_loop = None  # type: ignore[assignment]

_RECV_BYTES = 1 << 18
_MAX_FRAME = 64 << 20
_HOUSEKEEPING_S = 0.005  # timeouts, reconnects and reports are looked at this often
_RECORD_S = 0.05  # replies' latencies go into the histogram this often, a slice at a time
_CHUNK = 4096  # intended times computed per numpy call
#: due requests handled between two looks at the replies: a loop that is behind must not
#: stop reading (replies are what make room on the connections)
SEND_BATCH = 128
_SEQ_MASK = 0x7FFFFFFF
#: how late the kernel may end a timed wait (its default, 50 us, would make sends late)
_TIMER_SLACK_NS = 1000
_EPOLLIN, _EPOLLOUT = select.EPOLLIN, select.EPOLLOUT
_REPLY_VT, _EXCEPTION_VT = wire.REPLY_VERSION_TYPE, wire.EXCEPTION_VERSION_TYPE


@dataclass(frozen=True)
class SendOptions:
    connections: int = 16
    timeout: float = 1.0
    connect_timeout: float = 2.0
    max_inflight: int = 512  # per connection; beyond it a request fails as "Overloaded"
    late_threshold: float = 0.001
    max_lag: float = 1.0
    warmup: float = 0.0
    #: parse every Nth reply in full for filtering quality (0: never)
    quality_every: int = 10
    tick_interval: float = 1.0
    #: waits shorter than this poll without sleeping (0: always sleep)
    spin_below: float = 0.0
    #: "native": the sending loop in C (loadgen.native), "python": the reference loop
    engine: str = "native"


@dataclass
class WorkerPlan:
    """Everything one worker needs; picklable, so it can be sent to a worker process."""

    worker: int
    workers: int
    target: Target
    options: SendOptions
    #: the full schedule, warm-up first; this worker sends requests worker, worker+W, ...
    schedule: RateSchedule
    #: requests (global) in the warm-up, which are sent but not recorded
    warmup_requests: int
    #: seconds in the measured window
    measured_seconds: float
    connections: int
    pool_size: int
    #: this worker's frames: pool items j with j % stride == worker % stride, in order
    stride: int
    frames: list[bytes]
    #: per frame: bit k set when candidate k really bid (None: ground truth unknown)
    truth: list[int] | None


class Sink(Protocol):
    def tick(self, tick: Tick) -> None: ...

    def second(self, report: SecondReport) -> None: ...


class _Due:
    """This worker's requests in schedule order, computed a chunk at a time."""

    def __init__(self, plan: WorkerPlan) -> None:
        self.schedule = plan.schedule
        self.total = plan.schedule.total_requests
        self.next_index = plan.worker
        self.step = plan.workers
        self.pool = plan.pool_size
        self.stride = plan.stride

    def arrays(
        self,
    ) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float64], npt.NDArray[np.int64]]:
        """(request indices, intended times, frame numbers); empty when the schedule is done."""
        idx = np.arange(
            self.next_index,
            min(self.total, self.next_index + self.step * _CHUNK),
            self.step,
            dtype=np.int64,
        )
        self.next_index += self.step * len(idx)
        times = self.schedule.times(idx) if len(idx) else np.empty(0)
        items = (idx % self.pool) // self.stride
        return idx, np.ascontiguousarray(times, dtype=np.float64), items

    def chunk(self) -> tuple[list[int], list[float], list[int]]:
        """`arrays` as lists, for the Python loop."""
        idx, times, items = self.arrays()
        return idx.tolist(), times.tolist(), items.tolist()


class Worker:
    """Connects, then sends its share of the schedule and records what comes back."""

    def __init__(self, plan: WorkerPlan, sink: Sink) -> None:
        self.plan = plan
        self.sink = sink
        self.opts = plan.options
        self.family, self.sockaddr = resolve(plan.target)
        self.ep = select.epoll()
        self.conns = [Connection() for _ in range(max(1, plan.connections))]
        self.by_fd: dict[int, Connection] = {}
        self.rec = Recorder(
            plan.measured_seconds, self.opts.timeout, plan.truth, plan.pool_size, plan.stride
        )
        self.sent = self.late = self.dropped = self.retried = self.stray = 0
        self.warmup_sent = 0
        self.max_lag = 0.0
        self.cpu = 0.0
        self.connect_errors: dict[str, int] = {}
        self.disconnects: dict[str, int] = {}  # why open connections ended
        self.opened = 0
        #: why no connection is open: the last connect error or connection failure
        self.down_reason = "NoConnection"
        #: requests waiting for an open connection: (seq, intended time, failure), where
        #: failure says why a re-sent request's connection went away ("" for a first send)
        self.backlog: deque[tuple[int, float, str]] = deque()
        self.wake_backlog = False
        self.retried_seqs: set[int] = set()
        self.interrupted = False
        self.next_index = 0  # first request not yet due when the run stopped
        #: the loop that runs: native unless asked for python or the C part is not built
        self.engine = "python" if self.opts.engine == "python" or native_loop is None else "native"
        self.next_record = 0.0

    # ---- connections -------------------------------------------------------------------

    def connect_all(self) -> None:
        """Open every connection before the start; fail fast when the first cannot be opened."""
        for index, conn in enumerate(self.conns):
            sock = socket.socket(self.family, socket.SOCK_STREAM)
            sock.settimeout(self.opts.connect_timeout)
            try:
                sock.connect(self.sockaddr)
            except OSError as exc:
                sock.close()
                key = error_key(exc)
                self._connect_failed(key)
                if index == 0:
                    raise LoadgenError(
                        ExitCode.UNREACHABLE,
                        f"cannot connect to {self.plan.target}: {key} ({exc})",
                    ) from None
                conn.state, conn.deadline = DOWN, 0.0
                continue
            self._adopt(conn, sock)

    def _adopt(self, conn: Connection, sock: socket.socket) -> None:
        sock.setblocking(False)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        conn.sock, conn.fd, conn.state = sock, sock.fileno(), UP
        conn.answered = False
        conn.writing = bool(conn.out)
        self.by_fd[conn.fd] = conn
        self.ep.register(conn.fd, _EPOLLIN | (_EPOLLOUT if conn.writing else 0))
        self.opened += 1
        self.wake_backlog = bool(self.backlog)

    def _connect_failed(self, key: str) -> None:
        self.connect_errors[key] = self.connect_errors.get(key, 0) + 1
        self.down_reason = key

    def _start_connect(self, conn: Connection, now: float) -> None:
        sock = socket.socket(self.family, socket.SOCK_STREAM)
        sock.setblocking(False)
        err = sock.connect_ex(self.sockaddr)
        if err == 0:
            self._adopt(conn, sock)
        elif err == errno.EINPROGRESS:
            conn.sock, conn.fd, conn.state = sock, sock.fileno(), CONNECTING
            conn.deadline = now + self.opts.connect_timeout
            self.by_fd[conn.fd] = conn
            self.ep.register(conn.fd, _EPOLLOUT)
        else:
            sock.close()
            self._connect_failed(errno_key(err))
            conn.retry_later(now)

    def _finish_connect(self, conn: Connection, now: float, error: str | None = None) -> None:
        """A non-blocking connect completed (or, with `error`, gave up)."""
        sock = conn.sock
        assert sock is not None
        self._forget(conn)
        code = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) if error is None else 0
        if error is not None or code:
            sock.close()
            self._connect_failed(error or errno_key(code))
            conn.retry_later(now)
            return
        self._adopt(conn, sock)
        conn.backoff = FIRST_BACKOFF_S

    def _forget(self, conn: Connection) -> None:
        """Stop watching a connection's socket (it stays open)."""
        with contextlib.suppress(OSError, ValueError):
            self.ep.unregister(conn.fd)
        self.by_fd.pop(conn.fd, None)
        conn.sock, conn.fd = None, -1

    def _fail(self, conn: Connection, key: str, now: float, requeue: bool = False) -> None:
        """Close a connection. Its requests in flight fail, or (`requeue`: the server closed
        or reset it without answering them) are re-sent once on another connection; scoring
        is read-only, so a request the server did see is safe to repeat."""
        sock = conn.sock
        if sock is not None:
            self._forget(conn)
            sock.close()
        self.down_reason = key
        self.disconnects[key] = self.disconnects.get(key, 0) + 1
        for seq, t in conn.inflight.items():
            if requeue and seq not in self.retried_seqs:
                self.retried_seqs.add(seq)
                self.backlog.append((seq, t, key))
            else:
                self.rec.error(key, t, now)
        conn.reset_buffers()
        if requeue and conn.answered:
            # a server retiring a connection that served (max age or requests) is routine
            conn.state, conn.deadline = DOWN, now
        else:
            conn.retry_later(now)

    def _pick(self) -> Connection | None:
        """The open connection with the fewest calls waiting, if one has room."""
        best: Connection | None = None
        for conn in self.conns:
            if (
                conn.state == UP
                and len(conn.inflight) < self.opts.max_inflight
                and (best is None or len(conn.inflight) < len(best.inflight))
            ):
                best = conn
        return best

    # ---- replies -----------------------------------------------------------------------

    def _reply_error(self, buf: bytes, pos: int, vt: int, ftype: int, fid: int) -> tuple[str, str]:
        """(error key, message) of a reply that is not a success."""
        body = pos + 4 + 4 + 4 + wire.SEQID.unpack_from(buf, pos + 8)[0] + 4
        if vt == _EXCEPTION_VT:
            name, message = wire.application_exception(buf, body)
            return f"TApplicationException:{name}", message
        if vt != _REPLY_VT:
            return "ProtocolError", f"unexpected message type {vt & 0xFF}"
        declared = wire.score_exception_names().get(fid)
        if declared is None or ftype != wire.T_STRUCT:
            return "ProtocolError", f"reply field {fid} of type {ftype} is not in the contract"
        return declared, wire.exception_message(buf, body + 3)

    def _on_data(self, conn: Connection, data: bytes, now: float) -> None:
        """Match every complete reply frame in the buffer to its request and record it."""
        buf = conn.rbuf + data if conn.rbuf else data
        end = len(buf)
        pos = 0
        inflight = conn.inflight
        rec = self.rec
        head, result = wire.REPLY_HEAD.unpack_from, wire.REPLY_RESULT.unpack_from
        sec_lat, warm, nsec = rec.sec_lat, rec.warm, rec.nsec
        q_every = self.opts.quality_every
        completions = rec.completions
        last = len(completions) - 1
        ok = 0
        while end - pos >= 17:
            flen, vt, nlen = head(buf, pos)
            if flen < wire.MIN_FRAME_BODY or flen > _MAX_FRAME or not 0 <= nlen < flen:
                rec.ok += ok
                rec.explain("ProtocolError", f"bad reply frame header (length {flen})")
                self._fail(conn, "ProtocolError", now)
                return
            if pos + 4 + flen > end:
                break
            seq, ftype, fid = result(buf, pos + 12 + nlen)
            t = inflight.pop(seq, None)
            if t is None:
                self.stray += 1  # its request was already given up (timeout)
            elif vt == _REPLY_VT and fid == 0 and ftype == wire.T_STRUCT:
                if t >= warm:
                    us = int((now - t) * 1e6)
                    s = int(t - warm)
                    sec_lat[s if s < nsec else nsec - 1].append(us)
                    ok += 1
                    if q_every and seq % q_every == 0:
                        rec.count_quality(buf, pos + 16 + nlen + 3, seq)
                    s = int(now - warm)
                    completions[s if s < last else last] += 1
            else:
                key, message = self._reply_error(buf, pos, vt, ftype, fid)
                rec.error(key, t, now, message)
            pos += 4 + flen
        if ok:
            rec.ok += ok
            rec.last_completion = max(rec.last_completion, now - warm)
        conn.answered = conn.answered or pos > 0
        conn.rbuf = buf[pos:] if pos < end else b""

    def _on_event(self, fd: int, ev: int, now: float) -> None:
        conn = self.by_fd.get(fd)
        if conn is None:
            return
        if conn.state == CONNECTING:
            self._finish_connect(conn, now)
            return
        if ev & _EPOLLOUT:
            self._flush(conn, now)
        if ev & ~_EPOLLOUT and conn.state == UP:
            assert conn.sock is not None
            try:
                data = conn.sock.recv(_RECV_BYTES)
            except BlockingIOError:
                return
            except OSError as exc:
                self._fail(conn, error_key(exc), now, requeue=True)
                return
            if not data:
                self._on_eof(conn, now)
                return
            self._on_data(conn, data, now)

    def _on_eof(self, conn: Connection, now: float) -> None:
        """The server closed the connection; what it had not answered is re-sent once."""
        if conn.inflight:
            self.rec.explain(
                "ConnectionClosed", "the server closed the connection with calls in flight"
            )
        self._fail(conn, "ConnectionClosed", now, requeue=True)

    def _on_socket_error(self, conn: Connection, code: int, now: float) -> None:
        """A send or receive failed with errno `code` (from the native loop)."""
        self._fail(conn, errno_key(code), now, requeue=True)

    # ---- sending -----------------------------------------------------------------------

    def _flush(self, conn: Connection, now: float) -> None:
        if conn.state != UP or not conn.out:
            return
        assert conn.sock is not None
        try:
            n = conn.sock.send(conn.out)
        except BlockingIOError:
            n = 0
        except OSError as exc:
            self._fail(conn, error_key(exc), now, requeue=True)
            return
        del conn.out[:n]
        if bool(conn.out) != conn.writing:  # epoll_ctl only when it changes
            conn.writing = not conn.writing
            self.ep.modify(conn.fd, _EPOLLIN | (_EPOLLOUT if conn.writing else 0))

    def _overloaded(self, t: float, now: float) -> None:
        limit = self.opts.max_inflight
        self.rec.explain("Overloaded", f"every open connection had {limit} requests waiting")
        self.rec.error("Overloaded", t, now)

    def _send_backlog(self, now: float, dirty: set[Connection]) -> None:
        """Send what waited for a connection, oldest first, while connections take it."""
        self.wake_backlog = False
        plan, backlog, rec = self.plan, self.backlog, self.rec
        while backlog:
            conn = self._pick()
            if conn is None:
                return
            seq, t, failure = backlog.popleft()
            at = len(conn.out)
            conn.out += plan.frames[(seq % plan.pool_size) // plan.stride]
            wire.SEQID.pack_into(conn.out, at + wire.SEQID_OFFSET, seq)
            conn.inflight[seq] = t
            dirty.add(conn)
            if failure:
                self.retried += 1
            elif t >= rec.warm:
                late = now - t > self.opts.late_threshold
                self.sent += 1
                self.late += late
                rec.sent(t, late)

    def _expire_backlog(self, now: float) -> None:
        timeout, backlog = self.opts.timeout, self.backlog
        while backlog and now - backlog[0][1] > timeout:
            _, t, failure = backlog.popleft()
            key = failure or self.down_reason
            self.rec.explain(key, f"no connection could be opened within {timeout:g}s")
            self.rec.error(key, t, now)

    # ---- housekeeping ------------------------------------------------------------------

    def _housekeeping(self, now: float, all_due_sent: bool) -> bool:
        """Timeouts, reconnects and finished seconds; True when the run is over."""
        timeout = self.opts.timeout
        busy = False
        for conn in self.conns:
            if conn.inflight:
                busy = True
                oldest = next(iter(conn.inflight.values()))
                if now - oldest > timeout:
                    self.rec.explain(
                        "Timeout", f"no reply within {timeout:g}s; the connection was closed"
                    )
                    self._fail(conn, "Timeout", now)
            elif conn.state == CONNECTING and now > conn.deadline:
                self._finish_connect(conn, now, error="ConnectTimeout")
            elif conn.state == DOWN and now >= conn.deadline and (not all_due_sent or self.backlog):
                self._start_connect(conn, now)
        if self.backlog:
            self._expire_backlog(now)
            self.wake_backlog = any(c.state == UP for c in self.conns)
        if now >= self.next_record:
            self.next_record = now + _RECORD_S
            self.rec.record_pending(now)
        for report in self.rec.closed_seconds(now, self.plan.worker):
            self.sink.second(report)
        return all_due_sent and not busy and not self.backlog

    def _tick(self, now: float) -> None:
        self.sink.tick(
            Tick(
                worker=self.plan.worker,
                elapsed=now - self.rec.warm,
                sent=self.sent,
                ok=self.rec.ok,
                errors=sum(self.rec.errors.values()),
                dropped=self.dropped,
                late=self.late,
                inflight=sum(len(c.inflight) for c in self.conns),
                recent_p99_us=self.rec.recent_p99_us(now),
            )
        )

    # ---- the loop ----------------------------------------------------------------------

    def run(
        self, start_wall: float, clock: Callable[[], float] = time.perf_counter
    ) -> WorkerResult:
        """Send from `start_wall` (a time.time() instant) to the end of the schedule."""
        plan, rec = self.plan, self.rec
        if plan.warmup_requests:
            rec.warm = float(plan.schedule.times(np.array([plan.warmup_requests]))[0])
        due = _Due(plan)
        if clock is not time.perf_counter:  # the native loop reads CLOCK_MONOTONIC itself
            self.engine = "python"
        if native_loop is not None:
            native_loop.set_timer_slack(_TIMER_SLACK_NS)
        t0 = clock() + (start_wall - time.time())
        cpu_start = time.process_time()
        gc_was_enabled = gc.isenabled()
        gc.disable()  # a collection pause would show up as latency; the loop makes no cycles
        try:
            while clock() < t0 - 0.002:
                time.sleep(min(0.05, max(0.0, t0 - clock() - 0.002)))
            if self.engine == "native":
                self._run_native(due, t0)
            else:
                self._run_python(due, t0, clock)
        finally:
            if gc_was_enabled:
                gc.enable()
            self.cpu = time.process_time() - cpu_start
            if not self.interrupted:
                self.next_index = due.total
            self._close_all()
        for report in rec.closed_seconds(math.inf, plan.worker):
            self.sink.second(report)
        return self._result()

    def _housekeeping_due(
        self, now: float, all_due_sent: bool, next_tick: float
    ) -> tuple[bool, float]:
        """The 5 ms step of both loops: (the run is over, when the next tick is due)."""
        if now >= next_tick:
            next_tick += self.opts.tick_interval
            self._tick(now)
        return self._housekeeping(now, all_due_sent), next_tick

    def _run_native(self, due: _Due, t0: float) -> None:
        """The sending loop in C (`loadgen.native._send_loop.SendLoop`), which hands back
        to this worker's Python methods for everything but the steady state."""
        assert native_loop is not None
        plan, opts, rec = self.plan, self.opts, self.rec
        loop = native_loop.SendLoop(
            worker=self,
            epfd=self.ep.fileno(),
            t0=t0,
            frames=plan.frames,
            sec_lat=rec.sec_lat,
            sec_sent=rec.sec_sent,
            sec_late=rec.sec_late,
            sec_drop=rec.sec_drop,
            completions=rec.completions,
            count_quality=rec.count_quality,
            warm=rec.warm,
            late_threshold=opts.late_threshold,
            max_lag=opts.max_lag,
            spin_below=opts.spin_below,
            max_inflight=opts.max_inflight,
            quality_every=opts.quality_every,
            seq_offset=wire.SEQID_OFFSET,
            send_batch=SEND_BATCH,
            state_up=UP,
            state_connecting=CONNECTING,
        )
        loop.set_chunk(*due.arrays())
        dirty: set[Connection] = set()
        next_house, next_tick = 0.0, opts.tick_interval
        try:
            while True:
                try:
                    while True:
                        if self.wake_backlog:
                            now = loop.now
                            self._send_backlog(now, dirty)
                            for conn in dirty:
                                self._flush(conn, now)
                            dirty.clear()
                        status = loop.advance(next_house)
                        now = loop.now
                        if status == native_loop.HOUSEKEEPING:
                            next_house = now + _HOUSEKEEPING_S
                            self._drain(loop)
                            over, next_tick = self._housekeeping_due(
                                now, bool(loop.done), next_tick
                            )
                            if over:
                                break
                        elif status == native_loop.CHUNK_END:
                            loop.set_chunk(*due.arrays())
                        elif status == native_loop.EVENT:
                            self._on_event(loop.event_fd, loop.event_mask, now)
                        # CHANGED: Python changed a connection; the next call looks again
                    break  # the run is over
                except KeyboardInterrupt:
                    if self.interrupted:
                        break  # a second interrupt: stop waiting for replies
                    # stop sending; replies already on their way still count
                    self.interrupted = True
                    pending = loop.next_request()
                    self.next_index = due.total if pending is None else pending
                    empty = np.empty(0, dtype=np.int64)
                    loop.set_chunk(empty, np.empty(0), empty)
        finally:
            self._drain(loop)
            self.max_lag = max(self.max_lag, loop.max_lag_seen)

    def _drain(self, loop: native_loop.SendLoop) -> None:
        """Take the native loop's counters since the last call into this worker's."""
        sent, late, dropped, warmup_sent, ok, stray = loop.drain()
        self.sent += sent
        self.late += late
        self.dropped += dropped
        self.warmup_sent += warmup_sent
        self.stray += stray
        rec = self.rec
        rec.ok += ok
        rec.last_completion = max(rec.last_completion, loop.last_completion)

    def _run_python(self, due: _Due, t0: float, clock: Callable[[], float]) -> None:
        """The sending loop in Python: the reference the native loop follows step for step."""
        plan, opts, rec = self.plan, self.opts, self.rec
        idx_list, time_list, item_list = due.chunk()
        k, n_chunk = 0, len(idx_list)
        nxt = time_list[0] if n_chunk else math.inf

        # the hot loop reads locals only: attribute lookups per request add up
        frames, conns = plan.frames, self.conns
        nconns, rr = len(conns), 0
        max_inflight = opts.max_inflight
        late_thr, max_lag, warm = opts.late_threshold, opts.max_lag, rec.warm
        sec_sent, sec_late, sec_drop, nsec = rec.sec_sent, rec.sec_late, rec.sec_drop, rec.nsec
        seq_at, pack_seq = wire.SEQID_OFFSET, wire.SEQID.pack_into
        poll, epfd, sel = self.ep.poll, self.ep.fileno(), select.select
        spin_below = opts.spin_below
        dirty: set[Connection] = set()
        sent = late = dropped = warmup_sent = 0
        max_seen_lag = 0.0
        next_house, next_tick = 0.0, opts.tick_interval
        try:
            while True:
                try:
                    while True:
                        now = clock() - t0
                        if self.wake_backlog:
                            self._send_backlog(now, dirty)
                        budget = SEND_BATCH
                        while nxt <= now and budget:
                            budget -= 1
                            lag = now - nxt
                            if lag > max_seen_lag:  # noqa: PLR1730 (cheaper than max())
                                max_seen_lag = lag
                            if lag > max_lag:  # too far behind: drop, and say so
                                if nxt >= warm:
                                    dropped += 1
                                    s = int(nxt - warm)
                                    sec_drop[s if s < nsec else nsec - 1] += 1
                            else:
                                robin = conns[rr]
                                rr = rr + 1 if rr + 1 < nconns else 0
                                conn = (
                                    robin
                                    if robin.state == UP and len(robin.inflight) < max_inflight
                                    else self._pick()
                                )
                                seq = idx_list[k] & _SEQ_MASK
                                if conn is not None:
                                    out = conn.out
                                    at = len(out)
                                    out += frames[item_list[k]]
                                    pack_seq(out, at + seq_at, seq)
                                    conn.inflight[seq] = nxt
                                    dirty.add(conn)
                                    if nxt >= warm:
                                        sent += 1
                                        s = int(nxt - warm)
                                        s = s if s < nsec else nsec - 1
                                        sec_sent[s] += 1
                                        if lag > late_thr:
                                            late += 1
                                            sec_late[s] += 1
                                    else:
                                        warmup_sent += 1
                                elif any(c.state == UP for c in conns):
                                    self._overloaded(nxt, now)
                                else:  # wait for a connection, at most --timeout
                                    self.backlog.append((seq, nxt, ""))
                            k += 1
                            if k == n_chunk:
                                idx_list, time_list, item_list = due.chunk()
                                k, n_chunk = 0, len(idx_list)
                                if not n_chunk:
                                    nxt = math.inf
                                    break
                            nxt = time_list[k]
                        if dirty:
                            for conn in dirty:
                                self._flush(conn, now)
                            dirty.clear()
                        if now >= next_house:
                            next_house = now + _HOUSEKEEPING_S
                            self.sent += sent
                            self.late += late
                            sent = late = 0
                            self.dropped = dropped
                            over, next_tick = self._housekeeping_due(
                                now, nxt == math.inf, next_tick
                            )
                            if over:
                                break
                        now = clock() - t0
                        wait = min(nxt, next_house) - now
                        if wait < spin_below:
                            events = poll(0)  # busy: a reply is read as soon as it lands
                        elif wait > 0.0015:
                            events = poll(wait - 0.001)  # epoll rounds up to whole ms
                        elif wait > 0:
                            sel((epfd,), (), (), wait)  # select's timeout is in us
                            events = poll(0)
                        else:
                            events = poll(0)
                        if events:
                            now = clock() - t0
                            for fd, ev in events:
                                self._on_event(fd, ev, now)
                    break  # the run is over
                except KeyboardInterrupt:
                    if self.interrupted:
                        break  # a second interrupt: stop waiting for replies
                    # stop sending; replies already on their way still count
                    self.interrupted = True
                    self.next_index = idx_list[k] if k < n_chunk else due.total
                    idx_list, time_list, item_list, k, n_chunk = [], [], [], 0, 0
                    nxt = math.inf
        finally:
            self.sent += sent
            self.late += late
            self.dropped = dropped
            self.warmup_sent = warmup_sent
            self.max_lag = max_seen_lag

    def _close_all(self) -> None:
        for conn in self.conns:
            if conn.sock is not None:
                with contextlib.suppress(OSError):
                    conn.sock.close()
                conn.sock = None
        self.ep.close()

    def _measured_share(self) -> int:
        """This worker's requests due in the measured window (up to a stop, if stopped)."""
        plan = self.plan
        behind = max(0, plan.warmup_requests - plan.worker)
        first = plan.worker + -(-behind // plan.workers) * plan.workers
        end = min(self.next_index, plan.schedule.total_requests)
        return len(range(first, end, plan.workers))

    def _result(self) -> WorkerResult:
        rec = self.rec
        return WorkerResult(
            worker=self.plan.worker,
            histogram=rec.hist.encode(),
            scheduled=self._measured_share(),
            sent=self.sent,
            ok=rec.ok,
            errors=dict(rec.errors),
            error_examples={k: v for k, v in rec.examples.items() if k in rec.errors},
            connect_errors=dict(self.connect_errors),
            disconnects=dict(self.disconnects),
            dropped=self.dropped,
            late=self.late,
            retried=self.retried,
            stray_replies=self.stray,
            warmup_requests=self.warmup_sent,
            max_lag_s=self.max_lag,
            cpu_s=self.cpu,
            engine=self.engine,
            last_completion_s=rec.last_completion,
            completions_per_second=rec.completions_per_second(),
            quality=rec.quality,
            connections_opened=self.opened,
            interrupted=self.interrupted,
        )
