"""Two versions of rtbserve's server, or two load generator loops, side by side: the way to
measure a change on a noisy machine.

    python -m bench.compare_servers --before REV --model DIR [--rates 6000,8000,10000,12000]
        [--rounds 4] [--bidders 16] [--seconds 4]
    python -m bench.compare_servers --engines python,native --model DIR

With `--before`, checks REV out into a git worktree under bench/work/compare/ (its C extensions
built in place), starts it and the working tree's server, both `--workers 1` and both pinned
to the server core. With `--engines A,B`, starts the working tree's server once and drives it
with `rtbserve loadgen --engine A` and `--engine B`. Either way it keeps the cores warm
(`warm_cores`) and loads the two sides in alternation from the load core: every round runs
each rate against both, in alternating order, so a burst of noise from other tenants hits both
alike. Prints a Markdown table per rate (server CPU per request, median p99, runs within the
SLO, first side -> second) and writes every run to bench/work/compare/<time>/runs.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

from bench import warm_cores
from bench.config import REPO_DIR, WORK_DIR
from bench.drivers import LoadgenDriver
from bench.measurements import RunMeasurement
from bench.procs import ServerProcess, free_port, http_ok, running, start_server, wait_until
from bench.workload import make_workload, write_replay
from model_server.artifact import load_artifact

COMPARE_DIR = WORK_DIR / "compare"
SIDES = ("before", "after")


@dataclass(frozen=True)
class Run:
    side: str
    rate: float
    round: int
    measurement: RunMeasurement


@dataclass(frozen=True)
class RateSummary:
    rate: float
    cpu_us: dict[str, float | None]  # median server CPU per request, per side
    p99_ms: dict[str, float]  # median client p99, per side
    within_slo: dict[str, tuple[int, int]]  # (runs with p99 <= SLO and no errors, runs)


def cpu_us_per_request(m: RunMeasurement) -> float | None:
    if m.server_cpu_cores is None or m.achieved_rps <= 0:
        return None
    return m.server_cpu_cores / m.achieved_rps * 1e6


def summarize(
    runs: Sequence[Run], slo_p99_ms: float, sides: Sequence[str] = SIDES
) -> list[RateSummary]:
    """Per rate, each side's medians and how many of its runs met the SLO."""
    out = []
    for rate in sorted({r.rate for r in runs}):
        cpu: dict[str, float | None] = {}
        p99: dict[str, float] = {}
        within: dict[str, tuple[int, int]] = {}
        for side in sides:
            ms = [r.measurement for r in runs if r.rate == rate and r.side == side]
            if not ms:
                continue
            costs = [c for c in map(cpu_us_per_request, ms) if c is not None]
            cpu[side] = statistics.median(costs) if costs else None
            p99[side] = statistics.median(m.p99_ms for m in ms)
            ok = sum(m.p99_ms <= slo_p99_ms and m.errors == 0 for m in ms)
            within[side] = (ok, len(ms))
        out.append(RateSummary(rate, cpu, p99, within))
    return out


def _pair(values: dict[str, float | None], fmt: str, sides: Sequence[str]) -> str:
    def one(side: str) -> str:
        v = values.get(side)
        return "—" if v is None else format(v, fmt)

    return " → ".join(one(side) for side in sides)


def render(
    summaries: Sequence[RateSummary], slo_p99_ms: float, sides: Sequence[str] = SIDES
) -> str:
    named = " → ".join(sides)
    lines = [
        f"| req/s | server CPU per request (µs), {named} | median p99 (ms) "
        f"| runs with p99 ≤ {slo_p99_ms:g} ms |",
        "| --- | --- | --- | --- |",
    ]
    for s in summaries:
        within = " → ".join(f"{ok}/{n}" for ok, n in (s.within_slo.get(x, (0, 0)) for x in sides))
        p99: dict[str, float | None] = dict(s.p99_ms)
        lines.append(
            f"| {s.rate:,.0f} | {_pair(s.cpu_us, '.0f', sides)} | {_pair(p99, '.2f', sides)} "
            f"| {within} |"
        )
    return "\n".join(lines) + "\n"


def checkout(rev: str, root: Path) -> Path:
    """A worktree of `rev` under `root` with its C extensions built in place (reused)."""
    commit = subprocess.run(
        ["git", "rev-parse", "--verify", f"{rev}^{{commit}}"],
        cwd=REPO_DIR, check=True, capture_output=True, text=True,
    ).stdout.strip()  # fmt: skip
    tree = root / commit[:12]
    if not (tree / ".built").exists():
        root.mkdir(parents=True, exist_ok=True)
        subprocess.run(["git", "worktree", "prune"], cwd=REPO_DIR, check=True)
        if not tree.exists():
            subprocess.run(
                ["git", "worktree", "add", "--detach", str(tree), commit],
                cwd=REPO_DIR, check=True, capture_output=True,
            )  # fmt: skip
        subprocess.run(
            [sys.executable, "setup.py", "build_ext", "--inplace"],
            cwd=tree, check=True, capture_output=True,
        )  # fmt: skip
        (tree / ".built").write_text(commit + "\n")
    return tree


