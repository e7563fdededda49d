"""What one benchmark run does and for how long; `--quick` swaps in a smoke-test preset."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
REPO_DIR = BENCH_DIR.parent
# Git-ignored: peer virtualenvs, trained model, build outputs and logs.
WORK_DIR = BENCH_DIR / "work"
RESULTS_DIR = BENCH_DIR / "results"


@dataclass(frozen=True)
class SearchConfig:
    """How the saturation search walks the offered rate (see `bench.saturation`)."""

    slo_p99_ms: float = 2.0
    # The looser bound of "capacity": what a server delivers when latency matters less.
    capacity_p99_ms: float = 50.0
    start_rate: float = 1000.0
    max_rate: float = 200_000.0
    # Stop bisecting once the bracket [ok, failed] is narrower than this fraction of ok.
    tolerance: float = 0.05
    # Capacity is the secondary figure: a coarser bracket saves steps.
    capacity_tolerance: float = 0.10
    # The SLO search gives up below this share of capacity (none: MIN_RATE).
    slo_floor_share: float = 1 / 8
    max_steps: int = 14
    step_seconds: float = 3.0
    # A run that delivers less than this share of the offered rate is over saturation.
    min_delivered: float = 0.97
    # Runs at a rate, all failing the SLO, before the saturation search believes the failure
    # (noise from other tenants only makes runs worse; the capacity search does not repeat).
    slo_attempts: int = 2


@dataclass(frozen=True)
class BenchConfig:
    """Every knob of a run. Durations are per measurement, in seconds."""

    bidder_counts: tuple[int, ...] = (1, 16)
    load_points: tuple[float, ...] = (0.5, 0.8)
    point_seconds: float = 10.0
    warmup_seconds: float = 1.0
    search: SearchConfig = field(default_factory=SearchConfig)
    synthetic_rows: int = 50_000
    server_core: int = 0
    load_core: int = 1
    # Connections the load generators keep open to the server under test.
    connections: int = 16
    systems: tuple[str, ...] = (
        "echo",
        "echo-cold",
        "rtbserve",
        "plain-thrift",
        "mlserver-rest",
        "mlserver-grpc",
    )
    work_dir: Path = WORK_DIR
    results_dir: Path = RESULTS_DIR
    readme: Path = BENCH_DIR / "README.md"
    quick: bool = False
    # A SCHED_IDLE busy loop on the server and load cores, so idle vCPUs never halt
    # (see bench.warm_cores); the "echo-cold" system shows the machine without it.
    warm_cores: bool = True


def quick_preset(base: BenchConfig) -> BenchConfig:
    """A smoke run: every phase, short measurements, a coarse search (a few minutes in total)."""
    search = replace(
        base.search, step_seconds=1.5, tolerance=0.25, capacity_tolerance=0.25, max_steps=7
    )
    return replace(
        base,
        point_seconds=3.0,
        warmup_seconds=0.5,
        search=search,
        synthetic_rows=5_000,
        quick=True,
    )
