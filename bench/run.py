"""`make bench` (`python -m bench.run`): rtbserve beside the limits of this machine and its peers.

Phases: set-up (model, requests, peer virtualenvs, echo server), the in-process prediction
limit, then every system at every bidder count: saturation search and latency at shares of
saturation. Writes bench/results/<date>.json, .png and .md and the README's results block.
Every process it starts is stopped on any exit. `--quick` is a smoke run of a few minutes.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import subprocess
import sys
import time
import traceback
from collections.abc import Sequence
from dataclasses import asdict, replace
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import Any

from rich.console import Console
from rich.errors import MarkupError
from rich.markup import escape
from rich.text import Text

from bench import warm_cores
from bench.config import REPO_DIR, RESULTS_DIR, WORK_DIR, BenchConfig, SearchConfig, quick_preset
from bench.measure import measure_system
from bench.prepare import prepare
from bench.procs import pinned, stop_all
from bench.ratios import AIM_BIDDERS
from bench.report import BenchReport
from bench.sizing_table import sizing_lines, update_block
from bench.summary import README_END, README_START, render_summary, update_readme
from bench.systems import SYSTEMS, Prepared

console = Console(highlight=False)

# The in-process prediction benchmark trains its reference models first.
PREDICT_TIMEOUT = 600.0


class Progress:
    """Timestamped progress lines on the terminal and in the run's log file."""

    def __init__(self, log_file: Path) -> None:
        self.t0 = time.monotonic()
        log_file.parent.mkdir(parents=True, exist_ok=True)
        self.file = log_file.open("a")

    def __call__(self, message: str) -> None:
        elapsed = time.monotonic() - self.t0
        stamp = f"[{int(elapsed // 60):02d}:{elapsed % 60:04.1f}]"
        try:
            text = Text.from_markup(message)
        except MarkupError:  # a message quoting something that looks like markup
            text = Text(message)
        console.print(Text(f"{stamp} ", style="dim") + text)
        self.file.write(f"{stamp} {text.plain}\n")
        self.file.flush()

    def close(self) -> None:
        self.file.close()

    def phase(self, title: str) -> None:
        self("")
        self(f"[bold]== {title}[/bold]")


