"""Pytest plugin: a trained model artifact and real `rtbserve serve` processes on loopback.

    def test_x(rtbserve_server):                  # module-scoped server on the tiny artifact
        client = rtbserve_server.client()         # thriftpy2 client (framed, binary)
        status, body = rtbserve_server.http_get("/metrics")

    def test_y(start_rtbserve, tiny_artifact):   # a server with your own flags
        with start_rtbserve(tiny_artifact.path, "--conn-max-requests", "3") as server:
            ...
        assert server.exit_code == 0

`tiny_artifact` (session): an artifact trained on synthetic traffic (8 bidders, 20 trees); an
`ArtifactRef` with `.path`, `.sha256`, `.manifest`. Treat it as read-only.
`start_rtbserve(model, *flags, env=None, wait_ready=True)` starts `python -m rtbserve serve`
on free loopback ports (port 0: the server reports the ports it got in its "listening" log
line), waits for /readyz, yields a `RunningServer` and stops it (SIGTERM) when done; every
process started is gone at the end of the test.
"""

from __future__ import annotations

import contextlib
import http.client
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import pytest

from tests.artifacts import train_artifact

START_TIMEOUT = 90.0  # seconds; workers import xgboost and warm up before /readyz turns 200
STOP_TIMEOUT = 30.0


@dataclass
class RunningServer:
    process: subprocess.Popen[bytes]
    host: str = "127.0.0.1"
    thrift_port: int = 0
    http_port: int = 0
    log_lines: list[dict[str, Any]] = field(default_factory=list)
    first_readyz: int | None = None  # /readyz status seen first (503 while workers warm up)
    exit_code: int | None = None
    _reader: threading.Thread | None = None

    def logs(self, msg: str | None = None) -> list[dict[str, Any]]:
        """Log lines so far (those with message `msg`)."""
        lines = list(self.log_lines)
        return [line for line in lines if msg is None or line.get("msg") == msg]

    def client(self, timeout_ms: int = 10_000) -> Any:
        """A new thriftpy2 ModelServer client (framed transport, binary protocol)."""
        from thriftpy2.protocol import TCyBinaryProtocolFactory
        from thriftpy2.rpc import make_client
        from thriftpy2.transport import TCyFramedTransportFactory

        from model_server import thrift_contract as tc

        factory: Any = TCyBinaryProtocolFactory
        return make_client(
            tc.ModelServer,
            self.host,
            self.thrift_port,
            proto_factory=factory(),
            trans_factory=TCyFramedTransportFactory(),
            timeout=timeout_ms,
        )

    def http_get(self, path: str, timeout: float = 5.0) -> tuple[int, str]:
        conn = http.client.HTTPConnection(self.host, self.http_port, timeout=timeout)
        try:
            conn.request("GET", path)
            resp = conn.getresponse()
            return resp.status, resp.read().decode()
        finally:
            conn.close()

    def signal(self, sig: int = signal.SIGTERM) -> None:
        if self.process.poll() is None:
            self.process.send_signal(sig)

    def wait(self, timeout: float = STOP_TIMEOUT) -> int:
        """Wait for the process to exit; kills it (and fails) when it does not."""
        try:
            self.exit_code = self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            _kill_group(self.process)
            self.exit_code = self.process.wait()
            raise AssertionError(f"rtbserve did not exit within {timeout}s") from None
        finally:
            if self._reader is not None:
                self._reader.join(timeout=5)
        return self.exit_code

    def stop(self, timeout: float = STOP_TIMEOUT) -> int:
        self.signal(signal.SIGTERM)
        return self.wait(timeout)


def _kill_group(process: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)


def _read_logs(server: RunningServer) -> None:
    assert server.process.stderr is not None
    for raw in server.process.stderr:
        try:
            line = orjson.loads(raw)
        except orjson.JSONDecodeError:
            line = {"msg": raw.decode(errors="replace").rstrip(), "level": "raw"}
        if isinstance(line, dict):
            server.log_lines.append(line)


def _wait_listening(server: RunningServer, deadline: float) -> None:
    while time.monotonic() < deadline:
        for line in server.logs("listening"):
            server.thrift_port = int(line["fields"]["thrift_port"])
            server.http_port = int(line["fields"]["http_port"])
            return
        if server.process.poll() is not None:
            raise RuntimeError(f"rtbserve exited with {server.process.returncode}: {server.logs()}")
        time.sleep(0.02)
    raise RuntimeError(f"rtbserve did not start listening: {server.logs()}")


def _wait_ready(server: RunningServer, deadline: float) -> None:
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError, http.client.HTTPException):
            status, _ = server.http_get("/readyz", timeout=1.0)
            if server.first_readyz is None:
                server.first_readyz = status
            if status == 200:
                return
        if server.process.poll() is not None:
            raise RuntimeError(f"rtbserve exited with {server.process.returncode}: {server.logs()}")
        time.sleep(0.05)
    raise RuntimeError(f"rtbserve did not become ready: {server.logs()}")


def launch_rtbserve(
    model: str | Path, *flags: str, env: dict[str, str] | None = None
) -> RunningServer:
    """Start the server process (not waiting for anything)."""
    argv = [
        sys.executable,
        "-m",
        "rtbserve",
        "serve",
        "--model",
        str(model),
        "--thrift-port",
        "0",
        "--http-port",
        "0",
        "--bind-address",
        "127.0.0.1",
        "--workers",
        "1",
        "--drain-seconds",
        "0",
        *flags,
    ]
    process = subprocess.Popen(
        argv,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env={**os.environ, **(env or {})},
        start_new_session=True,  # its own process group, so cleanup reaches the workers too
    )
    server = RunningServer(process)
    server._reader = threading.Thread(target=_read_logs, args=(server,), daemon=True)
    server._reader.start()
    return server


@contextlib.contextmanager
def running_rtbserve(
    model: str | Path, *flags: str, env: dict[str, str] | None = None, wait_ready: bool = True
) -> Iterator[RunningServer]:
    server = launch_rtbserve(model, *flags, env=env)
    try:
        deadline = time.monotonic() + START_TIMEOUT
        _wait_listening(server, deadline)
        if wait_ready:
            _wait_ready(server, deadline)
        yield server
    finally:
        if server.process.poll() is None:
            server.signal(signal.SIGTERM)
            try:
                server.wait()
            finally:
                _kill_group(server.process)  # any worker left behind
        elif server.exit_code is None:
            server.exit_code = server.process.returncode
            _kill_group(server.process)


@pytest.fixture(scope="session")
def tiny_artifact(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """A small trained artifact: 8 synthetic bidders, 20 trees of depth 4."""
    out = tmp_path_factory.mktemp("tiny-artifact")
    return train_artifact(
        out, seed=11, version="v-test", name="tiny", requests=800, bidders=8, trees=20
    )


@pytest.fixture
def start_rtbserve() -> Callable[..., contextlib.AbstractContextManager[RunningServer]]:
    """`with start_rtbserve(model, *flags, env=None, wait_ready=True) as server: ...`"""
    return running_rtbserve


@pytest.fixture(scope="module")
def rtbserve_server(tiny_artifact: Any) -> Iterator[RunningServer]:
    """One server for a test module: the tiny artifact, one worker, small limits."""
    with running_rtbserve(
        tiny_artifact.path,
        "--max-bidders",
        "6",
        "--max-batch",
        "4",
        "--max-frame-bytes",
        "65536",
        "--read-timeout-seconds",
        "1",
    ) as server:
        yield server
