"""PNG plots of a run: latency percentile distribution, latency and throughput over time."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only; never needs a display

import matplotlib.pyplot as plt
import numpy as np

from loadgen.aggregate import RunResult

DISTRIBUTION_PNG = "latency-distribution.png"
LATENCY_PNG = "latency-over-time.png"
THROUGHPUT_PNG = "throughput-over-time.png"
_NINES = [0.0, 50.0, 90.0, 99.0, 99.9, 99.99, 99.999, 99.9999]


def _save(fig: Any, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_distribution(result: RunResult, path: Path) -> Path:
    """Latency by percentile on the usual HDR axis: x = 1 / (1 - percentile)."""
    fig, ax = plt.subplots(figsize=(8, 4.5))
    hist = result.histogram
    count = hist.get_total_count()
    # percentiles beyond 1 - 1/count say nothing more than the maximum
    top = 100.0 * (1.0 - 1.0 / max(count, 2))
    nines = [p for p in _NINES if p <= top] or [0.0]
    if count:
        pct = np.concatenate([np.linspace(0, 90, 91), 100 - np.logspace(1, -5, 300)])
        pct = np.append(pct[pct <= top], top)
        values = [hist.get_value_at_percentile(float(p)) / 1000.0 for p in pct]
        ax.plot(100.0 / (100.0 - pct), values, color="tab:blue")
    else:
        ax.text(0.5, 0.5, "no successful replies", ha="center", transform=ax.transAxes)
    ax.set_xscale("log")
    ax.set_xticks([100.0 / (100.0 - p) for p in nines])
    ax.set_xticklabels([f"{p:g}%" for p in nines])
    ax.set_xlabel("percentile")
    ax.set_ylabel("latency (ms)")
    ax.set_title(f"latency distribution, {result.target_rate:,.0f} req/s target")
    ax.grid(True, which="major", alpha=0.3)
    return _save(fig, path)


def plot_latency_over_time(result: RunResult, path: Path) -> Path:
    fig, ax = plt.subplots(figsize=(8, 4.5))
    seconds = [r.second + 0.5 for r in result.series]  # each second's middle
    for attr, label in (("p50_ms", "p50"), ("p99_ms", "p99"), ("max_ms", "max")):
        values = [np.nan if getattr(r, attr) is None else getattr(r, attr) for r in result.series]
        ax.plot(seconds, values, marker=".", label=label)
    ax.set_xlabel("time (s), by intended send time")
    ax.set_ylabel("latency (ms)")
    ax.set_yscale("log")
    ax.set_title("latency over time")
    ax.legend()
    ax.grid(True, alpha=0.3)
    return _save(fig, path)


def plot_throughput_over_time(result: RunResult, path: Path) -> Path:
    fig, ax = plt.subplots(figsize=(8, 4.5))
    rows = result.series
    edges = [r.second for r in rows] + [rows[-1].second + 1] if rows else [0, 1]
    t = np.linspace(0.0, result.schedule.duration, 400)
    target = [result.schedule.rate_at(float(x)) for x in t]
    ax.plot(t, target, "--", color="gray", label="target")
    series = [("sent", [r.sent for r in rows]), ("ok", [r.ok for r in rows])]
    series.append(("completed (wall clock)", [r.completed for r in rows]))
    series += [(n, v) for n, v in (("errors", [r.errors for r in rows]),) if any(v)]
    series += [(n, v) for n, v in (("dropped", [r.dropped for r in rows]),) if any(v)]
    for label, values in series:
        if values:
            ax.stairs(values, edges, label=label)  # a count per whole second
    peak = max([*target, *[r.sent for r in rows], 1])
    ax.set_ylim(0, peak * 1.15)
    ax.set_xlabel("time (s)")
    ax.set_ylabel("requests per second")
    ax.set_title("throughput over time")
    ax.legend()
    ax.grid(True, alpha=0.3)
    return _save(fig, path)


def write_plots(result: RunResult, directory: Path) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    return [
        plot_distribution(result, directory / DISTRIBUTION_PNG),
        plot_latency_over_time(result, directory / LATENCY_PNG),
        plot_throughput_over_time(result, directory / THROUGHPUT_PNG),
    ]