def parse_args(argv: Sequence[str]) -> tuple[BenchConfig, argparse.Namespace]:
    base = BenchConfig()
    p = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="smoke run: short phases, coarse search")
    p.add_argument(
        "--systems",
        default=",".join(base.systems),
        help=f"comma-separated subset of: {', '.join(SYSTEMS)}",
    )
    p.add_argument("--bidders", default=",".join(map(str, base.bidder_counts)))
    p.add_argument("--step-seconds", type=float, help="measured seconds per search step")
    p.add_argument("--point-seconds", type=float, help="measured seconds at 50%%/80%% load")
    p.add_argument("--warmup-seconds", type=float, help="unmeasured seconds before each run")
    p.add_argument("--slo-p99-ms", type=float, help="latency SLO of the saturation search")
    p.add_argument("--synthetic-rows", type=int, help="training rows for the benchmark model")
    p.add_argument("--model", type=Path, help="use this artifact directory instead of training")
    p.add_argument("--server-core", type=int, default=base.server_core)
    p.add_argument("--load-core", type=int, default=base.load_core)
    p.add_argument("--connections", type=int, default=base.connections)
    p.add_argument("--results-dir", type=Path, default=RESULTS_DIR)
    p.add_argument("--work-dir", type=Path, default=WORK_DIR)
    p.add_argument("--no-readme", action="store_true", help="leave bench/README.md alone")
    p.add_argument(
        "--thrift-driver",
        choices=("loadgen", "open-loop"),
        default="loadgen",
        help="what drives the Thrift servers (open-loop: bench.peer_driver, to cross-check)",
    )
    p.add_argument(
        "--render-only",
        type=Path,
        metavar="RESULTS_JSON",
        help="measure nothing: re-render the summary, chart and README from a results file",
    )
    p.add_argument("--no-predict", action="store_true", help="skip the in-process prediction limit")
    p.add_argument(
        "--no-cold-start", action="store_true", help="skip the container cold-start phase"
    )
    p.add_argument(
        "--cold-cores",
        action="store_true",
        help="let the cores idle between requests (no polling idle or busy loops; see "
        "bench.warm_cores)",
    )
    args = p.parse_args(argv)

    cfg = quick_preset(base) if args.quick else base
    systems = tuple(s.strip() for s in args.systems.split(",") if s.strip())
    unknown = [s for s in systems if s not in SYSTEMS]
    if unknown:
        p.error(f"unknown system(s) {unknown}; choose from {list(SYSTEMS)}")
    try:
        bidders = tuple(int(b) for b in args.bidders.split(",") if b.strip())
    except ValueError:
        p.error(f"--bidders must be comma-separated integers, got {args.bidders!r}")
    if not bidders or min(bidders) < 1:
        p.error("--bidders needs at least one count >= 1")
    search: SearchConfig = cfg.search
    if args.step_seconds is not None:
        search = replace(search, step_seconds=args.step_seconds)
    if args.slo_p99_ms is not None:
        search = replace(search, slo_p99_ms=args.slo_p99_ms)
    cfg = replace(
        cfg,
        systems=systems,
        bidder_counts=bidders,
        search=search,
        point_seconds=args.point_seconds or cfg.point_seconds,
        warmup_seconds=cfg.warmup_seconds if args.warmup_seconds is None else args.warmup_seconds,
        synthetic_rows=args.synthetic_rows or cfg.synthetic_rows,
        server_core=args.server_core,
        load_core=args.load_core,
        connections=args.connections,
        results_dir=args.results_dir,
        work_dir=args.work_dir,
        warm_cores=not args.cold_cores,
    )
    for name in ("point_seconds", "warmup_seconds"):
        if getattr(cfg, name) < 0 or (name == "point_seconds" and cfg.point_seconds == 0):
            p.error(f"--{name.replace('_', '-')} must be positive")
    if search.step_seconds <= 0 or search.slo_p99_ms <= 0:
        p.error("--step-seconds and --slo-p99-ms must be positive")
    cores = os.sched_getaffinity(0)
    for core in (cfg.server_core, cfg.load_core):
        if core not in cores:
            p.error(f"core {core} is not available here (cores: {sorted(cores)})")
    return cfg, args


def machine_facts() -> dict[str, Any]:
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "arch": platform.machine(),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "loadavg_at_start": list(os.getloadavg()),
    }


def settings_of(cfg: BenchConfig, thrift_driver: str) -> dict[str, Any]:
    return {
        "quick": cfg.quick,
        "systems": list(cfg.systems),
        "bidder_counts": list(cfg.bidder_counts),
        "load_points": list(cfg.load_points),
        "point_seconds": cfg.point_seconds,
        "warmup_seconds": cfg.warmup_seconds,
        "connections": cfg.connections,
        "server_core": cfg.server_core,
        "load_core": cfg.load_core,
        "synthetic_rows": cfg.synthetic_rows,
        "slo_p99_ms": cfg.search.slo_p99_ms,
        "search": asdict(cfg.search),
        "fleet_bidders": AIM_BIDDERS,
        "thrift_driver": thrift_driver,
        "warm_cores": cfg.warm_cores,
    }


