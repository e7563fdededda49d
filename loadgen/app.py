"""The `rtbserve loadgen` flow: traffic -> run (or saturation search) -> verdict -> reports.

Whatever fails, everything measured so far is still reported; the exit code says what failed
(see `loadgen.exit_codes`).
"""

from __future__ import annotations

import tempfile
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from rich.console import Console

from loadgen import capacity_profile, k8s_status, plots, report
from loadgen.aggregate import RunResult
from loadgen.exit_codes import ExitCode, LoadgenError, first_applicable
from loadgen.options import LoadgenConfig
from loadgen.pool import EncodedPool, encode_pool
from loadgen.progress import LiveView
from loadgen.replay import read_replay
from loadgen.runner import RunSpec, run_load
from loadgen.s3io import upload_files
from loadgen.saturation import Probe, SaturationResult, find_saturation
from loadgen.schedule import RateSchedule
from loadgen.server_info import server_info
from loadgen.traffic import synthetic_items

#: warn (without failing) when more sends than this are late
LATE_WARNING_SHARE = 0.01


@dataclass
class Outcome:
    codes: set[ExitCode] = field(default_factory=set)
    messages: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    result: RunResult | None = None
    search: SaturationResult | None = None
    source: report.SourceInfo | None = None
    #: a merged sharded run: each pod's status (ok, failed, missing)
    shards: list[dict[str, Any]] | None = None
    profile: capacity_profile.CapacityProfile | None = None

    def fail(self, code: ExitCode, message: str) -> None:
        self.codes.add(code)
        self.messages.append(message)

    @property
    def exit_code(self) -> ExitCode:
        return first_applicable(self.codes)


def requests_needed(config: LoadgenConfig) -> int:
    if config.saturation is not None:
        return config.source.pool_size
    return config.schedule.with_warmup(config.options.warmup)[0].total_requests


def prepare_traffic(
    config: LoadgenConfig,
) -> tuple[EncodedPool, report.SourceInfo, RateSchedule]:
    """Load and encode the requests; a replay shorter than the run shortens the schedule."""
    src = config.source
    needed = max(1, min(src.pool_size, requests_needed(config)))
    schedule = config.schedule
    if src.replay is None:
        items = synthetic_items(
            needed, seed=src.seed, n_bidders=src.synthetic_bidders, part=src.part[0]
        )
        return encode_pool(items), report.SourceInfo("synthetic", None, len(items), True), schedule
    index, count = src.part
    items = read_replay(src.replay, limit=needed * count, bidders=src.bidders)[index::count]
    looped = src.loop or config.saturation is not None
    total = schedule.with_warmup(config.options.warmup)[0].total_requests
    if not looped and len(items) < total:
        warmup_count = total - schedule.total_requests
        measured = len(items) - warmup_count
        if measured <= 0:
            raise LoadgenError(
                ExitCode.BAD_INPUT,
                f"replay file {src.replay}: {len(items)} requests do not outlast the warm-up "
                f"({warmup_count} requests); use --loop or a shorter --warmup",
            )
        schedule = replace(schedule, max_requests=measured)
    info = report.SourceInfo("replay", src.replay, len(items), looped)
    return encode_pool(items), info, schedule


def _live(config: LoadgenConfig, console: Console) -> bool:
    return console.is_terminal if config.output.live is None else config.output.live


def _run(
    config: LoadgenConfig, schedule: RateSchedule, pool: EncodedPool, console: Console, title: str
) -> RunResult:
    spec = RunSpec(
        config.target, schedule, config.options, config.workers, config.shard is not None
    )
    with LiveView(console, title, schedule.duration, _live(config, console)) as view:
        return run_load(spec, pool, view)


def _search(
    config: LoadgenConfig,
    pool: EncodedPool,
    console: Console,
    slo_p99_ms: float | None = None,
    start_rate: float | None = None,
) -> SaturationResult:
    sat = config.saturation
    assert sat is not None
    count = 0

    def run_probe(rate: float) -> RunResult:
        nonlocal count
        count += 1
        schedule = RateSchedule.fixed(rate, sat.probe_duration)
        title = f"probe {count}: {rate:,.0f} req/s for {sat.probe_duration:g}s -> {config.target}"
        return _run(config, schedule, pool, console, title)

    def on_probe(probe: Probe) -> None:
        verdict = "pass" if probe.passed else "fail: " + "; ".join(probe.reasons)
        console.print(
            f"probe {probe.rate:,.0f} req/s: p99 {probe.result.percentile_ms(99):.3f} ms, "
            f"achieved {probe.result.achieved_rate:,.0f}/s -> {verdict}",
            highlight=False,
        )

    return find_saturation(
        run_probe,
        slo_p99_ms=sat.slo_p99_ms if slo_p99_ms is None else slo_p99_ms,
        start_rate=sat.start_rate if start_rate is None else start_rate,
        max_rate=sat.max_rate,
        precision=sat.precision,
        max_error_ratio=config.max_error_ratio,
        max_probes=sat.max_probes,
        on_probe=on_probe,
    )


