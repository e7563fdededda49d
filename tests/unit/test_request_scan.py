"""The score path's own JSON parser (model_server/native/request_scan.h) against orjson.

`select_request` builds only the fields the encoder reads. Two things must hold on every
input: it never accepts what orjson rejects (it answers None and orjson decides), and what it
builds encodes to exactly what orjson's full parse encodes to, with the request id and the
validation the score path applies seeing the same values.
"""

from __future__ import annotations

import math
import random
import struct
from typing import Any

import numpy as np
import orjson
import pytest

from bench.workload import with_exchange_extras
from model_server.features import FeaturePipeline
from model_server.native._forest import select_request
from tests.fuzz.oracles import strictly_equal
from tests.unit.test_native_encode import (
    FIELD_PATHS,
    IAB_EXAMPLES,
    NOW,
    SWEEP_VALUES,
    _set_path,
    _template,
    pipeline,
    traffic,
)

pytestmark = pytest.mark.native

__all__ = ["pipeline", "traffic"]  # fixtures shared with test_native_encode

IMP = b'"imp":[{"id":"1"}]'
#: what the mutation fuzzer splices in: numbers near the edges, escapes, bytes past ASCII
FRAGMENTS = [
    b"1e5",
    b"e400",
    b"9" * 19,
    b"-0",
    b'"\\u00e9"',
    b'"\\ud800"',
    b"\xc3\xa9",
    b"[]",
    b"{}",
]
FRAGMENTS += [b"null", b',"id":"z"', b',"imp":[]', b'"\\"', b"\xed\xa0\x80"]


def _doc(body: bytes) -> bytes:
    """A minimal valid request with `body` as the value of its id."""
    return b'{"id":' + body + b"," + IMP + b"}"


def _valid_shape(req: Any) -> bool:
    """score_path.h's sp_valid_request: id a str, imp a non-empty list of dicts with str ids."""
    if not isinstance(req, dict) or type(req.get("id")) is not str:
        return False
    imps = req.get("imp")
    return (
        type(imps) is list
        and len(imps) > 0
        and all(type(i) is dict and type(i.get("id")) is str for i in imps)
    )


def _encoding(pipe: FeaturePipeline, req: Any) -> Any:
    try:
        values, columns = pipe._encode(req, NOW)
    except (ValueError, OverflowError, TypeError, KeyError) as exc:
        return (type(exc), str(exc))
    return np.array(values, dtype=np.float64).tobytes(), columns


def _check(pipe: FeaturePipeline | None, raw: bytes) -> bool:
    """select_request(raw) is None or agrees with orjson; True when it took the request."""
    selected = select_request(raw)
    try:
        full = orjson.loads(raw)
    except orjson.JSONDecodeError:
        assert selected is None, raw  # never accepts what orjson rejects
        return False
    if selected is None:
        return False
    assert isinstance(full, dict), raw
    assert strictly_equal(selected.get("id"), full.get("id")), raw
    assert _valid_shape(selected) == _valid_shape(full), raw
    if pipe is not None:
        assert _encoding(pipe, selected) == _encoding(pipe, full), raw
    return True


def test_synthetic_traffic_is_taken_and_encodes_as_orjson_parses_it(
    traffic: list[Any], pipeline: FeaturePipeline
) -> None:
    for sr in traffic:
        assert _check(pipeline, orjson.dumps(sr.request))


def test_requests_with_an_exchanges_extras_are_taken(
    traffic: list[Any], pipeline: FeaturePipeline
) -> None:
    for k, sr in enumerate(traffic[:300]):
        raw = orjson.dumps(with_exchange_extras(sr.request, seed=k))
        assert len(raw) > 1500
        assert _check(pipeline, raw)
        selected = select_request(raw)
        assert selected is not None
        assert "source" not in selected  # never built
        assert "ext" not in selected["imp"][0]


def test_iab_examples_are_taken(pipeline: FeaturePipeline) -> None:
    files = sorted(IAB_EXAMPLES.glob("*.json")) if IAB_EXAMPLES.is_dir() else []
    if not files:
        pytest.skip(f"IAB OpenRTB 2.6 examples not found at {IAB_EXAMPLES} (../shared)")
    for f in files:  # pretty-printed, with whitespace everywhere
        assert _check(pipeline, f.read_bytes()), f.name


