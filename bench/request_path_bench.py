"""In-process cost of one `score` call, part by part, for 16 candidate bidders.

    from bench.request_path_bench import run
    result = run()                 # {"us_per_request": {"decode": ..., "parse": ..., ...}, ...}
    result = run(model_dir="/tmp/m")

`python -m bench.request_path_bench [MODEL_DIR]` prints the result as JSON. Without a model
directory it trains the default model shape (`TrainConfig()`: 60 trees of depth 6) on a few
thousand synthetic requests. The requests are synthetic traffic from the same generator the load
generator uses, each naming all 16 bidders, as the load generator does. Each figure is the best
mean over several repeats of a pass over every request, so other load on the machine inflates
it least. Parts:

    decode     Thrift header and `score` arguments of the frame, decoded in full
    parse      JSON decode and OpenRTB validation
    rows       FeaturePipeline.rows: 16 feature rows (the training path)
    predict    the predictor on those 16 rows
    score      ScoringService.score: parse, features, predict, thresholds
    encode     the reply frame from float32 probabilities and the thresholds
    whole      FrameHandler.handle: frame in, reply frame out
    native     the worker's usual call (bidder list seen before) through the native score
               path: framed call in, reply written (model_server/native/score_path.h)
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import orjson

from model_server import thrift_contract as tc
from model_server.artifact import LoadedModel, load_artifact, write_artifact
from model_server.fast_codec import (
    ScoreReplyEncoder,
    decode_score_args,
    encode_call,
    parse_message_header,
)
from model_server.metrics import WorkerStats
from model_server.openrtb import parse_bid_request
from model_server.predictor import make_predictor
from model_server.service import FrameHandler, ScoringService
from model_server.synthetic import TrafficGenerator

BIDDERS = 16
NOW = 1_700_000_000.0


def _best_us(fn: Callable[[int], object], n: int, repeats: int) -> float:
    """Best mean µs per call of fn(i) over `repeats` passes of i = 0..n-1."""
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        for i in range(n):
            fn(i)
        best = min(best, (time.perf_counter() - started) / n)
    return best * 1e6


def _default_model() -> LoadedModel:
    from model_server.training import TrainConfig, synthetic_examples, train

    trained = train(synthetic_examples(4000, seed=3), TrainConfig(threads=1))
    with tempfile.TemporaryDirectory() as tmp:
        ref = write_artifact(
            tmp,
            trained.booster,
            trained.pipeline,
            trained.thresholds,
            trained.metrics,
            "request-path-bench",
            "1",
            trained.params,
        )
        return load_artifact(ref.path)


def run(
    model_dir: str | None = None, repeats: int = 5, n_requests: int = 500, seed: int = 9
) -> dict[str, Any]:
    model = load_artifact(model_dir) if model_dir else _default_model()
    predictor = make_predictor(model.booster, "auto")
    service = ScoringService(model, predictor, 64, 256, clock=lambda: NOW)
    handler = FrameHandler(service, WorkerStats())
    pipeline = model.pipeline
    gen = TrafficGenerator(seed=seed, n_bidders=min(BIDDERS, len(service.bidders)))
    names: Sequence[str] = service.bidders[:BIDDERS]
    raws = [orjson.dumps(sr.request) for sr in gen.requests(n_requests)]
    frames = [
        encode_call(tc.ModelServer, "score", i, bid_request=raw, bidders=list(names))[4:]
        for i, raw in enumerate(raws)
    ]
    reqs = [parse_bid_request(raw) for raw in raws]
    idx = pipeline.bidder_indices(names)
    n_b = len(idx)
    rows_buf = np.empty((n_b, pipeline.n_features), dtype=np.float32)
    all_rows = [pipeline.rows(req, idx, NOW) for req in reqs]
    probs_buf = np.empty(n_b, dtype=np.float32)
    # score_float32's probabilities live in a buffer the next call reuses: keep copies.
    scored = [
        (rid, ix, p.copy()) for rid, ix, p in map(service.score_float32, raws, [names] * n_requests)
    ]
    encoder = ScoreReplyEncoder(service.bidders, service.version, service.bidder_thresholds)
    for frame in frames[:50]:  # first calls build caches and reply templates
        handler.handle(frame)

    def decode(i: int) -> object:
        frame = frames[i]
        return decode_score_args(frame, parse_message_header(frame)[3])

    def encode(i: int) -> object:
        request_id, bidder_idx, probabilities = scored[i]
        return encoder.encode_scores(i, request_id, bidder_idx, probabilities)

    framed = [len(frame).to_bytes(4, "big") + frame for frame in frames]
    written: list[bytes] = []
    path = handler.score_path

    def native(i: int) -> object:
        written.clear()
        if path is None or not path.call(framed[i], written.append):
            raise RuntimeError("the native score path declined a benchmark call")
        return written

    parts: dict[str, Callable[[int], object]] = {
        "decode": decode,
        "parse": lambda i: parse_bid_request(raws[i]),
        "rows": lambda i: pipeline.rows(reqs[i], idx, NOW, out=rows_buf),
        "predict": lambda i: predictor.predict(all_rows[i], probs_buf),
        "score": lambda i: service.score(raws[i], names),
        "encode": encode,
        "whole": lambda i: handler.handle(frames[i]),
    }
    if path is not None:
        parts["native"] = native
    us = {name: _best_us(fn, n_requests, repeats) for name, fn in parts.items()}
    return {
        "bidders": n_b,
        "model": {
            "features": pipeline.n_features,
            "backend": predictor.backend,
            "trees": getattr(predictor, "n_trees", None),
        },
        "us_per_request": us,
        "requests_per_s_whole": 1e6 / us["whole"],
    }


if __name__ == "__main__":
    print(json.dumps(run(sys.argv[1] if len(sys.argv) > 1 else None), indent=2))
