"""`rtbserve loadgen` flags, parsed into one validated `LoadgenConfig`."""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from loadgen.connections import Target
from loadgen.engine import SendOptions
from loadgen.exit_codes import DESCRIPTIONS
from loadgen.schedule import RateSchedule, parse_duration, parse_rate
from loadgen.shards import Shard

DEFAULT_TARGET = "127.0.0.1:9090"
DEFAULT_DURATION_S = 10.0
DEFAULT_SYNTHETIC_POOL = 10_000
DEFAULT_REPLAY_POOL = 1_000_000

_EXIT_CODES = "\n".join(f"  {int(code)}  {text}" for code, text in DESCRIPTIONS.items())

EPILOG = f"""
traffic: synthetic OpenRTB requests (default; ground truth known, so filtering quality is
reported) or --replay FILE|s3://bucket/key (JSON lines, optionally gzipped: one bid request
per line, or training records {{"request": ..., "bidders": [...], "bids": [...]}}).

Filtering quality is measured on every Nth reply (--quality-sample N, default 10), parsed in
full: the share of (request, bidder) pairs filtered out and the share of true bids forwarded.

exit codes:
{_EXIT_CODES}
Partial results are written whenever a run started.
"""


class UsageError(ValueError):
    """A flag combination that cannot work; reported like an argparse error (exit 2)."""


@dataclass(frozen=True)
class SourceSpec:
    replay: str | None  # None: synthetic
    loop: bool
    seed: int
    synthetic_bidders: int
    bidders: tuple[str, ...]
    pool_size: int
    #: (index, count): this pod's part of the traffic in a sharded run
    part: tuple[int, int] = (0, 1)


@dataclass(frozen=True)
class SaturationSpec:
    slo_p99_ms: float
    start_rate: float
    max_rate: float
    precision: float
    probe_duration: float
    max_probes: int
    #: where the capacity profile goes (a file or s3:// URI), and the objectives it records
    profile_out: str | None = None
    profile_slos_ms: tuple[float, ...] = ()


@dataclass(frozen=True)
class OutputSpec:
    report_json: Path | None
    plot_dir: Path | None
    report_s3: str | None
    inference_model: str | None
    namespace: str | None
    live: bool | None  # None: a live panel when stdout is a terminal


@dataclass(frozen=True)
class LoadgenConfig:
    target: Target
    schedule: RateSchedule
    options: SendOptions
    workers: int
    source: SourceSpec
    saturation: SaturationSpec | None
    slo_p99_ms: float | None
    max_error_ratio: float
    output: OutputSpec
    #: set when this process is one pod of a sharded run (`schedule` is then its share)
    shard: ShardSpec | None = None


@dataclass(frozen=True)
class ShardSpec:
    shard: Shard
    #: the whole run's schedule, over every pod
    run_schedule: RateSchedule
    #: after this pod's run, wait for every pod's result and publish the merged report
    merge: bool
    merge_wait: float


def parse_target(text: str) -> Target:
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise UsageError(f"--target must be HOST:PORT, got {text!r}")
    return Target(host.strip("[]"), int(port))


def _durations(text: str) -> tuple[float, ...]:
    values = tuple(_duration(part) for part in text.split(",") if part.strip())
    if not values:
        raise argparse.ArgumentTypeError("give at least one duration, e.g. 2ms,10ms")
    return values


