"""The native request encoder gives exactly what the Python reference gives.

`FeaturePipeline._encode_python` (over `_extract`) is the reference; the native encoder behind
`_encode` and `rows` must match it bit for bit (float64 values, NaN included, columns, float32
rows) or raise the same error, on synthetic traffic, the IAB examples and mutated requests that
put every type in every field `_extract` reads.
"""

from __future__ import annotations

import copy
import itertools
import math
import pickle
import random
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from model_server import features
from model_server.features import KEY_NAMES, NUMERIC_FEATURES, FeaturePipeline, stable_bucket
from model_server.openrtb import parse_bid_request
from model_server.synthetic import TrafficGenerator

pytestmark = pytest.mark.native

IAB_EXAMPLES = Path(__file__).resolve().parents[2].parent / "shared" / "openrtb-2.6"
BIDDERS = [f"dsp-{i:02d}" for i in range(1, 9)]
NOW = 1_700_000_000.0

Path_ = tuple[str | int, ...]

# Every place _extract reads, under each inventory kind (site, app, dooh).
IMP_PATHS: list[Path_] = [
    ("imp",),
    ("imp", 0),
    ("imp", 1),
    ("imp", 0, "banner"),
    ("imp", 0, "banner", "format"),
    ("imp", 0, "banner", "format", 0),
    ("imp", 0, "banner", "format", 0, "w"),
    ("imp", 0, "banner", "format", 0, "h"),
    ("imp", 0, "banner", "w"),
    ("imp", 0, "banner", "h"),
    ("imp", 1, "banner", "w"),
    ("imp", 1, "banner", "h"),
    ("imp", 0, "video"),
    ("imp", 0, "video", "maxduration"),
    ("imp", 0, "video", "rqddurs"),
    ("imp", 0, "video", "rqddurs", 0),
    ("imp", 0, "video", "plcmt"),
    ("imp", 0, "video", "placement"),
    ("imp", 1, "video", "maxduration"),
    ("imp", 0, "native"),
    ("imp", 0, "audio"),
    ("imp", 0, "bidfloor"),
    ("imp", 1, "bidfloor"),
    ("imp", 0, "bidfloorcur"),
    ("imp", 1, "bidfloorcur"),
    ("imp", 0, "secure"),
    ("imp", 1, "secure"),
    ("imp", 0, "instl"),
    ("imp", 0, "pmp"),
    ("imp", 0, "pmp", "deals"),
    ("imp", 0, "pmp", "private_auction"),
]
INVENTORY_PATHS: list[Path_] = [
    (),
    ("domain",),
    ("page",),
    ("bundle",),
    ("publisher",),
    ("publisher", "id"),
    ("publisher", "cat"),
    ("publisher", "cat", 0),
    ("cat",),
    ("cat", 0),
    ("content",),
    ("content", "cat"),
    ("content", "cat", 0),
]
OTHER_PATHS: list[Path_] = [
    ("device",),
    ("device", "devicetype"),
    ("device", "connectiontype"),
    ("device", "os"),
    ("device", "sua"),
    ("device", "sua", "platform"),
    ("device", "sua", "platform", "brand"),
    ("device", "make"),
    ("device", "geo"),
    ("device", "geo", "country"),
    ("device", "geo", "region"),
    ("device", "ifa"),
    ("device", "js"),
    ("device", "dnt"),
    ("device", "lmt"),
    ("user",),
    ("user", "id"),
    ("user", "buyeruid"),
    ("user", "geo"),
    ("user", "geo", "country"),
    ("user", "geo", "region"),
    ("regs",),
    ("regs", "gdpr"),
    ("regs", "us_privacy"),
    ("regs", "coppa"),
    ("regs", "ext"),
    ("regs", "ext", "gdpr"),
    ("regs", "ext", "us_privacy"),
]
FIELD_PATHS: list[Path_] = [
    *IMP_PATHS,
    *((kind, *p) for kind in ("site", "app", "dooh") for p in INVENTORY_PATHS),
    *OTHER_PATHS,
]

