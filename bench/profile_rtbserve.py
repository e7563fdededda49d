"""Where one rtbserve worker spends its time under load: py-spy over a pinned server.

    python -m bench.profile_rtbserve --model DIR [--bidders 16] [--rate 1000] [--seconds 15]

Starts `rtbserve serve --workers 1` on the server core, drives it with `rtbserve loadgen` from
the load core at a fixed rate, samples every process of the server with py-spy, and writes the
collapsed stacks (for any flame-graph tool) and the frames with the most samples (self and
inclusive) to bench/work/profiles/<time>/. py-spy comes from its own pinned virtualenv
(bench/profile-requirements.txt).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from bench.config import BENCH_DIR, REPO_DIR, WORK_DIR
from bench.procs import free_port, http_ok, pinned, running, start_server, wait_until
from bench.venvs import PeerEnv, ensure_venv
from bench.workload import make_workload, write_replay
from model_server.artifact import load_artifact

TOOLS = PeerEnv("profile-tools", BENCH_DIR / "profile-requirements.txt")


@dataclass(frozen=True)
class Hotspots:
    samples: int
    self_share: list[tuple[str, float]]
    inclusive_share: list[tuple[str, float]]


def hotspots(collapsed: str, top: int = 25) -> Hotspots:
    """Top frames from py-spy's collapsed stacks ("frame;frame;leaf count" per line)."""
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    for line in collapsed.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = stack.split(";")
        total += count
        own[frames[-1]] += count
        for frame in set(frames):
            inclusive[frame] += count
    if total == 0:
        return Hotspots(0, [], [])
    return Hotspots(
        total,
        [(f, n / total) for f, n in own.most_common(top)],
        [(f, n / total) for f, n in inclusive.most_common(top)],
    )


def render_hotspots(spots: Hotspots, title: str) -> str:
    lines = [f"# {title}", "", f"{spots.samples} samples", "", "## Self time", ""]
    lines += [f"{share:6.1%}  {frame}" for frame, share in spots.self_share]
    lines += ["", "## Inclusive time", ""]
    lines += [f"{share:6.1%}  {frame}" for frame, share in spots.inclusive_share]
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.profile_rtbserve", description=__doc__)
    p.add_argument("--model", type=Path, required=True, help="artifact directory")
    p.add_argument("--bidders", type=int, default=16)
    p.add_argument("--rate", type=float, default=1000.0, help="requests per second")
    p.add_argument("--seconds", type=float, default=15.0, help="sampling time")
    p.add_argument("--server-core", type=int, default=0)
    p.add_argument("--load-core", type=int, default=1)
    p.add_argument("--out", type=Path, default=WORK_DIR / "profiles")
    args = p.parse_args(sys.argv[1:] if argv is None else argv)

    stamp = time.strftime("%Y%m%dT%H%M%S")
    out = args.out / stamp
    out.mkdir(parents=True, exist_ok=True)
    py_spy = ensure_venv(TOOLS, WORK_DIR / "venvs", out / "venv.log").parent / "py-spy"
    model = load_artifact(args.model)
    load = make_workload(list(model.manifest.bidders), args.bidders, 500, seed=7)
    replay = write_replay(out / "replay.jsonl", load)

    port, http = free_port(), free_port()
    server = start_server(
        "rtbserve",
        [
            sys.executable,
            "-m",
            "rtbserve",
            "serve",
            f"--model={args.model}",
            "--workers=1",
            f"--thrift-port={port}",
            f"--http-port={http}",
            "--drain-seconds=0",
            "--log-level=warning",
        ],
        core=args.server_core,
        log_dir=out,
        cwd=REPO_DIR,
    )
    with running(server):
        wait_until(server, http_ok(f"http://127.0.0.1:{http}/readyz"), 120, "ready")
        loadgen = subprocess.Popen(
            pinned(
                [
                    sys.executable,
                    "-m",
                    "rtbserve",
                    "loadgen",
                    f"--target=127.0.0.1:{port}",
                    f"--replay={replay}",
                    "--loop",
                    f"--rate={args.rate}",
                    f"--duration={args.seconds + 4}s",
                    "--workers=1",
                    "--connections=16",
                    "--quality-sample=0",
                    "--plain",
                    f"--report-json={out / 'loadgen.json'}",
                ],
                args.load_core,
            ),
            stdout=(out / "loadgen.log").open("wb"),
            stderr=subprocess.STDOUT,
            cwd=REPO_DIR,
        )
        try:
            time.sleep(2.0)
            collapsed = out / "profile.txt"
            subprocess.run(
                [
                    str(py_spy),
                    "record",
                    f"--pid={server.popen.pid}",
                    "--subprocesses",
                    f"--duration={int(args.seconds)}",
                    "--format=raw",
                    f"--output={collapsed}",
                    "--nonblocking",
                ],
                check=True,
                capture_output=True,
                timeout=args.seconds + 60,
            )
        finally:
            loadgen.wait(timeout=args.seconds + 60)
    spots = hotspots(collapsed.read_text())
    title = f"rtbserve worker at {args.rate:,.0f} req/s, {args.bidders} bidders"
    (out / "hotspots.md").write_text(render_hotspots(spots, title))
    print(render_hotspots(spots, title))
    print(f"profile: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