def _profile_searches(
    config: LoadgenConfig, pool: EncodedPool, console: Console
) -> tuple[SaturationResult, list[Probe]]:
    """One search per objective, strictest first, each starting where the last one passed;
    (the search of --slo-p99, every probe of them all)."""
    sat = config.saturation
    assert sat is not None
    probes: list[Probe] = []
    main: SaturationResult | None = None
    start = sat.start_rate
    for slo in sorted({*sat.profile_slos_ms, sat.slo_p99_ms}):
        console.print(f"searching the rate for p99 <= {slo:g} ms", highlight=False)
        search = _search(config, pool, console, slo, start)
        probes += search.probes
        if search.saturation_rate is not None:
            start = search.saturation_rate
        if slo == sat.slo_p99_ms:
            main = search
    assert main is not None
    return main, probes


def write_capacity_profile(
    config: LoadgenConfig, pool: EncodedPool, probes: list[Probe], outcome: Outcome
) -> None:
    """The profile of the searches, with the server's own description of model and pod."""
    sat = config.saturation
    assert sat is not None
    assert sat.profile_out is not None
    try:
        info = server_info(config.target, config.options.connect_timeout)
        per_request = pool.bidders_per_request or float(len(info.bidders))
        profile = capacity_profile.build_profile(info, probes, sat.profile_slos_ms, per_request)
        capacity_profile.write_profile(profile, sat.profile_out)
    except (capacity_profile.ProfileError, LoadgenError) as exc:
        outcome.fail(ExitCode.PUBLISH_FAILED, f"capacity profile: {exc}")
        return
    outcome.profile = profile


def judge(config: LoadgenConfig, outcome: Outcome) -> None:
    """Turn the measurements into exit codes and messages."""
    result = outcome.result
    if result is None:
        return
    if result.aborted:
        outcome.fail(ExitCode.INTERRUPTED, f"run {result.aborted}: the results are partial")
    if result.scheduled and result.error_ratio > config.max_error_ratio:
        kinds = ", ".join(f"{k} x{v}" for k, v in list(result.errors.items())[:5])
        first = next(iter(result.errors))
        example = result.error_examples.get(first, "")
        outcome.fail(
            ExitCode.REQUEST_ERRORS,
            f"{result.error_count:,} of {result.scheduled:,} requests failed "
            f"({result.error_ratio:.1%} > {config.max_error_ratio:.1%}): {kinds}"
            + (f". First {first}: {example}" if example else ""),
        )
    if result.dropped:
        outcome.fail(
            ExitCode.GENERATOR_BEHIND,
            f"the load generator fell behind its schedule: {result.dropped:,} sends dropped "
            f"(max lag {result.max_lag_s * 1000:.0f} ms); add --workers or lower the rate",
        )
    if result.sent and result.late / result.sent > LATE_WARNING_SHARE:
        outcome.warnings.append(
            f"{result.late / result.sent:.1%} of sends were more than "
            f"{config.options.late_threshold * 1000:g} ms late (counted in latency)"
        )
    search = outcome.search
    if search is not None:
        if search.saturation_rate is None:
            outcome.fail(
                ExitCode.SLO_MISSED,
                f"no probed rate kept p99 within {search.slo_p99_ms:g} ms",
            )
        if search.limited_by_generator:
            outcome.warnings.append(
                "the search stopped at the generator's own limit, not the server's: add --workers"
            )
    elif config.slo_p99_ms is not None and result.percentile_ms(99) > config.slo_p99_ms:
        outcome.fail(
            ExitCode.SLO_MISSED,
            f"p99 {result.percentile_ms(99):.3f} ms is above the objective "
            f"{config.slo_p99_ms:g} ms",
        )


def build_report(config: LoadgenConfig, outcome: Outcome) -> dict[str, Any]:
    code = outcome.exit_code
    status = "ok" if code == ExitCode.OK else ("failed" if outcome.result else "error")
    doc: dict[str, Any] = {
        "schema": report.REPORT_SCHEMA,
        "status": status,
        "exit_code": int(code),
        "messages": outcome.messages + outcome.warnings,
        "target": str(config.target),
        "source": asdict(outcome.source) if outcome.source else None,
    }
    if outcome.result is not None:
        settings = report.RunSettings(
            warmup_s=config.options.warmup,
            late_threshold_s=config.options.late_threshold,
            quality_every=config.options.quality_every,
            spin_below_s=config.options.spin_below,
        )
        doc |= report.run_summary(outcome.result, settings)
    slo = config.slo_p99_ms
    doc["slo"] = (
        None
        if slo is None or outcome.result is None
        else {"p99_ms": slo, "met": outcome.result.percentile_ms(99) <= slo}
    )
    doc["saturation"] = report.saturation_summary(outcome.search) if outcome.search else None
    if outcome.shards is not None:
        doc["shards"] = outcome.shards
    return doc