TEXTS = [
    "",
    " ",
    "USD",
    "eur",
    "Android",
    "iOS",
    "APPLE",
    "us",
    "De",
    "ca",
    "IAB1-2",
    "IAB12",
    "IAB",
    "iab3-1",
    "-",
    "IAB-",
    "0000-0000",
    "00000000-0000-0000-0000-000000000000",
    "6D92078A-8246-4BA4-AE5B-76104861E7DC",
    "www.",
    "WWW.Example.COM",
    " \t www.Foo.org \n",
    "http://",
    "://x",
    "HTTPS://WWW.Example.com:8080/path?q=1",
    "example.com/a:b?c",
    "\x1c www.sep.io \x1f",
    "İstanbul.Example",
    "WWW.STRASSE.DE",
    "straße.de",
    "https://www.ÄPFEL.de/x",
    "\u2003www.em-space.org\u2003",
    "\ud800lone-surrogate",
    "日本語.jp",
    "1",
    "0",
]
NUMBERS: list[Any] = [
    0,
    1,
    -1,
    2,
    3,
    7,
    63,
    64,
    -64,
    300,
    2**53 + 1,
    2**63,
    2**64,
    10**30,
    -(10**30),
    10**400,
    -(10**400),
    10**5000,
    0.0,
    -0.0,
    0.5,
    -0.5,
    1.0,
    1.5,
    0.001,
    5e-324,
    1e300,
    -1e300,
    1.7e308,
    math.nan,
    -math.nan,
    math.inf,
    -math.inf,
    True,
    False,
]


def _random_value(rng: random.Random) -> Any:
    kind = rng.randrange(8)
    if kind == 0:
        return rng.choice(TEXTS)
    if kind == 1:  # long-tail values the vocabularies never saw: hash buckets, the cache
        stem = rng.choice(["pub", "Dom.COM", "app.bundle", "ÄPP", "www.tail", "\ud801x"])
        return f"{stem}-{rng.randrange(10**6)}"
    if kind == 2:
        return rng.choice(NUMBERS)
    if kind == 3:
        return None
    if kind == 4:
        return rng.choice(
            [[], [rng.choice(NUMBERS)], [rng.choice(TEXTS)], [{"w": 300, "h": 250}], [{}], [7, 30]]
        )
    if kind == 5:
        return rng.choice([{}, {"w": 320}, {"h": 50}, {"brand": "X"}, {"country": "fr"}])
    if kind == 6:
        return [rng.choice(NUMBERS + TEXTS) for _ in range(rng.randrange(1, 5))]
    return rng.choice(TEXTS + NUMBERS)


def _set_path(req: dict[str, Any], path: Path_, value: Any, delete: bool) -> None:
    """req[path] = value (or del), creating missing containers; a no-op where a step is not
    a container of the right kind."""
    node: Any = req
    for step, nxt in itertools.pairwise(path):
        fresh: Any = {} if isinstance(nxt, str) else [{}]
        if isinstance(step, str):
            if type(node) is not dict:
                return
            if step not in node:
                node[step] = fresh
            node = node[step]
        else:
            if type(node) is not list:
                return
            while len(node) <= step:
                node.append({})
            node = node[step]
    last = path[-1]
    if isinstance(last, str) and type(node) is dict:
        if delete:
            node.pop(last, None)
        else:
            node[last] = value
    elif isinstance(last, int) and type(node) is list:
        while len(node) <= last:
            node.append({})
        if delete:
            del node[last]
        else:
            node[last] = value


def _mutants(bases: list[dict[str, Any]], n: int, seed: int) -> Iterator[dict[str, Any]]:
    rng = random.Random(seed)
    for _ in range(n):
        req = copy.deepcopy(rng.choice(bases))
        for _ in range(rng.randrange(1, 6)):
            path = rng.choice(FIELD_PATHS)
            if path:
                _set_path(req, path, _random_value(rng), delete=rng.random() < 0.25)
        yield req