def run_predict_limit(report: BenchReport, cfg: BenchConfig, log: Progress) -> None:
    """bench/predict_bench.py's in-process rows/s (XGBoost inplace_predict vs the fast path),
    in its own process pinned to the server core."""
    log.phase("limit: in-process prediction (python -m bench.predict_bench)")
    argv = pinned([sys.executable, "-m", "bench.predict_bench"], cfg.server_core)
    try:
        done = subprocess.run(
            argv, capture_output=True, text=True, timeout=PREDICT_TIMEOUT, check=False, cwd=REPO_DIR
        )
        if done.returncode != 0:
            raise RuntimeError(f"exit {done.returncode}: {done.stderr.strip()[-1500:]}")
        report.predict = json.loads(done.stdout)
    except Exception as exc:
        report.errors.append(f"in-process prediction: {type(exc).__name__}: {exc}")
        log(f"  [red]failed:[/red] {escape(str(exc))}")
        return
    for backend, by_batch in report.predict.get("rows_per_s", {}).items():
        shown = ", ".join(f"batch {b}: {v:,.0f} rows/s" for b, v in by_batch.items())
        log(f"  {backend:8} {shown}")
    path = report.predict.get("request_path")
    if path:
        log(f"  whole request path, one worker, 16 bidders: {path}")


def run_systems(report: BenchReport, cfg: BenchConfig, prep: Prepared, log: Progress) -> None:
    for system in cfg.systems:
        for bidders in cfg.bidder_counts:
            log.phase(f"{system}, {bidders} bidder(s) per request")
            try:
                with SYSTEMS[system](prep, bidders) as driver:
                    result = measure_system(system, bidders, driver, cfg, log)
                report.systems.append(result)
            except Exception as exc:
                report.errors.append(f"{system} at {bidders} bidders: {type(exc).__name__}: {exc}")
                log(f"  [red]failed:[/red] {escape(str(exc))}")
                log(escape(traceback.format_exc(limit=3)))


def run_cold_start(report: BenchReport, cfg: BenchConfig, log: Progress) -> None:
    """bench/cold_start.py, when the image is built (`make image`); a note otherwise."""
    from bench import cold_start

    log.phase("cold start: pull, start, download, load, /readyz (python -m bench.cold_start)")
    arch = cold_start.host_arch()
    if not cold_start.image_available(arch):
        report.notes.append(f"cold start not measured: no image {cold_start.IMAGE}-{arch} "
                            "(run `make image` first)")  # fmt: skip
        log("  skipped: no image (run `make image` first)")
        return
    try:
        report.cold_start = cold_start.measure(1 if cfg.quick else 3, log=log)
    except Exception as exc:
        report.errors.append(f"cold start: {type(exc).__name__}: {exc}")
        log(f"  [red]failed:[/red] {escape(str(exc))}")


# The READMEs whose "Sizing a fleet" block each full run regenerates.
SIZING_DOCS = (REPO_DIR / "README.md", REPO_DIR / "charts" / "rtbserve" / "README.md")


def update_sizing_docs(
    report: BenchReport, md_path: Path, docs: Sequence[Path] = SIZING_DOCS
) -> list[Path]:
    """Write the run's sizing table into each README that has the markers; returns those."""
    lines = sizing_lines(report)
    updated = []
    for doc in docs:
        text = doc.read_text()
        link = os.path.relpath(md_path.resolve(), doc.parent.resolve())
        try:
            doc.write_text(update_block(text, lines, link))
        except ValueError:
            continue
        updated.append(doc)
    return updated


def write_outputs(report: BenchReport, cfg: BenchConfig, update_docs: bool, log: Progress) -> None:
    from bench.chart import render_chart

    out = cfg.results_dir
    stem = report.date + ("-quick" if cfg.quick else "")
    json_path, png_path, md_path = out / f"{stem}.json", out / f"{stem}.png", out / f"{stem}.md"
    report.write_json(json_path)
    chart_name: str | None = png_path.name
    try:
        render_chart(report, png_path)
    except Exception as exc:
        report.errors.append(f"chart: {type(exc).__name__}: {exc}")
        chart_name = None
    md_path.write_text(render_summary(report, chart_name))
    log.phase("results")
    log(f"  {json_path}\n  {md_path}\n  {png_path if chart_name else '(no chart)'}")
    if update_docs and not cfg.quick:
        readme = cfg.readme.read_text()
        if README_START in readme and README_END in readme:
            cfg.readme.write_text(update_readme(readme, report, f"results/{md_path.name}"))
            log(f"  updated {cfg.readme}")
        for doc in update_sizing_docs(report, md_path):
            log(f"  updated the sizing table in {doc}")
        if report.cold_start:
            from bench.cold_start import CHART_README, markdown, update_doc

            table = markdown(report.cold_start)
            CHART_README.write_text(update_doc(CHART_README.read_text(), table))
            log(f"  updated the cold-start table in {CHART_README}")


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)


