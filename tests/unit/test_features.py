"""Request parsing, request errors and the feature pipeline's values."""

from __future__ import annotations

import math
import os
import subprocess
import sys
from collections.abc import Mapping
from typing import Any

import numpy as np
import orjson
import pytest

from model_server.errors import (
    InvalidJsonError,
    MissingFieldError,
    RequestError,
    TooManyBiddersError,
    UnknownBidderError,
)
from model_server.features import FeaturePipeline, KeySpec, Vocabulary, stable_bucket
from model_server.openrtb import parse_bid_request

pytestmark = pytest.mark.native

BIDDERS = ["dsp-a", "dsp-b", "dsp-c"]
# 2024-03-06 (a Wednesday) 14:30:00 UTC
WEDNESDAY_1430 = 1709735400.0


def _req(**overrides: Any) -> dict[str, Any]:
    req: dict[str, Any] = {
        "id": "r1",
        "imp": [{"id": "1", "bidfloor": 0.5, "banner": {"format": [{"w": 300, "h": 250}]}}],
        "site": {"domain": "www.Example.com", "cat": ["IAB3-1"], "publisher": {"id": "p1"}},
        "device": {"devicetype": 2, "os": "Windows", "geo": {"country": "usa", "region": "ca"}},
    }
    req.update(overrides)
    return req


def _features(
    pipe: FeaturePipeline, req: Mapping[str, Any], now: float = WEDNESDAY_1430
) -> dict[str, float]:
    return dict(
        zip(pipe.request_feature_names, pipe.request_vector(req, now).tolist(), strict=True)
    )


@pytest.fixture
def pipe() -> FeaturePipeline:
    return FeaturePipeline.fit([_req()] * 5, BIDDERS, nows=[WEDNESDAY_1430] * 5)


# ---- parsing and request errors ------------------------------------------------------------
@pytest.mark.parametrize("raw", [b"", b"{", b"not json", b"\xff\xfe"])
def test_invalid_json(raw: bytes) -> None:
    with pytest.raises(InvalidJsonError, match="not valid JSON") as info:
        parse_bid_request(raw)
    assert info.value.thrift_name == "InvalidJson"


@pytest.mark.parametrize("raw", [b"[]", b"42", b'"x"', b"null", b"true"])
def test_json_that_is_not_an_object(raw: bytes) -> None:
    with pytest.raises(InvalidJsonError, match="must be a JSON object"):
        parse_bid_request(raw)


@pytest.mark.parametrize(
    ("req", "field"),
    [
        ({"imp": [{"id": "1"}]}, "id"),
        ({"id": 7, "imp": [{"id": "1"}]}, "id"),
        ({"id": "r"}, "imp"),
        ({"id": "r", "imp": []}, "imp"),
        ({"id": "r", "imp": {"id": "1"}}, "imp"),
        ({"id": "r", "imp": ["x"]}, "imp[0]"),
        ({"id": "r", "imp": [{"id": "1"}, {"banner": {}}]}, "imp[1].id"),
        ({"id": "r", "imp": [{"id": 1}]}, "imp[0].id"),
    ],
)
def test_missing_required_field(req: dict[str, Any], field: str) -> None:
    with pytest.raises(MissingFieldError) as info:
        parse_bid_request(orjson.dumps(req))
    assert info.value.field == field
    assert field in str(info.value)
    assert isinstance(info.value, RequestError)


def test_valid_request_is_returned_as_dict() -> None:
    req = _req()
    assert parse_bid_request(orjson.dumps(req)) == req
    assert parse_bid_request(memoryview(orjson.dumps(req))) == req


def test_unknown_bidder(pipe: FeaturePipeline) -> None:
    with pytest.raises(UnknownBidderError) as info:
        pipe.bidder_indices(["dsp-a", "nope", "dsp-z"])
    assert info.value.bidders == ["nope", "dsp-z"]
    assert "'nope'" in info.value.message
    assert info.value.thrift_name == "UnknownBidder"


def test_too_many_bidders_carries_limit_and_count() -> None:
    err = TooManyBiddersError(limit=64, requested=65)
    assert (err.limit, err.requested, err.thrift_name) == (64, 65, "TooManyBidders")
    assert "65" in str(err)
    assert "64" in str(err)


def test_bidder_indices(pipe: FeaturePipeline) -> None:
    assert pipe.bidder_indices([]) == [0, 1, 2]
    assert pipe.bidder_indices(["dsp-c", "dsp-a"]) == [2, 0]


# ---- feature values -------------------------------------------------------------------------
def test_site_banner_values(pipe: FeaturePipeline) -> None:
    f = _features(pipe, _req())
    assert f["n_imp"] == 1
    assert (f["has_banner"], f["has_video"], f["has_native"], f["has_audio"]) == (1, 0, 0, 0)
    assert (f["banner_w"], f["banner_h"], f["n_sizes"]) == (300, 250, 1)
    assert f["floor_max"] == f["floor_min"] == 0.5
    assert f["inventory"] == 0  # site
    assert f["devicetype"] == 2
    assert (f["hour"], f["dow"]) == (14, 2)
    # Every categorical value was seen 5 times: code 0 in its vocabulary.
    for key in ("size", "publisher", "domain", "cat_tier1", "cat", "os", "country", "region"):
        assert f[f"{key}_code"] == 0, key
    assert math.isnan(f["bundle_code"])
    assert math.isnan(f["video_maxduration"])