def _template(kind: str) -> dict[str, Any]:
    """A request that sets every field _extract reads, for one inventory kind."""
    inventory: dict[str, Any] = {
        "domain": "www.Example.com",
        "page": "https://news.example.com/a?b",
        "bundle": "com.example.app",
        "publisher": {"id": "pub-1", "cat": ["IAB3-1"]},
        "cat": ["IAB1-2"],
        "content": {"cat": [603]},
    }
    return {
        "id": "r1",
        "imp": [
            {
                "id": "1",
                "banner": {"w": 300, "h": 250, "format": [{"w": 300, "h": 250}, {"w": 728}]},
                "video": {"maxduration": 30, "rqddurs": [15, 30], "plcmt": 1, "placement": 2},
                "native": {"request": "{}"},
                "audio": {"mimes": ["audio/mp4"]},
                "bidfloor": 0.5,
                "bidfloorcur": "usd",
                "secure": 1,
                "instl": 1,
                "pmp": {"private_auction": 1, "deals": [{"id": "d1"}, {"id": "d2"}]},
            },
            {"id": "2", "banner": {"format": [{"w": 320, "h": 50}]}, "bidfloor": 2},
        ],
        kind: inventory,
        "device": {
            "devicetype": 4,
            "connectiontype": 2,
            "os": "Android",
            "sua": {"platform": {"brand": "Android"}},
            "make": "Samsung",
            "geo": {"country": "de", "region": "by"},
            "ifa": "6D92078A-8246-4BA4-AE5B-76104861E7DC",
            "js": 1,
            "dnt": 0,
            "lmt": 0,
        },
        "user": {"id": "u1", "buyeruid": "b1", "geo": {"country": "fr", "region": "idf"}},
        "regs": {
            "gdpr": 1,
            "us_privacy": "1YNN",
            "coppa": 0,
            "ext": {"gdpr": 0, "us_privacy": "1---"},
        },
    }


# One value of each kind for the exhaustive sweep (the fuzzer draws from larger pools).
SWEEP_VALUES: list[Any] = [
    None,
    "",
    "MiXed.Case",
    " www.İstanbul.COM ",
    "straße",
    0,
    1,
    -0.0,
    2.5,
    True,
    False,
    math.nan,
    math.inf,
    10**400,
    [],
    ["IAB2-3"],
    [{"w": 1, "h": 2}],
    {},
]
_MISSING = object()


def _fit_requests(traffic: list[Any]) -> list[dict[str, Any]]:
    """Training requests, plus non-ASCII values frequent enough to make the vocabularies."""
    unusual = _template("site")
    unusual["imp"][0]["bidfloorcur"] = "eür"
    unusual["site"]["domain"] = "WWW.ÄPFEL.DE"
    unusual["site"]["publisher"]["id"] = "Pub-Ü"
    unusual["device"].update(os="ÄNDROID", make="ŞAMSUNG", geo={"country": "dé", "region": "ßb"})
    return [s.request for s in traffic] + [unusual] * 10


def _reference(pipe: FeaturePipeline) -> FeaturePipeline:
    """The same pipeline on the Python path alone."""
    ref = FeaturePipeline.from_dict(pipe.to_dict())
    ref._native = None
    return ref


def _outcome(fn: Any, *args: Any) -> Any:
    try:
        return fn(*args)
    except (ValueError, OverflowError, TypeError, KeyError) as exc:
        return (type(exc), str(exc))


def _assert_same(
    pipe: FeaturePipeline, ref: FeaturePipeline, req: dict[str, Any], now: float
) -> bool:
    """Native and Python agree on req; True when both encoded it (False: both raised)."""
    got = _outcome(pipe._encode, req, now)
    want = _outcome(ref._encode_python, req, now)
    if isinstance(want[0], type):  # the reference raised
        assert got == want, req
        return False
    assert isinstance(got[0], list), (got, req)
    nums, cols = got
    assert np.array(nums, dtype=np.float64).tobytes() == (
        np.array(want[0], dtype=np.float64).tobytes()
    ), req
    assert cols == want[1], req
    assert all(type(c) is int for c in cols), req
    idx = list(range(len(pipe.bidders)))[::-1]
    rows = pipe.rows(req, idx, now)
    assert rows.tobytes() == ref.rows(req, idx, now).tobytes(), req
    return True


@pytest.fixture(scope="module")
def traffic() -> list[Any]:
    return list(TrafficGenerator(seed=31, n_bidders=8).requests(3000))


@pytest.fixture(scope="module")
def pipeline(traffic: list[Any]) -> FeaturePipeline:
    fit = traffic[:600]
    reqs = _fit_requests(fit)
    pipe = FeaturePipeline.fit(
        reqs,
        BIDDERS,
        bids=[s.bids for s in fit] + [["dsp-01"]] * (len(reqs) - len(fit)),
        nows=[s.timestamp for s in fit] + [NOW] * (len(reqs) - len(fit)),
    )
    assert "şamsung" in pipe.vocabularies["make"].index  # Unicode-aware lower()
    if pipe._native is None:
        pytest.skip("the native extension is not built")
    return pipe


