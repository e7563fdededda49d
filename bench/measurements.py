"""The figures a benchmark run produces, as plain dataclasses that round-trip through JSON."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(frozen=True)
class RunMeasurement:
    """One fixed-rate, open-loop run: latency is measured from each request's intended send time."""

    offered_rps: float
    achieved_rps: float
    p50_ms: float
    p99_ms: float
    p999_ms: float
    max_ms: float
    requests: int
    errors: int
    duration_s: float
    # Mean CPU use over the run, in cores (1.0 = one whole core): shows who was the bottleneck.
    server_cpu_cores: float | None = None
    # How busy the server's core was with anything (the server and other processes).
    server_core_busy: float | None = None
    driver_cpu_cores: float | None = None
    # p99 of how late the driver sent requests against their schedule (when it reports it).
    driver_lag_p99_ms: float | None = None
    # Share of sends more than 1 ms behind schedule (`rtbserve loadgen` reports this).
    driver_late_share: float | None = None
    # The server's own latency histogram over the run (rtbserve's /metrics), interpolated.
    server_p50_ms: float | None = None
    server_p99_ms: float | None = None
    server_p999_ms: float | None = None

    @property
    def other_load_on_server_core(self) -> float | None:
        """Cores' worth of work other processes did on the server's core during the run."""
        if self.server_core_busy is None or self.server_cpu_cores is None:
            return None
        return max(0.0, self.server_core_busy - self.server_cpu_cores)

    def meets(self, slo_p99_ms: float, min_delivered: float) -> bool:
        """Within the latency SLO, error-free, and keeping up with the offered rate."""
        if self.requests == 0 or self.errors > 0:
            return False
        return self.p99_ms <= slo_p99_ms and self.achieved_rps >= min_delivered * self.offered_rps

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunMeasurement:
        return cls(**{name: data[name] for name in cls.__dataclass_fields__ if name in data})


@dataclass
class SystemResult:
    """A server under test at one number of candidate bidders per request."""

    system: str
    bidders: int
    # Highest rate with p99 within the SLO (None: not even at the lowest rate tried).
    saturation_rps: float | None
    # Highest rate with p99 within the looser capacity bound.
    capacity_rps: float | None = None
    # Keyed by the share of saturation (of capacity when there is no saturation), like "0.5".
    points: dict[str, RunMeasurement] = field(default_factory=dict)
    points_basis: str = "saturation"
    search_steps: list[RunMeasurement] = field(default_factory=list)
    note: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SystemResult:
        return cls(
            system=data["system"],
            bidders=int(data["bidders"]),
            saturation_rps=data.get("saturation_rps"),
            capacity_rps=data.get("capacity_rps"),
            points_basis=data.get("points_basis", "saturation"),
            points={k: RunMeasurement.from_dict(v) for k, v in data.get("points", {}).items()},
            search_steps=[RunMeasurement.from_dict(s) for s in data.get("search_steps", [])],
            note=data.get("note", ""),
        )


def load_point_key(share: float) -> str:
    """The `points` key for a share of saturation: 0.5 -> "0.5"."""
    return f"{share:g}"