def test_normalisation_matches_vocabulary(pipe: FeaturePipeline) -> None:
    # Domain without www and in other case, lower-case OS, country in upper case: same codes.
    assert pipe.vocabularies["domain"].values == ["example.com"]
    assert pipe.vocabularies["country"].values == ["USA"]
    assert pipe.vocabularies["region"].values == ["USA-CA"]
    assert pipe.vocabularies["cat_tier1"].values == ["IAB3"]
    site = {"page": "https://WWW.example.com/a?b=1", "cat": ["IAB3-9"], "publisher": {"id": "p1"}}
    f = _features(pipe, _req(site=site))
    assert f["domain_code"] == 0  # derived from page when domain is absent
    assert f["cat_tier1_code"] == 0


def test_multi_imp_floors_and_formats(pipe: FeaturePipeline) -> None:
    imps = [
        {"id": "1", "bidfloor": 1.25, "banner": {"w": 728, "h": 90}},
        {"id": "2", "banner": {"format": [{"w": 300, "h": 250}, {"w": 300, "h": 600}]}},
        {"id": "3", "bidfloor": 4.0, "video": {"maxduration": 30, "placement": 1}, "secure": 1},
        {"id": "4", "native": {"request": "{}"}, "pmp": {"deals": [{"id": "d"}, {"id": "e"}]}},
        {"id": "5", "audio": {"mimes": ["audio/mp4"]}, "instl": 1},
    ]
    f = _features(pipe, _req(imp=imps))
    assert f["n_imp"] == 5
    assert (f["has_banner"], f["has_video"], f["has_native"], f["has_audio"]) == (1, 1, 1, 1)
    assert (f["banner_w"], f["banner_h"]) == (728, 90)  # the first banner's size
    assert f["n_sizes"] == 3
    assert f["floor_max"] == 4.0
    assert f["floor_min"] == 0.0  # imps without bidfloor have OpenRTB's default 0
    assert (f["video_maxduration"], f["video_placement"]) == (30, 1)
    assert math.isnan(f["video_plcmt"])
    assert (f["secure"], f["instl"], f["has_pmp"], f["n_deals"]) == (1, 1, 1, 2)


def test_openrtb_25_and_26_shapes_give_the_same_signals(pipe: FeaturePipeline) -> None:
    v25 = _req(
        regs={"ext": {"gdpr": 1, "us_privacy": "1YNN"}},
        imp=[{"id": "1", "video": {"maxduration": 30}}],
        device={"os": "Android", "devicetype": 4},
    )
    v26 = _req(
        regs={"gdpr": 1, "us_privacy": "1YNN"},
        imp=[{"id": "1", "video": {"rqddurs": [15, 30], "plcmt": 1}}],
        device={"sua": {"platform": {"brand": "Android"}}, "devicetype": 4},
    )
    f25, f26 = _features(pipe, v25), _features(pipe, v26)
    assert f25["gdpr"] == f26["gdpr"] == 1
    assert f25["us_privacy"] == f26["us_privacy"] == 1
    assert f25["video_maxduration"] == f26["video_maxduration"] == 30
    assert f25["os_code"] == f26["os_code"]  # device.os vs device.sua.platform.brand
    assert f26["video_plcmt"] == 1


def test_app_inventory_and_device_ids(pipe: FeaturePipeline) -> None:
    app = {"bundle": "com.example.game", "publisher": {"id": 77}, "cat": ["IAB9-30"]}
    dev = {"ifa": "00000000-0000-0000-0000-000000000000", "lmt": 1, "dnt": 0}
    f = _features(pipe, _req(site=None, app=app, device=dev, user={"buyeruid": "u"}))
    assert f["inventory"] == 1
    assert f["has_ifa"] == 0  # an all-zero IFA is no id
    assert (f["lmt"], f["dnt"], f["has_user_id"]) == (1, 0, 1)
    assert not math.isnan(f["bundle_code"])
    assert not math.isnan(f["publisher_code"])  # numeric publisher ids are read too
    g = _features(pipe, _req(device={"ifa": "AA000DFE-74168477"}, user={}))
    assert (g["has_ifa"], g["has_user_id"]) == (1, 0)


def test_wrong_types_in_optional_fields_are_missing_not_errors(pipe: FeaturePipeline) -> None:
    req = _req(
        imp=[{"id": "1", "bidfloor": "0.5", "banner": {"w": "300", "h": None, "format": "x"}}],
        site="not an object",
        device={"geo": [], "devicetype": "phone", "os": 5, "ifa": 3},
        user=[],
        regs={"gdpr": "yes"},
    )
    f = _features(pipe, req)
    assert f["floor_max"] == 0.0
    assert math.isnan(f["banner_w"])
    assert math.isnan(f["inventory"])
    assert math.isnan(f["devicetype"])
    assert math.isnan(f["gdpr"])
    assert math.isnan(f["country_code"])
    assert f["has_ifa"] == 0


