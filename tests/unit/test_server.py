"""The Thrift server through real clients on real sockets: results, typed errors, bad input."""

from __future__ import annotations

import socket
import struct
import time
from typing import Any

import numpy as np
import orjson
import pytest

from model_server import thrift_contract as tc
from model_server.artifact import load_artifact
from model_server.fast_codec import encode_call
from model_server.synthetic import TrafficGenerator
from tests.server_fixtures import RunningServer

pytestmark = pytest.mark.native


def _requests(n: int, seed: int) -> list[bytes]:
    gen = TrafficGenerator(seed=seed, n_bidders=8)
    return [orjson.dumps(sr.request) for sr in gen.requests(n)]


def _expected(model: Any, raw: bytes, bidders: list[str], now: float) -> tuple[Any, Any]:
    """Probabilities from XGBoost itself and the forward flags its thresholds give."""
    idx = model.pipeline.bidder_indices(bidders)
    rows = model.pipeline.rows(orjson.loads(raw), idx, now)
    p = np.asarray(model.booster.inplace_predict(rows), dtype=np.float32).astype(np.float64)
    thresholds = np.array([model.manifest.thresholds[model.pipeline.bidders[i]] for i in idx])
    return p, p >= thresholds


@pytest.fixture(scope="module")
def model(tiny_artifact: Any) -> Any:
    return load_artifact(tiny_artifact.path)


def test_info_describes_the_served_model(
    rtbserve_server: RunningServer, tiny_artifact: Any
) -> None:
    info = rtbserve_server.client().info()
    manifest = tiny_artifact.manifest
    assert (info.name, info.version, info.sha256) == ("tiny", "v-test", tiny_artifact.sha256)
    assert info.bidders == manifest.bidders
    assert info.feature_count == len(manifest.feature_names)
    assert info.backend == "native"
    assert info.thresholds == pytest.approx(manifest.thresholds)


def test_scores_equal_xgboost_predictions_and_thresholds(
    rtbserve_server: RunningServer, model: Any
) -> None:
    client = rtbserve_server.client()
    bidders = model.manifest.bidders
    selections = [[], bidders[:1], bidders[2:6], [bidders[5], bidders[0], bidders[3]]]
    forwarded = 0
    for i, raw in enumerate(_requests(40, seed=21)):
        names = selections[i % len(selections)]
        before = time.time()
        resp = client.score(raw, names)
        after = time.time()
        assert resp.request_id == orjson.loads(raw)["id"]
        assert resp.model_version == "v-test"
        assert [s.bidder for s in resp.scores] == (names or bidders)
        got = np.array([s.probability for s in resp.scores])
        flags = np.array([s.forward for s in resp.scores])
        # Hour and weekday features come from the clock: match either side of the call.
        candidates = [_expected(model, raw, names, t) for t in (before, after)]
        assert any(
            np.allclose(got, p, rtol=0, atol=1e-5) and np.array_equal(flags, f)
            for p, f in candidates
        ), (got, candidates)
        forwarded += int(flags.sum())
    assert 0 < forwarded < 40 * 4  # the thresholds really split the candidates


def test_invalid_json_is_a_typed_error(rtbserve_server: RunningServer) -> None:
    with pytest.raises(tc.InvalidJson) as err:
        rtbserve_server.client().score(b'{"id": "x", "imp": [', [])
    assert "not valid JSON" in err.value.message


def test_missing_field_names_the_field(rtbserve_server: RunningServer) -> None:
    with pytest.raises(tc.MissingField) as err:
        rtbserve_server.client().score(b'{"id": "r1", "imp": [{"banner": {}}]}', [])
    assert err.value.field == "imp[0].id"


def test_unknown_bidder_lists_the_unknown_names(rtbserve_server: RunningServer, model: Any) -> None:
    raw = _requests(1, seed=3)[0]
    with pytest.raises(tc.UnknownBidder) as err:
        rtbserve_server.client().score(raw, [model.manifest.bidders[0], "nobody", "ghost"])
    assert err.value.bidders == ["nobody", "ghost"]


