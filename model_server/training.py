"""Training: examples in, a booster, a fitted feature pipeline and per-bidder thresholds out.

    examples = synthetic_examples(n, seed=0, n_bidders=16)      # list[Example]
    examples = list(read_examples("data.jsonl.gz"))             # or s3://bucket/key.jsonl
    write_examples(path, examples)                              # the same JSONL format
    result = train(examples, TrainConfig(trees=60, max_depth=6), progress=None)
    result.booster, result.pipeline, result.thresholds, result.metrics, result.params

The split is by request (a request's bidder rows all land on one side, chosen from the request
id and the seed alone, so a distributed run splits the same way). Per-bidder thresholds
are the highest that keep at least `recall` of the held-out true bids (docs/training-data.md);
the metrics report AUC, the recall reached and the share of request-bidder pairs filtered out.
"""

from __future__ import annotations

import gc
import gzip
import hashlib
import io
import math
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Any, cast

import numpy as np
import numpy.typing as npt
import orjson
import xgboost

from model_server.errors import RequestError
from model_server.features import FeaturePipeline
from model_server.openrtb import validate_bid_request
from model_server.synthetic import TrafficGenerator

# Thresholds sit this far (relatively) below the deciding bid's score, so a serving path that
# sums the same trees in another order (a few ulps apart) still forwards that bid.
THRESHOLD_MARGIN = 1e-5


class TrainingDataError(ValueError):
    """A training data line is malformed; the message names the source and line."""


@dataclass(frozen=True)
class Example:
    """One bid request, the bidders it was offered to, and which of them bid."""

    request: dict[str, Any]
    bidders: tuple[str, ...]
    bids: frozenset[str]
    ts: float | None = None


@dataclass(frozen=True)
class TrainConfig:
    trees: int = 60
    max_depth: int = 6
    eta: float = 0.2
    recall: float = 0.99
    test_fraction: float = 0.2
    seed: int = 0
    threads: int = 0  # 0: all available
    max_bin: int = 128
    min_child_weight: float = 1.0
    # Share of non-bid training pairs kept (weighted up by 1/rate so probabilities stay
    # calibrated): bids are rare, so this cuts training rows and time several-fold.
    negative_rate: float = 0.3
    # Per-bidder shares in place of negative_rate, e.g. (("dsp-01", 0.05),): a bidder that
    # rarely bids can keep far fewer of its non-bids than one that often does.
    bidder_negative_rates: tuple[tuple[str, float], ...] = ()

    def __post_init__(self) -> None:
        if self.trees < 1 or self.max_depth < 1:
            raise ValueError("trees and max_depth must be at least 1")
        if not 0.0 < self.eta <= 1.0:
            raise ValueError("eta must be in (0, 1]")
        if not 0.0 < self.recall <= 1.0:
            raise ValueError("recall must be in (0, 1]")
        if not 0.0 < self.test_fraction < 1.0:
            raise ValueError("test_fraction must be in (0, 1)")
        if not 0.0 < self.negative_rate <= 1.0:
            raise ValueError("negative_rate must be in (0, 1]")
        for bidder, rate in self.bidder_negative_rates:
            if not 0.0 < rate <= 1.0:
                raise ValueError(f"negative rate of {bidder} must be in (0, 1]")

    def negative_rates(self, bidders: Sequence[str]) -> npt.NDArray[np.float64]:
        """The share of non-bid pairs kept for each of `bidders` (the model's order)."""
        own = dict(self.bidder_negative_rates)
        return np.array([own.get(b, self.negative_rate) for b in bidders], dtype=np.float64)


@dataclass
class TrainResult:
    booster: xgboost.Booster
    pipeline: FeaturePipeline
    thresholds: dict[str, float]
    metrics: dict[str, Any]
    params: dict[str, Any] = field(default_factory=dict)


# ---- progress -------------------------------------------------------------------------------
class Progress:
    """Where training reports its steps; the CLI renders it with rich or as plain lines."""

    def start(self, step: str, total: int | None = None) -> None:
        """A step begins (total: units of work, when known)."""

    def advance(self, n: int = 1) -> None:
        """Some units of the current step are done."""

    def done(self, detail: str = "") -> None:
        """The current step finished."""