def test_unseen_values_get_other_code_or_stable_bucket(pipe: FeaturePipeline) -> None:
    f = _features(pipe, _req(device={"os": "Plan9", "devicetype": 2}))
    assert f["os_code"] == 1  # one known OS, then the shared "other" code
    site = {"domain": "brand-new.example", "publisher": {"id": "p-unseen"}}
    g = _features(pipe, _req(site=site))
    voc = pipe.vocabularies["publisher"]
    assert g["publisher_code"] == len(voc.values) + stable_bucket("p-unseen", voc.hash_buckets)
    assert g["publisher_code"] >= len(voc.values)


def test_stable_bucket_is_the_same_in_another_process() -> None:
    code = "from model_server.features import stable_bucket; print(stable_bucket('pub-42', 256))"
    env = {**os.environ, "PYTHONHASHSEED": "123"}
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    assert int(out.stdout) == stable_bucket("pub-42", 256)


def test_vocabulary_keeps_top_k_by_frequency() -> None:
    from collections import Counter

    counts = Counter({"a": 10, "b": 30, "c": 20, "d": 1, "e": 20})
    voc = Vocabulary.from_counts(counts, KeySpec(top_k=3, hash_buckets=8), min_count=2)
    assert voc.values == ["b", "c", "e"]  # ties broken by value
    assert voc.code("b") == 0
    assert 3 <= voc.code("a") < 3 + 8
    assert voc.n_codes == 11


def test_rows_shape_order_and_bidder_columns(pipe: FeaturePipeline) -> None:
    req = _req()
    r = pipe.n_request_features
    all_rows = pipe.rows(req, pipe.bidder_indices([]), WEDNESDAY_1430)
    assert all_rows.shape == (3, pipe.n_features)
    assert all_rows.dtype == np.float32
    assert all_rows.flags["C_CONTIGUOUS"]
    assert all_rows[:, r].tolist() == [0, 1, 2]
    np.testing.assert_array_equal(all_rows[0, :r], pipe.request_vector(req, WEDNESDAY_1430))
    sub = pipe.rows(req, pipe.bidder_indices(["dsp-c", "dsp-a"]), WEDNESDAY_1430)
    np.testing.assert_array_equal(sub, all_rows[[2, 0]])


def test_rows_fills_a_preallocated_buffer(pipe: FeaturePipeline) -> None:
    out = np.full((2, pipe.n_features), -1.0, dtype=np.float32)
    got = pipe.rows(_req(), [1, 2], WEDNESDAY_1430, out=out)
    assert got is out
    assert not (out == -1.0).all(axis=1).any()
    with pytest.raises(ValueError, match="shape"):
        pipe.rows(_req(), [1], WEDNESDAY_1430, out=out)


def test_time_defaults_to_the_clock(pipe: FeaturePipeline) -> None:
    import time

    before = time.gmtime()
    f = dict(zip(pipe.request_feature_names, pipe.request_vector(_req()).tolist(), strict=True))
    after = time.gmtime()
    assert f["hour"] in {before.tm_hour, after.tm_hour}
    assert f["dow"] in {before.tm_wday, after.tm_wday}


def test_cross_rates_learn_who_bids_where() -> None:
    us = _req()
    de = _req(device={"devicetype": 2, "geo": {"country": "DEU"}})
    reqs = [us] * 50 + [de] * 50
    bids = [{"dsp-a"}] * 50 + [{"dsp-b"}] * 50
    pipe = FeaturePipeline.fit(reqs, BIDDERS, bids=bids, nows=[WEDNESDAY_1430] * 100)
    col = pipe.feature_names.index("rate_country")
    x_us = pipe.rows(us, [0, 1, 2], WEDNESDAY_1430)
    x_de = pipe.rows(de, [0, 1, 2], WEDNESDAY_1430)
    assert x_us[0, col] > 0.5 > x_us[1, col]  # dsp-a bids on USA
    assert x_de[1, col] > 0.5 > x_de[0, col]  # dsp-b bids on DEU
    assert x_us[2, col] == x_de[2, col] == 0.0  # dsp-c never bids
    assert pipe.bidder_rates.tolist() == pytest.approx([0.5, 0.5, 0.0])


def test_fit_rejects_mismatched_inputs() -> None:
    with pytest.raises(ValueError, match="one entry per request"):
        FeaturePipeline.fit([_req()] * 3, BIDDERS, bids=[set()], nows=[0.0] * 3)
    with pytest.raises(ValueError, match="distinct"):
        FeaturePipeline.fit([_req()], ["a", "a"])


def test_from_dict_rejects_foreign_specs(pipe: FeaturePipeline) -> None:
    d = pipe.to_dict()
    with pytest.raises(ValueError, match="format_version"):
        FeaturePipeline.from_dict({**d, "format_version": 99})
    with pytest.raises(ValueError, match="invalid feature spec"):
        FeaturePipeline.from_dict({k: v for k, v in d.items() if k != "cross_rates"})
    with pytest.raises(ValueError, match="feature_names"):
        FeaturePipeline.from_dict({**d, "feature_names": ["x"]})
