"""The fast path against the pure-Python reference, one check per fuzz target.

Each `check_*` takes the bytes a client could send and raises `DisagreementError` when the native
code and the reference differ: other decisions, a score further than `SCORE_TOLERANCE` away,
another error, or a reply from one side only. A crash or a sanitizer report ends the process
instead. The same checks replay the seed corpus and every kept regression in the unit tests
(tests/unit/test_fuzz_regressions.py), without atheris.

- frame: the native `known_score_call` (codec.c) against `known_score_call_py`, and the
  hand-written `score` argument decoder against thriftpy2's.
- scan: `select_request` (request_scan.h) against orjson: never accepts what orjson rejects,
  and what it builds encodes (natively) to what orjson's parse encodes to in Python.
- encode: the native `RequestEncoder` (request_encode.h) against `_encode_python` and the
  numpy row fill, on whatever orjson parses.
- call: the server's fast path (`ScorePath.call`, score_path.h, then `FrameHandler.handle`)
  against thriftpy2's processor over a pure-Python service (XGBoost, `_encode_python`).
"""

from __future__ import annotations

import ctypes
import dataclasses
import functools
import math
import struct
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import orjson
from thriftpy2.protocol import TCyBinaryProtocol

# The pure-Python protocol and buffer: `thriftpy2.protocol.TBinaryProtocol` is the Cython one,
# which reads past the end of a short frame (see model_server/thrift_bounds.py).
from thriftpy2.protocol import binary as thrift_binary
from thriftpy2.protocol.binary import TBinaryProtocol
from thriftpy2.thrift import TApplicationException, TMessageType, TProcessor
from thriftpy2.transport import TCyMemoryBuffer
from thriftpy2.transport.memory import TMemoryBuffer

from model_server import thrift_contract as tc
from model_server.artifact import load_artifact
from model_server.errors import RequestError
from model_server.fast_codec import (
    MalformedFrameError,
    decode_score_args,
    encode_bidders_tail,
    encode_call,
    generic_call,
    known_score_call_py,
    parse_message_header,
)
from model_server.features import FeaturePipeline
from model_server.metrics import WorkerStats
from model_server.native import _codec
from model_server.native._forest import select_request
from model_server.predictor import XGBoostPredictor, make_predictor
from model_server.service import FrameHandler, ScoringService, ThriftHandler
from model_server.thrift_bounds import OutsideProtocolError, RunsPastEndError, check_call_bounds
from tests.artifacts import train_artifact

NOW = 1_700_000_000.0
SCORE_TOLERANCE = 1e-6
MAX_BIDDERS = 8


class DisagreementError(AssertionError):
    """The fast path and the reference answered the same bytes differently."""


def _agree(condition: bool, what: str, fast: Any = None, ref: Any = None) -> None:
    if not condition:
        raise DisagreementError(f"{what}: fast={fast!r} reference={ref!r}")


class PurePipeline(FeaturePipeline):
    """The pipeline with every native step replaced by its Python reference."""

    def rows(
        self,
        req: Any,
        bidder_idx: Any,
        now: float | None = None,
        out: np.ndarray | None = None,
    ) -> np.ndarray:
        n = len(bidder_idx)
        if out is None:
            out = np.empty((n, self.n_features), dtype=np.float32)
        nums, cols = self._encode_python(req, NOW if now is None else now)
        self._fill_rows_numpy(nums, cols, bidder_idx, out)
        return out


def pure_copy(pipeline: FeaturePipeline) -> PurePipeline:
    pure = PurePipeline.__new__(PurePipeline)
    pure.__dict__.update(pipeline.__dict__)
    pure._native = None
    return pure


@dataclass
class Subject:
    """One trained model, served natively and by the pure-Python reference."""

    pipeline: FeaturePipeline
    fast: FrameHandler
    reference: TProcessor
    bidder_lists: list[list[str]]
    thresholds: dict[str, float]

    def known_tails(self) -> dict[bytes, int]:
        """The frame tails `known_score_call` looks up, as a server that saw the lists has."""
        return {
            encode_bidders_tail([n.encode() for n in b]): i for i, b in enumerate(self.bidder_lists)
        }