def test_synthetic_traffic_encodes_identically(
    traffic: list[Any], pipeline: FeaturePipeline
) -> None:
    ref = _reference(pipeline)
    for sr in traffic:  # the first 600 were fitted on; the rest carry unseen values too
        assert _assert_same(pipeline, ref, sr.request, sr.timestamp)


def test_iab_examples_encode_identically(pipeline: FeaturePipeline) -> None:
    files = sorted(IAB_EXAMPLES.glob("*.json")) if IAB_EXAMPLES.is_dir() else []
    if not files:
        pytest.skip(f"IAB OpenRTB 2.6 examples not found at {IAB_EXAMPLES} (../shared)")
    ref = _reference(pipeline)
    for f in files:
        req = parse_bid_request(f.read_bytes())
        assert _assert_same(pipeline, ref, req, NOW), f.name


def test_every_field_of_the_templates_is_read_the_same(pipeline: FeaturePipeline) -> None:
    ref = _reference(pipeline)
    for kind in ("site", "app", "dooh"):
        assert _assert_same(pipeline, ref, _template(kind), NOW)
    assert _assert_same(pipeline, ref, {}, NOW)
    assert _assert_same(pipeline, ref, {"imp": "x", "site": [], "device": 3}, NOW)


def test_non_ascii_values_are_cased_as_python_cases_them(
    traffic: list[Any], pipeline: FeaturePipeline
) -> None:
    ref = _reference(pipeline)
    unusual = _fit_requests([])[0]
    assert _assert_same(pipeline, ref, unusual, NOW)
    names = pipeline.request_feature_names
    vector = pipeline.request_vector(unusual, NOW)
    for key, value in [("make", "şamsung"), ("os", "ändroid"), ("cur", "EÜR"), ("country", "DÉ")]:
        assert vector[names.index(f"{key}_code")] == pipeline.vocabularies[key].index[value]


def test_every_kind_of_value_in_every_field_encodes_identically(
    pipeline: FeaturePipeline,
) -> None:
    ref = _reference(pipeline)
    for kind in ("site", "app", "dooh"):
        for path in FIELD_PATHS:
            for value in [_MISSING, *SWEEP_VALUES]:
                req = _template(kind)
                _set_path(req, path, value, delete=value is _MISSING)
                _assert_same(pipeline, ref, req, NOW)


def test_ties_and_orders_across_impressions_encode_identically(
    pipeline: FeaturePipeline,
) -> None:
    ref = _reference(pipeline)
    pool: list[Any] = [None, 0, 0.0, -0.0, 1, 1.0, True, 2**53 + 1, 2.0**53, math.nan, -1]
    fields = [("bidfloor",), ("secure",), ("video", "maxduration"), ("video", "plcmt")]
    for field in fields:
        for first in pool:
            for second in pool:
                req = _template("site")
                _set_path(req, ("imp", 0, *field), first, delete=False)
                _set_path(req, ("imp", 1, *field), second, delete=False)
                _assert_same(pipeline, ref, req, NOW)


def test_mutated_requests_encode_identically(traffic: list[Any], pipeline: FeaturePipeline) -> None:
    ref = _reference(pipeline)
    bases = [_template(k) for k in ("site", "app", "dooh")] * 10 + [s.request for s in traffic[:30]]
    rng = random.Random(7)
    nows = [NOW, 0.0, -1.0, 86_399.5, 1e12, -3.5e9, 1_699_999_999]
    encoded = raised = 0
    for req in _mutants(bases, 4000, seed=11):
        if _assert_same(pipeline, ref, req, rng.choice(nows)):
            encoded += 1
        else:
            raised += 1
    # The fuzzer reaches both outcomes (huge ints and inf make the reference raise).
    assert encoded > 3000
    assert raised > 0


def test_a_clock_that_is_not_finite_raises_the_same_error(pipeline: FeaturePipeline) -> None:
    ref = _reference(pipeline)
    for now in (math.nan, math.inf):
        assert not _assert_same(pipeline, ref, _template("site"), now)