@contextmanager
def paused_gc() -> Iterator[None]:
    """Pause the cyclic garbage collector while building millions of long-lived objects.

    Each collection walks every live container; with hundreds of thousands of requests in
    memory that is most of the time spent. Nothing built here forms reference cycles.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


# ---- data -----------------------------------------------------------------------------------
def synthetic_examples(
    n: int, seed: int = 0, n_bidders: int = 16, progress: Progress | None = None
) -> list[Example]:
    """`n` generated requests, each offered to every synthetic DSP."""
    prog = progress or Progress()
    gen = TrafficGenerator(seed=seed, n_bidders=n_bidders)
    everyone = tuple(gen.bidders)
    prog.start(f"generating {n} synthetic requests", n)
    out = []
    chunk = max(1, n // 100)
    with paused_gc():
        for i, sr in enumerate(gen.requests(n), 1):
            out.append(Example(sr.request, everyone, sr.bids, sr.timestamp))
            if i % chunk == 0:
                prog.advance(chunk)
    prog.done()
    return out


def _open_source(source: str | Path) -> tuple[IO[bytes], str]:
    name = str(source)
    raw: IO[bytes]
    if name.startswith("s3://"):
        from model_server.artifact import ArtifactError
        from model_server.s3 import _s3_errors, parse_s3_uri, s3_client

        bucket, key = parse_s3_uri(name)
        key = key.rstrip("/")
        try:
            with _s3_errors(bucket, key):
                body = s3_client().get_object(Bucket=bucket, Key=key)["Body"]
                raw = io.BytesIO(body.read())
        except ArtifactError as exc:
            raise TrainingDataError(str(exc)) from None
    else:
        try:
            raw = Path(name).open("rb")  # noqa: SIM115 - returned to the caller, who closes it
        except OSError as exc:
            raise TrainingDataError(f"{name}: cannot open: {exc.strerror}") from None
    if name.endswith(".gz"):
        return cast(IO[bytes], gzip.GzipFile(fileobj=raw, mode="rb")), name
    return raw, name


def read_examples(source: str | Path) -> Iterator[Example]:
    """Examples from a JSONL (or .jsonl.gz) file, local or s3://; see docs/training-data.md."""
    f, name = _open_source(source)
    with f:
        lineno = 0
        try:
            for line in f:
                lineno += 1
                if line.strip():
                    yield parse_example(line, f"{name}:{lineno}")
        except (OSError, EOFError) as exc:  # a truncated or corrupt .gz
            raise TrainingDataError(f"{name}:{lineno + 1}: cannot read: {exc}") from None


def parse_example(line: bytes | str, where: str = "line") -> Example:
    """One JSONL line -> Example; TrainingDataError names `where` and the problem."""
    try:
        obj = orjson.loads(line)
    except orjson.JSONDecodeError as exc:
        raise TrainingDataError(f"{where}: not valid JSON: {exc}") from None
    if not isinstance(obj, dict):
        raise TrainingDataError(f"{where}: each line must be a JSON object")
    return example_from_object(obj, where)


def example_from_object(obj: dict[str, Any], where: str) -> Example:
    """A decoded record (JSONL line, Parquet row) -> Example; TrainingDataError names `where`."""
    if "request" not in obj:
        raise TrainingDataError(f"{where}: missing 'request'")
    try:
        request = validate_bid_request(obj["request"], "request.")
    except RequestError as exc:
        raise TrainingDataError(f"{where}: {exc.message}") from None
    bidders = obj.get("bidders")
    if (
        not isinstance(bidders, list)
        or not bidders
        or not all(isinstance(b, str) and b for b in bidders)
    ):
        raise TrainingDataError(f"{where}: 'bidders' must be a non-empty array of names")
    if len(set(bidders)) != len(bidders):
        raise TrainingDataError(f"{where}: 'bidders' lists a bidder twice")
    bids = obj.get("bids", [])
    if not isinstance(bids, list) or not all(isinstance(b, str) for b in bids):
        raise TrainingDataError(f"{where}: 'bids' must be an array of names")
    stray = sorted(set(bids) - set(bidders))
    if stray:
        raise TrainingDataError(f"{where}: 'bids' names {stray} not among 'bidders'")
    ts = obj.get("ts")
    if ts is not None and (
        not isinstance(ts, (int, float)) or isinstance(ts, bool) or not math.isfinite(ts)
    ):
        raise TrainingDataError(f"{where}: 'ts' must be seconds since the epoch")
    return Example(request, tuple(bidders), frozenset(bids), None if ts is None else float(ts))


