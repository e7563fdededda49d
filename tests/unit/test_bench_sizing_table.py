"""The bench's fleet table is `rtbserve capacity`'s arithmetic on the run's measurement."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from bench.measurements import SystemResult
from bench.report import BenchReport
from bench.run import SIZING_DOCS, update_sizing_docs
from bench.sizing_table import (
    INSTANCES,
    RATES,
    SIZING_END,
    SIZING_START,
    basis_of,
    sizing_lines,
    update_block,
)
from rtbserve import sizing

REPO = Path(__file__).resolve().parents[2]


def _report(arch: str = "x86_64", cpu: str = "Intel(R) Xeon(R) Platinum 8375C") -> BenchReport:
    return BenchReport(
        date="2026-12-07",
        started_at="2026-12-07T12:00:00Z",
        machine={"cpu": cpu, "arch": arch},
        settings={"slo_p99_ms": 2.0, "fleet_bidders": 16},
        systems=[SystemResult("rtbserve", 16, 25_000, 42_000), SystemResult("rtbserve", 1, 1, 1)],
    )


def test_every_row_is_the_plan_rtbserve_capacity_makes() -> None:
    prices = sizing.load_prices()
    lines = sizing_lines(_report(), prices)
    rows = [line for line in lines if line.startswith("| c")]
    assert len(rows) == len(INSTANCES) * len(RATES)
    for name in INSTANCES:
        for rate in RATES:
            p = sizing.plan(rate, 25_000, 1.0, prices.instance(name))
            row = next(r for r in rows if r.startswith(f"| {name} | {rate:,.0f} |"))
            assert f"| {p.pods} ({p.pods_per_zone}) | {p.vcpus:,.0f} | {p.nodes} |" in row
            assert f"${p.monthly_cost:,.0f}" in row
            assert f"{p.hpa_target:,.0f} req/s" in row


def test_worked_case_one_million_on_c7g() -> None:
    # 25,000 req/s at 70% = 17,500 a pod; 1M needs 58 pods, carried by 2 zones: 29 a zone.
    # A c7g.2xlarge has 8 - 0.09 kube-reserved - 0.25 DaemonSets = 7.66 vCPU: 7 pods, 5 a zone.
    text = "\n".join(sizing_lines(_report()))
    assert "| c7g.2xlarge | 1,000,000 | 87 (29) | 87 | 15 |" in text
    assert "| 17,500 req/s | +117% (+45%) |" in text  # 87 x 25,000 and 58 x 25,000 over 1M
    c7g = sizing.load_prices().instance("c7g.2xlarge")
    assert sizing.plan(1e6, 25_000, 1.0, c7g).monthly_cost == pytest.approx(15 * 0.29 * 730)
    assert "**25,000 req/s** at p99 ≤ 2 ms" in text


def test_another_cpu_is_said_plainly() -> None:
    text = "\n".join(sizing_lines(_report()))
    assert "measured on amd64" in text
    assert "c7g.2xlarge is arm64" in text
    graviton = "\n".join(sizing_lines(_report("aarch64", "Neoverse-V1 (AWS Graviton3)")))
    assert "c7g.2xlarge is arm64" not in graviton
    assert "measured on arm64" in graviton  # c7i.2xlarge is still another CPU


def test_no_measurement_no_table() -> None:
    report = _report()
    report.systems = []
    assert basis_of(report) is None
    assert sizing_lines(report) == ["(no rtbserve figure at the fleet's bidder count to size from)"]


def test_block_is_replaced_in_every_readme_with_its_own_link(tmp_path: Path) -> None:
    top = tmp_path / "README.md"
    chart = tmp_path / "charts" / "rtbserve" / "README.md"
    other = tmp_path / "NOTES.md"
    chart.parent.mkdir(parents=True)
    for doc in (top, chart):
        doc.write_text(f"# Doc\n\nbefore\n{SIZING_START}\nold table\n{SIZING_END}\nafter\n")
    other.write_text("no markers\n")
    md = tmp_path / "bench" / "results" / "2026-12-07.md"
    md.parent.mkdir(parents=True)
    md.write_text("summary")
    updated = update_sizing_docs(_report(), md, (top, chart, other))
    assert updated == [top, chart]
    assert other.read_text() == "no markers\n"
    for doc, link in (
        (top, "bench/results/2026-12-07.md"),
        (chart, "../../bench/results/2026-12-07.md"),
    ):
        text = doc.read_text()
        assert "old table" not in text
        assert text.startswith("# Doc\n\nbefore\n")
        assert text.endswith("after\n")
        assert f"Generated from [{link}]({link})." in text
        assert "| c7g.2xlarge | 1,000,000 |" in text
    again = top.read_text()
    update_sizing_docs(_report(), md, (top,))
    assert top.read_text() == again  # regenerating changes nothing


def test_missing_markers_are_refused() -> None:
    with pytest.raises(ValueError, match="sizing:start"):
        update_block("no block", ["x"], "link")


def test_the_readmes_carry_the_table_of_the_last_full_run() -> None:
    """Generated, not typed: regenerating from the newest full run's JSON changes nothing."""
    results = REPO / "bench" / "results"
    runs = sorted(p for p in results.glob("*.json") if re.fullmatch(r"\d{4}-\d{2}-\d{2}", p.stem))
    assert runs, "no full bench run in bench/results"
    report = BenchReport.read_json(runs[-1])
    for doc in SIZING_DOCS:
        text = doc.read_text()
        link = os.path.relpath(runs[-1].with_suffix(".md"), doc.parent)
        assert update_block(text, sizing_lines(report), link) == text, (
            f"{doc} is not the table of {runs[-1].name}: run "
            f"`python -m bench.run --render-only {runs[-1].relative_to(REPO)}`"
        )
