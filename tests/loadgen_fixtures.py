"""Pytest plugin for the load generator's tests: real Thrift servers on loopback.

Fixtures:
    start_stub   factory: a thriftpy2 `ModelServer` in a subprocess, with knobs (delay, one
                 stall after N calls, exceptions, forwarding rule, exit after N calls)
    fast_stub    the canned-reply epoll stub (`loadgen.stub`) in a subprocess
    free_port    a loopback port with nothing listening on it
    run_loadgen  runs `rtbserve loadgen` in a subprocess, returns (exit code, stdout, stderr)

Run the thriftpy2 stub by hand with `python -m tests.loadgen_fixtures --help`.
"""

from __future__ import annotations

import argparse
import os
import select
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import orjson
import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
PYTHON = sys.executable
_START_TIMEOUT_S = 60.0


@dataclass
class RunningServer:
    host: str
    port: int
    proc: subprocess.Popen[str]

    @property
    def target(self) -> str:
        return f"{self.host}:{self.port}"

    def stop(self) -> str:
        """Stop the server; returns what it printed after its 'listening' line."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                out, _ = self.proc.communicate(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                out, _ = self.proc.communicate()
            return out
        out, _ = self.proc.communicate()
        return out

    def calls(self) -> int:
        """Stop the server and return how many `score` calls it answered."""
        for line in self.stop().splitlines():
            if line.startswith("calls "):
                return int(line.split()[1])
        raise AssertionError("the stub did not report its call count")


def _start(argv: list[str]) -> RunningServer:
    proc = subprocess.Popen(
        [PYTHON, "-u", *argv],
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    deadline = time.monotonic() + _START_TIMEOUT_S
    while time.monotonic() < deadline:
        ready, _, _ = select.select([proc.stdout], [], [], 0.5)
        if ready:
            line = proc.stdout.readline()
            if line.startswith("listening on "):
                host, _, port = line.split()[-1].rpartition(":")
                return RunningServer(host, int(port), proc)
        if proc.poll() is not None:
            break
    proc.kill()
    _, err = proc.communicate()
    raise RuntimeError(f"server {argv} did not start: {err[-2000:]}")


@pytest.fixture
def start_stub() -> Iterator[Callable[..., RunningServer]]:
    started: list[RunningServer] = []

    def start(
        *,
        delay_ms: float = 0.0,
        stall_after: int = 0,
        stall_ms: float = 0.0,
        raise_name: str | None = None,
        raise_every: int = 1,
        forward: Sequence[str] | None = None,
        exit_after: int = 0,
        record_ids: Path | None = None,
    ) -> RunningServer:
        argv = ["-m", "tests.loadgen_fixtures", "--delay-ms", str(delay_ms)]
        argv += ["--stall-after", str(stall_after), "--stall-ms", str(stall_ms)]
        if raise_name:
            argv += ["--raise", raise_name, "--raise-every", str(raise_every)]
        if forward is not None:
            argv += ["--forward", ",".join(forward)]
        if exit_after:
            argv += ["--exit-after", str(exit_after)]
        if record_ids is not None:
            argv += ["--record-ids", str(record_ids)]
        server = _start(argv)
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


@pytest.fixture
def fast_stub() -> Iterator[RunningServer]:
    server = _start(["-m", "loadgen.stub", "--port", "0"])
    yield server
    server.stop()


@pytest.fixture
def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


@dataclass
class LoadgenRun:
    code: int
    stdout: str
    stderr: str


@pytest.fixture
def run_loadgen() -> Callable[..., LoadgenRun]:
    def run(*args: str, timeout: float = 120.0, env: dict[str, str] | None = None) -> LoadgenRun:
        proc = subprocess.run(
            [PYTHON, "-m", "rtbserve", "loadgen", "--plain", *args],
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            timeout=timeout,
            env={**os.environ, **(env or {})},
            check=False,
        )
        return LoadgenRun(proc.returncode, proc.stdout, proc.stderr)

    return run


# ---- the thriftpy2 stub server (run as a module) -----------------------------------------


class _Handler:
    """`ModelServer` with test knobs; every call is counted."""

    def __init__(self, idl: Any, args: argparse.Namespace) -> None:
        self.idl = idl
        self.args = args
        self.calls = 0
        self.lock = threading.Lock()  # every call passes it, so a stall stops them all
        self.forward = set(args.forward.split(",")) if args.forward is not None else None
        self.bidders = [f"dsp-{k:02d}" for k in range(1, 17)]
        self.ids = args.record_ids.open("a") if args.record_ids else None

    def score(self, bid_request: bytes, bidders: list[str]) -> Any:
        with self.lock:
            self.calls += 1
            n = self.calls
            if self.ids is not None:
                self.ids.write(f"{orjson.loads(bid_request).get('id')}\n")
                self.ids.flush()
            if self.args.stall_after and n == self.args.stall_after:
                time.sleep(self.args.stall_ms / 1000.0)
        if self.args.exit_after and n >= self.args.exit_after:
            os._exit(0)  # a crash: connections reset, nothing flushed
        if self.args.delay_ms:
            time.sleep(self.args.delay_ms / 1000.0)
        if self.args.raise_name and n % self.args.raise_every == 0:
            self._raise(self.args.raise_name, bidders)
        names = bidders or self.bidders
        scores = [
            self.idl.BidderScore(
                bidder=b,
                probability=0.5,
                forward=self.forward is None or b in self.forward,
            )
            for b in names
        ]
        return self.idl.ScoreResponse(request_id="stub", model_version="stub-1", scores=scores)

    def _raise(self, name: str, bidders: list[str]) -> None:
        from thriftpy2.thrift import TApplicationException

        idl = self.idl
        if name == "InvalidJson":
            raise idl.InvalidJson(message="stub: not JSON")
        if name == "MissingField":
            raise idl.MissingField(message="stub: no imp", field="imp")
        if name == "UnknownBidder":
            raise idl.UnknownBidder(message="stub: unknown bidder(s)", bidders=bidders[:1])
        if name == "TooManyBidders":
            raise idl.TooManyBidders(message="stub: too many", limit=1, requested=len(bidders))
        raise TApplicationException(TApplicationException.INTERNAL_ERROR, f"stub: {name}")

    def score_batch(self, requests: list[Any]) -> list[Any]:
        return [
            self.idl.BatchResult(response=self.score(r.bid_request, r.bidders)) for r in requests
        ]

    def info(self) -> Any:
        return self.idl.ModelInfo(
            name="stub",
            version="1",
            sha256="0" * 64,
            bidders=self.bidders,
            feature_count=0,
            backend="stub",
            thresholds={},
        )


def main(argv: Sequence[str] | None = None) -> int:
    import thriftpy2.protocol
    import thriftpy2.server
    import thriftpy2.thrift
    import thriftpy2.transport

    from loadgen.wire import thrift_module

    parser = argparse.ArgumentParser(prog="python -m tests.loadgen_fixtures")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--delay-ms", type=float, default=0.0)
    parser.add_argument("--stall-after", type=int, default=0, help="stall once, at this call")
    parser.add_argument("--stall-ms", type=float, default=0.0)
    parser.add_argument(
        "--raise",
        dest="raise_name",
        help="exception name, or any other text for a TApplicationException INTERNAL_ERROR",
    )
    parser.add_argument("--raise-every", type=int, default=1)
    parser.add_argument("--forward", help="comma-separated bidders to forward (default: all)")
    parser.add_argument("--exit-after", type=int, default=0, help="die at this call")
    parser.add_argument("--record-ids", type=Path, help="append each request's id to this file")
    args = parser.parse_args(argv)
    idl = thrift_module()
    handler = _Handler(idl, args)
    # thriftpy2's server classes are untyped
    transport: Any = thriftpy2.transport
    server: Any = cast(Any, thriftpy2.server).TThreadedServer(
        cast(Any, thriftpy2.thrift).TProcessor(idl.ModelServer, handler),
        transport.TServerSocket(host="127.0.0.1", port=args.port, client_timeout=None),
        iprot_factory=cast(Any, thriftpy2.protocol).TBinaryProtocolFactory(),
        itrans_factory=transport.TFramedTransportFactory(),
    )
    server.trans.listen()
    port = server.trans.sock.getsockname()[1]
    print(f"listening on 127.0.0.1:{port}", flush=True)

    def stop(*_: object) -> None:
        print(f"calls {handler.calls}", flush=True)
        os._exit(0)

    signal.signal(signal.SIGTERM, stop)
    # TThreadedServer.serve() would bind again; accept on the socket already bound instead
    while True:
        client = server.trans.accept()
        threading.Thread(target=server.handle, args=(client,), daemon=True).start()


if __name__ == "__main__":
    sys.exit(main())