def test_too_many_bidders_reports_limit_and_count(
    rtbserve_server: RunningServer, model: Any
) -> None:
    raw = _requests(1, seed=4)[0]
    with pytest.raises(tc.TooManyBidders) as err:
        rtbserve_server.client().score(raw, model.manifest.bidders[:7])  # limit is 6
    assert (err.value.limit, err.value.requested) == (6, 7)


def test_batch_too_large_reports_limit_and_count(rtbserve_server: RunningServer) -> None:
    calls = [tc.ScoreRequest(bid_request=r, bidders=[]) for r in _requests(5, seed=5)]
    with pytest.raises(tc.BatchTooLarge) as err:
        rtbserve_server.client().score_batch(calls)  # limit is 4
    assert (err.value.limit, err.value.requested) == (4, 5)


def test_batch_with_one_bad_entry_fails_only_that_entry(
    rtbserve_server: RunningServer, model: Any
) -> None:
    client = rtbserve_server.client()
    good = _requests(3, seed=6)
    bidders = model.manifest.bidders[:3]
    batch = [
        tc.ScoreRequest(bid_request=good[0], bidders=bidders),
        tc.ScoreRequest(bid_request=b"not json", bidders=bidders),
        tc.ScoreRequest(bid_request=good[1], bidders=["nobody"]),
        tc.ScoreRequest(bid_request=good[2], bidders=[]),
    ]
    results = client.score_batch(batch)
    assert [r.error_type for r in results] == [None, "InvalidJson", "UnknownBidder", None]
    assert results[1].response is None
    assert results[1].error_message
    for entry, raw, names in ((results[0], good[0], bidders), (results[3], good[2], [])):
        single = client.score(raw, names)
        assert entry.response.request_id == single.request_id
        assert [s.probability for s in entry.response.scores] == pytest.approx(
            [s.probability for s in single.scores], abs=1e-6
        )


def test_unknown_method_gets_an_application_exception(rtbserve_server: RunningServer) -> None:
    with socket.create_connection((rtbserve_server.host, rtbserve_server.thrift_port)) as sock:
        frame = encode_call(tc.ModelServer, "info", 7)
        payload = frame[4:].replace(b"info", b"nope")
        sock.sendall(struct.pack(">i", len(payload)) + payload)
        reply = _read_frame(sock)
    assert reply is not None
    assert b"nope" in reply
    assert (struct.unpack(">I", reply[:4])[0] & 0xFF) == 3


def _read_frame(sock: socket.socket, timeout: float = 5.0) -> bytes | None:
    """One framed reply, or None when the server closed the connection first."""
    sock.settimeout(timeout)
    head = _read_exactly(sock, 4)
    if head is None:
        return None
    (size,) = struct.unpack(">i", head)
    return _read_exactly(sock, size)


def _read_exactly(sock: socket.socket, n: int) -> bytes | None:
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            return None
        data += chunk
    return data


def _closed_by_server(sock: socket.socket, timeout: float = 5.0) -> bool:
    sock.settimeout(timeout)
    try:
        return sock.recv(1) == b""
    except ConnectionResetError:
        return True


def test_malformed_frame_closes_only_that_connection(rtbserve_server: RunningServer) -> None:
    bystander = rtbserve_server.client()
    assert bystander.info().name == "tiny"
    with socket.create_connection((rtbserve_server.host, rtbserve_server.thrift_port)) as sock:
        garbage = b"\x7f\x00\x00\x00garbage that is not thrift"
        sock.sendall(struct.pack(">i", len(garbage)) + garbage)
        assert _closed_by_server(sock)
    assert bystander.info().name == "tiny"  # the other connection still works


