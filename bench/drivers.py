"""Load drivers: one fixed-rate, open-loop run against a server, as a RunMeasurement.

Thrift systems (rtbserve, the plain Thrift peer, the echo limit) are driven by `rtbserve loadgen`;
the HTTP and gRPC peers by `bench.peer_driver`, which follows the same method. Each run is a
separate process pinned to the load core; the server's CPU use is read from /proc around it.
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Protocol

from bench import server_latency, warm_cores
from bench.config import REPO_DIR
from bench.cpu import CpuSampler, wait_idle
from bench.measurements import RunMeasurement
from bench.procs import ClientRun, ServerProcess, run_client

# Time a client gets beyond its run for start-up and drain before it is killed.
CLIENT_SLACK_SECONDS = 60.0


class DriverError(RuntimeError):
    """A load run failed to produce a report."""


class Driver(Protocol):
    def measure(self, rate: float, duration: float, warmup: float) -> RunMeasurement: ...


@dataclass
class ServerSide:
    """What the server itself showed during a client run."""

    cpu: CpuSampler
    # Its latency histogram's growth over the run (None: it exposes none).
    latency: server_latency.Buckets | None = None


def with_server_side(run: RunMeasurement, side: ServerSide) -> RunMeasurement:
    """`run` with the server's CPU use (and its core's) over the busiest stretch of the run,
    and the server-side latency quantiles when the server has a histogram."""
    use = side.cpu.use_over(max(run.duration_s, 0.5) * 0.8)
    if use is not None:
        run = replace(run, server_cpu_cores=use.server_cores, server_core_busy=use.core_busy_cores)
    if side.latency is not None:
        p50, p99, p999 = (server_latency.quantile(side.latency, q) for q in (0.5, 0.99, 0.999))
        run = replace(
            run,
            server_p50_ms=None if p50 is None else p50 * 1000.0,
            server_p99_ms=None if p99 is None else p99 * 1000.0,
            server_p999_ms=None if p999 is None else p999 * 1000.0,
        )
    return run


def run_pinned_client(
    argv: list[str], server: ServerProcess, core: int | None, timeout: float
) -> tuple[ClientRun, ServerSide]:
    """Wait for the server's core to go quiet, run the client on `core`, sampling server CPU
    (and reading the server's latency histogram before and after, when it has one)."""
    wait_idle(server.cpu_seconds)
    metrics_url = server.metrics_url
    before = server_latency.scrape_buckets(metrics_url) if metrics_url else None
    with CpuSampler(
        server.cpu_seconds, server.core, filler_cpu=warm_cores.filler_cpu_seconds
    ) as sampler:
        client = run_client(argv, core=core, timeout=timeout, cwd=REPO_DIR)
    server.ensure_alive()
    after = server_latency.scrape_buckets(metrics_url) if metrics_url else None
    latency = server_latency.delta(before, after) if before and after else None
    return client, ServerSide(sampler, latency)


@dataclass
class PeerDriver:
    """`bench.peer_driver` in the peer's own virtualenv, for MLServer's REST and gRPC endpoints."""

    python: Path
    transport: str
    target: str
    model: str
    payloads: Path
    connections: int
    core: int | None
    server: ServerProcess

    def measure(self, rate: float, duration: float, warmup: float) -> RunMeasurement:
        with tempfile.TemporaryDirectory(prefix="rtbserve-bench-") as tmp:
            report = Path(tmp) / "run.json"
            argv = [
                str(self.python),
                "-m",
                "bench.peer_driver",
                f"--transport={self.transport}",
                f"--target={self.target}",
                f"--model={self.model}",
                f"--payloads={self.payloads}",
                f"--rate={rate}",
                f"--duration={duration}",
                f"--warmup={warmup}",
                f"--connections={self.connections}",
                f"--report-json={report}",
            ]
            client, side = run_pinned_client(
                argv, self.server, self.core, timeout=duration + warmup + CLIENT_SLACK_SECONDS
            )
            if client.returncode != 0 or not report.exists():
                raise DriverError(
                    f"peer driver exited with {client.returncode}:\n{client.output[-2000:]}"
                )
            run = RunMeasurement.from_dict(json.loads(report.read_text()))
        return with_server_side(run, side)


# Exit codes of `rtbserve loadgen` that still come with a full report: ok, too many failed
# requests, the generator fell behind (sends dropped). Over saturation the last two are expected.
LOADGEN_REPORTED_EXITS = {0, 5, 7}
# Waits for the next send shorter than this are spent polling (`--spin-below`).
SPIN_BELOW = "500us"


def loadgen_measurement(report: dict[str, Any]) -> RunMeasurement:
    """A RunMeasurement from a `rtbserve loadgen --report-json` report (loadgen-report/v1)."""
    latency = report["latency_ms"]
    requests = report["requests"]
    generator = report.get("generator") or {}
    return RunMeasurement(
        offered_rps=float(report["target_rate"]),
        achieved_rps=float(report["achieved_rate"]),
        p50_ms=float(latency["p50"]),
        p99_ms=float(latency["p99"]),
        p999_ms=float(latency["p99_9"]),
        max_ms=float(latency["max"]),
        requests=int(requests["ok"]),
        # Requests the generator dropped for falling behind never got an answer either.
        errors=int(requests["errors"]) + int(requests.get("dropped", 0)),
        duration_s=float(report["duration_s"]),
        driver_late_share=generator.get("late_share"),
    )


@dataclass
class LoadgenDriver:
    """`rtbserve loadgen` replaying the benchmark's requests, one sending process."""

    argv: list[str]
    replay: Path
    target: str
    connections: int
    core: int | None
    server: ServerProcess
    #: the sending loop (`--engine`); None: loadgen's default
    engine: str | None = None

    def loadgen_args(self, rate: float, duration: float, warmup: float, report: Path) -> list[str]:
        """The `rtbserve loadgen` arguments of one run (after the subcommand)."""
        engine = [f"--engine={self.engine}"] if self.engine else []
        return [
            *engine,
            f"--target={self.target}",
            f"--replay={self.replay}",
            "--loop",
            f"--rate={rate:.3f}",
            f"--duration={duration}s",
            f"--warmup={warmup}s",
            "--workers=1",
            f"--connections={self.connections}",
            # Replies are only counted, not parsed for filtering quality: a lean generator.
            "--quality-sample=0",
            # The load core is the generator's alone: it polls instead of sleeping between
            # sends, so a reply is timed when it lands, not after the generator wakes up.
            f"--spin-below={SPIN_BELOW}",
            "--plain",
            f"--report-json={report}",
        ]

    def measure(self, rate: float, duration: float, warmup: float) -> RunMeasurement:
        with tempfile.TemporaryDirectory(prefix="rtbserve-bench-") as tmp:
            report = Path(tmp) / "run.json"
            argv = [*self.argv, "loadgen", *self.loadgen_args(rate, duration, warmup, report)]
            client, side = run_pinned_client(
                argv, self.server, self.core, timeout=duration + warmup + CLIENT_SLACK_SECONDS
            )
            if client.returncode not in LOADGEN_REPORTED_EXITS or not report.exists():
                raise DriverError(
                    f"rtbserve loadgen exited with {client.returncode}:\n{client.output[-2000:]}"
                )
            run = loadgen_measurement(json.loads(report.read_text()))
        return with_server_side(replace(run, driver_cpu_cores=client.cpu_cores), side)
