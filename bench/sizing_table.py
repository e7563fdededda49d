"""A bench run's fleet table: rtbserve's measured capacity, sized as `rtbserve capacity` sizes.

The bench measures one worker pinned to one core (`rtbserve serve --workers 1`), so its figure is
the capacity of a one-vCPU pod at the run's SLO and bidders per request. The table sizes that pod
with `rtbserve.sizing.plan` (three zones, one of them lost, each pod at the HPA's 70% share) and
prices it from `rtbserve/instances.yaml`, so the README's table and `rtbserve capacity` can never
disagree. `make bench` writes it between the markers of the README and the chart's README.
"""

from __future__ import annotations

from dataclasses import dataclass

from bench.report import BenchReport
from model_server.machine import kubernetes_arch
from rtbserve import sizing

SIZING_START = "<!-- sizing:start -->"
SIZING_END = "<!-- sizing:end -->"
SUBJECT = "rtbserve"
RATES = (100_000.0, 400_000.0, 1_000_000.0)
INSTANCES = ("c7g.2xlarge", "c8g.2xlarge", "c7i.2xlarge")
POD_VCPUS = 1.0  # the measured pod: one worker on one core


@dataclass(frozen=True)
class SizingBasis:
    """What a run measured for one pod, and whether it met the run's SLO."""

    requests_per_second: float
    p99_ms: float
    met_slo: bool  # False: the capacity at the looser bound stands in, and the table says so
    bidders: int
    arch: str
    cpu: str
    date: str


def basis_of(report: BenchReport) -> SizingBasis | None:
    bidders = int(report.settings.get("fleet_bidders", 16))
    result = report.result(SUBJECT, bidders)
    if result is None:
        return None
    slo = float(report.settings.get("slo_p99_ms", 2.0))
    loose = float(report.settings.get("search", {}).get("capacity_p99_ms", 50.0))
    if result.saturation_rps:
        rate, p99, met = result.saturation_rps, slo, True
    elif result.capacity_rps:
        rate, p99, met = result.capacity_rps, loose, False
    else:
        return None
    return SizingBasis(
        requests_per_second=rate,
        p99_ms=p99,
        met_slo=met,
        bidders=bidders,
        arch=kubernetes_arch(str(report.machine.get("arch", "unknown"))),
        cpu=str(report.machine.get("cpu", "unknown CPU")),
        date=report.date,
    )


def plans(basis: SizingBasis, prices: sizing.PriceList) -> list[sizing.Plan]:
    return [
        sizing.plan(
            rate,
            basis.requests_per_second,
            POD_VCPUS,
            prices.instance(name),
            hours_per_month=prices.hours_per_month,
        )
        for name in INSTANCES
        for rate in RATES
    ]


def _headroom(share: float) -> str:
    return f"{share:+.0%}"


def sizing_lines(report: BenchReport, prices: sizing.PriceList | None = None) -> list[str]:
    """Markdown: what the run measured, the fleet per instance type and rate, and CPU caveats."""
    basis = basis_of(report)
    if basis is None:
        return ["(no rtbserve figure at the fleet's bidder count to size from)"]
    prices = prices or sizing.load_prices()
    found = plans(basis, prices)
    share = found[0].target_share
    measured = (
        f"p99 ≤ {basis.p99_ms:g} ms"
        if basis.met_slo
        else f"p99 ≤ {basis.p99_ms:g} ms (no rate met the SLO in this run: optimistic)"
    )
    lines = [
        f"From `make bench` of {basis.date}: one worker on one {basis.arch} core "
        f"({basis.cpu}) sustained **{basis.requests_per_second:,.0f} req/s** at {measured}, "
        f"{basis.bidders} bidders per request. One-vCPU pods over 3 zones, sized so that 2 zones "
        f"hold the rate, each pod at {share:.0%} of that capacity (the HPA's target); "
        f"{prices.currency} On-Demand prices recorded {prices.recorded} "
        "(`rtbserve/instances.yaml`). `rtbserve capacity` gives the same figures from a "
        "profile of your own.",
        "",
        "| instance | req/s | pods (per zone) | vCPUs | nodes | per month | HPA target "
        "per pod | headroom (one zone lost) |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for p in found:
        lines.append(
            f"| {p.instance.name} | {p.rate:,.0f} | {p.pods} ({p.pods_per_zone}) | "
            f"{p.vcpus:,.0f} | {p.nodes} | ${p.monthly_cost:,.0f} | {p.hpa_target:,.0f} req/s | "
            f"{_headroom(p.headroom)} ({_headroom(p.headroom_zone_lost)}) |"
        )
    caveats = {
        name: why
        for name in INSTANCES
        if (why := sizing.cpu_mismatch(prices.instance(name), basis.arch, basis.cpu))
    }
    if caveats:
        lines += ["", *[f"- {why}." for why in caveats.values()]]
    return lines


def update_block(text: str, lines: list[str], results_link: str) -> str:
    """Replace the block between the sizing markers of a README with `lines`."""
    start, end = text.find(SIZING_START), text.find(SIZING_END)
    if start < 0 or end < start:
        raise ValueError(f"no {SIZING_START} ... {SIZING_END} block to update")
    block = [
        SIZING_START,
        *lines,
        "",
        f"Generated from [{results_link}]({results_link}).",
        SIZING_END,
    ]
    return text[:start] + "\n".join(block) + text[end + len(SIZING_END) :]
