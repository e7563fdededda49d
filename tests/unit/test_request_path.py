"""The request path's shortcuts give exactly what the plain code gives.

Native row assembly against numpy, the one-call reply against the numpy encoder (itself checked
against thriftpy2 in test_service.py), remembered bidder lists against a fresh decode, and the
resolved-list cache against the errors it must keep raising.
"""

from __future__ import annotations

import struct
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest

from model_server import thrift_contract as tc
from model_server.artifact import load_artifact
from model_server.errors import TooManyBiddersError, UnknownBidderError
from model_server.fast_codec import (
    ScoreReplyEncoder,
    encode_call,
)
from model_server.features import FeaturePipeline
from model_server.metrics import WorkerStats
from model_server.native import _forest
from model_server.openrtb import parse_bid_request
from model_server.predictor import make_predictor
from model_server.service import FrameHandler, ScoringService
from model_server.synthetic import TrafficGenerator

pytestmark = pytest.mark.native

IAB_EXAMPLES = Path(__file__).resolve().parents[2].parent / "shared" / "openrtb-2.6"


@pytest.fixture(scope="module")
def traffic() -> list[Any]:
    return list(TrafficGenerator(seed=21, n_bidders=8).requests(500))


@pytest.fixture(scope="module")
def pipeline(traffic: list[Any]) -> FeaturePipeline:
    fit = traffic[:300]
    bidders = [f"dsp-{i:02d}" for i in range(1, 9)]
    return FeaturePipeline.fit(
        [s.request for s in fit],
        bidders,
        bids=[s.bids for s in fit],
        nows=[s.timestamp for s in fit],
    )


@pytest.fixture(scope="module")
def service(tiny_artifact: Any) -> ScoringService:
    model = load_artifact(tiny_artifact.path)
    return ScoringService(model, make_predictor(model.booster, "native"), 6, 4, clock=lambda: 1.7e9)


def _numpy_rows(
    pipe: FeaturePipeline, req: dict[str, Any], idx: list[int], now: float
) -> np.ndarray:
    nums, cols = pipe._encode(req, now)
    out = np.full((len(idx), pipe.n_features), -7.0, dtype=np.float32)
    pipe._fill_rows_numpy(nums, cols, idx, out)
    return out


def test_native_rows_equal_numpy_rows_bit_for_bit(
    traffic: list[Any], pipeline: FeaturePipeline
) -> None:
    rng = np.random.default_rng(5)
    n_b = len(pipeline.bidders)
    checked = 0
    for sr in traffic[300:]:  # held out: values the vocabularies never saw, too
        idx = [int(i) for i in rng.choice(n_b, size=int(rng.integers(0, n_b + 1)))]
        native = pipeline.rows(sr.request, idx, sr.timestamp)
        reference = _numpy_rows(pipeline, sr.request, idx, sr.timestamp)
        # Same bits, NaN (missing) included.
        assert native.tobytes() == reference.tobytes()
        checked += native.size
    assert checked > 0


def test_native_rows_equal_numpy_rows_on_iab_examples(pipeline: FeaturePipeline) -> None:
    files = sorted(IAB_EXAMPLES.glob("*.json")) if IAB_EXAMPLES.is_dir() else []
    if not files:
        pytest.skip(f"IAB OpenRTB 2.6 examples not found at {IAB_EXAMPLES}")
    idx = list(range(len(pipeline.bidders)))[::-1]
    for f in files:
        req = parse_bid_request(f.read_bytes())
        native = pipeline.rows(req, idx, 1.7e9)
        assert native.tobytes() == _numpy_rows(pipeline, req, idx, 1.7e9).tobytes(), f.name


def test_rows_into_a_strided_buffer_fall_back_to_numpy(
    traffic: list[Any], pipeline: FeaturePipeline
) -> None:
    req, now = traffic[0].request, traffic[0].timestamp
    wide = np.zeros((3, 2 * pipeline.n_features), dtype=np.float32)
    strided = wide[:, ::2]  # not C-contiguous: the native call would refuse it
    pipeline.rows(req, [0, 1, 2], now, out=strided)
    np.testing.assert_array_equal(strided, pipeline.rows(req, [0, 1, 2], now))


