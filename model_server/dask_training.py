"""Training on a Dask cluster: the data, fit and evaluation of `training.train`, in partitions.

    with dask_client("local:4") as client:                 # or "tcp://scheduler:8786"
        files = expand_sources(["s3://logs/2026-12-0*/*.jsonl.gz"])
        result = train_distributed(client, files, TrainConfig())

One file is one partition: a task reads it on a worker (streaming, `_CHUNK` examples at a time)
and hands back counts or rows, never the examples. The steps:

1. counts: per partition, the vocabulary counts of its training requests and the bidders it
   names; added in a tree, they give the vocabularies (`VocabularyCounts`).
2. rates: per partition, the integer offer/bid counts of the rate tables under those
   vocabularies; added, they give the tables (`RateCounts`). Both sums are exact, so the
   pipeline equals `FeaturePipeline.fit` over the same training requests.
3. rows: per partition, the feature rows of its training requests after negative sampling
   (weighted back by 1/rate), kept on the workers for `xgboost.dask`.
4. evaluation: per partition, the held-out rows are scored on the worker; only the scores,
   labels and bidder indices (13 bytes a pair) come back, to pick thresholds as in `train`.

The split is the same hash of request id and seed as `train`'s, so both modes hold out the same
requests. A malformed line fails its task with the TrainingDataError (file and line) that
`train` would raise, and nothing is written.
"""

from __future__ import annotations

import operator
import os
import resource
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import reduce
from itertools import islice
from typing import Any, TypeVar

import numpy as np
import numpy.typing as npt
import xgboost

from model_server.data_sources import read_source
from model_server.features import FeaturePipeline, RateCounts, VocabularyCounts, key_columns
from model_server.training import (
    Example,
    Progress,
    TrainConfig,
    TrainingDataError,
    TrainResult,
    _design,
    booster_params,
    evaluate,
    finish,
    is_held_out,
    paused_gc,
    sampled_design,
)

# Examples decoded at a time inside a task: what bounds a task's memory besides its output.
_CHUNK = 1024
# Partial results added per task of the reduction tree.
_SPLIT_EVERY = 8
# Examples without a timestamp share one fixed time (as in `train`).
_NO_TS = 0.0

T = TypeVar("T")


@dataclass
class FirstPass:
    """What step 1 learns from some partitions: vocabulary counts, bidders and sizes."""

    vocab: VocabularyCounts
    bidders: set[str] = field(default_factory=set)
    requests_train: int = 0
    requests_test: int = 0
    pairs_train: int = 0

    def __add__(self, other: FirstPass) -> FirstPass:
        return FirstPass(
            self.vocab + other.vocab,
            self.bidders | other.bidders,
            self.requests_train + other.requests_train,
            self.requests_test + other.requests_test,
            self.pairs_train + other.pairs_train,
        )


def _chunks(source: str, cfg: TrainConfig, held_out: bool) -> Iterator[list[Example]]:
    """One side of the split of one file, `_CHUNK` examples at a time."""
    examples = (
        e for e in read_source(source) if is_held_out(e, cfg.seed, cfg.test_fraction) == held_out
    )
    while chunk := list(islice(examples, _CHUNK)):
        yield chunk


def _nows(chunk: Sequence[Example]) -> list[float]:
    return [_NO_TS if e.ts is None else e.ts for e in chunk]


def first_pass(source: str, cfg: TrainConfig) -> FirstPass:
    """Step 1 over one file."""

    def counted(chunk: list[Example]) -> FirstPass:
        columns = key_columns([e.request for e in chunk], _nows(chunk))
        pairs = sum(len(e.bidders) for e in chunk)
        return FirstPass(VocabularyCounts.of_columns(columns), set(), len(chunk), 0, pairs)

    total = counted([])
    chunk: list[Example] = []
    with paused_gc():
        for e in read_source(source):
            total.bidders.update(e.bidders)
            if is_held_out(e, cfg.seed, cfg.test_fraction):
                total.requests_test += 1
                continue
            chunk.append(e)
            if len(chunk) == _CHUNK:
                total += counted(chunk)
                chunk = []
        return total + counted(chunk)


def rate_pass(source: str, pipeline: FeaturePipeline, cfg: TrainConfig) -> RateCounts:
    """Step 2 over one file."""
    with paused_gc():
        total = pipeline.rate_counts(key_columns([], []), [], [])
        for chunk in _chunks(source, cfg, held_out=False):
            columns = key_columns([e.request for e in chunk], _nows(chunk))
            total += pipeline.rate_counts(
                columns, [e.bids for e in chunk], [e.bidders for e in chunk]
            )
        return total


