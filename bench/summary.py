"""The Markdown summary of a run, and the latest-results block of bench/README.md."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from bench.measurements import RunMeasurement, SystemResult, load_point_key
from bench.ratios import ECHO, SUBJECT, aims, throughput_ratios
from bench.report import BenchReport
from bench.sizing_table import sizing_lines

README_START = "<!-- bench:latest:start -->"
README_END = "<!-- bench:latest:end -->"

SYSTEM_LABELS = {
    "echo": "echo limit (C, epoll)",
    "echo-cold": "echo limit, cores left idle",
    "rtbserve": "rtbserve",
    "plain-thrift": "plain thriftpy2 + xgboost",
    "mlserver-rest": "MLServer REST",
    "mlserver-grpc": "MLServer gRPC",
}


def _warm_text(settings: dict[str, Any]) -> str:
    """How the cores were kept from halting between requests (bench.warm_cores)."""
    if not settings.get("warm_cores"):
        return " Cores left to idle between requests (`--cold-cores`)."
    how = (
        "from halting by the kernel's polling idle (a 0 µs wake-up latency request)"
        if settings.get("warm_method") == "kernel-poll"
        else "awake by a lowest-priority busy loop"
    )
    return (
        f" Both cores kept {how} (see `bench/warm_cores.py`); the *cores left idle* row shows "
        "the echo limit without it."
    )


def label(system: str) -> str:
    return SYSTEM_LABELS.get(system, system)


def fmt_rps(value: float | None) -> str:
    return "—" if value is None else f"{value:,.0f}"


def fmt_ms(value: float | None) -> str:
    if value is None:
        return "—"
    return f"{value:.3f}" if value < 10 else f"{value:,.1f}"


def fmt_ratio(value: float | None) -> str:
    if value is None:
        return "—"
    return f"{value:.1f}x" if value >= 1 else f"{value:.2f}x"


def bidders_text(n: int) -> str:
    return f"{n} bidder{'s' if n != 1 else ''}"


def _latency(point: RunMeasurement | None) -> str:
    if point is None:
        return "—"
    return f"{fmt_ms(point.p50_ms)} / {fmt_ms(point.p99_ms)} / {fmt_ms(point.p999_ms)}"


def _cpu(result: SystemResult) -> str:
    # CPU at the highest load point measured: how much of its core the server used.
    for key in sorted(result.points, key=float, reverse=True):
        point = result.points[key]
        if point.server_cpu_cores is not None:
            return f"{point.server_cpu_cores:.2f}"
    return "—"


def _table(header: list[str], rows: Iterable[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(" --- " for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return lines


def _order(system: str) -> int:
    order = list(SYSTEM_LABELS)
    return order.index(system) if system in order else len(order)


def results_table(report: BenchReport) -> list[str]:
    """Saturation, capacity and latency of every system, one row per (system, bidders)."""
    slo = report.settings.get("slo_p99_ms", 2.0)
    loose = report.settings.get("search", {}).get("capacity_p99_ms", 50.0)
    shares = [float(s) for s in report.settings.get("load_points", (0.5, 0.8))]
    header = [
        "system",
        "bidders",
        f"saturation req/s (p99 ≤ {slo:g} ms)",
        f"capacity req/s (p99 ≤ {loose:g} ms)",
    ]
    header += [f"p50 / p99 / p99.9 ms at {share:.0%}" for share in shares]
    header += ["server CPU (cores)"]
    rows = []
    for r in sorted(report.systems, key=lambda r: (r.bidders, _order(r.system))):
        row = [label(r.system), str(r.bidders), fmt_rps(r.saturation_rps), fmt_rps(r.capacity_rps)]
        suffix = " (of capacity)" if r.points_basis == "capacity" and r.points else ""
        row += [_latency(r.points.get(load_point_key(share))) + suffix for share in shares]
        row += [_cpu(r)]
        rows.append(row)
    return _table(header, rows)


def ratio_table(report: BenchReport) -> list[str]:
    ratios = throughput_ratios(report.systems)
    if not ratios:
        return ["(not enough systems measured for ratios)"]
    pairs: dict[tuple[str, int], dict[str, float | None]] = {}
    for r in ratios:
        pairs.setdefault((r.other, r.bidders), {})[r.basis] = r.value
    rows = []
    for (other, bidders), values in pairs.items():
        name = f"{SUBJECT} / {label(other)}"
        if other == ECHO:
            name += " (share of the network limit)"
        rows.append(
            [
                name,
                str(bidders),
                fmt_ratio(values.get("saturation")),
                fmt_ratio(values.get("capacity")),
            ]
        )
    return _table(["ratio", "bidders", "at saturation", "at capacity"], rows)


def aims_table(report: BenchReport) -> list[str]:
    rows = []
    for a in aims(report.systems):
        is_rate = a.target >= 100
        if a.measured == 0:
            measured = "no rate met the SLO"
        else:
            measured = fmt_rps(a.measured) if is_rate else fmt_ratio(a.measured)
        target = fmt_rps(a.target) if is_rate else fmt_ratio(a.target)
        verdict = {True: "met", False: "**not met**", None: "not measured"}[a.met]
        rows.append([a.description, target, measured, verdict])
    return _table(["aim", "target", "measured", ""], rows)


def server_latency_table(report: BenchReport) -> list[str]:
    """Client-side latency next to the server's own histogram, for systems that expose one."""
    rows = []
    for r in sorted(report.systems, key=lambda r: (r.bidders, _order(r.system))):
        for key in sorted(r.points, key=float):
            point = r.points[key]
            if point.server_p99_ms is None:
                continue
            rows.append(
                [
                    label(r.system),
                    str(r.bidders),
                    f"{fmt_rps(point.offered_rps)} ({float(key):.0%} of {r.points_basis})",
                    _latency(point),
                    f"{fmt_ms(point.server_p50_ms)} / {fmt_ms(point.server_p99_ms)} / "
                    f"{fmt_ms(point.server_p999_ms)}",
                ]
            )
    if not rows:
        return ["(no system under test exposed a latency histogram)"]
    header = ["system", "bidders", "req/s", "client p50 / p99 / p99.9 ms", "server-side (same)"]
    return [
        "Server-side: from the server's `rtbserve_request_latency_seconds` histogram (last byte "
        "in to reply written), read before and after each run and interpolated within its "
        "buckets. The gap to the client's figures is the network stack, scheduling on both "
        "cores, queueing before the server reads a request, and the load generator.",
        "",
        *_table(header, rows),
    ]


