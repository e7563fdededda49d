"""The run's PNG: saturation throughput per system, and latency at a share of saturation."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no display

import matplotlib.pyplot as plt
from matplotlib.artist import Artist
from matplotlib.ticker import FuncFormatter

from bench.measurements import load_point_key
from bench.report import BenchReport
from bench.summary import SYSTEM_LABELS, label

#: one fixed color per system, the same in both panels and in every bidder group
COLORS = {
    "echo": "#9e9e9e",
    "echo-cold": "#80cbc4",
    "rtbserve": "#1565c0",
    "plain-thrift": "#ef6c00",
    "mlserver-rest": "#6a1b9a",
    "mlserver-grpc": "#ad1457",
}


def _systems_in_order(report: BenchReport) -> list[str]:
    present = {r.system for r in report.systems}
    known = [s for s in SYSTEM_LABELS if s in present]
    return known + sorted(present - set(known))


def _plain(value: float, _pos: object) -> str:
    return f"{value:,.0f}" if value >= 10 else f"{value:g}"


def render_chart(report: BenchReport, path: Path, latency_share: float = 0.8) -> Path:
    systems = _systems_in_order(report)
    bidder_counts = sorted({r.bidders for r in report.systems})
    fig, (ax_tp, ax_lat) = plt.subplots(1, 2, figsize=(13, 5.6))
    key = load_point_key(latency_share)
    handles: dict[str, Artist] = {}
    tp_values: list[float] = []
    lat_values: list[float] = []
    for j, bidders in enumerate(bidder_counts):
        present = [s for s in systems if report.result(s, bidders) is not None]
        width = 0.8 / max(len(present), 1)
        for i, system in enumerate(present):
            result = report.result(system, bidders)
            assert result is not None
            x = j + (i - (len(present) - 1) / 2) * width
            color = COLORS.get(system)
            # A system that never met the SLO is shown by its capacity, hatched.
            value, hatch = result.saturation_rps, None
            if value is None:
                value, hatch = result.capacity_rps, "//"
            if value:
                bars = ax_tp.bar([x], [value], width, color=color, hatch=hatch)
                text = f"{value:,.0f}" + (" cap." if hatch else "")
                ax_tp.bar_label(bars, [text], fontsize=7, rotation=90, padding=2)
                handles.setdefault(system, bars.patches[0])
                tp_values.append(value)
            point = result.points.get(key)
            if point is not None and point.p99_ms > 0:
                bars = ax_lat.bar([x], [point.p99_ms], width, color=color, hatch=hatch)
                ax_lat.bar_label(bars, [f"{point.p99_ms:.2f}"], fontsize=7, rotation=90, padding=2)
                handles.setdefault(system, bars.patches[0])
                lat_values.append(point.p99_ms)
    slo = float(report.settings.get("slo_p99_ms", 2.0))
    ticks = [f"{b} bidder{'s' * (b != 1)}" for b in bidder_counts]
    for ax, values in ((ax_tp, tp_values), (ax_lat, [*lat_values, slo])):
        ax.set_xticks(range(len(bidder_counts)), ticks)
        if values:
            ax.set_yscale("log")
            ax.set_ylim(min(values) / 3, max(values) * 8)
            ax.yaxis.set_major_formatter(FuncFormatter(_plain))
        ax.grid(axis="y", which="major", alpha=0.3)
    ax_tp.set_title(f"Requests/s on one core at p99 ≤ {slo:g} ms (hatched: capacity)")
    ax_tp.set_ylabel("requests/s (log scale)")
    ax_lat.set_title(f"p99 latency at {latency_share:.0%} of saturation (hatched: of capacity)")
    ax_lat.set_ylabel("ms (log scale)")
    slo_line = ax_lat.axhline(slo, color="#c62828", linestyle="--", linewidth=1)
    shown = [s for s in systems if s in handles]
    labels = [*(label(s) for s in shown), f"SLO {slo:g} ms"]
    artists = [*(handles[s] for s in shown), slo_line]
    fig.legend(artists, labels, loc="lower center", ncol=len(labels))
    quick = " (quick smoke run)" if report.settings.get("quick") else ""
    fig.suptitle(f"rtbserve benchmark {report.date}{quick}: {report.machine.get('cpu', '')}")
    fig.tight_layout(rect=(0, 0.07, 1, 1))
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