def publish(config: LoadgenConfig, outcome: Outcome, console: Console) -> None:
    """JSON report, plots, S3 upload, InferenceModel status; each failure is its own message."""
    out = config.output
    doc = build_report(config, outcome)
    files: list[Path] = []
    with tempfile.TemporaryDirectory(prefix="rtbserve-loadgen-") as scratch:
        json_path = out.report_json or (Path(scratch) / "report.json" if out.report_s3 else None)
        try:
            if json_path is not None:
                report.write_json(doc, json_path)
                files.append(json_path)
                if out.report_json:
                    console.print(f"report: {json_path}", highlight=False)
            plot_dir = out.plot_dir or (Path(scratch) if out.report_s3 else None)
            if plot_dir is not None and outcome.result is not None:
                files += plots.write_plots(outcome.result, plot_dir)
                if out.plot_dir:
                    console.print(f"plots: {plot_dir}", highlight=False)
        except OSError as exc:
            outcome.fail(ExitCode.PUBLISH_FAILED, f"cannot write reports: {exc}")
        try:
            if out.report_s3 and files:
                uploaded = upload_files(files, out.report_s3)
                console.print(f"uploaded {len(uploaded)} files to {out.report_s3}", highlight=False)
        except LoadgenError as exc:
            outcome.fail(exc.code, exc.message)
    if out.inference_model and outcome.profile is not None:
        try:
            ns = k8s_status.write_capacity(
                out.inference_model, out.namespace, outcome.profile.model_dump(mode="json")
            )
            console.print(
                f"status.capacity written to InferenceModel {ns}/{out.inference_model}",
                highlight=False,
            )
        except LoadgenError as exc:
            outcome.fail(exc.code, exc.message)
    if out.inference_model and outcome.result is not None:
        try:
            summary = k8s_status.last_load_test(outcome.result, outcome.shards)
            ns = k8s_status.write_last_load_test(out.inference_model, out.namespace, summary)
            console.print(
                f"status.lastLoadTest written to InferenceModel {ns}/{out.inference_model}",
                highlight=False,
            )
        except LoadgenError as exc:
            outcome.fail(exc.code, exc.message)


def run(config: LoadgenConfig, console: Console, errors: Console) -> int:
    outcome = Outcome()
    try:
        pool, outcome.source, schedule = prepare_traffic(config)
        if config.saturation is not None and config.saturation.profile_out:
            outcome.search, probes = _profile_searches(config, pool, console)
            write_capacity_profile(config, pool, probes, outcome)
        elif config.saturation is not None:
            outcome.search = _search(config, pool, console)
            best = outcome.search.best or (
                outcome.search.probes[-1] if outcome.search.probes else None
            )
            outcome.result = best.result if best else None
        else:
            title = f"{schedule.describe()} -> {config.target}"
            outcome.result = _run(config, schedule, pool, console, title)
    except LoadgenError as exc:
        outcome.fail(exc.code, exc.message)
    judge(config, outcome)
    if outcome.result is not None:
        report.print_final(console, outcome.result, outcome.search)
    if config.shard is not None:
        from loadgen import sharded

        return sharded.finish_pod(config, outcome, console, errors)
    if outcome.search is not None and outcome.search.saturation_rate is not None:
        console.print(
            f"saturation: {outcome.search.saturation_rate:,.0f} req/s with p99 <= "
            f"{outcome.search.slo_p99_ms:g} ms",
            highlight=False,
        )
    if outcome.profile is not None and config.saturation is not None:
        figures = ", ".join(
            f"p99 <= {s.p99_ms:g} ms: "
            + ("none" if s.requests_per_second is None else f"{s.requests_per_second:,.0f} req/s")
            for s in outcome.profile.slos
        )
        console.print(
            f"capacity profile: {figures} -> {config.saturation.profile_out}",
            highlight=False,
            soft_wrap=True,
        )
    publish(config, outcome, console)
    return conclude(outcome, errors)


def conclude(outcome: Outcome, errors: Console) -> int:
    """Print the warnings and errors; returns the exit code."""
    for warning in outcome.warnings:
        errors.print(f"warning: {warning}", highlight=False, soft_wrap=True, markup=False)
    for message in outcome.messages:
        errors.print(f"error: {message}", highlight=False, soft_wrap=True, markup=False)
    code = outcome.exit_code
    if code != ExitCode.OK:
        errors.print(f"exit code {int(code)} ({code.name.lower()})", highlight=False)
    return int(code)