@contextmanager
def serve(
    side: str, model: Path, core: int, logs: Path, code: Path | None
) -> Iterator[tuple[ServerProcess, int]]:
    """`rtbserve serve` from the working tree, or from `code` (put first on its PYTHONPATH)."""
    port, http = free_port(), free_port()
    argv = [
        sys.executable, "-m", "rtbserve", "serve", f"--model={model}", "--workers=1",
        f"--thrift-port={port}", f"--http-port={http}", "--drain-seconds=0",
        "--log-level=warning",
    ]  # fmt: skip
    env = {"PYTHONPATH": str(code)} if code is not None else None
    server = start_server(
        f"rtbserve-{side}", argv, core=core, log_dir=logs, env=env, cwd=code or REPO_DIR
    )
    server.metrics_url = f"http://127.0.0.1:{http}/metrics"
    with running(server):
        wait_until(server, http_ok(f"http://127.0.0.1:{http}/readyz"), 180, "ready")
        yield server, port


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.compare_servers", description=__doc__)
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--before", help="git revision to compare the tree against")
    what.add_argument(
        "--engines", help="two `rtbserve loadgen --engine` loops to compare, e.g. python,native"
    )
    p.add_argument("--model", type=Path, required=True, help="artifact directory")
    p.add_argument("--rates", default="6000,8000,10000,12000")
    p.add_argument("--rounds", type=int, default=4)
    p.add_argument("--bidders", type=int, default=16)
    p.add_argument("--seconds", type=float, default=4.0, help="measured seconds per run")
    p.add_argument("--slo-p99-ms", type=float, default=2.0)
    p.add_argument("--server-core", type=int, default=0)
    p.add_argument("--load-core", type=int, default=1)
    args = p.parse_args(sys.argv[1:] if argv is None else argv)
    rates = [float(r) for r in args.rates.split(",")]
    model_dir = args.model.resolve()  # the old tree's server runs from its own directory

    stamp = time.strftime("%Y%m%dT%H%M%S")
    out = COMPARE_DIR / stamp
    out.mkdir(parents=True, exist_ok=True)
    if args.engines:
        engines = [e.strip() for e in args.engines.split(",")]
        if len(engines) != 2 or engines[0] == engines[1]:
            p.error("--engines takes two different loops, e.g. python,native")
        sides: tuple[str, ...] = tuple(engines)
    else:
        sides = SIDES
        old_tree = checkout(args.before, COMPARE_DIR / "trees")
    model = load_artifact(model_dir)
    load = make_workload(list(model.manifest.bidders), args.bidders, 500, seed=7)
    replay = write_replay(out / "replay.jsonl", load)
    runs: list[Run] = []
    with ExitStack() as stack:
        stack.enter_context(
            warm_cores.keep_warm([args.server_core, args.load_core], WORK_DIR / "idle_loop")
        )
        drivers = {}
        servers: dict[str, tuple[ServerProcess, int, str | None]]
        if args.engines:
            server, port = stack.enter_context(
                serve("tree", model_dir, args.server_core, out, None)
            )
            servers = {side: (server, port, side) for side in sides}
        else:
            servers = {
                side: (
                    *stack.enter_context(serve(side, model_dir, args.server_core, out, code)),
                    None,
                )
                for side, code in (("before", old_tree), ("after", None))
            }
        for side, (server, port, engine) in servers.items():
            drivers[side] = LoadgenDriver(
                argv=[sys.executable, "-m", "rtbserve"],
                replay=replay,
                target=f"127.0.0.1:{port}",
                connections=16,
                core=args.load_core,
                server=server,
                engine=engine,
            )
        for round_ in range(args.rounds):
            for rate in rates:
                for side in sides if round_ % 2 == 0 else sides[::-1]:
                    m = drivers[side].measure(rate, args.seconds, 1.0)
                    runs.append(Run(side, rate, round_, m))
                    cost = cpu_us_per_request(m)
                    print(
                        f"round {round_} {side:6} {rate:>8,.0f} req/s  p50 {m.p50_ms:.3f} ms"
                        f"  p99 {m.p99_ms:.3f} ms  errors {m.errors}"
                        + ("" if cost is None else f"  CPU {cost:.0f} µs/request"),
                        flush=True,
                    )
    (out / "runs.json").write_text(json.dumps([asdict(r) for r in runs], indent=1))
    print()
    print(render(summarize(runs, args.slo_p99_ms, sides), args.slo_p99_ms, sides))
    print(f"runs: {out / 'runs.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