def test_every_kind_of_value_in_every_field_encodes_the_same(pipeline: FeaturePipeline) -> None:
    taken = 0
    for kind in ("site", "app", "dooh"):
        for path in FIELD_PATHS:
            for value in [None, *SWEEP_VALUES, 'x\u00e9\\"\n', {"a": [1, {"b": None}]}]:
                req = _template(kind)
                _set_path(req, path, value, delete=False)
                try:
                    raw = orjson.dumps(req)
                except TypeError:  # 10**400 has no JSON form orjson writes
                    continue
                taken += _check(pipeline, raw)
    assert taken > 1000


def test_mutated_bytes_are_taken_only_as_orjson_reads_them(
    traffic: list[Any], pipeline: FeaturePipeline
) -> None:
    rng = random.Random(5)
    bases = [orjson.dumps(_template(k)) for k in ("site", "app", "dooh")]
    bases += [orjson.dumps(with_exchange_extras(sr.request, seed=1)) for sr in traffic[:20]]
    alphabet = b'{}[]",:0123456789.eE-+ \t\n\rtrufalsn\\/u\x00\x1f\x7f\x80\xc3\xa9\xed\xa0\xf4\xff'
    taken = declined = 0
    for _ in range(6000):
        b = bytearray(rng.choice(bases))
        for _ in range(rng.randint(1, 3)):
            if not b:
                break
            at = rng.randrange(len(b))
            op = rng.randrange(5)
            if op == 0:
                b[at] = rng.choice(alphabet)
            elif op == 1:
                b.insert(at, rng.choice(alphabet))
            elif op == 2:
                del b[at]
            elif op == 3:
                b[at:at] = rng.choice(FRAGMENTS)
            else:
                del b[at:]
        if _check(pipeline, bytes(b)):
            taken += 1
        else:
            declined += 1
    assert taken > 500
    assert declined > 500


@pytest.mark.parametrize(
    "text",
    [
        b"",
        b" ",
        b"[]",
        b'"id"',
        b"{",
        b'{"id":"a",' + IMP + b",}",  # trailing comma
        b'{"id":"a",' + IMP + b"} x",  # trailing bytes
        b'{"id":"a",' + IMP + b"}}",
        b"\xef\xbb\xbf{" + IMP + b"}",  # a byte order mark
        b"{\"id\":'a'," + IMP + b"}",
        b'{id:"a",' + IMP + b"}",
        b'{"id":"a" ' + IMP + b"}",  # no comma
        b'{"id":"a",' + IMP + b" /* c */}",
        _doc(b"NaN"),
        _doc(b"Infinity"),
        _doc(b"-Infinity"),
        _doc(b"01"),
        _doc(b"-"),
        _doc(b"1."),
        _doc(b".5"),
        _doc(b"1e"),
        _doc(b"1e+"),
        _doc(b"+1"),
        _doc(b"0x10"),
        _doc(b"1e400"),  # not finite
        _doc(b"tru"),
        _doc(b"nul"),
        _doc(b"True"),
        _doc(b'"a\x01b"'),  # a raw control character
        _doc(b'"a\tb"'),
        _doc(b'"\\x41"'),  # not a JSON escape
        _doc(b'"\\u12"'),
        _doc(b'"\\u12G4"'),
        _doc(b'"\\ud800"'),  # a lone surrogate
        _doc(b'"\\udc00"'),
        _doc(b'"\\ud83d\\ude00"'),  # a pair: valid, but left to orjson
        _doc(b'"\xc0\x80"'),  # an overlong NUL
        _doc(b'"\xe0\x80\xaf"'),  # an overlong '/'
        _doc(b'"\xed\xa0\x80"'),  # a UTF-8 surrogate
        _doc(b'"\xf4\x90\x80\x80"'),  # above U+10FFFF
        _doc(b'"\xf5\x80\x80\x80"'),
        _doc(b'"\xc3"'),  # truncated
        _doc(b'"\xff"'),
        _doc(b'"unterminated'),
        _doc(b"1234567890123456789"),  # 19 digits: orjson's to read
        _doc(b"[" * 80 + b"]" * 80),  # deeper than the parser goes
        b'{"id":"a",' + IMP + b',"user":{"ext":{"x":"\xff"}}}',  # bad bytes in a skipped field
        b'{"id":"a",' + IMP + b',"source":{"x":[1,2,}}',
        b'{"id":"a",' + IMP + b',"tmax":1e500}',  # not finite, though never read
        b'{"id":"a",' + IMP + b',"tmax":12345678901234567890}',
        b'{"\\u0069d":"a",' + IMP + b"}",  # an escaped key: orjson's to read
    ],
)
def test_what_it_leaves_to_orjson(text: bytes) -> None:
    assert select_request(text) is None
    _check(None, text)  # and where orjson takes it, nothing disagrees


