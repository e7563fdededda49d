"""The systems under test: how to start each, pinned to the server core, and what drives it.

Each entry of SYSTEMS is a context manager that starts a fresh server for one bidder count,
waits until it is ready, yields a Driver for it, and always stops it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path

from bench import mlserver_peer, warm_cores
from bench.config import BENCH_DIR, REPO_DIR, BenchConfig
from bench.drivers import Driver, LoadgenDriver, PeerDriver
from bench.echo_limit import write_replies
from bench.procs import (
    ServerProcess,
    free_port,
    http_ok,
    port_open,
    running,
    start_server,
    wait_until,
)

# Model servers get this long to load a model and start listening.
READY_TIMEOUT = 120.0

# (server, Thrift port, bidders per request) -> the driver for a Thrift server.
ThriftDriverFactory = Callable[[ServerProcess, int, int], Driver]


@dataclass
class Prepared:
    """Everything set up once before any system is measured."""

    cfg: BenchConfig
    artifact: Path
    model_file: Path
    logs: Path
    # Per bidder count: pre-encoded Thrift calls, V2 feature matrices, the echo's canned replies.
    thrift_payloads: dict[int, Path]
    replays: dict[int, Path]
    v2_payloads: dict[int, Path]
    echo_replies: dict[int, dict[str, bytes]]
    rtbserve_argv: list[str]
    pythons: dict[str, Path] = field(default_factory=dict)
    echo_binary: Path | None = None
    thrift_driver_factory: ThriftDriverFactory | None = None

    def thrift_driver(self, server: ServerProcess, port: int, bidders: int) -> Driver:
        if self.thrift_driver_factory is None:
            raise RuntimeError("no driver for Thrift servers was set up")
        return self.thrift_driver_factory(server, port, bidders)


def loadgen_thrift_driver(prep: Prepared) -> ThriftDriverFactory:
    """`rtbserve loadgen`, replaying the benchmark's requests."""

    def make(server: ServerProcess, port: int, bidders: int) -> Driver:
        return LoadgenDriver(
            argv=prep.rtbserve_argv,
            replay=prep.replays[bidders],
            target=f"127.0.0.1:{port}",
            connections=prep.cfg.connections,
            core=prep.cfg.load_core,
            server=server,
        )

    return make


def open_loop_thrift_driver(prep: Prepared, python: Path) -> ThriftDriverFactory:
    """`bench.peer_driver` speaking Thrift: the same method as loadgen, in a different program."""

    def make(server: ServerProcess, port: int, bidders: int) -> Driver:
        return PeerDriver(
            python=python,
            transport="thrift",
            target=f"127.0.0.1:{port}",
            model="",
            payloads=prep.thrift_payloads[bidders],
            connections=prep.cfg.connections,
            core=prep.cfg.load_core,
            server=server,
        )

    return make


@contextlib.contextmanager
def start_rtbserve(prep: Prepared, bidders: int) -> Iterator[Driver]:
    port, http = free_port(), free_port()
    argv = [
        *prep.rtbserve_argv,
        "serve",
        f"--model={prep.artifact}",
        "--workers=1",
        f"--thrift-port={port}",
        f"--http-port={http}",
        "--log-level=warning",
        # Stop at once when the benchmark is done with it.
        "--drain-seconds=0",
    ]
    server = start_server(
        f"rtbserve-{bidders}", argv, core=prep.cfg.server_core, log_dir=prep.logs, cwd=REPO_DIR
    )
    server.metrics_url = f"http://127.0.0.1:{http}/metrics"
    with running(server):
        wait_until(server, http_ok(f"http://127.0.0.1:{http}/readyz"), READY_TIMEOUT, "ready")
        yield prep.thrift_driver(server, port, bidders)


@contextlib.contextmanager
def start_plain_thrift(prep: Prepared, bidders: int) -> Iterator[Driver]:
    port = free_port()
    argv = [
        str(prep.pythons["plain-thrift"]),
        str(BENCH_DIR / "peers" / "plain_thrift_server.py"),
        f"--model={prep.artifact}",
        f"--port={port}",
    ]
    server = start_server(
        f"plain-thrift-{bidders}", argv, core=prep.cfg.server_core, log_dir=prep.logs
    )
    with running(server):
        wait_until(server, port_open(port), READY_TIMEOUT, "listening")
        yield prep.thrift_driver(server, port, bidders)


@contextlib.contextmanager
def start_echo(prep: Prepared, bidders: int) -> Iterator[Driver]:
    if prep.echo_binary is None:
        raise RuntimeError("the echo server was not built")
    port = free_port()
    specs = write_replies(prep.logs.parent / f"echo-{bidders}", prep.echo_replies[bidders])
    server = start_server(
        f"echo-{bidders}",
        [str(prep.echo_binary), str(port), *specs],
        core=prep.cfg.server_core,
        log_dir=prep.logs,
    )
    with running(server):
        wait_until(server, port_open(port), 10.0, "listening")
        yield prep.thrift_driver(server, port, bidders)


@contextlib.contextmanager
def start_echo_cold(prep: Prepared, bidders: int) -> Iterator[Driver]:
    """The echo limit with the cores left to idle, as on an idle VM (see bench.warm_cores)."""
    with warm_cores.paused(), start_echo(prep, bidders) as driver:
        yield driver


def _start_mlserver(transport: str) -> Callable[[Prepared, int], AbstractContextManager[Driver]]:
    @contextlib.contextmanager
    def start(prep: Prepared, bidders: int) -> Iterator[Driver]:
        ports = mlserver_peer.MlserverPorts(free_port(), free_port(), free_port())
        repo = mlserver_peer.write_repository(
            prep.logs.parent / "mlserver-models", prep.model_file, ports
        )
        python = prep.pythons["mlserver"]
        server = start_server(
            f"mlserver-{transport}-{bidders}",
            [str(python.parent / "mlserver"), "start", str(repo)],
            core=prep.cfg.server_core,
            log_dir=prep.logs,
        )
        with running(server):
            wait_until(server, http_ok(mlserver_peer.ready_url(ports)), READY_TIMEOUT, "ready")
            port = ports.http if transport == "rest" else ports.grpc
            yield PeerDriver(
                python=python,
                transport=transport,
                target=f"127.0.0.1:{port}",
                model=mlserver_peer.MODEL_NAME,
                payloads=prep.v2_payloads[bidders],
                connections=prep.cfg.connections,
                core=prep.cfg.load_core,
                server=server,
            )

    return start


SYSTEMS: dict[str, Callable[[Prepared, int], AbstractContextManager[Driver]]] = {
    "echo": start_echo,
    "echo-cold": start_echo_cold,
    "rtbserve": start_rtbserve,
    "plain-thrift": start_plain_thrift,
    "mlserver-rest": _start_mlserver("rest"),
    "mlserver-grpc": _start_mlserver("grpc"),
}
