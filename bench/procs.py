"""Processes the benchmark starts: pinned to a core, logged to a file, always stopped.

Every server runs in its own process group, so stopping it also stops any worker processes it
forked. `stop_all()` is the safety net the entry point calls on any exit.
"""

from __future__ import annotations

import contextlib
import os
import resource
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from bench.cpu import group_cpu_seconds

_RUNNING: list[ServerProcess] = []


class ProcessFailedError(RuntimeError):
    """A process exited early or did not become ready; the message carries its log's tail."""


def free_port() -> int:
    """A TCP port on loopback that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def pinned(argv: Sequence[str], core: int | None) -> list[str]:
    """`argv` run under `taskset -c core` (or as is when core is None)."""
    return list(argv) if core is None else ["taskset", "-c", str(core), *argv]


def log_tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


@dataclass
class ServerProcess:
    name: str
    popen: subprocess.Popen[bytes]
    log_path: Path
    # The core it is pinned to (None: not pinned).
    core: int | None = None
    # Its Prometheus endpoint, when it has one with rtbserve's latency histogram.
    metrics_url: str | None = None
    stopped: bool = field(default=False)

    def cpu_seconds(self) -> float:
        return group_cpu_seconds(self.popen.pid)

    def ensure_alive(self) -> None:
        code = self.popen.poll()
        if code is not None:
            raise ProcessFailedError(
                f"{self.name} exited with code {code}; log {self.log_path}:\n"
                + log_tail(self.log_path)
            )

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM the whole process group, then SIGKILL what is left after `timeout`."""
        if self.stopped:
            return
        self.stopped = True
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.popen.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.popen.wait(timeout)
        # Workers can outlive the leader; the group goes either way.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.popen.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.popen.wait(5.0)
        if self in _RUNNING:
            _RUNNING.remove(self)


def start_server(
    name: str,
    argv: Sequence[str],
    *,
    core: int | None,
    log_dir: Path,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
) -> ServerProcess:
    log_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_dir / f"{name}.log"
    full_env = {**os.environ, **(env or {})}
    with log_path.open("wb") as log:
        popen = subprocess.Popen(
            pinned(argv, core),
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=full_env,
            cwd=cwd,
            # Its own process group (stopping it reaches its workers) but the benchmark's
            # session: with autogroup scheduling a new session is a new CPU group, and the
            # SCHED_IDLE busy loops (bench.warm_cores) only yield at once within one group.
            process_group=0,
        )
    server = ServerProcess(name=name, popen=popen, log_path=log_path, core=core)
    _RUNNING.append(server)
    return server


def wait_until(server: ServerProcess, ready: Callable[[], bool], timeout: float, what: str) -> None:
    """Poll `ready` until it is true; fail fast if the server dies, with its log."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        server.ensure_alive()
        if ready():
            return
        time.sleep(0.2)
    server.ensure_alive()
    raise ProcessFailedError(
        f"{server.name} not {what} after {timeout:.0f}s; log {server.log_path}:\n"
        f"{log_tail(server.log_path)}"
    )


def port_open(port: int, host: str = "127.0.0.1") -> Callable[[], bool]:
    def check() -> bool:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return True
        except OSError:
            return False

    return check


def http_ok(url: str) -> Callable[[], bool]:
    def check() -> bool:
        try:
            with urllib.request.urlopen(url, timeout=1.0) as resp:
                return 200 <= int(resp.status) < 300
        except (urllib.error.URLError, OSError):
            return False

    return check


@contextlib.contextmanager
def running(server: ServerProcess) -> Iterator[ServerProcess]:
    try:
        yield server
    finally:
        server.stop()


def stop_all() -> None:
    for server in list(_RUNNING):
        server.stop()


@dataclass(frozen=True)
class ClientRun:
    returncode: int
    output: str
    cpu_cores: float
    wall_seconds: float


def run_client(
    argv: Sequence[str],
    *,
    core: int | None,
    timeout: float,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
) -> ClientRun:
    """Run a load client to completion; report its mean CPU use (cores) from child rusage."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.monotonic()
    proc = subprocess.run(
        pinned(argv, core),
        capture_output=True,
        env={**os.environ, **(env or {})},
        cwd=cwd,
        timeout=timeout,
        check=False,
    )
    wall = time.monotonic() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    output = (proc.stdout + proc.stderr).decode(errors="replace")
    return ClientRun(proc.returncode, output, cpu / max(wall, 1e-9), wall)