def predict_table(predict: dict[str, Any] | None) -> list[str]:
    """In-process prediction figures, flattened to `key: value` rows."""
    if not predict:
        return ["(not measured)"]
    flat: list[tuple[str, Any]] = []

    def walk(prefix: str, value: Any) -> None:
        if isinstance(value, dict):
            for k, v in value.items():
                walk(f"{prefix}.{k}" if prefix else str(k), v)
        else:
            flat.append((prefix, value))

    walk("", predict)
    rows = []
    for key, value in flat:
        if isinstance(value, float):
            shown = f"{value:,.0f}" if abs(value) >= 100 else f"{value:.4g}"
        else:
            shown = str(value)
        rows.append([key, shown])
    return _table(["in-process prediction", "value"], rows)


# Other processes' load on the server core above which a system's figures are flagged as noisy.
NOISY_OTHER_LOAD = 0.1


def noise_notes(report: BenchReport) -> list[str]:
    """Systems measured while other processes used a noticeable share of the server's core."""
    notes = []
    for r in report.systems:
        loads = [
            other
            for run in [*r.search_steps, *r.points.values()]
            if (other := run.other_load_on_server_core) is not None
        ]
        if loads and max(loads) >= NOISY_OTHER_LOAD:
            notes.append(
                f"{label(r.system)} at {bidders_text(r.bidders)}: other processes used up to "
                f"{max(loads):.2f} of the server's core during its runs (noisy figures)."
            )
    return notes


def worst_other_load(report: BenchReport) -> float:
    loads = [
        other
        for r in report.systems
        for run in [*r.search_steps, *r.points.values()]
        if (other := run.other_load_on_server_core) is not None
    ]
    return max(loads, default=0.0)


def render_results(report: BenchReport) -> list[str]:
    """The results block shared by the run's summary and bench/README.md."""
    m = report.machine
    noisy = worst_other_load(report)
    warning = []
    if noisy >= NOISY_OTHER_LOAD:
        warning = [
            f"**Other processes used up to {noisy:.2f} of the server's core during this run:** "
            "absolute figures are low and latencies high; compare systems by the ratios, and "
            "rerun `make bench` on an idle machine for absolute numbers.",
            "",
        ]
    lines = [
        *warning,
        f"Run {report.started_at} on {m.get('cpu', '?')} ({m.get('cores', '?')} cores), "
        f"Linux {m.get('kernel', '?')}, Python {m.get('python', '?')}; "
        f"took {report.duration_s / 60:.1f} min."
        + (
            " **Quick smoke run: figures are indicative only.**"
            if report.settings.get("quick")
            else ""
        ),
        "",
        "Servers pinned to one core, load generators to the other; latency from each request's "
        "intended send time (open loop)." + _warm_text(report.settings),
        "",
        *results_table(report),
        "",
        "### Ratios",
        "",
        *ratio_table(report),
        "",
        "### Aims",
        "",
        *aims_table(report),
        "",
        "### Server-side latency",
        "",
        *server_latency_table(report),
        "",
        "### In-process prediction (no network)",
        "",
        *predict_table(report.predict),
        "",
        "### Sizing a fleet",
        "",
        *sizing_lines(report),
    ]
    if report.cold_start:
        lines += ["", "### Cold start", "", *cold_start_markdown(report.cold_start)]
    if report.versions:
        lines += [
            "",
            "Versions: " + ", ".join(f"{k} {v}" for k, v in sorted(report.versions.items())) + ".",
        ]
    notes = [*report.notes, *noise_notes(report)]
    if notes:
        lines += ["", "Notes:", "", *[f"- {n}" for n in notes]]
    if report.errors:
        lines += ["", "Phases that failed:", "", *[f"- {e}" for e in report.errors]]
    return lines


def cold_start_markdown(result: dict[str, Any]) -> list[str]:
    from bench.cold_start import markdown

    return markdown(result)


def render_summary(report: BenchReport, chart_name: str | None) -> str:
    lines = [f"# rtbserve benchmark, {report.date}", "", *render_results(report)]
    if chart_name:
        lines += ["", f"![throughput and latency per system]({chart_name})"]
    return "\n".join(lines) + "\n"


def update_readme(readme: str, report: BenchReport, results_link: str) -> str:
    """Replace the block between the README's markers with this run's results."""
    start, end = readme.find(README_START), readme.find(README_END)
    if start < 0 or end < start:
        raise ValueError(f"README has no {README_START} ... {README_END} block to update")
    block = [
        README_START,
        f"Latest: [{results_link}]({results_link}).",
        "",
        *render_results(report),
        README_END,
    ]
    return readme[:start] + "\n".join(block) + readme[end + len(README_END) :]
