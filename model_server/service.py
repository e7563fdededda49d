"""Scoring: a Thrift frame in, a Thrift frame out.

    service = ScoringService(loaded_model, predictor, max_bidders=64, max_batch=256)
    scored = service.score(raw_json_bytes, ["dsp-01", "dsp-07"])   # raises RequestError
    rid, idx, p32 = service.score_float32(raw, names)  # the hot path's form: no flags, no copies
    rid, p32 = service.score_indices(raw, idx)      # the same, bidders already resolved
    handler = FrameHandler(service, stats)
    method, reply = handler.handle(frame)          # raises MalformedFrameError

`ScoringService` holds the request path (parse, feature rows, predict, thresholds) and knows
nothing about Thrift. `ThriftHandler` maps it onto the IDL for thriftpy2's processor.
`FrameHandler` decodes and encodes `score`, the hot call, by hand (model_server/fast_codec.py)
and sends everything else through thriftpy2.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import orjson
from numpy.typing import NDArray
from thriftpy2.thrift import TApplicationException, TMessageType, TProcessor

from model_server import thrift_contract as tc
from model_server.artifact import LoadedModel
from model_server.errors import (
    InvalidJsonError,
    MissingFieldError,
    RequestError,
    TooManyBiddersError,
    UnknownBidderError,
)
from model_server.fast_codec import (
    ReplyTemplate,
    ScoreReplyEncoder,
    decode_score_args,
    encode_bidders_tail,
    encode_exception,
    encode_reply,
    generic_call,
    known_score_call,
    parse_message_header,
    split_plain_score_call,
)
from model_server.logs import kv
from model_server.machine import this_machine
from model_server.metrics import INTERNAL, Histogram, WorkerStats
from model_server.openrtb import parse_bid_request
from model_server.predictor import NativePredictor, Predictor

if TYPE_CHECKING:
    from model_server.native._forest import ScorePath

_ScorePath: type[ScorePath] | None
try:  # a known call in one C step (model_server/native/score_path.h), where it is built
    from model_server.native._forest import ScorePath as _ScorePath
except ImportError:  # pragma: no cover - depends on the build
    _ScorePath = None

log = logging.getLogger(__name__)

RESOLVED_LISTS_LIMIT = 4096  # distinct bidder lists remembered; then the cache starts over


class BatchTooLargeError(Exception):
    """A score_batch call with more requests than the server allows."""

    thrift_name = "BatchTooLarge"

    def __init__(self, limit: int, requested: int) -> None:
        super().__init__(f"{requested} requests in one batch; the limit is {limit}")
        self.message = str(self)
        self.limit = limit
        self.requested = requested


@dataclass(slots=True)
class Scored:
    """One request's scores, one entry per candidate bidder in the order asked for."""

    request_id: str
    bidder_idx: list[int]
    probabilities: NDArray[np.float64]
    forward: NDArray[np.bool_]


@dataclass(frozen=True)
class NativeParts:
    """The pieces of a ScoringService that model_server/native/score_path.h drives."""

    encoder: Any  # model_server.native._forest.RequestEncoder
    forest: Any  # model_server.native._forest.Forest
    clock: Callable[[], float] | None  # None: the system clock (time.time)
    max_bidders: int  # rows the path keeps room for


