"""Serving and training build identical rows, and a saved pipeline rebuilds them exactly."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest

from model_server.features import FeaturePipeline
from model_server.openrtb import parse_bid_request
from model_server.synthetic import TrafficGenerator

pytestmark = pytest.mark.native

IAB_EXAMPLES = Path(__file__).resolve().parents[2].parent / "shared" / "openrtb-2.6"


@pytest.fixture(scope="module")
def traffic() -> tuple[list[Any], list[str]]:
    gen = TrafficGenerator(seed=11, n_bidders=8)
    return list(gen.requests(600)), gen.bidders


@pytest.fixture(scope="module")
def pipeline(traffic: tuple[list[Any], list[str]]) -> FeaturePipeline:
    srs, bidders = traffic
    fit = srs[:400]
    return FeaturePipeline.fit(
        [s.request for s in fit],
        bidders,
        bids=[s.bids for s in fit],
        nows=[s.timestamp for s in fit],
    )


def _serving_rows(pipe: FeaturePipeline, raw: bytes, names: list[str], now: float) -> np.ndarray:
    """What the server does per call: parse the bytes, resolve names, build rows."""
    return pipe.rows(parse_bid_request(raw), pipe.bidder_indices(names), now)


def _iab_requests() -> list[tuple[str, bytes]]:
    if not IAB_EXAMPLES.is_dir():
        pytest.skip(f"IAB OpenRTB 2.6 examples not found at {IAB_EXAMPLES}")
    files = sorted(IAB_EXAMPLES.glob("*.json"))
    if not files:
        pytest.skip(f"no *.json examples in {IAB_EXAMPLES}")
    return [(f.name, f.read_bytes()) for f in files]


def test_generated_requests_serving_equals_training(
    traffic: tuple[list[Any], list[str]], pipeline: FeaturePipeline
) -> None:
    srs, bidders = traffic
    held_out = srs[400:]  # includes values the vocabularies never saw
    rng = np.random.default_rng(3)
    subsets = [list(rng.choice(bidders, size=rng.integers(1, 9), replace=False)) for _ in held_out]
    training = pipeline.matrix(
        [s.request for s in held_out], subsets, [s.timestamp for s in held_out]
    )
    serving = np.concatenate(
        [
            _serving_rows(pipeline, orjson.dumps(s.request), names, s.timestamp)
            for s, names in zip(held_out, subsets, strict=True)
        ]
    )
    assert serving.shape == training.shape
    np.testing.assert_array_equal(serving, training)
    assert np.isfinite(serving[:, pipeline.feature_names.index("rate_country")]).all()


def test_iab_examples_serving_equals_training(pipeline: FeaturePipeline) -> None:
    examples = _iab_requests()
    now = 1_700_000_000.0
    reqs = [parse_bid_request(raw) for _, raw in examples]
    training = pipeline.matrix(reqs, None, [now] * len(reqs))
    n_b = len(pipeline.bidders)
    for i, (name, raw) in enumerate(examples):
        serving = _serving_rows(pipeline, raw, [], now)
        np.testing.assert_array_equal(
            serving, training[i * n_b : (i + 1) * n_b], err_msg=f"parity broken for {name}"
        )


def test_iab_examples_features_are_read(pipeline: FeaturePipeline) -> None:
    by_name = dict(_iab_requests())
    names = pipeline.request_feature_names

    def feats(name: str) -> dict[str, float]:
        vec = pipeline.request_vector(parse_bid_request(by_name[name]), 1_700_000_000.0)
        return dict(zip(names, vec.tolist(), strict=True))

    mobile = feats("mobile.json")
    assert (mobile["inventory"], mobile["banner_w"], mobile["banner_h"]) == (1, 728, 90)
    assert (mobile["floor_max"], mobile["devicetype"], mobile["connectiontype"]) == (0.5, 1, 3)
    assert (mobile["has_ifa"], mobile["has_user_id"], mobile["dnt"]) == (1, 1, 0)
    video = feats("video.json")
    assert (video["has_video"], video["video_maxduration"], video["has_banner"]) == (1, 30, 0)
    assert feats("native-ad.json")["has_native"] == 1
    pmp = feats("pmp-with-direct-deal.json")
    assert (pmp["has_pmp"], pmp["n_deals"], pmp["private_auction"]) == (1, 2, 1)
    assert feats("simple-banner.json")["inventory"] == 0


def test_round_trip_through_json_gives_identical_features(
    traffic: tuple[list[Any], list[str]], pipeline: FeaturePipeline
) -> None:
    srs, _ = traffic
    rebuilt = FeaturePipeline.from_dict(orjson.loads(orjson.dumps(pipeline.to_dict())))
    assert rebuilt.feature_names == pipeline.feature_names
    assert rebuilt.bidders == pipeline.bidders
    assert rebuilt.to_dict() == pipeline.to_dict()
    reqs = [s.request for s in srs]
    nows = [s.timestamp for s in srs]
    np.testing.assert_array_equal(
        rebuilt.matrix(reqs, None, nows), pipeline.matrix(reqs, None, nows)
    )