@functools.cache
def subject() -> Subject:
    """Trained once per process (a few seconds): 8 bidders, 12 trees of depth 5."""
    out = Path(tempfile.mkdtemp(prefix="rtbserve-fuzz-")) / "model"
    train_artifact(out, seed=3, version="fuzz", requests=2000, bidders=8, trees=12, max_depth=5)
    model = load_artifact(out)
    fast_service = ScoringService(
        model, make_predictor(model.booster, "native"), MAX_BIDDERS, 4, clock=lambda: NOW
    )
    pure_model = load_artifact(out)
    pure_model = dataclasses.replace(pure_model, pipeline=pure_copy(pure_model.pipeline))
    ref_service = ScoringService(
        pure_model, XGBoostPredictor(pure_model.booster), MAX_BIDDERS, 4, clock=lambda: NOW
    )
    fast = FrameHandler(fast_service, WorkerStats())
    reference = TProcessor(tc.ModelServer, ThriftHandler(ref_service, WorkerStats()))
    b = fast_service.bidders
    lists = [[], b[:1], b[:4], b[2:6][::-1], [b[3]] * 2, b[:MAX_BIDDERS], ["no-such-dsp"]]
    for names in lists:  # the server remembers a list the first time it decodes it in full
        call = encode_call(
            tc.ModelServer, "score", 0, bid_request=b'{"id":"w","imp":[{"id":"1"}]}', bidders=names
        )
        fast.handle(call[4:])
    return Subject(
        pipeline=model.pipeline,
        fast=fast,
        reference=reference,
        bidder_lists=lists,
        thresholds=dict(model.manifest.thresholds),
    )


# ---- frame -----------------------------------------------------------------------------------


def _hand_decoded_score_args(frame: bytes) -> tuple[bytes, list[bytes]] | None:
    """The hand-written decoder's (bid_request, names) of a `score` call; None where it
    leaves the frame to thriftpy2; raises MalformedFrameError where it closes the connection."""
    name, mtype, _, pos = parse_message_header(frame)
    if name != "score" or mtype != TMessageType.CALL:
        return None
    return decode_score_args(frame, pos)


def check_frame(frame: bytes) -> None:
    known = subject().known_tails()
    fast = _codec.known_score_call(frame, known)
    ref = known_score_call_py(frame, known)
    _agree(fast == ref, "known_score_call", fast, ref)
    _check_bounds(frame)
    try:
        args = _hand_decoded_score_args(frame)
    except MalformedFrameError:
        return  # closed either way: generic_call, thriftpy2's path, raises the same error
    if args is None:
        return  # not a `score` call the hand-written decoder takes: thriftpy2 decodes it
    bid_request, names = args
    try:
        expected = _thriftpy2_score_args(frame)
    except Exception as exc:
        raise DisagreementError(
            f"decode_score_args took a frame thriftpy2 rejects: {exc!r}"
        ) from None
    _agree((bid_request, names) == expected, "decode_score_args", (bid_request, names), expected)


def _check_bounds(frame: bytes) -> None:
    """`check_call_bounds` takes every `score` call pure-Python thriftpy2 reads in full, and
    the Cython decoder it guards reads what the pure one reads from a call it takes."""
    try:
        check_call_bounds(frame, tc.ModelServer)
    except OutsideProtocolError:
        return  # refused by design, whatever thriftpy2 would do (it may loop for seconds)
    except RunsPastEndError as exc:
        expected = _pure_or_error(frame)
        if expected is UndecidedError:
            return
        _agree(not isinstance(expected, tuple), "check_call_bounds refused", exc, expected)
        return
    expected = _pure_or_error(frame)
    if isinstance(expected, tuple):
        cython = _thriftpy2_score_args(frame, TCyBinaryProtocol, TCyMemoryBuffer)
        _agree(cython == expected, "thriftpy2's Cython decoder", cython, expected)


class UndecidedError(Exception):
    """Pure thriftpy2 skipped more values than the frame has bytes (values that take no bytes,
    STOP or an unknown type, in a long container): it could go on for minutes."""


def _pure_or_error(frame: bytes) -> Any:
    """Pure thriftpy2's reading of a `score` call, the type of its error, or UndecidedError."""
    budget = 4 * len(frame) + 16
    real_skip = thrift_binary.skip

    def bounded_skip(*args: Any) -> Any:
        nonlocal budget
        budget -= 1
        if budget < 0:
            raise UndecidedError
        return real_skip(*args)

    thrift_binary.skip = bounded_skip
    try:
        return _thriftpy2_score_args(frame)
    except UndecidedError:
        return UndecidedError
    except Exception as exc:
        return type(exc)
    finally:
        thrift_binary.skip = real_skip


class ExactBuffer(TMemoryBuffer):  # type: ignore[misc]
    """Raises where a read asks for more than is left: pure thriftpy2's skip of an unexpected
    field otherwise takes a short read without a word, and goes on."""

    def read(self, size: int) -> bytes:
        data: bytes = super().read(size)
        if len(data) < size:
            raise EOFError(f"read of {size} bytes with {len(data)} left")
        return data


