"""The supervisor: loads and checks the model once, runs the workers, serves HTTP, drains.

    exit_code = serve(config)

Start-up: fetch the artifact (s3:// or local) and verify every sha256, choose the backend
(checking the native evaluator against XGBoost), reserve the Thrift port, start /healthz,
/readyz and /metrics, then start `config.workers` worker processes (model_server/worker.py).
Each loads the verified artifact, warms up, and only then listens; /readyz turns 200 when all
have. A worker that dies is replaced.

SIGTERM (or SIGINT): /readyz turns 503 at once and workers close each connection after its
next reply, but keep accepting, for --drain-seconds (a load balancer needs that long to stop
sending). Then workers stop accepting, answer what they have received, close, and the process
exits 0. A second signal skips the rest of the drain.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import multiprocessing.connection
import signal
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import Enum
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from types import FrameType
from typing import Any

from prometheus_client import CollectorRegistry

from model_server import logs
from model_server.artifact import ArtifactError, LoadedModel, load_artifact
from model_server.http_endpoints import HttpEndpoints, ServerState
from model_server.logs import kv
from model_server.metrics import ServerCollector, stats_from_wire
from model_server.predictor import NativeUnavailableError, PredictorMismatchError, make_predictor
from model_server.s3 import fetch_artifact
from model_server.serve_config import ServeConfig
from model_server.worker import WorkerSpec, listening_socket, worker_main

log = logging.getLogger(__name__)

STOP_TIMEOUT = 15.0  # seconds workers get to finish after "stop" before they are killed
RESTART_WINDOW = 60.0  # more than MAX_RESTARTS worker deaths in this window is fatal
MAX_RESTARTS = 5
POLL_SECONDS = 0.1


class Phase(Enum):
    STARTING = "starting"
    SERVING = "serving"
    DRAINING = "draining"
    STOPPING = "stopping"


@dataclass
class _WorkerSlot:
    spec: WorkerSpec
    process: BaseProcess
    conn: Connection
    ready: bool = False


@dataclass
class _Signals:
    """Signals received, counted by the handler and consumed by the loop."""

    count: int = 0
    names: list[str] = field(default_factory=list)

    def handler(self, signum: int, _frame: FrameType | None) -> None:
        self.count += 1
        self.names.append(signal.Signals(signum).name)


def load_model(config: ServeConfig, startup: dict[str, float] | None = None) -> LoadedModel:
    """The verified artifact: downloaded (s3://) or checked in place (local). `startup` gets
    the seconds each phase took ("download", "load"): they decide how fast a new pod serves."""
    started = time.monotonic()
    path = fetch_artifact(
        config.model_uri, config.cache_dir, config.model_sha256, config.model_version_id
    )
    fetched = time.monotonic()
    model = load_artifact(path, config.model_sha256)
    if startup is not None:
        startup["download"] = fetched - started
        startup["load"] = time.monotonic() - fetched
    return model


class Supervisor:
    def __init__(
        self,
        config: ServeConfig,
        model: LoadedModel,
        backend: str,
        startup: Mapping[str, float] | None = None,
    ) -> None:
        self.config = config
        self.model = model
        self.backend = backend
        self.state = ServerState(config.workers)
        self.collector = ServerCollector(
            {
                "name": model.manifest.name,
                "version": model.manifest.version,
                "sha256": model.sha256,
                "backend": backend,
            },
            startup,
        )
        self.registry = CollectorRegistry(auto_describe=True)
        self.registry.register(self.collector)
        self.slots: dict[int, _WorkerSlot] = {}
        self.phase = Phase.STARTING
        self.signals = _Signals()
        self._ctx = multiprocessing.get_context("spawn")
        self._deaths: list[float] = []

    def _spec(self, worker_id: int, port: int) -> WorkerSpec:
        c = self.config
        return WorkerSpec(
            worker_id=worker_id,
            artifact_dir=str(self.model.path),
            sha256=self.model.sha256,
            backend=self.backend,
            host=c.bind_address,
            port=port,
            max_bidders=c.max_bidders,
            max_batch=c.max_batch,
            max_frame_bytes=c.max_frame_bytes,
            read_timeout_seconds=c.read_timeout_seconds,
            conn_max_age_seconds=c.conn_max_age_seconds,
            conn_max_requests=c.conn_max_requests,
            log_level=c.log_level,
            workers=c.workers,
        )

    def _start_worker(self, spec: WorkerSpec) -> None:
        parent, child = self._ctx.Pipe()
        process = self._ctx.Process(
            target=worker_main, args=(spec, child), name=f"rtbserve-worker-{spec.worker_id}"
        )
        process.start()
        child.close()
        self.slots[spec.worker_id] = _WorkerSlot(spec, process, parent)

    def _send_all(self, message: str) -> None:
        for slot in self.slots.values():
            # A worker that is already gone cannot be told; its sentinel reports it.
            with contextlib.suppress(OSError, ValueError):
                slot.conn.send(message)

    def _on_message(self, slot: _WorkerSlot, message: tuple[Any, ...]) -> None:
        kind = message[0]
        if kind == "stats":
            self.collector.update(slot.spec.worker_id, stats_from_wire(message[2]))
        elif kind == "ready":
            slot.ready = True
            self.state.worker_ready(slot.spec.worker_id)
            if self.phase is Phase.STARTING and all(s.ready for s in self.slots.values()):
                self.phase = Phase.SERVING
                log.info(
                    "ready",
                    extra=kv(
                        workers=len(self.slots),
                        model=self.model.manifest.name,
                        version=self.model.manifest.version,
                        sha256=self.model.sha256,
                        backend=self.backend,
                    ),
                )
        elif kind == "fatal":
            log.error("worker failed", extra=kv(worker=slot.spec.worker_id, error=message[2]))

    def _on_exit(self, slot: _WorkerSlot) -> int | None:
        """A worker exited; returns an exit code when the server must stop because of it."""
        worker_id = slot.spec.worker_id
        slot.process.join()
        slot.conn.close()
        del self.slots[worker_id]
        self.collector.retire(worker_id)
        self.state.worker_gone(worker_id)
        code = slot.process.exitcode
        if self.phase is Phase.STOPPING:
            return None
        if self.phase is Phase.STARTING:
            log.error("worker could not start", extra=kv(worker=worker_id, exit_code=code))
            return 1
        now = time.monotonic()
        self._deaths = [t for t in self._deaths if now - t < RESTART_WINDOW] + [now]
        if len(self._deaths) > MAX_RESTARTS:
            log.error("workers keep dying; giving up", extra=kv(deaths=len(self._deaths)))
            return 1
        log.error("worker died; starting a new one", extra=kv(worker=worker_id, exit_code=code))
        self._start_worker(slot.spec)
        return None

    def _poll(self) -> int | None:
        slots = list(self.slots.values())
        by_conn = {id(s.conn): s for s in slots}
        waitables: list[Any] = [s.conn for s in slots] + [s.process.sentinel for s in slots]
        for ready in multiprocessing.connection.wait(waitables, timeout=POLL_SECONDS):
            if not isinstance(ready, int):
                self._drain_messages(by_conn[id(ready)])
        for slot in slots:
            if not slot.process.is_alive():
                self._drain_messages(slot)  # its last words: the final stats
                code = self._on_exit(slot)
                if code is not None:
                    return code
        return None

    def _drain_messages(self, slot: _WorkerSlot) -> None:
        try:
            while slot.conn.poll():
                self._on_message(slot, slot.conn.recv())
        except (EOFError, OSError):
            pass  # the worker is exiting; its sentinel says so

    def run(self, port: int) -> int:
        for worker_id in range(self.config.workers):
            self._start_worker(self._spec(worker_id, port))
        handled = 0
        drain_until = stop_until = 0.0
        while True:
            if self.signals.count > handled:
                handled = self.signals.count
                if self.phase in (Phase.STARTING, Phase.SERVING):
                    log.info(
                        "draining",
                        extra=kv(signal=self.signals.names[-1], seconds=self.config.drain_seconds),
                    )
                    self.phase = Phase.DRAINING
                    self.state.start_draining()
                    self._send_all("drain")
                    drain_until = time.monotonic() + self.config.drain_seconds
                elif self.phase is Phase.DRAINING:
                    log.info("second signal: ending the drain now")
                    drain_until = 0.0
            if self.phase is Phase.DRAINING and time.monotonic() >= drain_until:
                log.info("stopping workers")
                self.phase = Phase.STOPPING
                self._send_all("stop")
                stop_until = time.monotonic() + STOP_TIMEOUT
            if self.phase is Phase.STOPPING:
                if not self.slots:
                    return 0
                if time.monotonic() >= stop_until:
                    for slot in list(self.slots.values()):
                        log.error("worker did not stop; killing it", extra=kv(pid=slot.process.pid))
                        slot.process.kill()
            code = self._poll()
            if code is not None:
                self.terminate_all()
                return code

    def terminate_all(self) -> None:
        self.phase = Phase.STOPPING
        for slot in list(self.slots.values()):
            slot.process.terminate()
            slot.process.join(timeout=5)
            if slot.process.is_alive():
                slot.process.kill()
                slot.process.join()
        self.slots.clear()


def serve(config: ServeConfig) -> int:
    """Run the server until it is told to stop; returns the process exit code."""
    logs.configure(config.log_level)
    log.info("starting", extra=kv(**config.public_fields()))
    startup: dict[str, float] = {}
    try:
        model = load_model(config, startup)
        loaded = time.monotonic()
        backend = make_predictor(model.booster, config.backend).backend
        startup["load"] += time.monotonic() - loaded
    except ArtifactError as exc:
        log.error(
            "model artifact rejected",
            extra=kv(model=config.model_uri, error=type(exc).__name__, detail=str(exc)),
        )
        return 1
    except (NativeUnavailableError, PredictorMismatchError, ValueError) as exc:
        log.error(
            "model cannot be served",
            extra=kv(model=config.model_uri, error=type(exc).__name__, detail=str(exc)),
        )
        return 1
    try:
        # Bound but not listening: reserves the port (and resolves port 0) for the workers,
        # which bind it with SO_REUSEPORT; the kernel sends connections only to listeners.
        reservation = listening_socket(config.bind_address, config.thrift_port, listen=False)
    except OSError as exc:
        log.error("cannot bind the Thrift port", extra=kv(port=config.thrift_port, error=str(exc)))
        return 1
    thrift_port = int(reservation.getsockname()[1])
    log.info(
        "model loaded",
        extra=kv(
            model=config.model_uri,
            download_seconds=round(startup["download"], 3),
            load_seconds=round(startup["load"], 3),
        ),
    )
    supervisor = Supervisor(config, model, backend, startup)
    try:
        http = HttpEndpoints(config.bind_address, config.http_port, supervisor.state,
                             supervisor.registry)  # fmt: skip
    except OSError as exc:
        reservation.close()
        log.error("cannot bind the HTTP port", extra=kv(port=config.http_port, error=str(exc)))
        return 1
    http.start()
    log.info(
        "listening",
        extra=kv(
            thrift_port=thrift_port,
            http_port=http.port,
            address=config.bind_address,
            workers=config.workers,
            backend=backend,
        ),
    )
    previous = {
        sig: signal.signal(sig, supervisor.signals.handler)
        for sig in (signal.SIGTERM, signal.SIGINT)
    }
    try:
        code = supervisor.run(thrift_port)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        supervisor.terminate_all()
        http.stop()
        reservation.close()
    totals = supervisor.collector.totals()
    log.info("stopped", extra=kv(exit_code=code, calls=totals.requests, errors=totals.errors))
    return code