def test_non_dict_requests_take_the_python_path(pipeline: FeaturePipeline) -> None:
    ref = _reference(pipeline)
    req = _template("app")
    proxy = types.MappingProxyType(req)
    idx = [0, 3]
    assert pipeline.rows(proxy, idx, NOW).tobytes() == ref.rows(req, idx, NOW).tobytes()
    native: Any = pipeline._native
    with pytest.raises(TypeError, match="dict"):
        native.encode(proxy, NOW)


def test_unseen_values_get_the_python_codes_and_the_cache_stays_bounded(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(features, "_UNSEEN_CACHE_LIMIT", 25)
    reqs = [s.request for s in TrafficGenerator(seed=2, n_bidders=8).requests(300)]
    pipe = FeaturePipeline.fit(reqs, BIDDERS, min_count=1)
    ref = _reference(pipe)
    pub = KEY_NAMES.index("publisher")
    code_map = pipe._code_maps[pipe._code_keys.index(pub)]
    cross_map = pipe._cross_maps[pipe._cross_keys.index(pub)]
    vocab = pipe.vocabularies["publisher"]
    for i in range(200):
        req = _template("site")
        req["site"]["publisher"]["id"] = f"never-seen-{i}-ü" if i % 2 else f"never-seen-{i}"
        assert _assert_same(pipe, ref, req, NOW)
    n_values = len(vocab.values)
    # The vocabulary, None, and as many remembered values as the bound allows, no more.
    assert len(code_map) == n_values + 25
    assert len(cross_map) == n_values + 25
    remembered = [v for v in code_map if v is not None and v not in vocab.index]
    assert len(remembered) == 24
    for v in remembered:
        assert isinstance(v, str)
        assert code_map[v] == n_values + stable_bucket(v, vocab.hash_buckets)
    # Past the bound, codes are still right, just not remembered.
    req = _template("site")
    req["site"]["publisher"]["id"] = "one-more"
    assert _assert_same(pipe, ref, req, NOW)
    assert "one-more" not in code_map


def test_the_encoder_refuses_a_layout_it_does_not_know(pipeline: FeaturePipeline) -> None:
    encoder_type: Any = type(pipeline._native)
    table = pipeline._bidder_table
    with pytest.raises(ValueError, match="numeric feature names"):
        encoder_type(NUMERIC_FEATURES[::-1], KEY_NAMES, [], [], 2, 10, table)
    with pytest.raises(ValueError, match="key names"):
        encoder_type(NUMERIC_FEATURES, KEY_NAMES[:-1], [], [], 2, 10, table)
    with pytest.raises(TypeError, match="plan"):
        encoder_type(NUMERIC_FEATURES, KEY_NAMES, [(0, [], 0, 0, 0)], [], 2, 10, table)
    with pytest.raises(TypeError, match="float32"):
        encoder_type(NUMERIC_FEATURES, KEY_NAMES, [], [], 2, 10, table.astype(np.float64))


def test_rows_checks_its_buffer_and_bidders(pipeline: FeaturePipeline) -> None:
    native: Any = pipeline._native
    req = _template("site")
    out = np.empty((2, pipeline.n_features), dtype=np.float32)
    with pytest.raises(ValueError, match="shape"):
        native.rows(req, NOW, [0], out)
    with pytest.raises(IndexError, match="bidders"):
        native.rows(req, NOW, [0, len(pipeline.bidders)], out)
    native.rows(req, NOW, [1, 0], out)
    ref = _reference(pipeline)
    assert out.tobytes() == ref.rows(req, [1, 0], NOW).tobytes()


def test_a_pickled_pipeline_rebuilds_its_encoder_over_its_own_tables(
    pipeline: FeaturePipeline,
) -> None:
    clone = pickle.loads(pickle.dumps(pipeline))
    assert clone._native is not None
    assert clone._native is not pipeline._native
    req = _template("app")
    req["app"]["bundle"] = "only.in.the.clone"
    assert clone.rows(req, [2, 0], NOW).tobytes() == pipeline.rows(req, [2, 0], NOW).tobytes()
    bundle = clone._code_maps[clone._code_keys.index(KEY_NAMES.index("bundle"))]
    assert "only.in.the.clone" in bundle  # the clone's encoder writes to the clone's cache