def write_examples(path: str | Path, examples: Iterable[Example]) -> int:
    """Write examples as JSONL (gzip when the name ends in .gz); returns how many."""
    p = Path(path)
    n = 0
    gz = p.name.endswith(".gz")
    with cast(IO[bytes], gzip.open(p, "wb")) if gz else p.open("wb") as f:
        for ex in examples:
            obj: dict[str, Any] = {
                "request": ex.request,
                "bidders": list(ex.bidders),
                "bids": sorted(ex.bids),
            }
            if ex.ts is not None:
                obj["ts"] = ex.ts
            f.write(orjson.dumps(obj) + b"\n")
            n += 1
    return n


# ---- metrics --------------------------------------------------------------------------------
def auc(scores: npt.ArrayLike, labels: npt.ArrayLike) -> float | None:
    """ROC AUC by the rank-sum formula (ties averaged); None without both classes."""
    s = np.asarray(scores, dtype=np.float64)
    y = np.asarray(labels).astype(bool)
    n_pos = int(y.sum())
    n_neg = len(y) - n_pos
    if n_pos == 0 or n_neg == 0:
        return None
    # Average ranks (1-based) with ties sharing the mean of their positions.
    _, inverse, counts = np.unique(s, return_inverse=True, return_counts=True)
    ends = np.cumsum(counts)
    ranks = (ends - (counts - 1) / 2.0)[inverse]
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def recall_threshold(scores: npt.ArrayLike, labels: npt.ArrayLike, recall: float) -> float:
    """The highest threshold t with share(score >= t | bid) >= recall (0.0 without bids)."""
    s = np.asarray(scores, dtype=np.float64)
    y = np.asarray(labels).astype(bool)
    pos = np.sort(s[y])
    if len(pos) == 0:
        return 0.0
    # Dropping the k lowest-scored bids still keeps n - k >= recall * n of them.
    k = math.floor((1.0 - recall) * len(pos) + 1e-9)
    return max(0.0, float(pos[k]) * (1.0 - THRESHOLD_MARGIN))


def logloss(p: npt.NDArray[np.float64], y: npt.NDArray[np.bool_]) -> float:
    q = np.clip(p, 1e-7, 1 - 1e-7)
    return float(-np.mean(np.where(y, np.log(q), np.log1p(-q))))


# ---- training -------------------------------------------------------------------------------
def is_held_out(example: Example, seed: int, test_fraction: float) -> bool:
    """Whether `example` is in the held-out split: a hash of its request id and the seed, so
    every process (and every partition of a distributed run) splits the same requests."""
    rid = example.request.get("id", "")
    digest = hashlib.blake2b(f"{seed}:{rid}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") < test_fraction * 2.0**64


def split_examples(
    examples: Iterable[Example], seed: int, test_fraction: float
) -> tuple[list[Example], list[Example]]:
    """(train, held-out), each in the input's order."""
    train_set: list[Example] = []
    test: list[Example] = []
    for e in examples:
        (test if is_held_out(e, seed, test_fraction) else train_set).append(e)
    return train_set, test


class _IterationProgress(xgboost.callback.TrainingCallback):
    def __init__(self, progress: Progress) -> None:
        super().__init__()
        self.progress = progress

    def after_iteration(self, model: Any, epoch: int, evals_log: Any) -> bool:
        self.progress.advance(1)
        return False


