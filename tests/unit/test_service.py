"""The scoring path in process: hand-written Thrift codec vs thriftpy2, service, config, metrics."""

from __future__ import annotations

import functools
import io
import logging
import struct
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families
from thriftpy2.thrift import TMessageType
from thriftpy2.transport import TCyMemoryBuffer

from model_server import logs
from model_server import thrift_contract as tc
from model_server.errors import TooManyBiddersError, UnknownBidderError
from model_server.fast_codec import (
    MalformedFrameError,
    binary_protocol,
    decode_score_args,
    encode_call,
    parse_message_header,
)
from model_server.metrics import ServerCollector, WorkerStats, stats_from_wire, stats_to_wire
from model_server.serve_config import ConfigError, available_cpus, load_config
from model_server.service import BatchTooLargeError, FrameHandler, Scored, ScoringService
from model_server.synthetic import TrafficGenerator

pytestmark = pytest.mark.native


@pytest.fixture
def handler(service: ScoringService) -> FrameHandler:
    return FrameHandler(service, WorkerStats())


@functools.cache
def _requests() -> list[bytes]:
    return [orjson.dumps(sr.request) for sr in TrafficGenerator(seed=8, n_bidders=8).requests(32)]


def _raw(i: int) -> bytes:
    return _requests()[i]


def _decode_reply(frame: bytes, method: str = "score") -> Any:
    (size,) = struct.unpack(">i", frame[:4])
    assert size == len(frame) - 4
    prot = binary_protocol(TCyMemoryBuffer(frame[4:]))
    name, mtype, _ = prot.read_message_begin()
    assert (name, mtype) == (method, TMessageType.REPLY)
    result = getattr(tc.ModelServer, f"{method}_result")()
    result.read(prot)
    return result


def test_fast_score_reply_is_byte_for_byte_thriftpy2s(
    handler: FrameHandler, service: ScoringService
) -> None:
    bidders = service.bidders
    for i, names in enumerate([[], bidders[:1], bidders[1:6][::-1], [bidders[3]] * 2]):
        raw = _raw(i)
        call = encode_call(tc.ModelServer, "score", 1000 + i, bid_request=raw, bidders=names)
        method, reply = handler.handle(call[4:])
        scored = service.score(raw, names)
        expected = tc.ModelServer.score_result(
            success=tc.ScoreResponse(
                request_id=scored.request_id,
                model_version=service.version,
                scores=[
                    tc.BidderScore(bidder=bidders[b], probability=p, forward=f)
                    for b, p, f in zip(
                        scored.bidder_idx,
                        scored.probabilities.tolist(),
                        scored.forward.tolist(),
                        strict=True,
                    )
                ],
            )
        )
        out = TCyMemoryBuffer()
        prot = binary_protocol(out)
        prot.write_message_begin("score", TMessageType.REPLY, 1000 + i)
        expected.write(prot)
        prot.write_message_end()
        payload = out.getvalue()
        assert method == "score"
        assert reply == struct.pack(">i", len(payload)) + payload


def test_score_matches_xgboost_and_thresholds(service: ScoringService) -> None:
    model = service.model
    for seed in range(20):
        raw = _raw(seed)
        scored = service.score(raw, [])
        rows = model.pipeline.rows(orjson.loads(raw), model.pipeline.bidder_indices([]), 1.7e9)
        p = model.booster.inplace_predict(rows).astype(np.float64)
        np.testing.assert_allclose(scored.probabilities, p, rtol=0, atol=1e-6)
        thresholds = np.array([model.manifest.thresholds[b] for b in service.bidders])
        np.testing.assert_array_equal(scored.forward, p >= thresholds)


def test_bidder_limits_and_unknown_names(service: ScoringService) -> None:
    raw = _raw(1)
    with pytest.raises(TooManyBiddersError) as many:
        service.score(raw, service.bidders[:7])
    assert (many.value.limit, many.value.requested) == (6, 7)
    with pytest.raises(UnknownBidderError) as unknown:
        service.score(raw, [b"dsp-01", b"\xff\xfe"])
    assert unknown.value.bidders == ["\ufffd\ufffd"]
    assert len(service.score(raw, []).bidder_idx) == 8  # "all" is the model's list, not capped