def test_pipelined_calls_are_answered_in_order_before_a_bad_frame_closes(
    rtbserve_server: RunningServer,
) -> None:
    raws = _requests(3, seed=31)
    calls = [
        encode_call(tc.ModelServer, "score", 40 + i, bid_request=raw, bidders=["dsp-01"])
        for i, raw in enumerate(raws)
    ]
    garbage = b"\x7f\x00\x00\x00garbage that is not thrift"
    with socket.create_connection((rtbserve_server.host, rtbserve_server.thrift_port)) as sock:
        sock.sendall(b"".join(calls))  # several frames in one segment: one batched write
        seqids = []
        for _ in calls:
            reply = _read_frame(sock)
            assert reply is not None
            seqids.append(struct.unpack_from(">i", reply, 4 + 4 + 5)[0])
        assert seqids == [40, 41, 42]
        sock.sendall(calls[0] + calls[1] + struct.pack(">i", len(garbage)) + garbage)
        for expected in (40, 41):  # answered before the bad frame closed the connection
            reply = _read_frame(sock)
            assert reply is not None
            assert struct.unpack_from(">i", reply, 4 + 4 + 5)[0] == expected
        assert _closed_by_server(sock)


def test_oversized_frame_is_refused_before_it_is_read(rtbserve_server: RunningServer) -> None:
    bystander = rtbserve_server.client()
    with socket.create_connection((rtbserve_server.host, rtbserve_server.thrift_port)) as sock:
        sock.sendall(struct.pack(">i", 10 * 1024 * 1024))  # 10 MiB announced, limit 64 KiB
        assert _closed_by_server(sock)
    assert bystander.info().name == "tiny"


def test_stalled_client_is_cut_off_and_others_are_served_meanwhile(
    rtbserve_server: RunningServer,
) -> None:
    call = encode_call(tc.ModelServer, "info", 1)
    bystander = rtbserve_server.client()
    with socket.create_connection((rtbserve_server.host, rtbserve_server.thrift_port)) as sock:
        sock.sendall(call[:10])  # part of a frame, then nothing
        started = time.monotonic()
        for _ in range(5):
            assert bystander.info().name == "tiny"
        assert _closed_by_server(sock, timeout=10)
        waited = time.monotonic() - started
    assert 0.9 <= waited < 5.0  # --read-timeout-seconds 1, checked every 0.25 s


def test_errors_and_calls_show_in_metrics(rtbserve_server: RunningServer, model: Any) -> None:
    client = rtbserve_server.client()
    raw = _requests(1, seed=8)[0]
    before = _metrics(rtbserve_server)
    for _ in range(3):
        client.score(raw, model.manifest.bidders[:2])
    with pytest.raises(tc.InvalidJson):
        client.score(b"[", [])
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        after = _metrics(rtbserve_server)
        if (
            after.get('rtbserve_requests_total{method="score"}', 0)
            >= before.get('rtbserve_requests_total{method="score"}', 0) + 4
        ):
            break
        time.sleep(0.1)
    key = 'rtbserve_requests_total{method="score"}'
    assert after[key] - before.get(key, 0) == 4
    err = 'rtbserve_errors_total{type="InvalidJson"}'
    assert after[err] - before.get(err, 0) == 1
    assert after["rtbserve_request_latency_seconds_count"] >= after[key]
    assert after['rtbserve_bidders_per_call_bucket{le="2.0"}'] >= 3
    info = [k for k in after if k.startswith("rtbserve_model_info{")]
    assert len(info) == 1
    assert 'backend="native"' in info[0]
    assert 'version="v-test"' in info[0]
    # How long the start-up phases took, for sizing how fast new pods can serve.
    assert after['rtbserve_startup_seconds{phase="download"}'] >= 0
    assert after['rtbserve_startup_seconds{phase="load"}'] > 0


def _metrics(server: RunningServer) -> dict[str, float]:
    status, body = server.http_get("/metrics")
    assert status == 200
    values: dict[str, float] = {}
    for line in body.splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            values[name] = float(value)
    return values


def test_health_and_readiness_endpoints(rtbserve_server: RunningServer) -> None:
    assert rtbserve_server.http_get("/healthz") == (200, "ok\n")
    assert rtbserve_server.http_get("/readyz") == (200, "ready\n")
    assert rtbserve_server.http_get("/nothing")[0] == 404
    # Before the worker had loaded and warmed the model, /readyz said no.
    assert rtbserve_server.first_readyz == 503
