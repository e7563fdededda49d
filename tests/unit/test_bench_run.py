"""`python -m bench.run` as a process: interrupted, it stops what it started and still reports."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import xgboost as xgb

from bench.config import REPO_DIR
from model_server.artifact import write_artifact
from model_server.features import FeaturePipeline
from model_server.synthetic import TrafficGenerator


@pytest.fixture(scope="module")
def tiny_artifact(tmp_path_factory: pytest.TempPathFactory) -> Path:
    gen = TrafficGenerator(seed=5, n_bidders=4)
    sample = list(gen.requests(300))
    requests = [s.request for s in sample]
    nows = [s.timestamp for s in sample]
    pipeline = FeaturePipeline.fit(requests, gen.bidders, bids=[s.bids for s in sample], nows=nows)
    x = pipeline.matrix(requests, None, nows)
    y = np.array([[b in s.bids for b in gen.bidders] for s in sample], dtype=np.float32).ravel()
    booster = xgb.train({"objective": "binary:logistic", "max_depth": 3}, xgb.DMatrix(x, y), 5)
    out = tmp_path_factory.mktemp("artifact")
    write_artifact(out, booster, pipeline, dict.fromkeys(gen.bidders, 0.1), {}, "t", "1", {})
    return out


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat").read_text()
    return stat[stat.rindex(")") + 2] != "Z"


def test_sigterm_stops_the_servers_and_writes_partial_results(
    tiny_artifact: Path, tmp_path: Path
) -> None:
    results, work = tmp_path / "results", tmp_path / "work"
    argv = [
        sys.executable, "-m", "bench.run", "--quick", "--systems=echo", "--bidders=4",
        f"--model={tiny_artifact}", "--no-predict", "--no-readme", "--thrift-driver=open-loop",
        "--step-seconds=30", f"--results-dir={results}", f"--work-dir={work}",
    ]  # fmt: skip
    bench = subprocess.Popen(argv, cwd=REPO_DIR, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        # Wait for the echo server to be up and the first (30 s) search step to be running.
        deadline = time.monotonic() + 60
        echo_pid = None
        while time.monotonic() < deadline and echo_pid is None:
            time.sleep(0.2)
            for entry in Path("/proc").iterdir():
                if entry.name.isdigit():
                    try:
                        cmdline = (entry / "cmdline").read_bytes().split(b"\0")
                        stat = (entry / "stat").read_text()
                    except OSError:
                        continue
                    ppid = int(stat[stat.rindex(")") + 2 :].split()[1])
                    if ppid == bench.pid and cmdline[0].endswith(b"echo_server"):
                        echo_pid = int(entry.name)
        assert echo_pid is not None, "the echo server never started"
        time.sleep(2.0)
        bench.send_signal(signal.SIGTERM)
        output, _ = bench.communicate(timeout=60)
    finally:
        if bench.poll() is None:
            bench.kill()
            bench.wait()
    assert bench.returncode == 128 + signal.SIGTERM, output.decode(errors="replace")[-2000:]
    assert not _alive(echo_pid)
    reports = list(results.glob("*-quick.json"))
    assert len(reports) == 1
    report = json.loads(reports[0].read_text())
    assert "interrupted" in report["errors"]
    assert (results / reports[0].name.replace(".json", ".md")).exists()


def test_bad_flags_are_refused_before_anything_starts(tmp_path: Path) -> None:
    for flags, message in (
        (["--systems=echo,nginx"], "unknown system"),
        (["--bidders=0"], "at least one count"),
        (["--bidders=a,b"], "comma-separated integers"),
        (["--server-core=99"], "not available"),
    ):
        done = subprocess.run(
            [sys.executable, "-m", "bench.run", *flags, f"--work-dir={tmp_path}"],
            cwd=REPO_DIR,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert done.returncode == 2
        assert message in done.stderr
    assert not any(tmp_path.iterdir())
