"""`rtbserve demo`: the whole path on one machine, with no cloud account.

It starts a real S3-compatible server on loopback (versioned bucket), trains a sample model,
publishes it there, serves it from `s3://` with the identity pinned, load-tests it with
`rtbserve loadgen`, and prints latency, throughput and filtering results. Every step runs the
same command a user would; every process it starts is stopped before it returns.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
from rich.console import Console
from rich.table import Table

from model_server.launcher import LaunchError, ServerProcess
from rtbserve.local_s3 import LocalS3, LocalS3Error

MODEL_NAME = "bidder-filter"


@dataclass(frozen=True)
class DemoConfig:
    train_requests: int
    bidders: int
    seed: int
    rate: float
    duration_s: float
    server_workers: int
    loadgen_workers: int
    connections: int
    out_dir: Path


def parse_args(argv: Sequence[str]) -> DemoConfig:
    p = argparse.ArgumentParser(
        prog="rtbserve demo",
        description="Train, publish to a local S3 server, serve from s3:// and load-test, "
        "all on this machine.",
    )
    p.add_argument("--train-requests", type=int, default=60_000, help="synthetic requests")
    p.add_argument("--bidders", type=int, default=16, help="synthetic DSPs (candidates)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--rate", type=float, default=2000.0, help="load-test requests per second")
    p.add_argument("--duration", type=float, default=10.0, help="load-test seconds")
    p.add_argument("--server-workers", type=int, default=1)
    p.add_argument("--loadgen-workers", type=int, default=1)
    p.add_argument("--connections", type=int, default=16)
    p.add_argument(
        "--out", type=Path, default=Path("out/demo"), help="where the model, report and plots go"
    )
    a = p.parse_args(argv)
    for name in ("train_requests", "bidders", "server_workers", "loadgen_workers", "connections"):
        if getattr(a, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be at least 1")
    if a.rate <= 0 or a.duration <= 0:
        p.error("--rate and --duration must be positive")
    return DemoConfig(
        train_requests=a.train_requests,
        bidders=a.bidders,
        seed=a.seed,
        rate=a.rate,
        duration_s=a.duration,
        server_workers=a.server_workers,
        loadgen_workers=a.loadgen_workers,
        connections=a.connections,
        out_dir=a.out,
    )


def rtbserve_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "rtbserve", *args]


def run_step(console: Console, title: str, argv: list[str], env: dict[str, str]) -> None:
    console.rule(f"[bold]{title}")
    console.print("$ rtbserve " + " ".join(argv[3:]), highlight=False, markup=False)
    done = subprocess.run(argv, env=env, check=False)
    if done.returncode != 0:
        raise DemoError(f"{title}: `rtbserve {argv[3]}` exited with code {done.returncode}")


class DemoError(RuntimeError):
    """A step failed; the message says which."""


def summary_table(report: dict[str, Any], model: dict[str, str]) -> Table:
    lat = report.get("latency_ms") or {}
    req = report.get("requests") or {}
    table = Table(title="rtbserve demo", show_header=False, title_justify="left")
    table.add_column(style="bold")
    table.add_column(justify="right")
    table.add_row("model", f"{model['name']} {model['version']}")
    table.add_row("artifact sha256", model["sha256"][:16] + "…")
    table.add_row("served from", model["uri"])
    table.add_row("target rate", f"{report.get('target_rate', 0.0):,.0f} req/s")
    table.add_row("achieved rate", f"{report.get('achieved_rate', 0.0):,.0f} req/s")
    table.add_row("requests ok / errors", f"{req.get('ok', 0):,} / {req.get('errors', 0):,}")
    for key, label in (("p50", "p50"), ("p99", "p99"), ("p99_9", "p99.9"), ("max", "max")):
        table.add_row(f"latency {label}", f"{lat.get(key, 0.0):.3f} ms")
    filtering = report.get("filtering")
    if filtering:
        table.add_row("pairs filtered out", f"{100 * (filtering['filtered_share'] or 0):.1f} %")
        table.add_row("true bids kept", f"{100 * (filtering['bids_kept_share'] or 0):.2f} %")
    return table


def run_demo(cfg: DemoConfig, console: Console) -> int:
    from model_server.artifact import read_manifest

    out = cfg.out_dir.resolve()
    out.mkdir(parents=True, exist_ok=True)
    model_dir, report_path = out / "model", out / "loadgen-report.json"
    with ExitStack() as stack:
        console.rule("[bold]1/4 local S3 server")
        s3 = stack.enter_context(LocalS3())
        bucket = s3.make_bucket("rtbserve-demo", versioned=True)
        uri = f"s3://{bucket}/models/{MODEL_NAME}/"
        console.print(f"moto S3 at {s3.endpoint_url}, versioned bucket {bucket}", highlight=False)
        env = {**os.environ, **s3.env, "MPLBACKEND": "Agg"}

        run_step(
            console,
            "2/4 train a sample model and publish it",
            rtbserve_command(
                "train",
                "--synthetic",
                str(cfg.train_requests),
                "--bidders",
                str(cfg.bidders),
                "--seed",
                str(cfg.seed),
                "--name",
                MODEL_NAME,
                "--out",
                str(model_dir),
                "--upload",
                uri,
            ),
            env,
        )
        manifest, sha256 = read_manifest(model_dir)

        console.rule("[bold]3/4 serve it from s3://")
        server = ServerProcess(
            uri,
            flags=(
                "--model-sha256",
                sha256,
                "--workers",
                str(cfg.server_workers),
                "--drain-seconds",
                "0",
                "--cache-dir",
                str(out / "cache"),
            ),
            env=env,
        )
        console.print("$ rtbserve " + " ".join(server.command()[3:]), highlight=False)
        stack.callback(server.stop)
        started = time.monotonic()
        server.start().wait_ready()
        client = server.client()
        try:
            info = client.info()
        finally:
            client.close()
        console.print(
            f"ready in {time.monotonic() - started:.1f}s on 127.0.0.1:{server.thrift_port} "
            f"(Thrift), :{server.http_port} (HTTP): model {info.name} {info.version}, "
            f"{len(info.bidders)} bidders, {info.feature_count} features, "
            f"prediction backend {info.backend}",
            highlight=False,
        )

        report_path.unlink(missing_ok=True)
        loadgen = rtbserve_command(
            "loadgen",
            "--target",
            f"127.0.0.1:{server.thrift_port}",
            "--seed",
            str(cfg.seed),
            "--synthetic-bidders",
            str(cfg.bidders),
            "--rate",
            f"{cfg.rate:g}",
            "--duration",
            f"{cfg.duration_s:g}s",
            "--warmup",
            "1s",
            "--workers",
            str(cfg.loadgen_workers),
            "--connections",
            str(cfg.connections),
            "--quality-sample",
            "1",
            "--report-json",
            str(report_path),
            "--plot-dir",
            str(out / "plots"),
        )
        console.rule("[bold]4/4 load test")
        console.print("$ rtbserve " + " ".join(loadgen[3:]), highlight=False)
        code = subprocess.run(loadgen, env=env, check=False).returncode
        if not report_path.exists():
            raise DemoError(f"load test wrote no report (exit code {code})")
        report = orjson.loads(report_path.read_bytes())

    model = {"name": manifest.name, "version": manifest.version, "sha256": sha256, "uri": uri}
    console.print()
    console.print(summary_table(report, model))
    console.print(f"report: {report_path}\nplots: {out / 'plots'}", highlight=False)
    if code != 0:
        console.print(f"[red]the load test exited with code {code}: {report.get('messages')}")
    return code


def main(argv: Sequence[str] | None = None) -> int:
    cfg = parse_args(list(sys.argv[1:] if argv is None else argv))
    console = Console()
    try:
        import moto.server  # noqa: F401  (the local S3 server)
    except ImportError:
        console.print("[red]rtbserve demo needs moto's server: pip install 'rtbserve[demo]'")
        return 2
    try:
        return run_demo(cfg, console)
    except (DemoError, LaunchError, LocalS3Error) as exc:
        console.print(f"[red]demo failed: {exc}")
        return 1
    except KeyboardInterrupt:
        console.print("[yellow]interrupted; everything it started is stopped")
        return 130
