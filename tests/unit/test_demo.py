"""`rtbserve demo` end to end, small: it must print its results and leave no process behind."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import orjson


def _processes_mentioning(text: str) -> list[str]:
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if text in cmdline and int(pid) != os.getpid():
            found.append(f"{pid}: {cmdline}")
    return found


def test_demo_trains_serves_from_s3_and_reports(tmp_path: Path) -> None:
    out = tmp_path / "demo-out"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "rtbserve",
            "demo",
            "--train-requests",
            "4000",
            "--rate",
            "300",
            "--duration",
            "3",
            "--bidders",
            "8",
            "--connections",
            "4",
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "COLUMNS": "200"},
        check=False,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    text = done.stdout
    for label in ("latency p50", "latency p99", "achieved rate", "pairs filtered out"):
        assert label in text
    assert "served from" in text
    assert "s3://rtbserve-demo/models/bidder-filter/" in text
    assert "prediction backend native" in text

    report = orjson.loads((out / "loadgen-report.json").read_bytes())
    assert report["requests"]["ok"] > 0
    assert report["requests"]["errors"] == 0
    assert report["filtering"]["pairs"] > 0
    assert 0.0 < report["latency_ms"]["p50"] <= report["latency_ms"]["p99"]
    assert list((out / "plots").glob("*.png"))
    assert (out / "model" / "manifest.json").is_file()
    # The server (its cache dir is under `out`) and everything else it started are gone.
    assert _processes_mentioning(str(out)) == []