Rows = tuple[npt.NDArray[np.float32], npt.NDArray[np.float32], npt.NDArray[np.float32]]


def training_rows(source: str, index: int, pipeline: FeaturePipeline, cfg: TrainConfig) -> Rows:
    """Step 3 over one file (the `index`-th): sampled rows, labels and weights."""
    rng = np.random.default_rng([cfg.seed, index])
    parts = []
    with paused_gc():
        for chunk in _chunks(source, cfg, held_out=False):
            parts.append(sampled_design(pipeline, chunk, cfg, rng, _NO_TS))
    if not parts:
        empty = np.zeros(0, dtype=np.float32)
        return np.zeros((0, pipeline.n_features), dtype=np.float32), empty, empty
    return (
        np.concatenate([p[0] for p in parts]),
        np.concatenate([p[1] for p in parts]),
        np.concatenate([p[2] for p in parts]),
    )


Scored = tuple[npt.NDArray[np.float32], npt.NDArray[np.bool_], npt.NDArray[np.int32]]


def held_out_scores(
    source: str, pipeline: FeaturePipeline, booster: xgboost.Booster, cfg: TrainConfig
) -> Scored:
    """Step 4 over one file: scores, labels and bidder indices of its held-out pairs."""
    booster.set_param({"nthread": 1})
    p, y, who = [], [], []
    with paused_gc():
        for chunk in _chunks(source, cfg, held_out=True):
            x, labels, bidder = _design(pipeline, chunk, _NO_TS)
            p.append(np.asarray(booster.inplace_predict(x), dtype=np.float32))
            y.append(labels.astype(bool))
            who.append(bidder.astype(np.int32))
    if not p:
        return np.zeros(0, np.float32), np.zeros(0, bool), np.zeros(0, np.int32)
    return np.concatenate(p), np.concatenate(y), np.concatenate(who)


def _concat_scored(parts: Sequence[Scored]) -> Scored:
    return (
        np.concatenate([s[0] for s in parts]),
        np.concatenate([s[1] for s in parts]),
        np.concatenate([s[2] for s in parts]),
    )


def _tree_sum(parts: list[Any], add: Callable[[Sequence[T]], T]) -> Any:
    """A tree of delayed `add` calls over `parts`, `_SPLIT_EVERY` at a time."""
    from dask.delayed import delayed

    while len(parts) > 1:
        parts = [
            delayed(add)(parts[i : i + _SPLIT_EVERY]) for i in range(0, len(parts), _SPLIT_EVERY)
        ]
    return parts[0]


def _sum(items: Sequence[T]) -> T:
    return reduce(operator.add, items)


def fit_pipeline(
    client: Any, sources: Sequence[str], cfg: TrainConfig
) -> tuple[FeaturePipeline, FirstPass]:
    """Steps 1 and 2: the feature pipeline of the training split of `sources`."""
    from dask.delayed import delayed

    firsts = [delayed(first_pass)(s, cfg) for s in sources]
    first: FirstPass = client.compute(_tree_sum(firsts, _sum)).result()
    if first.requests_train + first.requests_test < 10:
        n = first.requests_train + first.requests_test
        raise ValueError(f"need at least 10 examples to train and evaluate, got {n}")
    if not first.requests_train or not first.requests_test:
        raise ValueError(
            f"the split by request id left {first.requests_train} training and "
            f"{first.requests_test} held-out requests; use more data or another --test-fraction"
        )
    pipeline = first.vocab.pipeline(sorted(first.bidders))
    shared = client.scatter(pipeline, broadcast=True)
    rates = [delayed(rate_pass)(s, shared, cfg) for s in sources]
    counts: RateCounts = client.compute(_tree_sum(rates, _sum)).result()
    return pipeline.with_rates(counts), first


