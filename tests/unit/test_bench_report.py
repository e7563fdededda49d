"""Ratios, aims, the JSON document, the Markdown summary, the README block and the chart."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench.measurements import RunMeasurement, SystemResult
from bench.ratios import aims, throughput_ratios
from bench.report import BenchReport
from bench.summary import README_END, README_START, render_summary, update_readme


def point(offered: float, p99: float, cpu: float | None = 0.9) -> RunMeasurement:
    return RunMeasurement(
        offered_rps=offered,
        achieved_rps=offered,
        p50_ms=p99 / 4,
        p99_ms=p99,
        p999_ms=p99 * 2,
        max_ms=p99 * 3,
        requests=int(offered * 10),
        errors=0,
        duration_s=10.0,
        server_cpu_cores=cpu,
    )


def result(system: str, bidders: int, saturation: float | None, capacity: float) -> SystemResult:
    basis = saturation if saturation is not None else capacity
    return SystemResult(
        system=system,
        bidders=bidders,
        saturation_rps=saturation,
        capacity_rps=capacity,
        points={"0.5": point(basis * 0.5, 0.4), "0.8": point(basis * 0.8, 0.9)},
        points_basis="saturation" if saturation is not None else "capacity",
    )


def sample_report() -> BenchReport:
    report = BenchReport(
        date="2026-11-23",
        started_at="2026-11-23T12:00:00Z",
        machine={"cpu": "Test CPU", "cores": 2, "kernel": "6.1", "python": "3.11.7"},
        settings={"slo_p99_ms": 2.0, "load_points": [0.5, 0.8], "fleet_bidders": 16},
        systems=[
            result("echo", 16, 60_000, 80_000),
            result("rtbserve", 16, 12_000, 14_000),
            result("plain-thrift", 16, 1_500, 2_400),
            result("mlserver-rest", 16, None, 300),
            result("mlserver-grpc", 16, None, 400),
            result("rtbserve", 1, 20_000, 24_000),
            result("plain-thrift", 1, 2_000, 3_000),
        ],
        predict={"batch_16": {"xgboost_rows_per_s": 30_000.0, "native_rows_per_s": 2.0e6}},
        versions={"mlserver": "1.7.1"},
        duration_s=600.0,
    )
    return report


def test_ratios_on_both_bases() -> None:
    ratios = {
        (r.other, r.bidders, r.basis): r.value for r in throughput_ratios(sample_report().systems)
    }
    assert ratios[("plain-thrift", 16, "saturation")] == pytest.approx(8.0)
    assert ratios[("plain-thrift", 16, "capacity")] == pytest.approx(14_000 / 2_400)
    assert ratios[("echo", 16, "saturation")] == pytest.approx(0.2)
    # MLServer never met the SLO: no saturation ratio, but a capacity one.
    assert ratios[("mlserver-rest", 16, "saturation")] is None
    assert ratios[("mlserver-grpc", 16, "capacity")] == pytest.approx(35.0)
    # rtbserve is never compared with itself, and only where it was measured.
    assert not any(other == "rtbserve" for other, _, _ in ratios)
    assert ("plain-thrift", 1, "saturation") in ratios


def test_aims_use_rtbserve_saturation_over_the_peers_best_capacity() -> None:
    by_target = {a.target: a for a in aims(sample_report().systems)}
    assert by_target[10_000.0].measured == 12_000
    assert by_target[10_000.0].met
    # MLServer's faster transport (gRPC, 400 req/s) is the one compared.
    assert by_target[5.0].measured == pytest.approx(12_000 / 400)
    assert by_target[3.0].measured == pytest.approx(12_000 / 2_400)
    assert by_target[3.0].met


def test_aims_not_met_or_not_measured() -> None:
    systems = [result("rtbserve", 16, 5_000, 6_000), result("plain-thrift", 16, 2_000, 2_500)]
    verdicts = {a.target: a.met for a in aims(systems)}
    assert verdicts[10_000.0] is False
    assert verdicts[3.0] is False  # 5,000 / 2,500 = 2x
    assert verdicts[5.0] is None  # MLServer not measured


def test_json_round_trip(tmp_path: Path) -> None:
    report = sample_report()
    path = tmp_path / "r.json"
    report.write_json(path)
    data = json.loads(path.read_text())
    assert data["aims"][0]["met"] is True
    assert any(r["basis"] == "capacity" for r in data["ratios"])
    again = BenchReport.read_json(path)
    assert again.systems == report.systems
    assert again.predict == report.predict


def test_summary_shows_every_system_ratio_aim_and_fleet_figure() -> None:
    report = sample_report()
    text = render_summary(report, "2026-11-23.png")
    assert text.startswith("# rtbserve benchmark, 2026-11-23")
    for label in ("echo limit", "rtbserve", "plain thriftpy2", "MLServer REST", "MLServer gRPC"):
        assert label in text
    assert "12,000" in text
    assert "8.0x" in text
    assert "not met" not in text  # every aim of the sample is met
    assert "c7g.2xlarge" in text
    assert "c8g.2xlarge" in text
    # 12,000 req/s per one-vCPU pod at 70%: 1M req/s takes 120 pods over 2 zones, 60 per zone.
    assert "| c7g.2xlarge | 1,000,000 | 180 (60) | 180 | 27 |" in text
    assert "![throughput and latency per system](2026-11-23.png)" in text
    assert "batch_16.native_rows_per_s" in text
    # MLServer rows are at shares of capacity, and say so.
    assert "of capacity" in text


def test_quick_runs_are_flagged() -> None:
    report = sample_report()
    report.settings["quick"] = True
    assert "Quick smoke run" in render_summary(report, None)


def test_failed_phases_are_listed() -> None:
    report = sample_report()
    report.errors.append("mlserver-rest at 16 bidders: ProcessFailedError: exited")
    assert "ProcessFailedError: exited" in render_summary(report, None)


def test_readme_block_is_replaced_and_the_rest_kept() -> None:
    readme = f"# Bench\n\nMethod text.\n\n{README_START}\nold results\n{README_END}\n\nTail.\n"
    new = update_readme(readme, sample_report(), "results/2026-11-23.md")
    assert "old results" not in new
    assert new.startswith("# Bench\n\nMethod text.\n\n")
    assert new.endswith("\n\nTail.\n")
    assert "results/2026-11-23.md" in new
    assert "12,000" in new
    # Updating again replaces, not appends.
    assert update_readme(new, sample_report(), "x.md").count(README_START) == 1


def test_readme_without_markers_is_refused() -> None:
    with pytest.raises(ValueError, match="block"):
        update_readme("# no markers\n", sample_report(), "x.md")


def test_chart_is_a_png(tmp_path: Path) -> None:
    from bench.chart import render_chart

    path = render_chart(sample_report(), tmp_path / "chart.png")
    data = path.read_bytes()
    assert data.startswith(b"\x89PNG\r\n\x1a\n")
    assert len(data) > 10_000


def test_every_system_has_its_own_color() -> None:
    from bench.chart import COLORS
    from bench.summary import SYSTEM_LABELS

    # without one, matplotlib's color cycle would paint a system differently in each group
    assert set(SYSTEM_LABELS) <= set(COLORS)
    assert len(set(COLORS.values())) == len(COLORS)


def test_chart_copes_with_systems_without_figures(tmp_path: Path) -> None:
    from bench.chart import render_chart

    report = sample_report()
    report.systems.append(SystemResult("mlserver-rest", 1, None, None))
    assert render_chart(report, tmp_path / "chart.png").exists()


def test_rtbserve_missing_the_slo_everywhere_misses_every_aim() -> None:
    systems = [
        result("rtbserve", 16, None, 900),
        result("plain-thrift", 16, None, 300),
        result("mlserver-grpc", 16, None, 100),
    ]
    assert [a.met for a in aims(systems)] == [False, False, False]


def test_small_ratios_keep_their_digits() -> None:
    from bench.summary import fmt_ratio

    assert fmt_ratio(0.043) == "0.04x"
    assert fmt_ratio(12.34) == "12.3x"
    assert fmt_ratio(None) == "—"


def test_aims_missed_for_lack_of_any_passing_rate_say_so() -> None:
    report = sample_report()
    report.systems = [result("rtbserve", 16, None, 900), result("plain-thrift", 16, None, 300)]
    text = render_summary(report, None)
    assert "no rate met the SLO" in text
    assert "0.00x" not in text


def test_noisy_runs_carry_a_warning_and_quiet_ones_do_not() -> None:
    report = sample_report()
    assert "Other processes used up to" not in render_summary(report, None)
    noisy = point(1000, 1.0)
    report.systems[1].points["0.5"] = RunMeasurement(
        **{**noisy.__dict__, "server_cpu_cores": 0.3, "server_core_busy": 0.9}
    )
    text = render_summary(report, None)
    assert "Other processes used up to 0.60 of the server's core" in text


def test_render_only_rewrites_summary_and_chart_from_json(tmp_path: Path) -> None:
    from bench.run import main

    path = tmp_path / "2026-11-23.json"
    sample_report().write_json(path)
    assert main(["--render-only", str(path), "--no-readme"]) == 0
    assert "12,000" in (tmp_path / "2026-11-23.md").read_text()
    assert (tmp_path / "2026-11-23.png").read_bytes().startswith(b"\x89PNG")