class ScoringService:
    """Bid request bytes and bidder names in, probabilities and forward flags out."""

    def __init__(
        self,
        model: LoadedModel,
        predictor: Predictor,
        max_bidders: int,
        max_batch: int,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if predictor.n_features != model.pipeline.n_features:
            raise ValueError(
                f"predictor takes {predictor.n_features} features, "
                f"the pipeline makes {model.pipeline.n_features}"
            )
        self.model = model
        self.predictor = predictor
        self.max_bidders = max_bidders
        self.max_batch = max_batch
        self._clock = clock
        self._pipeline = model.pipeline
        self.bidders: list[str] = list(model.pipeline.bidders)
        self._all = list(range(len(self.bidders)))
        # Names arrive as str (thriftpy2) or bytes (fast path); one dict answers both.
        self._index: dict[str | bytes, int] = {}
        for i, name in enumerate(self.bidders):
            self._index[name] = i
            self._index[name.encode()] = i
        self._resolved: dict[tuple[str | bytes, ...], list[int]] = {}
        self._thresholds = np.array(
            [model.manifest.thresholds[b] for b in self.bidders], dtype=np.float64
        )
        capacity = max(max_bidders, len(self.bidders))
        rows = np.empty((capacity, model.pipeline.n_features), dtype=np.float32)
        probs = np.empty(capacity, dtype=np.float32)
        # Views of the first n rows and outputs, for every n, made once rather than per call.
        self._row_views = [rows[:n] for n in range(capacity + 1)]
        self._prob_views = [probs[:n] for n in range(capacity + 1)]

    # ---- identity ----------------------------------------------------------------------
    @property
    def name(self) -> str:
        return self.model.manifest.name

    @property
    def version(self) -> str:
        return self.model.manifest.version

    @property
    def sha256(self) -> str:
        return self.model.sha256

    @property
    def backend(self) -> str:
        return self.predictor.backend

    def thresholds(self) -> dict[str, float]:
        return dict(self.model.manifest.thresholds)

    # ---- scoring -----------------------------------------------------------------------
    def resolve_bidders(self, names: Sequence[str] | Sequence[bytes]) -> list[int]:
        """Model indices of `names`; an empty list means every bidder of the model.

        The list returned may be shared with other calls: read it, never change it.
        """
        if not names:
            return self._all
        if len(names) > self.max_bidders:
            raise TooManyBiddersError(self.max_bidders, len(names))
        # Callers name the same candidates call after call: resolve each distinct list once.
        key: tuple[str | bytes, ...] = (*names,)
        idx = self._resolved.get(key)
        if idx is not None:
            return idx
        index = self._index
        try:
            idx = [index[n] for n in names]
        except KeyError:
            unknown = [n for n in names if n not in index]
            raise UnknownBidderError(
                [n.decode("utf-8", "replace") if isinstance(n, bytes) else n for n in unknown]
            ) from None
        if len(self._resolved) >= RESOLVED_LISTS_LIMIT:
            self._resolved.clear()
        self._resolved[key] = idx
        return idx

    @property
    def bidder_thresholds(self) -> list[float]:
        """Each bidder's threshold, in the model's bidder order."""
        return [float(t) for t in self._thresholds]

    def score_float32(
        self, bid_request: bytes, names: Sequence[str] | Sequence[bytes]
    ) -> tuple[str, list[int], NDArray[np.float32]]:
        """(request id, bidder indices, probabilities) without the forward flags.

        The probabilities live in a buffer the next call overwrites: the hot path encodes them
        straight into the reply (`ScoreReplyEncoder.encode_scores`).
        """
        idx = self.resolve_bidders(names)
        request_id, probabilities = self.score_indices(bid_request, idx)
        return request_id, idx, probabilities

    def score_indices(self, bid_request: bytes, idx: list[int]) -> tuple[str, NDArray[np.float32]]:
        """`score_float32` for bidders already resolved (`resolve_bidders`)."""
        req = parse_bid_request(bid_request)
        n = len(idx)
        rows = self._pipeline.rows(req, idx, self._clock(), out=self._row_views[n])
        return req["id"], self.predictor.predict(rows, self._prob_views[n])

    def native_parts(self) -> NativeParts | None:
        """What a native score path needs, when both the encoder and the evaluator are native."""
        encoder = self._pipeline.native_encoder
        if encoder is None or not isinstance(self.predictor, NativePredictor):
            return None
        clock = None if self._clock is time.time else self._clock
        return NativeParts(encoder, self.predictor.forest, clock, len(self._prob_views) - 1)

    def score(self, bid_request: bytes, names: Sequence[str] | Sequence[bytes]) -> Scored:
        request_id, idx, p = self.score_float32(bid_request, names)
        probs = p.astype(np.float64)
        return Scored(request_id, idx, probs, probs >= self._thresholds[idx])

    def score_many(
        self, calls: Sequence[tuple[bytes, Sequence[str] | Sequence[bytes]]]
    ) -> list[Scored | RequestError]:
        """Score many requests with one predict call; a bad request fails only its own entry."""
        if len(calls) > self.max_batch:
            raise BatchTooLargeError(self.max_batch, len(calls))
        results: list[Scored | RequestError | None] = [None] * len(calls)
        prepared: list[tuple[int, dict[str, Any], list[int]]] = []
        total = 0
        for i, (raw, names) in enumerate(calls):
            try:
                idx = self.resolve_bidders(names)
                prepared.append((i, parse_bid_request(raw), idx))
                total += len(idx)
            except RequestError as exc:
                results[i] = exc
        rows = np.empty((total, self._pipeline.n_features), dtype=np.float32)
        now = self._clock()
        start = 0
        for _, req, idx in prepared:
            self._pipeline.rows(req, idx, now, out=rows[start : start + len(idx)])
            start += len(idx)
        probs = self.predictor.predict(rows).astype(np.float64) if total else np.empty(0)
        start = 0
        for i, req, idx in prepared:
            p = probs[start : start + len(idx)]
            start += len(idx)
            results[i] = Scored(req["id"], idx, p, p >= self._thresholds[idx])
        return [r for r in results if r is not None]


# ---- Thrift ---------------------------------------------------------------------------------


def to_thrift_error(exc: RequestError | BatchTooLargeError) -> Any:
    """The IDL exception for a request error."""
    if isinstance(exc, InvalidJsonError):
        return tc.InvalidJson(message=exc.message)
    if isinstance(exc, MissingFieldError):
        return tc.MissingField(message=exc.message, field=exc.field)
    if isinstance(exc, UnknownBidderError):
        return tc.UnknownBidder(message=exc.message, bidders=exc.bidders)
    if isinstance(exc, TooManyBiddersError):
        return tc.TooManyBidders(message=exc.message, limit=exc.limit, requested=exc.requested)
    if isinstance(exc, BatchTooLargeError):
        return tc.BatchTooLarge(message=exc.message, limit=exc.limit, requested=exc.requested)
    # A RequestError subclass the IDL has no exception for: an internal error, not a silent 0.
    raise TypeError(f"no Thrift exception for {type(exc).__name__}") from exc


class ThriftHandler:
    """The ModelServer service for thriftpy2's processor (every call but the fast `score`)."""

    def __init__(self, service: ScoringService, stats: WorkerStats, workers: int = 1) -> None:
        self._service = service
        self._stats = stats
        self._workers = workers
        self._machine = this_machine()

    def _response(self, scored: Scored) -> Any:
        bidders = self._service.bidders
        return tc.ScoreResponse(
            request_id=scored.request_id,
            model_version=self._service.version,
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

    def score(self, bid_request: bytes, bidders: list[str]) -> Any:
        try:
            scored = self._service.score(bid_request, bidders or [])
        except RequestError as exc:
            self._stats.error(exc.thrift_name)
            raise to_thrift_error(exc) from None
        self._stats.bidders.observe(len(scored.bidder_idx))
        return self._response(scored)

    def score_batch(self, requests: list[Any]) -> list[Any]:
        calls = [(r.bid_request or b"", r.bidders or []) for r in (requests or [])]
        try:
            results = self._service.score_many(calls)
        except BatchTooLargeError as exc:
            self._stats.error(exc.thrift_name)
            raise to_thrift_error(exc) from None
        out = []
        for r in results:
            if isinstance(r, Scored):
                self._stats.bidders.observe(len(r.bidder_idx))
                out.append(tc.BatchResult(response=self._response(r)))
            else:
                self._stats.error(r.thrift_name)
                out.append(tc.BatchResult(error_type=r.thrift_name, error_message=r.message))
        return out

    def info(self) -> Any:
        s = self._service
        return tc.ModelInfo(
            name=s.name,
            version=s.version,
            sha256=s.sha256,
            bidders=list(s.bidders),
            feature_count=s.model.pipeline.n_features,
            backend=s.backend,
            thresholds=s.thresholds(),
            trees=s.model.booster.num_boosted_rounds(),
            max_depth=_max_depth(s.model.manifest.params),
            workers=self._workers,
            cpu_limit=self._machine.cpu_limit,
            cpu_model=self._machine.cpu_model,
            arch=self._machine.arch,
        )


def _max_depth(params: dict[str, Any]) -> int | None:
    """The trees' depth limit the model was trained with, where its manifest records it."""
    try:
        return int(params["max_depth"])
    except (KeyError, TypeError, ValueError):
        return None


class FrameHandler:
    """One Thrift frame (without its length prefix) in, one framed reply out.

    A `score` call whose bidder list was resolved before is recognised by its bytes: the rest
    of the frame after the bid request maps to the list's model indices and reply template, so
    such a call skips the argument decoding and the name lookups.
    """

    KNOWN_LISTS_LIMIT = 4096  # distinct bidder lists remembered; then the cache starts over

    def __init__(
        self,
        service: ScoringService,
        stats: WorkerStats,
        max_frame_bytes: int = 1 << 20,
        select_fields: bool = True,
        workers: int = 1,
    ) -> None:
        self._service = service
        self._stats = stats
        self._processor = TProcessor(tc.ModelServer, ThriftHandler(service, stats, workers))
        self._encoder = ScoreReplyEncoder(
            service.bidders, service.version, service.bidder_thresholds
        )
        self._known_lists: dict[bytes, tuple[list[int], ReplyTemplate]] = {}
        self.score_path = self._native_score_path(max_frame_bytes, select_fields)

    def _native_score_path(self, max_frame_bytes: int, select_fields: bool) -> ScorePath | None:
        """Known calls answered in one native step (`ScorePath.call(data, write)`), over the
        same known lists, encoder and evaluator as `handle`; None where those are not native.
        `select_fields`: decode only the request's fields the encoder reads (request_scan.h),
        orjson only for what that parser leaves; False: orjson for every request."""
        parts = self._service.native_parts()
        if _ScorePath is None or parts is None:
            return None
        return _ScorePath(
            parts.encoder,
            parts.forest,
            self._known_lists,
            orjson.loads,
            parts.clock,
            self._encoder.reply_head,
            max_frame_bytes,
            parts.max_bidders,
            self._stats.latency.bounds,
            self._stats.bidders.bounds,
            select=select_fields,
        )

    def fold_native_counts(self) -> None:
        """Add what the native score path counted since the last fold to the stats."""
        if self.score_path is None:
            return
        calls, latency, seconds, bidders, bidders_total = self.score_path.take_counts()
        if not calls:
            return
        stats = self._stats
        stats.requests["score"] = stats.requests.get("score", 0) + calls
        stats.latency.add(Histogram(stats.latency.bounds, latency, seconds))
        stats.bidders.add(Histogram(stats.bidders.bounds, bidders, bidders_total))

    def _internal_error(self, method: str, exc: Exception) -> None:
        self._stats.error(INTERNAL)
        log.error("internal error", exc_info=exc, extra=kv(method=method))

    def handle(self, frame: bytes) -> tuple[str, bytes]:
        """(method, framed reply); raises MalformedFrameError for an undecodable frame."""
        known = known_score_call(frame, self._known_lists)
        if known is not None:
            seqid, bid_request, (idx, template) = known
            return "score", self._score_resolved(seqid, bid_request, idx, template)
        name, mtype, seqid, pos = parse_message_header(frame)
        if name == "score" and mtype == TMessageType.CALL:
            args = decode_score_args(frame, pos)
            if args is not None:
                bid_request, names = args
                plain = split_plain_score_call(frame)
                tail = None if plain is None else plain[2]
                return name, self._score(seqid, bid_request, names, tail)
        return generic_call(self._processor, frame, self._internal_error)

    def _score(
        self, seqid: int, bid_request: bytes, names: list[bytes], tail: bytes | None
    ) -> bytes:
        """Score a decoded call; `tail` is the frame's rest after a plainly written bid request."""
        try:
            idx = self._service.resolve_bidders(names)
        except RequestError as exc:
            return self._request_error(seqid, exc)
        except Exception as exc:
            return self._internal_error_reply(seqid, exc)
        template = self._encoder.template(idx)
        if tail is not None and tail == encode_bidders_tail(names):
            if len(self._known_lists) >= self.KNOWN_LISTS_LIMIT:
                self._known_lists.clear()
            self._known_lists[tail] = (idx, template)
        return self._score_resolved(seqid, bid_request, idx, template)

    def _score_resolved(
        self, seqid: int, bid_request: bytes, idx: list[int], template: ReplyTemplate
    ) -> bytes:
        try:
            request_id, probabilities = self._service.score_indices(bid_request, idx)
        except RequestError as exc:
            return self._request_error(seqid, exc)
        except Exception as exc:
            return self._internal_error_reply(seqid, exc)
        self._stats.bidders.observe(len(idx))
        return self._encoder.encode_with(template, seqid, request_id, probabilities)

    def _internal_error_reply(self, seqid: int, exc: Exception) -> bytes:
        self._internal_error("score", exc)
        return encode_exception(
            "score", seqid, TApplicationException.INTERNAL_ERROR, "internal error in score"
        )

    def _request_error(self, seqid: int, exc: RequestError) -> bytes:
        """The `score` reply carrying the IDL exception for `exc`."""
        self._stats.error(exc.thrift_name)
        result = tc.ModelServer.score_result()
        thrift_exc = to_thrift_error(exc)
        for _, (_, field_name, exc_cls, _) in result.thrift_spec.items():
            if field_name != "success" and isinstance(thrift_exc, exc_cls):
                setattr(result, field_name, thrift_exc)
        return encode_reply(tc.ModelServer, "score", seqid, result)
