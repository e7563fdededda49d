"""The run's report: a JSON document (`REPORT_SCHEMA`) and the final table on the console.

JSON report fields (all latencies in milliseconds, rates in requests per second):
    schema, status ("ok" | "failed" | "error"), exit_code, messages[]
    target, started_at (RFC 3339), source{kind, uri, pool_size, looped},
    schedule{description, segments[{start_rate, end_rate, duration_s}], warmup_s}
    workers, connections, duration_s, elapsed_s, target_rate, achieved_rate, sent_rate
    requests{scheduled, sent, ok, errors, dropped, late, retried, stray_replies, warmup}
    latency_ms{min, mean, p50, p90, p99, p99_9, max}
    errors{type: count}, error_examples{type: first message}, connect_errors{type: count},
    disconnects{type: count} (why open connections ended; their calls are re-sent once)
    generator{engine, late_threshold_ms, spin_below_ms, late_share, max_lag_ms, dropped, behind,
              cpu_s, cpu_us_per_request}
    filtering{replies_parsed, sample_every, pairs, filtered_share, bids, bids_kept_share} | null
    histogram{format, unit, lowest, highest, significant_digits, data (base64 HdrHistogram)}
    series[{second, target_rate, sent, ok, errors, dropped, late, completed, p50_ms, p99_ms,
            max_ms}]
    slo{p99_ms, met} | null
    saturation{slo_p99_ms, rate, limited_by_generator, probes[{rate, passed, reasons, ...}]}
        | null
`achieved_rate` is successful replies to the requests due in the measured window per second
of that window; `elapsed_s` is the window plus the wait for its last replies. Errors are
counted by type and excluded from the latency histogram.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import orjson
from rich.console import Console
from rich.table import Table

from loadgen.aggregate import RunResult
from loadgen.recorder import HIST_DIGITS, HIST_HIGHEST_US, HIST_LOWEST_US
from loadgen.saturation import SaturationResult

REPORT_SCHEMA = "rtbserve.io/loadgen-report/v1"
PERCENTILES = {"p50": 50.0, "p90": 90.0, "p99": 99.0, "p99_9": 99.9}


@dataclass(frozen=True)
class SourceInfo:
    kind: str  # "synthetic" | "replay"
    uri: str | None
    pool_size: int
    looped: bool


@dataclass(frozen=True)
class RunSettings:
    """Settings the report echoes so a reader can judge the numbers."""

    warmup_s: float
    late_threshold_s: float
    quality_every: int
    spin_below_s: float = 0.0


def latency_summary(result: RunResult) -> dict[str, float]:
    hist = result.histogram
    if hist.get_total_count() == 0:
        return {"min": 0.0, "mean": 0.0, **dict.fromkeys(PERCENTILES, 0.0), "max": 0.0}
    summary = {"min": hist.get_min_value() / 1000.0, "mean": hist.get_mean_value() / 1000.0}
    summary |= {k: result.percentile_ms(p) for k, p in PERCENTILES.items()}
    summary["max"] = result.max_ms
    return summary


def _filtering(result: RunResult, quality_every: int) -> dict[str, Any] | None:
    q = result.quality
    if not q.replies:
        return None
    return {
        "replies_parsed": q.replies,
        "sample_every": quality_every,
        "pairs": q.pairs,
        "filtered_share": q.filtered / q.pairs if q.pairs else None,
        "bids": q.bids,
        "bids_kept_share": q.bids_kept / q.bids if q.bids else None,
    }


def run_summary(result: RunResult, settings: RunSettings) -> dict[str, Any]:
    """The measurement part of the report for one run."""
    sched = result.schedule
    handled = result.sent + result.warmup_requests
    return {
        "target": result.target,
        "started_at": result.started_at.isoformat().replace("+00:00", "Z"),
        "aborted": result.aborted,
        "schedule": {
            "description": sched.describe(),
            "segments": [
                {"start_rate": s.start_rate, "end_rate": s.end_rate, "duration_s": s.duration}
                for s in sched.segments
            ],
            "max_requests": sched.max_requests,
            "warmup_s": settings.warmup_s,
        },
        "workers": result.workers,
        "connections": result.connections,
        "duration_s": result.duration_s,
        "elapsed_s": result.elapsed_s,
        "target_rate": result.target_rate,
        "achieved_rate": result.achieved_rate,
        "sent_rate": result.sent / result.duration_s if result.duration_s else 0.0,
        "requests": {
            "scheduled": result.scheduled,
            "sent": result.sent,
            "ok": result.ok,
            "errors": result.error_count,
            "dropped": result.dropped,
            "late": result.late,
            "retried": result.retried,
            "stray_replies": result.stray_replies,
            "warmup": result.warmup_requests,
        },
        "latency_ms": latency_summary(result),
        "errors": result.errors,
        "error_examples": result.error_examples,
        "connect_errors": result.connect_errors,
        "disconnects": result.disconnects,
        "generator": {
            "engine": result.engine,
            "late_threshold_ms": settings.late_threshold_s * 1000.0,
            "spin_below_ms": settings.spin_below_s * 1000.0,
            "late_share": result.late / result.sent if result.sent else 0.0,
            "max_lag_ms": result.max_lag_s * 1000.0,
            "dropped": result.dropped,
            "behind": result.dropped > 0,
            "cpu_s": result.cpu_s,
            # the CPU time covers the warm-up too, so its requests count as well
            "cpu_us_per_request": result.cpu_s / handled * 1e6 if handled else None,
        },
        "filtering": _filtering(result, settings.quality_every),
        "histogram": {
            "format": "HdrHistogram V2 compressed, base64",
            "unit": "us",
            "lowest": HIST_LOWEST_US,
            "highest": HIST_HIGHEST_US,
            "significant_digits": HIST_DIGITS,
            "data": result.histogram.encode().decode("ascii"),
        },
        "series": [asdict(row) for row in result.series],
    }


def saturation_summary(search: SaturationResult) -> dict[str, Any]:
    return {
        "slo_p99_ms": search.slo_p99_ms,
        "rate": search.saturation_rate,
        "limited_by_generator": search.limited_by_generator,
        "probes": [
            {
                "rate": p.rate,
                "passed": p.passed,
                "reasons": p.reasons,
                "achieved_rate": p.result.achieved_rate,
                "p50_ms": p.result.percentile_ms(50),
                "p99_ms": p.result.percentile_ms(99),
                "errors": p.result.error_count,
                "dropped": p.result.dropped,
            }
            for p in search.probes
        ],
    }


def write_json(report: dict[str, Any], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(orjson.dumps(report, option=orjson.OPT_INDENT_2 | orjson.OPT_SERIALIZE_NUMPY))
    tmp.replace(path)  # readers never see half a report


def summary_table(result: RunResult, title: str) -> Table:
    lat = latency_summary(result)
    table = Table(title=title, show_header=False, title_justify="left")
    table.add_column("what", style="bold")
    table.add_column("value", justify="right")
    table.add_row("target", result.target)
    table.add_row("schedule", result.schedule.describe())
    table.add_row("target rate", f"{result.target_rate:,.0f} req/s")
    table.add_row("achieved rate", f"{result.achieved_rate:,.0f} req/s")
    table.add_row(
        "requests", f"{result.scheduled:,} scheduled, {result.sent:,} sent, {result.ok:,} ok"
    )
    for key, label in (("p50", "p50"), ("p90", "p90"), ("p99", "p99"), ("p99_9", "p99.9")):
        table.add_row(f"latency {label}", f"{lat[key]:.3f} ms")
    table.add_row("latency max", f"{lat['max']:.3f} ms")
    errors = ", ".join(f"{k} {v:,}" for k, v in result.errors.items()) or "none"
    table.add_row("errors", f"{result.error_count:,} ({result.error_ratio:.2%}): {errors}")
    table.add_row(
        "generator",
        f"{result.dropped:,} dropped, {result.late:,} late, "
        f"max lag {result.max_lag_s * 1e3:.1f} ms",
    )
    q = result.quality
    if q.pairs:
        kept = f", {q.bids_kept / q.bids:.2%} of true bids kept" if q.bids else ""
        table.add_row(
            "filtering",
            f"{q.filtered / q.pairs:.2%} of pairs filtered{kept} ({q.replies:,} replies parsed)",
        )
    return table


def saturation_table(search: SaturationResult) -> Table:
    title = f"saturation search (p99 <= {search.slo_p99_ms:g} ms)"
    table = Table(title=title, title_justify="left")
    for column in ("rate", "achieved", "p50", "p99", "errors", "result"):
        table.add_column(column, justify="right")
    for p in sorted(search.probes, key=lambda p: p.rate):
        table.add_row(
            f"{p.rate:,.0f}",
            f"{p.result.achieved_rate:,.0f}",
            f"{p.result.percentile_ms(50):.3f} ms",
            f"{p.result.percentile_ms(99):.3f} ms",
            f"{p.result.error_count:,}",
            "pass" if p.passed else "; ".join(p.reasons),
        )
    return table


def print_final(console: Console, result: RunResult, search: SaturationResult | None) -> None:
    if search is not None:
        console.print(saturation_table(search))
    console.print(summary_table(result, "load test"))