def render_only(path: Path, cfg: BenchConfig, update_docs: bool) -> int:
    """Rewrite a run's Markdown, chart and (for a full run) README block from its JSON."""
    from bench.chart import render_chart

    report = BenchReport.read_json(path)
    chart = path.with_suffix(".png")
    render_chart(report, chart)
    path.with_suffix(".md").write_text(render_summary(report, chart.name))
    if update_docs and not report.settings.get("quick"):
        md_name = path.with_suffix(".md").name
        cfg.readme.write_text(update_readme(cfg.readme.read_text(), report, f"results/{md_name}"))
        update_sizing_docs(report, path.with_suffix(".md"))
    console.print(f"rendered {path.with_suffix('.md')} and {chart}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    cfg, args = parse_args(sys.argv[1:] if argv is None else argv)
    if args.render_only is not None:
        return render_only(args.render_only, cfg, not args.no_readme)
    signal.signal(signal.SIGTERM, _on_sigterm)
    started = datetime.now(UTC)
    run_dir = cfg.work_dir / "runs" / started.strftime("%Y%m%dT%H%M%S")
    log = Progress(run_dir / "bench.log")
    report = BenchReport(
        date=started.strftime("%Y-%m-%d"),
        started_at=started.strftime("%Y-%m-%dT%H:%M:%SZ"),
        machine=machine_facts(),
        settings=settings_of(cfg, args.thrift_driver),
    )
    t0 = time.monotonic()
    log(f"rtbserve benchmark{' (quick)' if cfg.quick else ''}: logs in {run_dir}")
    try:
        log.phase("set-up: model, requests, peer virtualenvs, echo server")
        try:
            prep = prepare(
                cfg,
                run_dir=run_dir,
                model_dir=args.model,
                thrift_driver=args.thrift_driver,
                report=report,
                log=log,
            )
        except Exception as exc:
            report.errors.append(f"set-up: {type(exc).__name__}: {exc}")
            log(f"  [red]set-up failed:[/red] {escape(str(exc))}")
            prep = None
        if not args.no_predict:
            run_predict_limit(report, cfg, log)
        if prep is not None:
            with warm_cores.keep_warm(
                [cfg.server_core, cfg.load_core], cfg.work_dir / "idle_loop", cfg.warm_cores
            ):
                report.settings["warm_method"] = warm_cores.method()
                run_systems(report, cfg, prep, log)
        if not args.no_cold_start:
            run_cold_start(report, cfg, log)
    except (KeyboardInterrupt, SystemExit) as exc:
        # Ctrl-C or SIGTERM: stop everything, then still write what was measured.
        code = exc.code if isinstance(exc, SystemExit) else 130
        interrupted = code if isinstance(code, int) and code else 1
        report.errors.append("interrupted")
        log("[red]interrupted[/red]")
    else:
        interrupted = 0
    finally:
        stop_all()
        warm_cores.stop_all()
    report.machine["loadavg_at_end"] = list(os.getloadavg())
    report.duration_s = time.monotonic() - t0
    # An interrupted run writes its partial results but never replaces the README's.
    write_outputs(report, cfg, not args.no_readme and not interrupted, log)
    log.close()
    return interrupted or (1 if report.errors else 0)


if __name__ == "__main__":
    sys.exit(main())
