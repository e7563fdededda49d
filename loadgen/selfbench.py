"""How fast is the load generator itself? One `rtbserve loadgen` process against the
canned-reply stub (`loadgen.stub`), each pinned to its own CPU, with each sending loop
(`--engine native` and `--engine python`) in turn at every rate, so the two are compared
side by side in one run.

    python -m loadgen.selfbench --rates 10k,20k,30k,40k --duration 5s --json out.json

1. overhead: latency at a low rate, where neither side is busy, is what the generator (plus
   loopback and the stub) adds to every measurement;
2. capacity: the highest rate in the ladder the single process sustains (nothing dropped,
   no errors, >= 99% of the target achieved), with its CPU time per request.

The stub is Python too: when both loops stop at the same rate, the stub is the limit.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import orjson
from rich.console import Console
from rich.table import Table

from loadgen.schedule import parse_duration, parse_rate

SUSTAINED_SHARE = 0.99


@dataclass
class Step:
    engine: str
    rate: float
    achieved: float
    sent: int
    dropped: int
    errors: int
    late_share: float
    p50_ms: float
    p99_ms: float
    p999_ms: float
    cpu_us_per_request: float | None

    @property
    def sustained(self) -> bool:
        return not self.dropped and not self.errors and self.achieved >= SUSTAINED_SHARE * self.rate


def _pinned(cpu: int | None) -> list[str]:
    """Command prefix running a process on one CPU (nothing when not pinning)."""
    if cpu is None:
        return []
    taskset = shutil.which("taskset")
    if taskset is None:
        raise RuntimeError("pinning needs taskset (util-linux); use --loadgen-cpu -1")
    return [taskset, "-c", str(cpu)]


def start_stub(cpu: int | None) -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen(
        [*_pinned(cpu), sys.executable, "-u", "-m", "loadgen.stub", "--port", "0"],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line.startswith("listening on "):
        proc.kill()
        raise RuntimeError(f"stub did not start: {line!r}")
    return proc, line.split()[-1]


def run_step(
    target: str,
    rate: float,
    *,
    engine: str,
    duration: float,
    connections: int,
    spin_below: str,
    cpu: int | None,
    work: Path,
) -> Step:
    report = work / f"report-{engine}-{rate:.0f}.json"
    argv = [*_pinned(cpu), sys.executable, "-m", "rtbserve", "loadgen", "--plain"]
    argv += ["--target", target, "--engine", engine, "--spin-below", spin_below]
    argv += ["--rate", f"{rate:.0f}", "--duration", f"{duration}", "--warmup", "1s"]
    argv += ["--connections", str(connections), "--max-error-ratio", "1"]
    argv += ["--report-json", str(report)]
    subprocess.run(argv, capture_output=True, check=False, timeout=600)
    doc = orjson.loads(report.read_bytes())
    gen, lat = doc["generator"], doc["latency_ms"]
    return Step(
        engine=engine,
        rate=rate,
        achieved=doc["achieved_rate"],
        sent=doc["requests"]["sent"],
        dropped=doc["requests"]["dropped"],
        errors=doc["requests"]["errors"],
        late_share=gen["late_share"],
        p50_ms=lat["p50"],
        p99_ms=lat["p99"],
        p999_ms=lat["p99_9"],
        cpu_us_per_request=gen["cpu_us_per_request"],
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m loadgen.selfbench", description=__doc__)
    parser.add_argument("--rates", default="10k,20k,30k,40k,50k")
    parser.add_argument("--overhead-rate", default="1000")
    parser.add_argument("--duration", default="5s")
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--engines", default="native,python", help="sending loops to compare")
    parser.add_argument("--spin-below", default="0", help="passed to loadgen (e.g. 500us)")
    parser.add_argument("--loadgen-cpu", type=int, default=0, help="-1: do not pin")
    parser.add_argument("--stub-cpu", type=int, default=1, help="-1: do not pin")
    parser.add_argument("--json", type=Path, help="write the results here")
    args = parser.parse_args(argv)
    rates = [parse_rate(r) for r in args.rates.split(",")]
    engines = [e.strip() for e in args.engines.split(",") if e.strip()]
    duration = parse_duration(args.duration)
    lg_cpu = None if args.loadgen_cpu < 0 else args.loadgen_cpu
    stub_cpu = None if args.stub_cpu < 0 else args.stub_cpu
    console = Console()
    stub, target = start_stub(stub_cpu)
    overheads: list[Step] = []
    steps: list[Step] = []
    try:
        with tempfile.TemporaryDirectory(prefix="rtbserve-selfbench-") as tmp:
            options: dict[str, Any] = {
                "duration": duration,
                "connections": args.connections,
                "spin_below": args.spin_below,
                "cpu": lg_cpu,
                "work": Path(tmp),
            }
            for engine in engines:
                overheads.append(
                    run_step(target, parse_rate(args.overhead_rate), engine=engine, **options)
                )
            for rate in rates:
                for engine in engines:  # side by side: the engines alternate at every rate
                    step = run_step(target, rate, engine=engine, **options)
                    steps.append(step)
                    console.print(
                        f"{engine:>6} {rate:>9,.0f}/s: achieved {step.achieved:,.0f}/s, dropped "
                        f"{step.dropped:,}, p99 {step.p99_ms:.2f} ms -> "
                        f"{'ok' if step.sustained else 'NOT sustained'}",
                        highlight=False,
                    )
    finally:
        stub.terminate()
        stub.wait(timeout=10)
    console.print(_table([*overheads, *steps]))
    best = {
        e: max((s.rate for s in steps if s.engine == e and s.sustained), default=None)
        for e in engines
    }
    for overhead in overheads:
        found = best[overhead.engine]
        console.print(
            f"{overhead.engine}: overhead at {overhead.rate:,.0f}/s p50 {overhead.p50_ms:.3f} ms, "
            f"p99 {overhead.p99_ms:.3f} ms; highest sustained rate: "
            + (f"{found:,.0f}/s" if found else "none of the ladder"),
            highlight=False,
        )
    ratios = _cpu_ratios(steps, engines)
    for rate, ratio in ratios.items():
        console.print(
            f"CPU per request at {rate:,.0f}/s, {engines[1]} / {engines[0]}: {ratio:.2f}x"
        )
    if args.json:
        args.json.write_bytes(
            orjson.dumps(
                {
                    "overhead": [asdict(o) for o in overheads],
                    "steps": [asdict(s) | {"sustained": s.sustained} for s in steps],
                    "max_sustained_rate": best,
                    "cpu_ratio": {f"{r:.0f}": v for r, v in ratios.items()},
                    "pinned": {"loadgen_cpu": lg_cpu, "stub_cpu": stub_cpu},
                },
                option=orjson.OPT_INDENT_2,
            )
        )
    return 0


def _table(steps: list[Step]) -> Table:
    table = Table(title="one loadgen process vs. the canned-reply stub", title_justify="left")
    columns = ("engine", "target", "achieved", "dropped", "late", "p50", "p99", "p99.9", "CPU/req")
    for column in columns:
        table.add_column(column, justify="right")
    for step in steps:
        table.add_row(
            step.engine,
            f"{step.rate:,.0f}",
            f"{step.achieved:,.0f}",
            f"{step.dropped:,}",
            f"{step.late_share:.1%}",
            f"{step.p50_ms:.3f} ms",
            f"{step.p99_ms:.3f} ms",
            f"{step.p999_ms:.3f} ms",
            f"{step.cpu_us_per_request:.1f} us" if step.cpu_us_per_request else "-",
        )
    return table


def _cpu_ratios(steps: list[Step], engines: list[str]) -> dict[float, float]:
    """Second engine's CPU per request over the first's, at each rate both sustained."""
    if len(engines) < 2:
        return {}
    by = {(s.engine, s.rate): s for s in steps}
    ratios = {}
    for rate in dict.fromkeys(s.rate for s in steps):
        first, second = by.get((engines[0], rate)), by.get((engines[1], rate))
        if (
            first
            and second
            and first.sustained
            and second.sustained
            and first.cpu_us_per_request
            and second.cpu_us_per_request
        ):
            ratios[rate] = second.cpu_us_per_request / first.cpu_us_per_request
    return ratios


if __name__ == "__main__":
    sys.exit(main())