def _duration(text: str) -> float:
    try:
        return parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _rate(text: str) -> float:
    try:
        return parse_rate(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _rates(text: str) -> list[float]:
    return [_rate(part) for part in text.split(",")]


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {text}")
    return value


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="rtbserve loadgen",
        description="Send OpenRTB traffic to an rtbserve model server on an open-loop schedule "
        "and report latency (from each request's intended send time), throughput, errors and "
        "filtering quality.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--target", default=DEFAULT_TARGET, help="HOST:PORT (default %(default)s)")

    src = p.add_argument_group("traffic")
    src.add_argument("--replay", metavar="URI", help="JSON-lines file, local or s3://")
    src.add_argument("--loop", action="store_true", help="replay the file again when it ends")
    src.add_argument(
        "--seed",
        type=int,
        default=0,
        help="synthetic world seed; use the model's training seed, since the seed also picks "
        "how the synthetic bidders behave. Load traffic is drawn from a stream training never "
        "uses, timed now (default 0)",
    )
    src.add_argument(
        "--synthetic-bidders",
        type=_positive_int,
        default=16,
        metavar="N",
        help="candidate bidders per synthetic request, dsp-01..dsp-N (default 16)",
    )
    src.add_argument(
        "--bidders",
        default="",
        help="comma-separated candidate bidders for replayed lines that name none "
        "(default: none, i.e. every bidder the model knows)",
    )
    src.add_argument(
        "--pool-size",
        type=_positive_int,
        metavar="N",
        help=f"distinct requests encoded before the run (synthetic default "
        f"{DEFAULT_SYNTHETIC_POOL:,}; replay: lines read, default {DEFAULT_REPLAY_POOL:,})",
    )

    rate = p.add_argument_group("rate")
    rate.add_argument(
        "--rate",
        type=_rates,
        metavar="RATE[,RATE...]",
        help="requests per second; a comma list (1000,2000,4000) runs steps (default 1000)",
    )
    rate.add_argument("--ramp", metavar="FROM:TO", help="ramp linearly over --duration")
    rate.add_argument(
        "--step-duration",
        type=_duration,
        metavar="TIME",
        help="length of each step (default: --duration split evenly, else 10s)",
    )
    rate.add_argument(
        "--duration", type=_duration, metavar="TIME", help="length of the run (default 10s)"
    )
    rate.add_argument(
        "--requests", type=_positive_int, metavar="N", help="stop after this many requests"
    )
    rate.add_argument(
        "--warmup",
        type=_duration,
        default=0.0,
        metavar="TIME",
        help="send at the first rate for this long first, unrecorded (default 0)",
    )

    send = p.add_argument_group("sending")
    send.add_argument(
        "--connections", type=_positive_int, default=16, metavar="N", help="total (default 16)"
    )
    send.add_argument(
        "--workers",
        type=_positive_int,
        default=1,
        metavar="N",
        help="sending processes, one CPU each (default 1)",
    )
    send.add_argument(
        "--timeout", type=_duration, default=1.0, metavar="TIME", help="per request (default 1s)"
    )
    send.add_argument(
        "--connect-timeout", type=_duration, default=2.0, metavar="TIME", help="(default 2s)"
    )
    send.add_argument(
        "--max-inflight",
        type=_positive_int,
        default=512,
        metavar="N",
        help="requests waiting per connection; beyond, requests fail as Overloaded",
    )
    send.add_argument(
        "--late-threshold",
        type=_duration,
        default=0.001,
        metavar="TIME",
        help="a send this far behind its intended time counts as late (default 1ms)",
    )
    send.add_argument(
        "--max-lag",
        type=_duration,
        default=1.0,
        metavar="TIME",
        help="requests more than this behind schedule are dropped and counted (default 1s)",
    )
    send.add_argument(
        "--spin-below",
        type=_duration,
        default=0.0,
        metavar="TIME",
        help="poll without sleeping when the next send is due sooner than this (e.g. 200us): "
        "replies are read the moment they land, not after a wake-up, at the cost of a busy "
        "core (default 0: always sleep)",
    )
    send.add_argument(
        "--engine",
        choices=("native", "python"),
        default="native",
        help="the sending loop: native (C, the default) or python (the reference it follows; "
        "also used when the C part is not built)",
    )
    send.add_argument(
        "--quality-sample",
        type=int,
        default=10,
        metavar="N",
        help="parse every Nth reply in full for filtering quality (0: none; default 10)",
    )

    judge = p.add_argument_group("objectives")
    judge.add_argument(
        "--slo-p99", type=_duration, metavar="TIME", help="latency objective for p99, e.g. 2ms"
    )
    judge.add_argument(
        "--max-error-ratio",
        type=float,
        default=0.01,
        metavar="SHARE",
        help="failed share of requests tolerated before exit 5 (default 0.01)",
    )
    judge.add_argument(
        "--find-saturation",
        action="store_true",
        help="search the highest rate whose p99 meets --slo-p99 (probes last --step-duration, "
        "default 5s; the search starts at --rate)",
    )
    judge.add_argument(
        "--max-rate", type=_rate, default=1_000_000.0, metavar="RATE", help="search ceiling"
    )
    judge.add_argument(
        "--profile-out",
        metavar="DEST",
        help="with --find-saturation: search each --profile-slo and write the capacity profile "
        "(JSON, for `rtbserve capacity`) to this file or s3:// URI",
    )
    judge.add_argument(
        "--profile-slo",
        type=_durations,
        default=(0.002, 0.010),
        metavar="TIMES",
        help="the p99 objectives a profile records, comma-separated (default 2ms,10ms)",
    )
    judge.add_argument(
        "--precision",
        type=float,
        default=0.05,
        metavar="SHARE",
        help="the search stops when pass and fail rates are this close (default 0.05)",
    )
    judge.add_argument(
        "--max-probes", type=_positive_int, default=16, metavar="N", help="(default 16)"
    )

    shard = p.add_argument_group("many pods (an Indexed Job)")
    shard.add_argument(
        "--shards",
        type=_positive_int,
        default=1,
        metavar="N",
        help="this run is one of N pods; each offers the rates / N with traffic of its own",
    )
    shard.add_argument(
        "--shard-index",
        type=int,
        metavar="I",
        help="this pod's index, 0..N-1 (default: $JOB_COMPLETION_INDEX, set by an Indexed Job)",
    )
    shard.add_argument(
        "--shard-store",
        metavar="DIR|s3://BUCKET/PREFIX/",
        help="where every pod writes its result (histograms and counters) for the merge",
    )
    shard.add_argument(
        "--merge",
        action="store_true",
        help="the last pod (index N-1), after its run, waits for every pod's result and "
        "publishes the merged report (the report flags apply to the merge only); the others "
        "ignore it. `rtbserve loadgen merge` does the same by hand",
    )
    shard.add_argument(
        "--merge-wait",
        type=_duration,
        default=600.0,
        metavar="DURATION",
        help="how long --merge waits for the other pods (default 600s)",
    )

    out = add_report_arguments(p)
    view = out.add_mutually_exclusive_group()
    view.add_argument(
        "--live",
        dest="live",
        action="store_true",
        default=None,
        help="a live panel (default when stdout is a terminal)",
    )
    view.add_argument(
        "--plain", dest="live", action="store_false", help="one plain line per second"
    )
    return p