def test_score_many_runs_one_prediction_for_the_good_entries(service: ScoringService) -> None:
    calls: list[tuple[bytes, list[str]]] = [(_raw(1), []), (b"{", []), (_raw(2), ["nobody"])]
    results = service.score_many(calls)
    assert isinstance(results[0], Scored)
    assert [type(r).__name__ for r in results[1:]] == ["InvalidJsonError", "UnknownBidderError"]
    single = service.score(*calls[0])
    np.testing.assert_array_equal(results[0].probabilities, single.probabilities)
    with pytest.raises(BatchTooLargeError):
        service.score_many([(_raw(1), [])] * 5)


def test_typed_errors_on_the_fast_path(handler: FrameHandler) -> None:
    call = encode_call(tc.ModelServer, "score", 5, bid_request=b"nope", bidders=[])
    method, reply = handler.handle(call[4:])
    result = _decode_reply(reply)
    assert method == "score"
    assert result.success is None
    assert "not valid JSON" in result.invalid_json.message


def test_unusual_but_valid_score_frames_take_the_generic_path(handler: FrameHandler) -> None:
    # Fields in reverse order plus an unknown field: valid Thrift the fast decoder leaves alone.
    raw = _raw(3)
    body = b"".join(
        [
            b"\x0f\x00\x02\x0b" + struct.pack(">i", 1) + struct.pack(">i", 6) + b"dsp-02",
            b"\x08\x00\x09" + struct.pack(">i", 42),  # field 9, i32: unknown to the IDL
            b"\x0b\x00\x01" + struct.pack(">i", len(raw)) + raw,
            b"\x00",
        ]
    )
    frame = struct.pack(">I", 0x80010001) + struct.pack(">i", 5) + b"score" + struct.pack(">i", 9)
    frame += body
    name, _, seqid, pos = parse_message_header(frame)
    assert (name, seqid) == ("score", 9)
    assert decode_score_args(frame, pos) is None
    method, reply = handler.handle(frame)
    assert method == "score"
    scores = _decode_reply(reply).success.scores
    assert [s.bidder for s in scores] == ["dsp-02"]


@pytest.mark.parametrize("cut", [3, 9, 20, 40, -3])
def test_truncated_frames_are_malformed(handler: FrameHandler, cut: int) -> None:
    call = encode_call(tc.ModelServer, "score", 1, bid_request=_raw(1), bidders=["dsp-01"])[4:]
    with pytest.raises(MalformedFrameError):
        handler.handle(call[:cut])


def test_lying_lengths_are_malformed(handler: FrameHandler) -> None:
    head = struct.pack(">I", 0x80010001) + struct.pack(">i", 5) + b"score" + struct.pack(">i", 1)
    huge_list = b"\x0f\x00\x02\x0b" + struct.pack(">i", 2**31 - 1)
    with pytest.raises(MalformedFrameError):
        handler.handle(head + huge_list)
    with pytest.raises(MalformedFrameError, match="version"):
        handler.handle(struct.pack(">I", 0x80020001) + head[4:])


def test_info_through_the_generic_path(handler: FrameHandler, service: ScoringService) -> None:
    method, reply = handler.handle(encode_call(tc.ModelServer, "info", 3)[4:])
    info = _decode_reply(reply, "info").success
    assert method == "info"
    assert (info.backend, info.feature_count) == ("native", service.model.pipeline.n_features)


def test_calls_and_errors_are_counted(handler: FrameHandler) -> None:
    stats = handler._stats
    handler.handle(encode_call(tc.ModelServer, "score", 1, bid_request=_raw(1), bidders=[])[4:])
    handler.handle(encode_call(tc.ModelServer, "score", 2, bid_request=b"[", bidders=[])[4:])
    assert stats.errors == {"InvalidJson": 1}
    assert sum(stats.bidders.counts) == 1
    assert stats.bidders.total == 8


# ---- configuration --------------------------------------------------------------------------


