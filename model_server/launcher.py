"""Run `rtbserve serve` as a child process and follow it through its JSON logs.

For programs that drive a server of their own (the demo, the tests): the child binds the ports
it is given (0 picks free ones and its "listening" log line says which), and the parent waits
for /readyz before sending traffic.

    with ServerProcess("s3://bucket/models/m/v1/", flags=["--workers", "1"]) as server:
        server.wait_ready()              # or wait_listening() to watch it warm up
        status, body = server.http_get("/metrics")
        client = server.client()
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
from collections.abc import Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

import orjson


class LaunchError(RuntimeError):
    """The server exited or did not become ready in time; the message carries its last logs."""


@dataclass
class ServerProcess:
    """A `rtbserve serve` child process: start(), wait_ready(), stop()."""

    model: str
    flags: Sequence[str] = ()
    env: dict[str, str] | None = None
    host: str = "127.0.0.1"
    thrift_port: int = 0
    http_port: int = 0
    log_lines: list[dict[str, Any]] = field(default_factory=list)
    process: subprocess.Popen[bytes] | None = None
    # The first /readyz status wait_ready() saw (503 while the workers warm up).
    first_readyz: int | None = None
    exit_code: int | None = None
    _reader: threading.Thread | None = None

    def command(self) -> list[str]:
        return [
            sys.executable,
            "-m",
            "rtbserve",
            "serve",
            "--model",
            self.model,
            "--bind-address",
            self.host,
            "--thrift-port",
            str(self.thrift_port),
            "--http-port",
            str(self.http_port),
            *self.flags,
        ]

    def start(self) -> ServerProcess:
        self.process = subprocess.Popen(
            self.command(),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            env=self.env,
            start_new_session=True,  # its workers go with it when the group is signalled
        )
        self._reader = threading.Thread(target=self._read_logs, daemon=True)
        self._reader.start()
        return self

    def _read_logs(self) -> None:
        assert self.process is not None
        assert self.process.stderr is not None
        for raw in self.process.stderr:
            try:
                line = orjson.loads(raw)
            except orjson.JSONDecodeError:
                line = {"msg": raw.decode(errors="replace").rstrip(), "level": "raw"}
            if isinstance(line, dict):
                self.log_lines.append(line)

    def logs(self, msg: str | None = None) -> list[dict[str, Any]]:
        return [line for line in list(self.log_lines) if msg is None or line.get("msg") == msg]

    def _last_words(self) -> str:
        tail = self.logs()[-5:]
        return "\n".join(orjson.dumps(line).decode() for line in tail) or "(no log lines)"

    def _check_alive(self) -> None:
        assert self.process is not None
        if self.process.poll() is not None:
            raise LaunchError(
                f"rtbserve serve exited with code {self.process.returncode}:\n{self._last_words()}"
            )

    def http_get(self, path: str, timeout: float = 2.0) -> tuple[int, str]:
        conn = http.client.HTTPConnection(self.host, self.http_port, timeout=timeout)
        try:
            conn.request("GET", path)
            resp = conn.getresponse()
            return resp.status, resp.read().decode()
        finally:
            conn.close()

    def client(self, timeout_ms: int = 10_000) -> Any:
        """A thriftpy2 ModelServer client (framed transport, binary protocol); close() it."""
        from thriftpy2.protocol import TCyBinaryProtocolFactory
        from thriftpy2.rpc import make_client
        from thriftpy2.transport import TCyFramedTransportFactory

        from model_server.thrift_contract import ModelServer

        return make_client(
            ModelServer,
            self.host,
            self.thrift_port,
            proto_factory=TCyBinaryProtocolFactory(),  # type: ignore[no-untyped-call]
            trans_factory=TCyFramedTransportFactory(),
            timeout=timeout_ms,
        )

    def wait_listening(self, timeout: float = 120.0) -> ServerProcess:
        """Wait for the "listening" log line, which names the ports it bound."""
        deadline = time.monotonic() + timeout
        while not self.http_port or not self.thrift_port:
            for line in self.logs("listening"):
                self.thrift_port = int(line["fields"]["thrift_port"])
                self.http_port = int(line["fields"]["http_port"])
            self._check_alive()
            if time.monotonic() > deadline:
                raise LaunchError(f"rtbserve serve did not listen in time:\n{self._last_words()}")
            time.sleep(0.02)
        return self

    def wait_ready(self, timeout: float = 120.0) -> ServerProcess:
        """Wait for the ports (wait_listening), then for /readyz to answer 200."""
        deadline = time.monotonic() + timeout
        self.wait_listening(timeout)
        while True:
            with contextlib.suppress(OSError, http.client.HTTPException):
                status = self.http_get("/readyz", timeout=1.0)[0]
                if self.first_readyz is None:
                    self.first_readyz = status
                if status == 200:
                    return self
            self._check_alive()
            if time.monotonic() > deadline:
                raise LaunchError(f"rtbserve serve was not ready in time:\n{self._last_words()}")
            time.sleep(0.05)

    def signal(self, sig: int = signal.SIGTERM) -> None:
        """Signal the server process itself (SIGTERM: drain and exit; SIGHUP: reload)."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(sig)

    def wait(self, timeout: float = 30.0) -> int:
        """Wait for the server to exit; kill its group and raise LaunchError if it does not."""
        proc = self.process
        if proc is None:
            raise LaunchError("rtbserve serve was never started")
        try:
            self.exit_code = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self._kill_group()
            self.exit_code = proc.wait()
            raise LaunchError(f"rtbserve serve did not exit within {timeout}s") from None
        finally:
            if self._reader is not None:
                self._reader.join(timeout=5)
        return self.exit_code

    def _kill_group(self) -> None:
        if self.process is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)

    def stop(self, timeout: float = 30.0) -> int | None:
        """SIGTERM (the server drains and exits 0); SIGKILL to the group if it hangs. Any
        worker left behind goes with the group either way."""
        proc = self.process
        if proc is None:
            return None
        try:
            if proc.poll() is None:
                self.signal(signal.SIGTERM)
                with contextlib.suppress(LaunchError):
                    self.wait(timeout)
            elif self.exit_code is None:
                self.exit_code = proc.returncode
        finally:
            self._kill_group()
            if self._reader is not None:
                self._reader.join(timeout=5)
        return self.exit_code

    def __enter__(self) -> ServerProcess:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