def add_report_arguments(p: argparse.ArgumentParser) -> argparse._ArgumentGroup:
    """Where the report goes (also `rtbserve loadgen merge`'s flags)."""
    out = p.add_argument_group("reports")
    out.add_argument("--report-json", type=Path, metavar="PATH", help="write the JSON report")
    out.add_argument("--plot-dir", type=Path, metavar="DIR", help="write PNG plots here")
    out.add_argument("--report-s3", metavar="s3://BUCKET/PREFIX/", help="upload report + plots")
    out.add_argument("--inference-model", metavar="NAME", help="write status.lastLoadTest")
    out.add_argument("--namespace", help="of --inference-model (default: the pod's own)")
    return out


def output_of(args: argparse.Namespace, live: bool | None) -> OutputSpec:
    """The OutputSpec of the flags `add_report_arguments` added."""
    return OutputSpec(
        report_json=args.report_json,
        plot_dir=args.plot_dir,
        report_s3=args.report_s3,
        inference_model=args.inference_model,
        namespace=args.namespace,
        live=live,
    )


def _schedule(args: argparse.Namespace) -> RateSchedule:
    rates: list[float] = args.rate or [1000.0]
    if args.ramp and args.rate:
        raise UsageError("--ramp and --rate exclude each other")
    if args.ramp:
        start, sep, end = args.ramp.partition(":")
        if not sep:
            raise UsageError("--ramp must be FROM:TO, e.g. 1000:8000")
        try:
            lo, hi = parse_rate(start), parse_rate(end)
        except ValueError as exc:
            raise UsageError(f"--ramp: {exc}") from None
        return RateSchedule.ramp(lo, hi, args.duration or DEFAULT_DURATION_S, args.requests)
    if len(rates) > 1:
        if args.step_duration and args.duration:
            raise UsageError("give --step-duration or --duration for steps, not both")
        step = args.step_duration or (
            args.duration / len(rates) if args.duration else DEFAULT_DURATION_S
        )
        return RateSchedule.steps(rates, step, args.requests)
    duration = args.duration or (args.requests / rates[0] if args.requests else DEFAULT_DURATION_S)
    return RateSchedule.fixed(rates[0], duration, args.requests)