def train_distributed(
    client: Any,
    sources: Sequence[str],
    config: TrainConfig | None = None,
    progress: Progress | None = None,
) -> TrainResult:
    """`training.train` over files read on the cluster's workers (see the module docstring)."""
    import dask.array as da
    from dask.delayed import delayed
    from distributed import KilledWorker
    from xgboost import dask as dxgb

    cfg = config or TrainConfig()
    prog = progress or Progress()
    started = time.perf_counter()
    try:
        prog.start(f"fitting vocabularies and bid-rate tables over {len(sources)} files")
        pipeline, first = fit_pipeline(client, sources, cfg)
        prog.done(f"{first.requests_train} training / {first.requests_test} held-out requests")

        prog.start("building feature rows on the workers")
        shared = client.scatter(pipeline, broadcast=True)
        nf = pipeline.n_features
        parts = [delayed(training_rows, nout=3)(s, i, shared, cfg) for i, s in enumerate(sources)]
        x = da.concatenate([da.from_delayed(p[0], (np.nan, nf), np.float32) for p in parts])
        y = da.concatenate([da.from_delayed(p[1], (np.nan,), np.float32) for p in parts])
        w = da.concatenate([da.from_delayed(p[2], (np.nan,), np.float32) for p in parts])
        x, y, w = client.persist([x, y, w])
        for a in (x, y, w):  # sizes of the persisted blocks, so every array's shape is known
            a.compute_chunk_sizes()
        n_sampled = int(y.shape[0])
        prog.done(f"{n_sampled} sampled training pairs, {nf} features")

        params = booster_params(cfg)
        params.pop("nthread")  # each worker uses its own threads
        prog.start(f"training {cfg.trees} trees (max_depth {cfg.max_depth}) on the workers")
        fit_started = time.perf_counter()
        dtrain = dxgb.DaskQuantileDMatrix(client, x, y, weight=w, max_bin=cfg.max_bin)
        out = dxgb.train(client, params, dtrain, num_boost_round=cfg.trees)
        fit_seconds = time.perf_counter() - fit_started
        booster: xgboost.Booster = out["booster"]
        del dtrain, x, y, w
        prog.done()

        prog.start("evaluating on held-out requests")
        model = client.scatter(booster, broadcast=True)
        scored = [delayed(held_out_scores)(s, shared, model, cfg) for s in sources]
        p, labels, who = client.compute(_tree_sum(scored, _concat_scored)).result()
        prog.done()
    except KilledWorker as exc:
        raise TrainingDataError(
            f"a worker died running {exc.task}: most often out of memory; split the data into "
            "smaller files or give the workers more memory"
        ) from None
    thresholds, metrics = evaluate(
        pipeline.bidders, p.astype(np.float64), labels, who.astype(np.intp), cfg.recall
    )
    metrics |= {
        "requests_train": first.requests_train,
        "requests_test": first.requests_test,
        "pairs_train": first.pairs_train,
        "pairs_train_sampled": n_sampled,
        "pairs_test": len(labels),
        "fit_seconds": round(fit_seconds, 3),
        "total_seconds": round(time.perf_counter() - started, 3),
        "dask": {"workers": len(client.scheduler_info()["workers"]), "files": len(sources)},
    }
    booster.set_param({"nthread": cfg.threads})
    return finish(
        booster, pipeline, thresholds, metrics=metrics, params=booster_params(cfg), cfg=cfg
    )


def _peak_rss_bytes() -> int:
    """This process's peak resident memory. Linux's VmHWM starts afresh at exec, whereas
    ru_maxrss carries over the high mark of the process that spawned this one."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux


def worker_peak_memory(client: Any) -> dict[str, int]:
    """Each worker process's peak resident memory so far, in bytes, by worker address."""
    peaks: dict[str, int] = client.run(_peak_rss_bytes)
    return peaks


@contextmanager
def dask_client(address: str, memory_limit: str = "auto") -> Iterator[Any]:
    """A client of the scheduler at `address`, or of a LocalCluster for "local" / "local:N"
    (N worker processes of one thread each, `memory_limit` each)."""
    from distributed import Client, LocalCluster

    if address == "local" or address.startswith("local:"):
        _, _, n = address.partition(":")
        try:
            workers = int(n) if n else (os.cpu_count() or 1)
        except ValueError:
            raise ValueError(f"--dask {address!r}: expected local or local:N") from None
        if workers < 1:
            raise ValueError("--dask local:N needs N >= 1")
        with (
            LocalCluster(
                n_workers=workers,
                threads_per_worker=1,
                processes=True,
                memory_limit=memory_limit,
                dashboard_address=":0",
            ) as cluster,
            Client(cluster) as client,
        ):
            yield client
        return
    with Client(address) as client:
        yield client
