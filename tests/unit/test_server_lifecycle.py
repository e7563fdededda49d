"""Server start-up checks, connection max-age, draining and graceful shutdown, for real."""

from __future__ import annotations

import shutil
import signal
import socket
import struct
import threading
import time
from pathlib import Path
from typing import Any

import orjson
import pytest
from thriftpy2.transport import TTransportException

from model_server import thrift_contract as tc
from model_server.fast_codec import encode_call
from model_server.synthetic import TrafficGenerator
from tests.server_fixtures import RunningServer, launch_rtbserve


def _request(seed: int = 1) -> bytes:
    return orjson.dumps(TrafficGenerator(seed=seed, n_bidders=8).request().request)


def _exit_and_logs(model: Path, *flags: str) -> tuple[int, list[dict[str, Any]]]:
    server = launch_rtbserve(model, *flags)
    code = server.wait(timeout=60)
    return code, server.logs()


def test_tampered_model_file_stops_start_up_naming_the_file(
    tiny_artifact: Any, tmp_path: Path
) -> None:
    copy = tmp_path / "artifact"
    shutil.copytree(tiny_artifact.path, copy)
    model_file = copy / "model.ubj"
    data = bytearray(model_file.read_bytes())
    data[len(data) // 2] ^= 0x01
    model_file.write_bytes(bytes(data))
    code, logs = _exit_and_logs(copy)
    assert code != 0
    errors = [line for line in logs if line.get("level") == "error"]
    assert errors, logs
    fields = errors[-1]["fields"]
    assert fields["error"] == "ChecksumMismatchError"
    assert "model.ubj" in fields["detail"]
    assert not [line for line in logs if line.get("msg") == "listening"]


def test_wrong_expected_sha256_stops_start_up(tiny_artifact: Any) -> None:
    code, logs = _exit_and_logs(tiny_artifact.path, "--model-sha256", "0" * 64)
    assert code != 0
    detail = next(line for line in logs if line.get("level") == "error")["fields"]["detail"]
    assert tiny_artifact.sha256 in detail
    assert "manifest.json" in detail


def test_matching_expected_sha256_serves(start_rtbserve: Any, tiny_artifact: Any) -> None:
    with start_rtbserve(
        tiny_artifact.path, "--model-sha256", tiny_artifact.sha256.upper(), "--backend", "xgboost"
    ) as server:
        info = server.client().info()
        assert (info.sha256, info.backend) == (tiny_artifact.sha256, "xgboost")
        assert server.exit_code is None
    assert server.exit_code == 0


def _call_raw(sock: socket.socket, seqid: int) -> bytes | None:
    sock.sendall(encode_call(tc.ModelServer, "info", seqid))
    head = _recv_exactly(sock, 4)
    if head is None:
        return None
    return _recv_exactly(sock, struct.unpack(">i", head)[0])


def _recv_exactly(sock: socket.socket, n: int) -> bytes | None:
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            return None
        data += chunk
    return data


@pytest.fixture(scope="module")
def short_lived_connections(tiny_artifact: Any) -> Any:
    from tests.server_fixtures import running_rtbserve

    with running_rtbserve(
        tiny_artifact.path, "--conn-max-requests", "3", "--conn-max-age-seconds", "1.5"
    ) as server:
        yield server


def test_connection_closes_cleanly_after_max_requests(
    short_lived_connections: RunningServer,
) -> None:
    server = short_lived_connections
    with socket.create_connection((server.host, server.thrift_port), timeout=5) as sock:
        for seqid in range(3):
            assert _call_raw(sock, seqid) is not None  # every call before the limit answered
        assert sock.recv(1) == b""  # then an orderly close (FIN), not a reset
    client = server.client()
    for _ in range(3):
        client.info()
    with pytest.raises(TTransportException):
        client.info()
    assert server.client().info().name == "tiny"  # a new connection is served


def test_connection_closes_between_calls_after_max_age(
    short_lived_connections: RunningServer,
) -> None:
    server = short_lived_connections
    with socket.create_connection((server.host, server.thrift_port), timeout=5) as sock:
        assert _call_raw(sock, 1) is not None
        started = time.monotonic()
        sock.settimeout(5)
        assert sock.recv(1) == b""  # idle and over age: closed by the server
        assert time.monotonic() - started < 3.0


def test_busy_connection_is_closed_between_calls_once_over_age(
    short_lived_connections: RunningServer,
) -> None:
    server = short_lived_connections
    with socket.create_connection((server.host, server.thrift_port), timeout=5) as sock:
        opened = time.monotonic()
        answered = 0
        while time.monotonic() - opened < 5:
            # Below the count limit of 3, so only age can close this connection.
            reply = _call_raw(sock, answered) if answered < 2 else None
            if reply is None:
                break
            answered += 1
            time.sleep(0.5)
        if answered == 2:
            time.sleep(1.2)  # now over age, idle between calls: the server closes it
            assert sock.recv(1) == b""
        closed_after = time.monotonic() - opened
    assert answered == 2  # both calls were answered in full before the close
    assert 1.5 <= closed_after < 4.0


def test_drain_turns_readyz_off_keeps_serving_then_exits_zero(
    start_rtbserve: Any, tiny_artifact: Any
) -> None:
    # Counts, not timings: the drain is long next to what a loaded machine takes to flip
    # /readyz and answer a few calls, and the test waits for each step instead of a clock.
    with start_rtbserve(tiny_artifact.path, "--drain-seconds", "3") as server:
        client = server.client()
        raw = _request()
        assert client.score(raw, [])
        started = time.monotonic()
        server.signal(signal.SIGTERM)
        while server.http_get("/readyz")[0] != 503 and time.monotonic() - started < 2.5:
            time.sleep(0.02)
        assert server.http_get("/readyz") == (503, "draining\n")
        assert server.http_get("/healthz")[0] == 200
        # During the drain new connections are still served (one call each: the server
        # closes a connection after its reply so that clients move to other servers).
        served_during_drain = 0
        for _ in range(3):
            assert server.client().score(raw, [])
            served_during_drain += 1
        code = server.wait(timeout=30)
        assert code == 0
        assert time.monotonic() - started >= 3.0  # it waited for the drain
    stopped = server.logs("stopped")
    assert stopped
    assert stopped[-1]["fields"]["calls"]["score"] == served_during_drain + 1


def test_sigterm_under_load_loses_no_accepted_request(
    start_rtbserve: Any, tiny_artifact: Any
) -> None:
    raw = _request(5)
    answered = [0] * 4
    failed = [0] * 4
    stop = threading.Event()

    def client_loop(slot: int, server: RunningServer) -> None:
        deadline = time.monotonic() + 20  # bounded whatever happens
        client = None
        while not stop.is_set() and time.monotonic() < deadline:
            try:
                if client is None:
                    client = server.client(timeout_ms=5000)
                resp = client.score(raw, [])
                assert len(resp.scores) == 8  # a reply is complete or it is not a reply
                answered[slot] += 1
            except (TTransportException, OSError):
                failed[slot] += 1
                if client is not None:
                    client.close()
                client = None
                if server.process.poll() is not None:
                    return
                time.sleep(0.005)

    with start_rtbserve(tiny_artifact.path, "--drain-seconds", "1.5") as server:
        threads = [threading.Thread(target=client_loop, args=(i, server)) for i in range(4)]
        for t in threads:
            t.start()
        time.sleep(1.0)
        server.signal(signal.SIGTERM)
        code = server.wait(timeout=30)
        stop.set()
        for t in threads:
            t.join(timeout=30)
    assert code == 0
    served = server.logs("stopped")[-1]["fields"]["calls"]["score"]
    # Every call the server answered reached its client in full: none was lost in between.
    assert sum(answered) == served
    assert sum(answered) > 20
    assert all(n > 0 for n in answered)