def test_flags_win_over_environment_which_wins_over_defaults() -> None:
    env = {"RTBSERVE_MODEL_URI": "s3://b/p/", "RTBSERVE_THRIFT_PORT": "7000",
           "RTBSERVE_MAX_BIDDERS": "12", "RTBSERVE_LOG_LEVEL": "DEBUG"}  # fmt: skip
    cfg = load_config(["--thrift-port", "7001", "--workers", "3"], env)
    assert (cfg.model_uri, cfg.thrift_port, cfg.max_bidders) == ("s3://b/p/", 7001, 12)
    assert (cfg.workers, cfg.log_level, cfg.http_port, cfg.drain_seconds) == (3, "debug", 8080, 15)
    assert (cfg.conn_max_age_seconds, cfg.conn_max_requests, cfg.max_batch) == (300, 0, 256)
    assert (cfg.max_frame_bytes, cfg.read_timeout_seconds, cfg.backend) == (1 << 20, 10, "auto")


@pytest.mark.parametrize(
    ("argv", "env", "message"),
    [
        ([], {}, "a model is required"),
        (["--model", "m", "--workers", "0"], {}, "--workers '0' is invalid"),
        (["--model", "m"], {"RTBSERVE_HTTP_PORT": "70000"}, "RTBSERVE_HTTP_PORT"),
        (["--model", "m", "--model-sha256", "abc"], {}, "64 hex digits"),
        (["--model", "m", "--backend", "gpu"], {}, "auto, native, xgboost"),
        (["--model", "m", "--read-timeout-seconds", "0"], {}, "more than 0"),
        (["--model", "m", "--model-version-id", "v1"], {}, "only to an s3://"),
    ],
)
def test_bad_configuration_names_the_setting(
    argv: list[str], env: dict[str, str], message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config(argv, env)


def test_worker_count_follows_affinity_and_cgroup_quota(tmp_path: Path) -> None:
    import os

    affinity = len(os.sched_getaffinity(0))
    (tmp_path / "cpu.max").write_text("150000 100000\n")  # 1.5 CPUs
    assert available_cpus(tmp_path) == min(affinity, 2)
    (tmp_path / "cpu.max").write_text("max 100000\n")
    assert available_cpus(tmp_path) == affinity
    (tmp_path / "cpu.max").unlink()
    (tmp_path / "cpu").mkdir()
    (tmp_path / "cpu" / "cpu.cfs_quota_us").write_text("50000\n")
    (tmp_path / "cpu" / "cpu.cfs_period_us").write_text("100000\n")
    assert available_cpus(tmp_path) == 1


# ---- metrics and logs -----------------------------------------------------------------------


def test_collector_sums_workers_and_keeps_retired_counts() -> None:
    collector = ServerCollector({"name": "m", "version": "1", "sha256": "ab", "backend": "native"})
    for worker_id, latency in ((0, 0.0002), (1, 0.004)):
        stats = WorkerStats()
        stats.request("score", latency)
        stats.bidders.observe(16)
        stats.error("InvalidJson")
        collector.update(worker_id, stats_from_wire(stats_to_wire(stats)))
    collector.retire(1)
    registry = CollectorRegistry()
    registry.register(collector)
    families = {
        f.name: f for f in text_string_to_metric_families(generate_latest(registry).decode())
    }
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for f in families.values() for s in f.samples}  # fmt: skip
    assert samples[("rtbserve_requests_total", (("method", "score"),))] == 2
    assert samples[("rtbserve_errors_total", (("type", "InvalidJson"),))] == 2
    assert samples[("rtbserve_request_latency_seconds_bucket", (("le", "0.00025"),))] == 1
    assert samples[("rtbserve_request_latency_seconds_bucket", (("le", "0.005"),))] == 2
    assert samples[("rtbserve_bidders_per_call_sum", ())] == 32
    info = (("backend", "native"), ("name", "m"), ("sha256", "ab"), ("version", "1"))
    assert samples[("rtbserve_model_info", info)] == 1


def test_logs_are_one_json_object_per_line() -> None:
    stream = io.StringIO()
    logs.configure("info", stream)
    try:
        logging.getLogger("t").info("hello", extra=logs.kv(port=9090, path=Path("/x")))
        logging.getLogger("t").debug("hidden")
    finally:
        logs.configure("info")
    lines = stream.getvalue().splitlines()
    assert len(lines) == 1
    entry = orjson.loads(lines[0])
    assert (entry["level"], entry["msg"], entry["fields"]) == (
        "info",
        "hello",
        {"port": 9090, "path": "/x"},
    )
    assert entry["ts"].endswith("+00:00")
