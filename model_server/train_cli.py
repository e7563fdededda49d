"""`rtbserve train`: train on synthetic or JSONL data, write an artifact and optionally publish it.

rtbserve train --synthetic 200000 --seed 1 --out ./model
rtbserve train --data s3://bucket/bids/day1.jsonl.gz --out ./model --upload s3://models/rtb/
rtbserve train --dask tcp://scheduler:8786 --data 's3://logs/2026-12-0*/*.jsonl.gz' --out ./model
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
)
from rich.progress import Progress as RichProgress
from rich.table import Table

from model_server.artifact import ArtifactError, default_version, write_artifact
from model_server.data_sources import expand_sources, read_source
from model_server.training import (
    Example,
    Progress,
    TrainConfig,
    TrainingDataError,
    TrainResult,
    paused_gc,
    synthetic_examples,
    train,
)

_DEFAULTS = TrainConfig()


class RichProgressReporter(Progress):
    """A live progress bar per step on a terminal."""

    def __init__(self, console: Console) -> None:
        self._progress = RichProgress(
            SpinnerColumn(),
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=console,
        )
        self._task: Any = None

    def __enter__(self) -> RichProgressReporter:
        self._progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._progress.stop()

    def start(self, step: str, total: int | None = None) -> None:
        self._task = self._progress.add_task(step, total=total)

    def advance(self, n: int = 1) -> None:
        self._progress.advance(self._task, n)

    def done(self, detail: str = "") -> None:
        task = self._progress.tasks[-1]
        self._progress.update(self._task, total=task.total or 1, completed=task.total or 1)
        if detail:
            self._progress.console.print(f"  {detail}")


class LineProgressReporter(Progress):
    """Plain lines, one when a step starts and one when it ends (logs, CI, pipes)."""

    def __init__(self, stream: Any) -> None:
        self._stream = stream
        self._step = ""
        self._t0 = 0.0

    def start(self, step: str, total: int | None = None) -> None:
        self._step, self._t0 = step, time.perf_counter()
        print(f"{step} ...", file=self._stream, flush=True)

    def done(self, detail: str = "") -> None:
        took = time.perf_counter() - self._t0
        extra = f": {detail}" if detail else ""
        print(f"{self._step}: done in {took:.1f}s{extra}", file=self._stream, flush=True)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="rtbserve train",
        description="Train a bidder-filtering model and write an artifact directory.",
    )
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--synthetic", type=int, metavar="N", help="train on N generated requests")
    src.add_argument(
        "--data",
        nargs="+",
        metavar="PATH",
        help="training data files or globs (.jsonl, .jsonl.gz or .parquet; local or s3://), "
        "see docs/training-data.md",
    )
    p.add_argument("--seed", type=int, default=0, help="random seed (data generation, split)")
    p.add_argument("--bidders", type=int, default=16, help="synthetic DSPs (with --synthetic)")
    p.add_argument("--out", type=Path, required=True, help="artifact directory to write")
    p.add_argument("--upload", metavar="S3_URI", help="also publish to s3://bucket/prefix/")
    p.add_argument("--name", default="rtbserve", help="model name (default: %(default)s)")
    p.add_argument("--version", help="model version (default: UTC time, e.g. 20261123-1203)")
    p.add_argument("--trees", type=int, default=_DEFAULTS.trees, help="boosting rounds")
    p.add_argument("--max-depth", type=int, default=_DEFAULTS.max_depth)
    p.add_argument("--eta", type=float, default=_DEFAULTS.eta, help="learning rate")
    p.add_argument("--max-bin", type=int, default=_DEFAULTS.max_bin, help="histogram bins")
    p.add_argument(
        "--recall",
        type=float,
        default=_DEFAULTS.recall,
        help="share of held-out bids each bidder's threshold keeps (default: %(default)s)",
    )
    p.add_argument("--test-fraction", type=float, default=_DEFAULTS.test_fraction)
    p.add_argument(
        "--negative-rate",
        type=float,
        default=_DEFAULTS.negative_rate,
        help="share of non-bid training pairs kept, weighted up (1: all; default: %(default)s)",
    )
    p.add_argument(
        "--bidder-negative-rate",
        action="append",
        default=[],
        metavar="BIDDER=RATE",
        help="share of one bidder's non-bid pairs kept, in place of --negative-rate (repeatable)",
    )
    p.add_argument("--threads", type=int, default=0, help="training threads (0: all)")
    dask = p.add_argument_group("distributed training (the 'dask' extra)")
    dask.add_argument(
        "--dask",
        metavar="ADDRESS",
        help="train on a Dask cluster: a scheduler address (tcp://host:8786) or local[:N] for "
        "N local worker processes; each --data file is one partition",
    )
    dask.add_argument(
        "--dask-memory-limit",
        default="auto",
        metavar="SIZE",
        help="memory limit of each local:N worker, e.g. 2GiB (default: %(default)s)",
    )
    return p


def _bidder_rates(items: Sequence[str]) -> tuple[tuple[str, float], ...]:
    out = []
    for item in items:
        name, sep, rate = item.rpartition("=")
        try:
            if not sep or not name:
                raise ValueError
            out.append((name, float(rate)))
        except ValueError:
            raise ValueError(f"--bidder-negative-rate {item!r}: expected BIDDER=RATE") from None
    return tuple(out)


def _summary(console: Console, metrics: dict[str, Any], thresholds: dict[str, float]) -> None:
    table = Table(title="held-out evaluation", show_lines=False)
    for col in ("bidder", "bid rate", "AUC", "threshold", "recall", "filtered"):
        table.add_column(col, justify="left" if col == "bidder" else "right")

    def pct(x: float | None) -> str:
        return "-" if x is None else f"{100 * x:.1f}%"

    for b, m in metrics["per_bidder"].items():
        table.add_row(
            b,
            pct(m["bid_rate"]),
            "-" if m["auc"] is None else f"{m['auc']:.3f}",
            f"{thresholds[b]:.5f}",
            pct(m["recall"]),
            pct(m["filter_rate"]),
        )
    overall_auc = "-" if metrics["auc"] is None else f"{metrics['auc']:.3f}"
    table.add_row(
        "all",
        pct(metrics["bid_rate"]),
        overall_auc,
        "",
        pct(metrics["recall"]),
        pct(metrics["filter_rate"]),
        style="bold",
    )
    console.print(table)


def _read_all(args: argparse.Namespace, reporter: Progress) -> list[Example]:
    if args.synthetic is not None:
        return synthetic_examples(args.synthetic, args.seed, args.bidders, reporter)
    examples: list[Example] = []
    for source in expand_sources(args.data):
        reporter.start(f"reading {source}")
        before = len(examples)
        with paused_gc():
            examples.extend(read_source(source))
        reporter.done(f"{len(examples) - before} examples")
    return examples


def _train_on_dask(
    args: argparse.Namespace, config: TrainConfig, reporter: Progress, err: Console
) -> TrainResult:
    try:
        from model_server.dask_training import dask_client, train_distributed, worker_peak_memory
    except ImportError as exc:
        raise ValueError(
            f"--dask needs the 'dask' extra (pip install 'rtbserve[dask]'): {exc}"
        ) from None
    sources = expand_sources(args.data)
    with dask_client(args.dask, args.dask_memory_limit) as client:
        result = train_distributed(client, sources, config, reporter)
        peaks = worker_peak_memory(client)
    result.metrics["dask"]["peak_memory_mib"] = {
        addr: round(b / 2**20, 1) for addr, b in sorted(peaks.items())
    }
    for addr, b in sorted(peaks.items()):
        err.print(f"worker {addr}: peak memory {b / 2**20:.0f} MiB", highlight=False)
    return result


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    err = Console(stderr=True)
    out = Console()
    try:
        config = TrainConfig(
            trees=args.trees,
            max_depth=args.max_depth,
            eta=args.eta,
            recall=args.recall,
            test_fraction=args.test_fraction,
            seed=args.seed,
            threads=args.threads,
            max_bin=args.max_bin,
            negative_rate=args.negative_rate,
            bidder_negative_rates=_bidder_rates(args.bidder_negative_rate),
        )
        if args.dask and args.synthetic is not None:
            raise ValueError("--dask trains on --data files")
    except ValueError as exc:
        err.print(f"rtbserve train: {exc}")
        return 2
    if args.synthetic is not None and args.synthetic < 10:
        err.print("rtbserve train: --synthetic needs at least 10 requests")
        return 2
    version = args.version or default_version()
    reporter: Progress
    rich_reporter = RichProgressReporter(err) if err.is_terminal else None
    reporter = rich_reporter or LineProgressReporter(sys.stderr)
    try:
        if rich_reporter is not None:
            rich_reporter.__enter__()
        try:
            if args.dask:
                result = _train_on_dask(args, config, reporter, err)
            else:
                result = train(_read_all(args, reporter), config, reporter)
            reporter.start(f"writing artifact to {args.out}")
            ref = write_artifact(
                args.out,
                result.booster,
                result.pipeline,
                result.thresholds,
                result.metrics,
                name=args.name,
                version=version,
                params=result.params,
            )
            reporter.done()
            published = None
            if args.upload:
                from model_server.s3 import upload_artifact

                reporter.start(f"uploading to {args.upload}")
                published = upload_artifact(ref.path, args.upload)
                reporter.done()
        finally:
            if rich_reporter is not None:
                rich_reporter.__exit__(None, None, None)
    except (TrainingDataError, ArtifactError, ValueError) as exc:
        err.print(f"rtbserve train: {exc}", markup=False, highlight=False)
        return 1
    _summary(out, result.metrics, result.thresholds)
    print(f"artifact: {ref.path}")
    print(f"name: {args.name}  version: {version}")
    print(f"sha256: {ref.sha256}")
    if published is not None:
        print(f"uploaded: {published.uri}")
        print(f"version_id: {published.version_id or '-'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