def _design(
    pipeline: FeaturePipeline, examples: Sequence[Example], default_now: float
) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float32], npt.NDArray[np.intp]]:
    """Feature rows (through pipeline.matrix), labels and each row's bidder index."""
    x = pipeline.matrix(
        [e.request for e in examples],
        [e.bidders for e in examples],
        [default_now if e.ts is None else e.ts for e in examples],
    )
    labels = np.fromiter(
        (b in e.bids for e in examples for b in e.bidders), dtype=np.float32, count=len(x)
    )
    index = {b: i for i, b in enumerate(pipeline.bidders)}
    who = np.fromiter((index[b] for e in examples for b in e.bidders), dtype=np.intp, count=len(x))
    return x, labels, who


def sample_negatives(
    examples: Sequence[Example], rate: float | Mapping[str, float], rng: np.random.Generator
) -> list[Example]:
    """Each example keeps all its bidders that bid and each other bidder with probability rate
    (one rate, or a rate per bidder name)."""
    if isinstance(rate, float | int):
        if rate >= 1.0:
            return list(examples)
        rates: Mapping[str, float] = _Constant(float(rate))
    else:
        rates = rate
    out = []
    for e in examples:
        draws = rng.random(len(e.bidders))
        bidders = tuple(
            b for b, u in zip(e.bidders, draws, strict=True) if b in e.bids or u < rates[b]
        )
        if bidders:
            out.append(Example(e.request, bidders, e.bids, e.ts))
    return out


class _Constant(dict[str, float]):
    """A rate for every bidder name."""

    def __init__(self, value: float) -> None:
        super().__init__()
        self.value = value

    def __missing__(self, key: str) -> float:
        return self.value


def sampled_design(
    pipeline: FeaturePipeline,
    examples: Sequence[Example],
    cfg: TrainConfig,
    rng: np.random.Generator,
    default_now: float = 0.0,
) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float32], npt.NDArray[np.float32]]:
    """Training rows of `examples` after negative sampling: features, labels and the weights
    (1 for bids, 1/rate for the non-bids kept) that keep predicted probabilities calibrated."""
    rates = cfg.negative_rates(pipeline.bidders)
    by_name = dict(zip(pipeline.bidders, rates.tolist(), strict=True))
    sampled = sample_negatives(examples, by_name, rng) if (rates < 1.0).any() else examples
    x, y, who = _design(pipeline, sampled, default_now)
    weights = np.where(y > 0, 1.0, 1.0 / rates[who]).astype(np.float32)
    return x, y, weights


def train(
    examples: Sequence[Example], config: TrainConfig | None = None, progress: Progress | None = None
) -> TrainResult:
    """Fit the pipeline and an XGBoost forest; evaluate and pick thresholds on held-out requests."""
    with paused_gc():
        return _train(examples, config, progress)


