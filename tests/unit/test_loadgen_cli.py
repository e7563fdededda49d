"""`rtbserve loadgen` end to end: reports, plots, exit codes and partial results."""

from __future__ import annotations

import base64
import gzip
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from hdrh.histogram import HdrHistogram

from loadgen.exit_codes import ExitCode
from loadgen.plots import DISTRIBUTION_PNG, LATENCY_PNG, THROUGHPUT_PNG
from loadgen.report import REPORT_SCHEMA
from tests.loadgen_fixtures import REPO_ROOT

pytestmark = pytest.mark.timeout(180)
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _report(path: Path) -> dict[str, Any]:
    doc: dict[str, Any] = orjson.loads(path.read_bytes())
    return doc


def test_report_json_and_plots(fast_stub: Any, run_loadgen: Any, tmp_path: Path) -> None:
    report_path = tmp_path / "out" / "report.json"
    plots = tmp_path / "plots"
    run = run_loadgen(
        "--target", fast_stub.target, "--rate", "1500", "--duration", "2s",
        "--warmup", "0.5s", "--report-json", str(report_path), "--plot-dir", str(plots),
    )  # fmt: skip
    assert run.code == 0, run.stderr
    assert "[   2s]" in run.stdout  # plain per-second lines
    assert "achieved rate" in run.stdout
    doc = _report(report_path)
    assert doc["schema"] == REPORT_SCHEMA
    assert (doc["status"], doc["exit_code"]) == ("ok", 0)
    assert doc["target"] == fast_stub.target
    assert doc["source"]["kind"] == "synthetic"
    assert doc["requests"]["scheduled"] == doc["requests"]["ok"] == 3000
    assert doc["requests"]["warmup"] == 750
    assert doc["target_rate"] == 1500
    assert doc["achieved_rate"] == pytest.approx(1500, rel=0.02)
    lat = doc["latency_ms"]
    assert 0 < lat["min"] <= lat["p50"] <= lat["p90"] <= lat["p99"] <= lat["p99_9"] <= lat["max"]
    hist = HdrHistogram.decode(doc["histogram"]["data"])
    base64.b64decode(doc["histogram"]["data"], validate=True)
    assert hist.get_total_count() == 3000
    assert hist.get_value_at_percentile(99) / 1000 == pytest.approx(lat["p99"])
    assert [row["second"] for row in doc["series"]] == [0, 1]
    assert sum(row["sent"] for row in doc["series"]) == 3000
    assert doc["filtering"]["replies_parsed"] == 300  # every 10th reply
    assert doc["filtering"]["filtered_share"] == 0.5  # the stub forwards every other bidder
    assert doc["errors"] == {}
    assert doc["generator"]["behind"] is False
    for name in (DISTRIBUTION_PNG, LATENCY_PNG, THROUGHPUT_PNG):
        data = (plots / name).read_bytes()
        assert data.startswith(PNG_MAGIC)
        assert len(data) > 10_000


def test_steps_and_request_limit(fast_stub: Any, run_loadgen: Any, tmp_path: Path) -> None:
    report_path = tmp_path / "report.json"
    run = run_loadgen(
        "--target", fast_stub.target, "--rate", "500,1000", "--step-duration", "1s",
        "--report-json", str(report_path),
    )  # fmt: skip
    assert run.code == 0, run.stderr
    doc = _report(report_path)
    assert [(r["target_rate"], r["sent"]) for r in doc["series"]] == [(500, 500), (1000, 1000)]
    run = run_loadgen(
        "--target", fast_stub.target, "--rate", "1000", "--requests", "700",
        "--report-json", str(report_path),
    )  # fmt: skip
    assert run.code == 0, run.stderr
    doc = _report(report_path)
    assert doc["requests"]["sent"] == doc["requests"]["ok"] == 700
    assert doc["duration_s"] == pytest.approx(0.7)


def test_refused_connection_exits_4_with_report(
    free_port: int, run_loadgen: Any, tmp_path: Path
) -> None:
    report_path = tmp_path / "report.json"
    run = run_loadgen(
        "--target", f"127.0.0.1:{free_port}", "--duration", "1s",
        "--report-json", str(report_path),
    )  # fmt: skip
    assert run.code == ExitCode.UNREACHABLE
    assert f"cannot connect to 127.0.0.1:{free_port}: ConnectionRefused" in run.stderr
    doc = _report(report_path)
    assert (doc["status"], doc["exit_code"]) == ("error", 4)
    assert "ConnectionRefused" in doc["messages"][0]