def test_fill_rows_rejects_bad_arguments() -> None:
    table = np.arange(12, dtype=np.float32).reshape(3, 4)
    out = np.empty((2, 4), dtype=np.float32)
    _forest.fill_rows([1.5, float("nan")], [3, 0], [2, 0], table, out)
    np.testing.assert_array_equal(out, [[1.5, np.nan, 11, 8], [1.5, np.nan, 3, 0]])
    with pytest.raises(IndexError, match="bidders"):
        _forest.fill_rows([1.5, 2.0], [3, 0], [3, 0], table, out)
    with pytest.raises(IndexError, match="columns"):
        _forest.fill_rows([1.5, 2.0], [4, 0], [0, 0], table, out)
    with pytest.raises(IndexError, match="columns"):
        _forest.fill_rows([1.5, 2.0], [-1, 0], [0, 0], table, out)
    with pytest.raises(ValueError, match="shape"):
        _forest.fill_rows([1.5], [3, 0], [0, 0], table, out)
    with pytest.raises(TypeError):
        _forest.fill_rows(["x", 2.0], [3, 0], [0, 0], table, out)
    with pytest.raises(TypeError, match="float32"):
        _forest.fill_rows([1.5, 2.0], [3, 0], [0, 0], table.astype(np.float64), out)


def test_one_call_reply_equals_the_numpy_encoder() -> None:
    bidders = ["dsp-01", "a-much-longer-bidder-name", "x"]
    thresholds = [0.25, 0.5, float(np.float32(0.3))]
    encoder = ScoreReplyEncoder(bidders, "v7", thresholds)
    rng = np.random.default_rng(2)
    selections = [[0, 1, 2], [2], [1, 1, 0], [], [2, 0]]
    for seqid, sel in enumerate(selections):
        p = rng.random(len(sel)).astype(np.float32)
        if sel:
            p[0] = np.float32(thresholds[sel[0]])  # exactly on the threshold: forwarded
        p64 = p.astype(np.float64)
        expected = encoder.encode(seqid, f"req-{seqid}", sel, p64, p64 >= np.array(thresholds)[sel])
        assert encoder.encode_scores(seqid, f"req-{seqid}", sel, p) == expected


def test_score_reply_rejects_positions_outside_the_tail() -> None:
    probs = np.array([0.5], dtype=np.float32)
    thr = np.array([0.1])
    assert _forest.score_reply(b"h", bytes(20), [0], 11, probs, thr)[1:9] == struct.pack(">d", 0.5)
    with pytest.raises(IndexError):
        _forest.score_reply(b"h", bytes(20), [9], 11, probs, thr)
    with pytest.raises(ValueError, match="one per position"):
        _forest.score_reply(b"h", bytes(20), [0, 1], 11, probs, thr)
    with pytest.raises(ValueError, match="flag_offset"):
        _forest.score_reply(b"h", bytes(20), [0], 3, probs, thr)


def _score_frame(names: list[str], raw: bytes = b'{"id":"1","imp":[{"id":"1"}]}') -> bytes:
    return encode_call(tc.ModelServer, "score", 1, bid_request=raw, bidders=names)[4:]


def test_resolved_lists_still_raise_for_bad_names(service: ScoringService) -> None:
    names = service.bidders[:3]
    first = service.resolve_bidders(names)
    assert service.resolve_bidders(list(names)) == first
    assert service.resolve_bidders([n.encode() for n in names]) == first
    with pytest.raises(UnknownBidderError) as err:
        service.resolve_bidders([*names[:2], "nobody"])
    assert err.value.bidders == ["nobody"]
    with pytest.raises(TooManyBiddersError):
        service.resolve_bidders(service.bidders[:1] * 7)


def test_handler_replies_do_not_change_with_warm_caches(service: ScoringService) -> None:
    raws = [orjson.dumps(s.request) for s in TrafficGenerator(seed=4, n_bidders=8).requests(20)]
    cold = [
        FrameHandler(service, WorkerStats()).handle(_score_frame(service.bidders[:4], raw))
        for raw in raws
    ]
    warm = FrameHandler(service, WorkerStats())
    assert [warm.handle(_score_frame(service.bidders[:4], raw)) for raw in raws] == cold


def test_request_path_bench_reports_every_part(tiny_artifact: Any) -> None:
    from bench.request_path_bench import run

    result = run(str(tiny_artifact.path), repeats=1, n_requests=20)
    parts = result["us_per_request"]
    assert set(parts) == {
        "decode", "parse", "rows", "predict", "score", "encode", "whole", "native",
    }  # fmt: skip
    assert all(0 < us < 1e5 for us in parts.values())
    assert result["bidders"] == 8
    assert result["model"]["backend"] == "native"
    # The whole call contains scoring, which contains parsing.
    assert parts["whole"] > parts["parse"]