def to_config(args: argparse.Namespace) -> LoadgenConfig:
    if args.profile_out and not args.find_saturation:
        raise UsageError("--profile-out records a saturation search: add --find-saturation")
    if args.find_saturation and args.slo_p99 is None and not args.profile_out:
        raise UsageError("--find-saturation needs --slo-p99 (or --profile-out)")
    if args.find_saturation and (args.ramp or (args.rate and len(args.rate) > 1)):
        raise UsageError("--find-saturation takes a single --rate to start from")
    if args.loop and not args.replay:
        raise UsageError("--loop applies to --replay")
    if args.quality_sample < 0:
        raise UsageError("--quality-sample must be >= 0")
    if not 0.0 <= args.max_error_ratio <= 1.0:
        raise UsageError("--max-error-ratio must be between 0 and 1")
    if args.report_s3 and not args.report_s3.startswith("s3://"):
        raise UsageError("--report-s3 must be an s3:// URI")
    pool = args.pool_size or (DEFAULT_REPLAY_POOL if args.replay else DEFAULT_SYNTHETIC_POOL)
    shard = _shard(args)
    options = SendOptions(
        connections=args.connections,
        timeout=args.timeout,
        connect_timeout=args.connect_timeout,
        max_inflight=args.max_inflight,
        late_threshold=args.late_threshold,
        max_lag=args.max_lag,
        warmup=args.warmup,
        quality_every=args.quality_sample,
        spin_below=args.spin_below,
        engine=args.engine,
    )
    saturation = None
    if args.find_saturation:
        profile_slos = tuple(sorted(t * 1000.0 for t in args.profile_slo))
        saturation = SaturationSpec(
            slo_p99_ms=(args.slo_p99 * 1000.0) if args.slo_p99 else profile_slos[0],
            start_rate=(args.rate or [1000.0])[0],
            max_rate=args.max_rate,
            precision=args.precision,
            probe_duration=args.step_duration or 5.0,
            max_probes=args.max_probes,
            profile_out=args.profile_out,
            profile_slos_ms=profile_slos if args.profile_out else (),
        )
    schedule = _schedule(args)
    return LoadgenConfig(
        target=parse_target(args.target),
        schedule=schedule if shard is None else shard.share(schedule),
        options=options,
        workers=args.workers,
        source=SourceSpec(
            replay=args.replay,
            loop=args.loop,
            seed=args.seed,
            synthetic_bidders=args.synthetic_bidders,
            bidders=tuple(b for b in args.bidders.split(",") if b),
            pool_size=pool,
            part=(0, 1) if shard is None else (shard.index, shard.count),
        ),
        saturation=saturation,
        slo_p99_ms=None if args.slo_p99 is None else args.slo_p99 * 1000.0,
        max_error_ratio=args.max_error_ratio,
        output=output_of(args, live=args.live),
        shard=None
        if shard is None
        else ShardSpec(
            shard,
            schedule,
            merge=args.merge and shard.index == shard.count - 1,
            merge_wait=args.merge_wait,
        ),
    )


def _shard(args: argparse.Namespace) -> Shard | None:
    if args.shards == 1 and args.shard_store is None:
        if args.merge:
            raise UsageError("--merge applies to a run of --shards N pods")
        return None
    if args.find_saturation:
        raise UsageError("--find-saturation runs in one pod, not --shards")
    if not args.shard_store:
        raise UsageError("--shards needs --shard-store DIR or s3://bucket/prefix/")
    index = args.shard_index
    if index is None:
        env = os.environ.get("JOB_COMPLETION_INDEX")
        if env is None or not env.isdigit():
            raise UsageError("--shards needs --shard-index or $JOB_COMPLETION_INDEX")
        index = int(env)
    try:
        return Shard(index, args.shards, args.shard_store)
    except ValueError as exc:
        raise UsageError(str(exc)) from None


def parse_config(argv: Sequence[str]) -> LoadgenConfig:
    """Parse flags; argparse exits with 2 on a bad flag, UsageError on a bad combination."""
    parser = build_parser()
    args = parser.parse_args(list(argv))
    try:
        return to_config(args)
    except UsageError as exc:
        parser.error(str(exc))
        raise  # parser.error exits; keeps type checkers happy