@pytest.fixture
def unanswering_port() -> Iterator[int]:
    """A listener whose accept queue is full: connects hang as if the host were gone."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    port = listener.getsockname()[1]
    filler = socket.create_connection(("127.0.0.1", port))
    yield port
    filler.close()
    listener.close()


def test_unreachable_target_exits_4(unanswering_port: int, run_loadgen: Any) -> None:
    run = run_loadgen(
        "--target", f"127.0.0.1:{unanswering_port}", "--connect-timeout", "300ms",
        "--duration", "1s",
    )  # fmt: skip
    assert run.code == ExitCode.UNREACHABLE
    assert "ConnectTimeout" in run.stderr


def test_unresolvable_name_exits_4(run_loadgen: Any) -> None:
    run = run_loadgen("--target", "no-such-host.invalid:9090", "--duration", "1s")
    assert run.code == ExitCode.UNREACHABLE
    assert "cannot resolve 'no-such-host.invalid'" in run.stderr


def test_server_errors_exit_5_with_types(start_stub: Any, run_loadgen: Any, tmp_path: Path) -> None:
    server = start_stub(raise_name="MissingField", raise_every=4)
    report_path = tmp_path / "report.json"
    run = run_loadgen(
        "--target", server.target, "--rate", "400", "--duration", "1s",
        "--report-json", str(report_path),
    )  # fmt: skip
    assert run.code == ExitCode.REQUEST_ERRORS, run.stderr
    assert "100 of 400 requests failed" in run.stderr
    assert "First MissingField: stub: no imp" in run.stderr
    doc = _report(report_path)
    assert (doc["status"], doc["exit_code"]) == ("failed", 5)
    assert doc["errors"] == {"MissingField": 100}
    assert doc["requests"]["ok"] == 300
    # tolerated when the ratio allows it
    run = run_loadgen(
        "--target", server.target, "--rate", "400", "--duration", "1s",
        "--max-error-ratio", "0.3",
    )  # fmt: skip
    assert run.code == ExitCode.OK, run.stderr


def test_server_dying_keeps_partial_results(
    start_stub: Any, run_loadgen: Any, tmp_path: Path
) -> None:
    server = start_stub(exit_after=201)
    report_path = tmp_path / "report.json"
    plots = tmp_path / "plots"
    run = run_loadgen(
        "--target", server.target, "--rate", "200", "--duration", "2s", "--timeout", "0.5s",
        "--report-json", str(report_path), "--plot-dir", str(plots),
    )  # fmt: skip
    assert run.code == ExitCode.REQUEST_ERRORS
    doc = _report(report_path)
    assert 150 <= doc["requests"]["ok"] <= 200
    assert doc["requests"]["ok"] + doc["requests"]["errors"] == doc["requests"]["scheduled"]
    assert doc["errors"].get("ConnectionRefused", 0) > 100
    assert HdrHistogram.decode(doc["histogram"]["data"]).get_total_count() == doc["requests"]["ok"]
    assert (plots / DISTRIBUTION_PNG).read_bytes().startswith(PNG_MAGIC)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b'{"id": "a", "imp": [{"id": "1"}]}\nnot json\n', "line 2: not valid JSON"),
        (b"", "holds no bid requests"),
    ],
)
def test_bad_replay_file_exits_3(
    content: bytes, message: str, run_loadgen: Any, tmp_path: Path
) -> None:
    replay = tmp_path / "bad.jsonl"
    replay.write_bytes(content)
    report_path = tmp_path / "report.json"
    run = run_loadgen(
        "--replay", str(replay), "--duration", "1s", "--report-json", str(report_path)
    )
    assert run.code == ExitCode.BAD_INPUT
    assert message in run.stderr
    doc = _report(report_path)
    assert (doc["status"], doc["exit_code"]) == ("error", 3)
    assert message in doc["messages"][0]


def test_replay_shorter_than_run_stops_at_its_end(
    fast_stub: Any, run_loadgen: Any, tmp_path: Path
) -> None:
    replay = tmp_path / "short.jsonl.gz"
    lines = [orjson.dumps({"id": f"r{k}", "imp": [{"id": "1"}]}) for k in range(300)]
    replay.write_bytes(gzip.compress(b"\n".join(lines)))
    report_path = tmp_path / "report.json"
    run = run_loadgen(
        "--target", fast_stub.target, "--replay", str(replay), "--rate", "500",
        "--duration", "2s", "--report-json", str(report_path),
    )  # fmt: skip
    assert run.code == 0, run.stderr
    doc = _report(report_path)
    assert doc["requests"]["sent"] == 300
    assert doc["source"] == {
        "kind": "replay",
        "uri": str(replay),
        "pool_size": 300,
        "looped": False,
    }
    run = run_loadgen(
        "--target", fast_stub.target, "--replay", str(replay), "--loop", "--rate", "500",
        "--duration", "2s", "--report-json", str(report_path),
    )  # fmt: skip
    assert run.code == 0, run.stderr
    assert _report(report_path)["requests"]["sent"] == 1000


@pytest.mark.parametrize(
    "args",
    [
        ["--rate", "fast"],
        ["--ramp", "100:200", "--rate", "100"],
        ["--find-saturation"],
        ["--target", "nohostport"],
        ["--loop"],
        ["--rate", "100,200", "--step-duration", "1s", "--duration", "2s"],
    ],
)
def test_bad_flags_exit_2(args: list[str], run_loadgen: Any) -> None:
    run = run_loadgen(*args)
    assert run.code == ExitCode.USAGE
    assert "usage: rtbserve loadgen" in run.stderr


def test_help_documents_exit_codes(run_loadgen: Any) -> None:
    run = run_loadgen("--help")
    assert run.code == 0
    for code in ExitCode:
        assert f"  {int(code)}  " in run.stdout


def test_slo_missed_exits_6(start_stub: Any, run_loadgen: Any) -> None:
    server = start_stub(delay_ms=5)
    run = run_loadgen(
        "--target", server.target, "--rate", "100", "--duration", "1s", "--slo-p99", "1ms"
    )  # fmt: skip
    assert run.code == ExitCode.SLO_MISSED
    assert "above the objective 1 ms" in run.stderr


def test_generator_behind_exits_7(fast_stub: Any, tmp_path: Path) -> None:
    """A generator stalled mid-run drops the sends it is too late for, says so and exits 7.

    The stall is injected (SIGSTOP, as a CPU-starved pod or a long pause would be) once the
    first second of the schedule has been sent, so the outcome does not depend on how fast
    this machine can send: the rate is low and the stall far longer than --max-lag.
    """
    report_path = tmp_path / "report.json"
    proc = subprocess.Popen(
        [
            sys.executable, "-m", "rtbserve", "loadgen", "--plain", "--target", fast_stub.target,
            "--rate", "500", "--duration", "8s", "--warmup", "0s", "--max-lag", "50ms",
            "--max-error-ratio", "1", "--report-json", str(report_path),
        ],
        cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        start_new_session=True,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        for line in proc.stdout:  # the first finished second: sending is under way
            if line.startswith("[   1s]"):
                break
        else:
            raise AssertionError(
                f"no progress line; stderr: {proc.stderr.read() if proc.stderr else ''}"
            )
        os.killpg(proc.pid, signal.SIGSTOP)
        time.sleep(0.5)  # ten times --max-lag: every send due in the stall but its last 50 ms drops
        os.killpg(proc.pid, signal.SIGCONT)
        _, stderr = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == ExitCode.GENERATOR_BEHIND, stderr
    assert "fell behind its schedule" in stderr
    doc = _report(report_path)
    assert doc["generator"]["behind"] is True
    # 500/s over a stall of >= 0.5 s, less the last --max-lag of it: at least 200 sends dropped
    assert doc["requests"]["dropped"] >= 200
    assert doc["generator"]["max_lag_ms"] >= 450
    assert doc["requests"]["sent"] + doc["requests"]["dropped"] == doc["requests"]["scheduled"]


def test_saturation_search_reports_the_rate(
    start_stub: Any, run_loadgen: Any, tmp_path: Path
) -> None:
    # one connection to a server taking ~3 ms per call: it serves at most ~330 calls/s
    server = start_stub(delay_ms=3)
    report_path = tmp_path / "report.json"
    run = run_loadgen(
        "--target", server.target, "--connections", "1", "--find-saturation",
        "--slo-p99", "50ms", "--rate", "50", "--step-duration", "1s", "--precision", "0.2",
        "--report-json", str(report_path),
    )  # fmt: skip
    assert run.code == 0, run.stderr
    doc = _report(report_path)
    sat = doc["saturation"]
    assert sat["slo_p99_ms"] == 50
    rates = {p["rate"]: p["passed"] for p in sat["probes"]}
    assert rates[50] is True
    assert 100 <= sat["rate"] <= 340
    assert any(not passed and rate <= 800 for rate, passed in rates.items())
    assert all(passed for rate, passed in rates.items() if rate <= sat["rate"])
    assert f"saturation: {sat['rate']:,.0f} req/s" in run.stdout
    assert doc["target_rate"] == sat["rate"]  # the report's run is the best passing probe


def test_saturation_with_nothing_passing_exits_6(start_stub: Any, run_loadgen: Any) -> None:
    server = start_stub(delay_ms=5)
    run = run_loadgen(
        "--target", server.target, "--find-saturation", "--slo-p99", "1ms", "--rate", "40",
        "--step-duration", "0.5s", "--max-probes", "3",
    )  # fmt: skip
    assert run.code == ExitCode.SLO_MISSED
    assert "no probed rate kept p99 within 1 ms" in run.stderr


def test_replay_from_s3_and_report_to_s3(
    fast_stub: Any, run_loadgen: Any, s3_server: Any, s3_bucket: str
) -> None:
    s3 = s3_server.client()
    lines = [orjson.dumps({"id": f"r{k}", "imp": [{"id": "1"}]}) for k in range(100)]
    s3.put_object(Bucket=s3_bucket, Key="traffic.jsonl", Body=b"\n".join(lines))
    run = run_loadgen(
        "--target", fast_stub.target, "--replay", f"s3://{s3_bucket}/traffic.jsonl", "--loop",
        "--rate", "500", "--duration", "1s", "--report-s3", f"s3://{s3_bucket}/runs/1/",
        env=s3_server.env,
    )  # fmt: skip
    assert run.code == 0, run.stderr
    keys = {o["Key"] for o in s3.list_objects_v2(Bucket=s3_bucket, Prefix="runs/1/")["Contents"]}
    assert keys == {
        f"runs/1/{n}" for n in ("report.json", DISTRIBUTION_PNG, LATENCY_PNG, THROUGHPUT_PNG)
    }
    doc = orjson.loads(s3.get_object(Bucket=s3_bucket, Key="runs/1/report.json")["Body"].read())
    assert doc["requests"]["ok"] == 500
    assert doc["source"]["uri"] == f"s3://{s3_bucket}/traffic.jsonl"


def test_report_upload_failure_exits_8(fast_stub: Any, run_loadgen: Any, s3_server: Any) -> None:
    run = run_loadgen(
        "--target", fast_stub.target, "--rate", "200", "--duration", "0.5s",
        "--report-s3", "s3://no-such-bucket-here/x/", env=s3_server.env,
    )  # fmt: skip
    assert run.code == ExitCode.PUBLISH_FAILED
    assert "cannot upload report.json to s3://no-such-bucket-here/x/report.json" in run.stderr


@pytest.mark.parametrize("workers", ["1", "2"])
def test_sigterm_stops_the_run_and_keeps_partial_results(
    fast_stub: Any, tmp_path: Path, workers: str
) -> None:
    report_path = tmp_path / "report.json"
    proc = subprocess.Popen(
        [sys.executable, "-m", "rtbserve", "loadgen", "--plain", "--target", fast_stub.target,
         "--rate", "500", "--duration", "60s", "--workers", workers,
         "--report-json", str(report_path)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().startswith("500 req/s for 60s")
        assert proc.stdout.readline().startswith("[   1s]")  # a second went by
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == ExitCode.INTERRUPTED, err
    assert "the results are partial" in err
    doc = _report(report_path)
    assert doc["aborted"] == "interrupted"
    assert 1000 <= doc["requests"]["ok"] < 30_000
    assert doc["requests"]["scheduled"] == doc["requests"]["ok"]
    assert HdrHistogram.decode(doc["histogram"]["data"]).get_total_count() == doc["requests"]["ok"]
