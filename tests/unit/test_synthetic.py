"""The synthetic traffic generator: reproducible, valid and plausibly distributed."""

from __future__ import annotations

import statistics
from collections import Counter

import orjson
import pytest

from model_server.openrtb import parse_bid_request
from model_server.synthetic import SyntheticRequest, TrafficGenerator

N = 4000


@pytest.fixture(scope="module")
def sample() -> list[SyntheticRequest]:
    return list(TrafficGenerator(seed=5).requests(N))


def test_same_seed_same_sequence() -> None:
    a = list(TrafficGenerator(seed=42).requests(300))
    b = TrafficGenerator(seed=42)
    # Consumed one by one instead of through requests(): the same sequence.
    b_list = [b.request() for _ in range(300)]
    assert [orjson.dumps(x.request) for x in a] == [orjson.dumps(x.request) for x in b_list]
    assert [x.bids for x in a] == [x.bids for x in b_list]
    assert [x.timestamp for x in a] == [x.timestamp for x in b_list]


def test_other_seed_other_sequence() -> None:
    a = [s.request["id"] for s in TrafficGenerator(seed=1).requests(50)]
    b = [s.request["id"] for s in TrafficGenerator(seed=2).requests(50)]
    assert a != b


def test_bidder_names_and_count() -> None:
    assert TrafficGenerator(n_bidders=16).bidders[:2] == ["dsp-01", "dsp-02"]
    assert len(TrafficGenerator(n_bidders=3).bidders) == 3
    with pytest.raises(ValueError, match="n_bidders"):
        TrafficGenerator(n_bidders=0)


def test_every_request_is_valid_openrtb(sample: list[SyntheticRequest]) -> None:
    bidders = frozenset(TrafficGenerator(seed=5).bidders)
    ids = set()
    for sr in sample:
        req = parse_bid_request(orjson.dumps(sr.request))
        ids.add(req["id"])
        assert ("site" in req) != ("app" in req)
        assert sr.bids <= bidders
    assert len(ids) == len(sample)


def test_bid_rates_are_realistic(sample: list[SyntheticRequest]) -> None:
    counts = Counter(b for sr in sample for b in sr.bids)
    rates = {f"dsp-{i:02d}": counts[f"dsp-{i:02d}"] / N for i in range(1, 17)}
    assert all(0.01 <= r <= 0.25 for r in rates.values()), rates
    assert max(rates.values()) > 2 * min(rates.values())  # DSPs differ


def test_traffic_mix(sample: list[SyntheticRequest]) -> None:
    reqs = [s.request for s in sample]
    app_share = sum("app" in r for r in reqs) / N
    assert 0.4 < app_share < 0.6
    devices = Counter(r["device"]["devicetype"] for r in reqs)
    assert {2, 3, 4, 5} <= set(devices)  # desktop, CTV, phone, tablet
    assert devices[4] == max(devices.values())  # phones dominate
    countries = Counter(r["device"]["geo"]["country"] for r in reqs)
    assert countries.most_common(1)[0][0] == "USA"
    assert len(countries) >= 15
    sizes = Counter(
        (f["w"], f["h"])
        for r in reqs
        for imp in r["imp"]
        if "banner" in imp
        for f in imp["banner"]["format"][:1]
    )
    assert {(300, 250), (320, 50), (728, 90), (160, 600), (300, 600)} <= set(sizes)
    media = Counter(
        k for r in reqs for imp in r["imp"] for k in ("banner", "video", "native") if k in imp
    )
    assert media["banner"] > media["video"] > 0
    assert media["native"] > 0


def test_publishers_are_long_tailed(sample: list[SyntheticRequest]) -> None:
    pubs = Counter((s.request.get("site") or s.request["app"])["publisher"]["id"] for s in sample)
    top10 = sum(n for _, n in pubs.most_common(10))
    assert top10 > 0.1 * N  # a head...
    assert sum(1 for n in pubs.values() if n == 1) > 100  # ...and a long tail


def test_floors_are_lognormal_like(sample: list[SyntheticRequest]) -> None:
    floors = [imp["bidfloor"] for s in sample for imp in s.request["imp"]]
    assert min(floors) >= 0
    assert statistics.mean(floors) > statistics.median(floors)  # right-skewed
    video = [imp["bidfloor"] for s in sample for imp in s.request["imp"] if "video" in imp]
    banner = [imp["bidfloor"] for s in sample for imp in s.request["imp"] if "banner" in imp]
    assert statistics.median(video) > 2 * statistics.median(banner)


def test_timestamps_cover_days_and_hours(sample: list[SyntheticRequest]) -> None:
    gen = TrafficGenerator(seed=5)
    ts = [s.timestamp for s in sample]
    assert min(ts) >= gen.start
    assert max(ts) < gen.start + gen.days * 86400
    hours = Counter(int(t // 3600 % 24) for t in ts)
    days = {int((t - gen.start) // 86400) for t in ts}
    assert len(hours) == 24
    assert len(days) == gen.days
    assert max(hours.values()) > 2 * min(hours.values())  # a daily cycle


def test_bids_depend_on_the_request(sample: list[SyntheticRequest]) -> None:
    # Hidden targeting: at least one DSP bids much more on some country than on average.
    lift = 0.0
    for dsp in (f"dsp-{i:02d}" for i in range(1, 17)):
        overall = sum(dsp in s.bids for s in sample) / N
        by_country: Counter[str] = Counter()
        totals: Counter[str] = Counter()
        for s in sample:
            c = s.request["device"]["geo"]["country"]
            totals[c] += 1
            by_country[c] += dsp in s.bids
        rates = [by_country[c] / totals[c] for c in totals if totals[c] >= 100]
        if overall > 0:
            lift = max(lift, max(rates) / overall)
    assert lift > 1.5