def test_strings_and_escapes_are_built_as_orjson_builds_them() -> None:
    texts = [
        b'""',
        b'"plain"',
        b'"caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80"',
        b'"\\"\\\\\\/\\b\\f\\n\\r\\t"',
        b'"\\u0041\\u00e9\\u20ac\\u0000\\uffff\\uFFFD"',
        b'"a\\u002Fb"',
    ]
    for text in texts:
        raw = _doc(text)
        selected = select_request(raw)
        assert selected is not None, text
        assert strictly_equal(selected["id"], orjson.loads(raw)["id"]), text


def test_numbers_are_built_as_orjson_builds_them() -> None:
    rng = random.Random(3)
    texts = [b"0", b"-0", b"7", b"-12", b"999999999999999999", b"-999999999999999999"]
    texts += [b"0.0", b"-0.0", b"0.1", b"0.11", b"1e2", b"1E-2", b"2.5e+3", b"-1.5e-7"]
    texts += [b"1.7976931348623157e308", b"5e-324", b"2.2250738585072014e-308", b"1e-400"]
    texts += [b"0.30000000000000004", b"123456789012345.6", b"9007199254740993.0"]
    for _ in range(3000):
        v = struct.unpack("<d", rng.getrandbits(64).to_bytes(8, "little"))[0]
        if math.isfinite(v):
            texts.append(repr(v).encode())
        digits = rng.randint(1, 20)
        mantissa = rng.randrange(10**digits)
        texts.append(f"{mantissa}e{rng.randint(-30, 30)}".encode())
        texts.append(f"{mantissa / 10 ** rng.randint(0, digits)}".encode())
        texts.append(f"{rng.uniform(0, 50):.{rng.randint(0, 17)}f}".encode())
    taken = 0
    for text in texts:
        raw = _doc(text)
        selected = select_request(raw)
        if selected is None:
            continue
        taken += 1
        assert strictly_equal(selected["id"], orjson.loads(raw)["id"]), text
    assert taken > 0.9 * len(texts)


def test_duplicate_keys_keep_the_last_value_as_a_dict_does() -> None:
    raw = (
        b'{"id":"a","device":{"os":"iOS","geo":{"country":"FR"}},' + IMP + b","
        b'"device":{"make":"Apple"},"id":"b","imp":[{"id":"2"}]}'
    )
    selected = select_request(raw)
    assert selected == {"id": "b", "device": {"make": "Apple"}, "imp": [{"id": "2"}]}
    assert strictly_equal(selected, {k: orjson.loads(raw)[k] for k in selected})


def test_only_the_fields_read_are_built() -> None:
    raw = orjson.dumps(
        {
            "id": "r",
            "imp": [{"id": "1", "tagid": "t", "native": {"request": "..."}, "banner": {"pos": 1}}],
            "site": {"name": "n", "domain": "d.com", "publisher": {"id": "p", "name": "x"}},
            "device": {"ua": "Mozilla", "ip": "1.2.3.4", "os": "android", "sua": "x"},
            "user": {"data": [{"segment": []}], "geo": {"lat": 1.5, "country": "USA"}},
            "source": {"tid": "t"},
            "tmax": 120,
        }
    )
    assert select_request(raw) == {
        "id": "r",
        "imp": [{"id": "1", "native": {}, "banner": {}}],
        "site": {"domain": "d.com", "publisher": {"id": "p"}},
        "device": {"os": "android", "sua": "x"},  # not an object: built whole
        "user": {"geo": {"country": "USA"}},
    }