def _train(
    examples: Sequence[Example], config: TrainConfig | None, progress: Progress | None
) -> TrainResult:
    cfg = config or TrainConfig()
    prog = progress or Progress()
    if len(examples) < 10:
        raise ValueError(f"need at least 10 examples to train and evaluate, got {len(examples)}")
    started = time.perf_counter()
    bidders = sorted({b for e in examples for b in e.bidders})
    rng = np.random.default_rng(cfg.seed)
    train_set, test = split_examples(examples, cfg.seed, cfg.test_fraction)
    if not train_set or not test:
        raise ValueError(
            f"the split by request id left {len(train_set)} training and {len(test)} held-out "
            "requests; use more data or another --test-fraction"
        )
    # Examples without a timestamp share one fixed time: their time features carry no signal.
    no_ts = 0.0

    prog.start("fitting vocabularies and bid-rate tables")
    pipeline = FeaturePipeline.fit(
        [e.request for e in train_set],
        bidders,
        bids=[e.bids for e in train_set],
        candidates=[e.bidders for e in train_set],
        nows=[no_ts if e.ts is None else e.ts for e in train_set],
    )
    prog.done()
    prog.start("building feature rows")
    x_train, y_train, weights = sampled_design(pipeline, train_set, cfg, rng, no_ts)
    x_test, y_test, who_test = _design(pipeline, test, no_ts)
    prog.done(
        f"{len(x_train)} train / {len(x_test)} held-out pairs, {pipeline.n_features} features"
    )

    params = booster_params(cfg)
    dtrain = xgboost.QuantileDMatrix(x_train, label=y_train, weight=weights, max_bin=cfg.max_bin)
    del x_train
    prog.start(f"training {cfg.trees} trees (max_depth {cfg.max_depth})", cfg.trees)
    fit_started = time.perf_counter()
    booster = xgboost.train(
        params, dtrain, num_boost_round=cfg.trees, callbacks=[_IterationProgress(prog)]
    )
    fit_seconds = time.perf_counter() - fit_started
    prog.done()
    del dtrain

    prog.start("evaluating on held-out requests")
    p = np.asarray(booster.inplace_predict(x_test), dtype=np.float64)
    thresholds, metrics = evaluate(pipeline.bidders, p, y_test.astype(bool), who_test, cfg.recall)
    prog.done()
    metrics |= {
        "requests_train": len(train_set),
        "requests_test": len(test),
        "pairs_train": sum(len(e.bidders) for e in train_set),
        "pairs_train_sampled": len(y_train),
        "pairs_test": len(y_test),
        "fit_seconds": round(fit_seconds, 3),
        "total_seconds": round(time.perf_counter() - started, 3),
    }
    return finish(booster, pipeline, thresholds, metrics=metrics, params=params, cfg=cfg)


def booster_params(cfg: TrainConfig) -> dict[str, Any]:
    return {
        "objective": "binary:logistic",
        "tree_method": "hist",
        "max_depth": cfg.max_depth,
        "eta": cfg.eta,
        "max_bin": cfg.max_bin,
        "min_child_weight": cfg.min_child_weight,
        "eval_metric": "logloss",
        "seed": cfg.seed,
        "nthread": cfg.threads,
    }


def finish(
    booster: xgboost.Booster,
    pipeline: FeaturePipeline,
    thresholds: dict[str, float],
    *,
    metrics: dict[str, Any],
    params: dict[str, Any],
    cfg: TrainConfig,
) -> TrainResult:
    booster.feature_names = pipeline.feature_names
    params_out = {**params, "trees": cfg.trees, **{"config": asdict(cfg)}}
    return TrainResult(booster, pipeline, thresholds, metrics, params_out)


def evaluate(
    bidders: Sequence[str],
    p: npt.NDArray[np.float64],
    y: npt.NDArray[np.bool_],
    who: npt.NDArray[np.intp],
    recall: float,
) -> tuple[dict[str, float], dict[str, Any]]:
    """Per-bidder thresholds keeping `recall` of the held-out bids, and the held-out metrics."""
    thresholds: dict[str, float] = {}
    per_bidder: dict[str, Any] = {}
    kept = np.zeros(len(p), dtype=bool)
    for i, b in enumerate(bidders):
        m = who == i
        thr = recall_threshold(p[m], y[m], recall)
        thresholds[b] = thr
        fwd = p[m] >= thr
        kept[m] = fwd
        n_pos = int(y[m].sum())
        per_bidder[b] = {
            "auc": auc(p[m], y[m]),
            "threshold": thr,
            "pairs": int(m.sum()),
            "bids": n_pos,
            "bid_rate": n_pos / int(m.sum()) if m.any() else 0.0,
            "recall": float(fwd[y[m]].mean()) if n_pos else None,
            "filter_rate": float(1.0 - fwd.mean()) if m.any() else 0.0,
        }
    metrics: dict[str, Any] = {
        "auc": auc(p, y),
        "logloss": logloss(p, y),
        "target_recall": recall,
        "recall": float(kept[y].mean()) if y.any() else None,
        "filter_rate": float(1.0 - kept.mean()),
        "bid_rate": float(y.mean()),
        "mean_probability": float(p.mean()),
        "per_bidder": per_bidder,
    }
    return thresholds, metrics
