"""Side-by-side ratios and the project's aims, computed from the searches' figures.

Two bases: saturation (highest rate with p99 within the SLO) and capacity (within the looser
bound). The aims use the conservative mix: rtbserve's saturation over the peer's capacity, so a
peer that never meets the SLO is still credited with everything it can deliver.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from bench.measurements import SystemResult

SUBJECT = "rtbserve"
ECHO = "echo"
# Shown for what an idle VM does to latency; not a system to compare rtbserve with.
ECHO_COLD = "echo-cold"
MLSERVER_SYSTEMS = ("mlserver-rest", "mlserver-grpc")
PLAIN_THRIFT = "plain-thrift"
BASES = ("saturation", "capacity")

# Aims the project reports against.
AIM_RPS_PER_CORE = 10_000.0
AIM_BIDDERS = 16
AIM_VS_MLSERVER = 5.0
AIM_VS_PLAIN_THRIFT = 3.0


@dataclass(frozen=True)
class Ratio:
    """rtbserve's figure over another system's, at one bidder count, on one basis."""

    other: str
    bidders: int
    basis: str
    value: float | None  # None when either side has no figure


@dataclass(frozen=True)
class Aim:
    description: str
    target: float
    measured: float | None

    @property
    def met(self) -> bool | None:
        return None if self.measured is None else self.measured >= self.target


def figure(result: SystemResult | None, basis: str) -> float | None:
    if result is None:
        return None
    if basis == "saturation":
        return result.saturation_rps
    if basis == "capacity":
        return result.capacity_rps
    raise ValueError(f"unknown basis {basis!r}; expected one of {BASES}")


def ratio(numerator: float | None, denominator: float | None) -> float | None:
    if numerator is None or denominator is None or denominator <= 0:
        return None
    return numerator / denominator


def _index(results: Iterable[SystemResult]) -> dict[tuple[str, int], SystemResult]:
    return {(r.system, r.bidders): r for r in results}


def throughput_ratios(results: Iterable[SystemResult], subject: str = SUBJECT) -> list[Ratio]:
    """rtbserve over every other system measured, per bidder count, on both bases."""
    table = _index(results)
    out = []
    for (system, bidders), other in sorted(table.items(), key=lambda kv: (kv[0][1], kv[0][0])):
        mine = table.get((subject, bidders))
        if system in (subject, ECHO_COLD) or mine is None:
            continue
        for basis in BASES:
            out.append(
                Ratio(system, bidders, basis, ratio(figure(mine, basis), figure(other, basis)))
            )
    return out


def best_capacity(
    table: dict[tuple[str, int], SystemResult], systems: Iterable[str], bidders: int
) -> float | None:
    """The highest capacity among `systems`: a peer is judged by its faster transport."""
    values = [v for s in systems if (v := figure(table.get((s, bidders)), "capacity")) is not None]
    return max(values) if values else None


def aims(results: Iterable[SystemResult], bidders: int = AIM_BIDDERS) -> list[Aim]:
    table = _index(results)
    measured = table.get((SUBJECT, bidders))
    subject = figure(measured, "saturation")
    if measured is not None and subject is None:
        subject = 0.0  # measured, but no rate met the SLO: every aim is missed, not unmeasured
    return [
        Aim(
            f"rtbserve req/s per core at {bidders} bidders with p99 within the SLO",
            AIM_RPS_PER_CORE,
            subject,
        ),
        Aim(
            f"rtbserve saturation / MLServer capacity (faster transport), {bidders} bidders",
            AIM_VS_MLSERVER,
            ratio(subject, best_capacity(table, MLSERVER_SYSTEMS, bidders)),
        ),
        Aim(
            f"rtbserve saturation / plain Thrift server capacity, {bidders} bidders",
            AIM_VS_PLAIN_THRIFT,
            ratio(subject, best_capacity(table, (PLAIN_THRIFT,), bidders)),
        ),
    ]
