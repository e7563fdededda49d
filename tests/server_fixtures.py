"""Pytest plugin: a trained model artifact and real `rtbserve serve` processes on loopback.

    def test_x(rtbserve_server):                  # module-scoped server on the tiny artifact
        client = rtbserve_server.client()         # thriftpy2 client (framed, binary)
        status, body = rtbserve_server.http_get("/metrics")

    def test_y(start_rtbserve, tiny_artifact):   # a server with your own flags
        with start_rtbserve(tiny_artifact.path, "--conn-max-requests", "3") as server:
            ...
        assert server.exit_code == 0

`service` (module): a native-backend ScoringService on `tiny_artifact` (fixed clock), for tests
of the scoring and framing layers without a process.
`tiny_artifact` (session): an artifact trained on synthetic traffic (8 bidders, 20 trees); an
`ArtifactRef` with `.path`, `.sha256`, `.manifest`. Treat it as read-only.
`start_rtbserve(model, *flags, env=None, wait_ready=True)` starts `python -m rtbserve serve`
on free loopback ports (port 0: the server reports the ports it got in its "listening" log
line), waits for /readyz, yields a `RunningServer` and stops it (SIGTERM) when done; every
process started is gone at the end of the test.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from model_server.launcher import ServerProcess
from model_server.service import ScoringService
from tests.artifacts import scoring_service, train_artifact

START_TIMEOUT = 90.0  # seconds; workers import xgboost and warm up before /readyz turns 200
STOP_TIMEOUT = 30.0

# The tests' name for a server they started: model_server.launcher's ServerProcess.
RunningServer = ServerProcess


def launch_rtbserve(
    model: str | Path, *flags: str, env: dict[str, str] | None = None
) -> RunningServer:
    """Start the server process on free loopback ports, one worker (not waiting for anything)."""
    server = ServerProcess(
        str(model),
        flags=["--workers", "1", "--drain-seconds", "0", *flags],
        env={**os.environ, **(env or {})},
    )
    return server.start()


@contextlib.contextmanager
def running_rtbserve(
    model: str | Path, *flags: str, env: dict[str, str] | None = None, wait_ready: bool = True
) -> Iterator[RunningServer]:
    server = launch_rtbserve(model, *flags, env=env)
    try:
        if wait_ready:
            server.wait_ready(START_TIMEOUT)
        else:
            server.wait_listening(START_TIMEOUT)
        yield server
    finally:
        if server.process is not None and server.process.poll() is None:
            server.signal()
            try:
                server.wait(STOP_TIMEOUT)  # a server that hangs on SIGTERM fails the test
            finally:
                server.stop()
        else:
            server.stop()  # records the exit code, and any worker left behind goes too


@pytest.fixture(scope="session")
def tiny_artifact(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """A small trained artifact: 8 synthetic bidders, 20 trees of depth 4."""
    out = tmp_path_factory.mktemp("tiny-artifact")
    return train_artifact(
        out, seed=11, version="v-test", name="tiny", requests=800, bidders=8, trees=20
    )


@pytest.fixture(scope="module", name="service")
def tiny_scoring_service(tiny_artifact: Any) -> ScoringService:
    """A ScoringService on the tiny artifact, in process."""
    return scoring_service(tiny_artifact.path)


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