def _thriftpy2_score_args(
    frame: bytes, protocol: Any = TBinaryProtocol, buffer: Any = ExactBuffer
) -> tuple[bytes, list[bytes]]:
    """A `score` call's arguments as thriftpy2 decodes them (pure Python by default)."""
    proto = protocol(buffer(frame), decode_response=False)
    name, _, _ = proto.read_message_begin()
    if name != "score":
        raise ValueError(f"not a score call: {name!r}")
    args = tc.ModelServer.score_args()
    args.read(proto)
    names = [n if isinstance(n, bytes) else n.encode() for n in (args.bidders or [])]
    return args.bid_request or b"", names


# ---- scan and encode -------------------------------------------------------------------------


def _bits(values: Iterable[float]) -> bytes:
    return np.array(list(values), dtype=np.float64).tobytes()


def _encoding(encode: Callable[[Any, float], tuple[list[float], list[int]]], req: Any) -> Any:
    try:
        values, columns = encode(req, NOW)
    except (ValueError, OverflowError, TypeError, KeyError, RequestError) as exc:
        return type(exc)
    return _bits(values), list(columns)


def strictly_equal(a: Any, b: Any) -> bool:
    """Equal in value and type all the way down (True is not 1, -0.0 is not 0.0)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, float):
        return struct.pack("<d", a) == struct.pack("<d", b)
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(strictly_equal(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(map(strictly_equal, a, b))
    return bool(a == b)


_PROCESS = ctypes.CDLL(None)
_LSAN_OFF = getattr(_PROCESS, "__lsan_disable", None)
_LSAN_ON = getattr(_PROCESS, "__lsan_enable", None)


def reference_loads(data: bytes) -> Any:
    """orjson's parse, as the reference; LeakSanitizer looks away meanwhile (where it runs).

    orjson (3.10 to 3.13) leaks the key string of an object whose key of more than 64 bytes
    appears twice (about 120 bytes a repeat, found by the encode target). That is orjson's
    leak, not the project's; the fuzz runs check the project's C for leaks,
    so they do not count orjson's allocations."""
    if _LSAN_OFF is None or _LSAN_ON is None:
        return orjson.loads(data)
    _LSAN_OFF()
    try:
        return orjson.loads(data)
    finally:
        _LSAN_ON()


def check_scan(data: bytes) -> None:
    selected = select_request(data)
    try:
        full = reference_loads(data)
    except orjson.JSONDecodeError:
        _agree(selected is None, "select_request took what orjson rejects", selected, "error")
        return
    if selected is None:
        return  # declined: the caller hands the bytes to orjson
    _agree(isinstance(full, dict), "select_request took a non-object", selected, full)
    _agree(strictly_equal(selected.get("id"), full.get("id")), "request id", selected, full)
    pipe = subject().pipeline
    native = pipe.native_encoder
    assert native is not None
    fast = _encoding(native.encode, selected)
    ref = _encoding(pipe._encode_python, full)
    _agree(fast == ref, "features of the selected request", fast, ref)


def check_encode(data: bytes) -> None:
    try:
        req = reference_loads(data)
    except orjson.JSONDecodeError:
        return
    if type(req) is not dict:
        return
    pipe = subject().pipeline
    native = pipe.native_encoder
    assert native is not None
    fast = _encoding(native.encode, req)
    ref = _encoding(pipe._encode_python, req)
    _agree(fast == ref, "encode", fast, ref)
    if not isinstance(ref, tuple):
        return
    idx = list(range(len(pipe.bidders)))[: 1 + len(data) % len(pipe.bidders)]
    rows = np.empty((len(idx), pipe.n_features), dtype=np.float32)
    native.rows(req, NOW, idx, rows)
    expected = np.empty_like(rows)
    values, columns = pipe._encode_python(req, NOW)
    pipe._fill_rows_numpy(values, columns, idx, expected)
    _agree(rows.tobytes() == expected.tobytes(), "rows", rows, expected)


# ---- the whole call --------------------------------------------------------------------------


def _framed(body: bytes) -> bytes:
    return struct.pack(">i", len(body)) + body


def call_input(data: bytes) -> bytes:
    """The framed call a fuzz input stands for.

    First byte even: the rest is a frame body, sent with its right length. Odd: the rest is
    a bid request, sent in a plain `score` call naming one of the remembered bidder lists
    (the next byte picks it), so mutations reach the JSON behind a valid Thrift call.
    """
    if not data:
        return b""
    if data[0] % 2 == 0:
        return _framed(data[1:])
    lists = subject().bidder_lists
    names = lists[data[1] % len(lists)] if len(data) > 1 else []
    return encode_call(tc.ModelServer, "score", data[0], bid_request=data[2:], bidders=names)


def fast_reply(framed: bytes) -> bytes | type[MalformedFrameError]:
    """What the server writes for one whole framed call (worker.py's ThriftConnection)."""
    handler = subject().fast
    written: list[bytes] = []
    path = handler.score_path
    if path is not None and path.call(framed, written.append):
        _agree(len(written) == 1, "ScorePath.call wrote other than one reply", written)
        return written[0]
    _agree(not written, "ScorePath.call declined but wrote", written)
    try:
        return handler.handle(framed[4:])[1]
    except MalformedFrameError:
        return MalformedFrameError


def reference_reply(framed: bytes) -> bytes | type[MalformedFrameError]:
    try:
        return generic_call(subject().reference, framed[4:])[1]
    except MalformedFrameError:
        return MalformedFrameError


def decode_reply(reply: bytes) -> Any:
    """A reply frame as plain data: ("exception", type, message) or ("reply", name, result)."""
    proto = TBinaryProtocol(TMemoryBuffer(reply[4:]))
    name, mtype, seqid = proto.read_message_begin()
    if mtype == TMessageType.EXCEPTION:
        exc = TApplicationException()
        exc.read(proto)
        return ("exception", name, seqid, exc.type, exc.message)
    result = getattr(tc.ModelServer, f"{name}_result")()
    result.read(proto)
    return ("reply", name, seqid, _plain(result))


def _plain(obj: Any) -> Any:
    if isinstance(obj, list):
        return [_plain(v) for v in obj]
    if isinstance(obj, dict):
        return {k: _plain(v) for k, v in obj.items()}
    spec = getattr(obj, "thrift_spec", None)
    if spec is None:
        return obj
    fields = {f[1]: _plain(getattr(obj, f[1])) for f in spec.values()}
    return {"__type__": type(obj).__name__, **fields}


def _same(fast: Any, ref: Any, thresholds: dict[str, float]) -> bool:
    if isinstance(fast, dict) and isinstance(ref, dict):
        if fast.keys() != ref.keys():
            return False
        if fast.get("__type__") == "ModelInfo":  # the one field that names the backend
            fast, ref = dict(fast, backend=None), dict(ref, backend=None)
        if fast.get("__type__") == "BidderScore":
            return _same_score(fast, ref, thresholds)
        return all(_same(fast[k], ref[k], thresholds) for k in fast)
    if isinstance(fast, list | tuple) and type(fast) is type(ref):
        return len(fast) == len(ref) and all(
            _same(a, b, thresholds) for a, b in zip(fast, ref, strict=True)
        )
    if isinstance(fast, float) and isinstance(ref, float):
        return fast == ref or (math.isnan(fast) and math.isnan(ref))
    return type(fast) is type(ref) and bool(fast == ref)


def _same_score(fast: dict[str, Any], ref: dict[str, Any], thresholds: dict[str, float]) -> bool:
    if fast["bidder"] != ref["bidder"]:
        return False
    p, q = fast["probability"], ref["probability"]
    if not abs(p - q) <= SCORE_TOLERANCE:
        return False
    # A decision may differ only where the two scores sit on either side of the threshold.
    near = abs(q - thresholds[ref["bidder"]]) <= SCORE_TOLERANCE
    return fast["forward"] == ref["forward"] or near


def check_call(data: bytes) -> None:
    framed = call_input(data)
    if len(framed) < 4:
        return
    fast = fast_reply(framed)
    ref = reference_reply(framed)
    if fast is MalformedFrameError or ref is MalformedFrameError:
        _agree(fast is ref, "one side closed the connection", fast, ref)
        return
    assert isinstance(fast, bytes)
    assert isinstance(ref, bytes)
    if not ref:  # a oneway call: nothing to send back
        _agree(not fast, "reply to a call that takes none", fast, ref)
        return
    if fast == ref:
        return  # the same bytes (an error reply may echo a method name that is not UTF-8)
    a, b = decode_reply(fast), decode_reply(ref)
    _agree(_same(a, b, subject().thresholds), "reply", a, b)


TARGETS: dict[str, Callable[[bytes], None]] = {
    "frame": check_frame,
    "scan": check_scan,
    "encode": check_encode,
    "call": check_call,
}
