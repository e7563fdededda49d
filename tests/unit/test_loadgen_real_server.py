"""`rtbserve loadgen` against the real model server (`rtbserve serve` on a tiny artifact)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from loadgen.exit_codes import ExitCode

pytestmark = pytest.mark.timeout(300)
SHARED = Path(__file__).resolve().parents[3] / "shared" / "openrtb-2.6"
# the tiny artifact was trained on synthetic traffic with seed 11 and 8 bidders: the same
# generator settings give traffic from the world it learned
SYNTHETIC = ["--seed", "11", "--synthetic-bidders", "8"]


@pytest.fixture(scope="module")
def server(tiny_artifact: Any) -> Iterator[Any]:
    from tests.server_fixtures import running_rtbserve

    with running_rtbserve(tiny_artifact.path, "--conn-max-requests", "100") as running:
        yield running


def _target(server: Any) -> str:
    return f"{server.host}:{server.thrift_port}"


@pytest.mark.parametrize("engine", ["native", "python"])
def test_scores_synthetic_traffic_with_quality(
    engine: str, server: Any, run_loadgen: Any, tmp_path: Path
) -> None:
    report_path = tmp_path / "report.json"
    run = run_loadgen(
        "--target", _target(server), *SYNTHETIC, "--rate", "400", "--duration", "2s",
        "--connections", "4", "--quality-sample", "1", "--report-json", str(report_path),
        "--engine", engine,
    )  # fmt: skip
    assert run.code == 0, run.stderr
    doc = orjson.loads(report_path.read_bytes())
    assert doc["generator"]["engine"] == engine
    assert doc["requests"]["ok"] == 800
    assert doc["errors"] == {}
    assert doc["achieved_rate"] == pytest.approx(400, rel=0.02)
    quality = doc["filtering"]
    assert quality["replies_parsed"] == 800
    assert quality["pairs"] == 8 * 800
    assert 0.0 < quality["filtered_share"] < 1.0
    # thresholds were chosen to keep most true bids
    assert quality["bids"] > 0
    assert quality["bids_kept_share"] > 0.8
    # the server closes each connection after 100 calls: reconnecting costs no request
    assert doc["disconnects"].get("ConnectionClosed", 0) >= 4
    assert doc["connect_errors"] == {}


def test_bidders_the_model_does_not_know_are_server_errors(
    server: Any, run_loadgen: Any, tmp_path: Path
) -> None:
    report_path = tmp_path / "report.json"
    run = run_loadgen(
        "--target", _target(server), "--synthetic-bidders", "16", "--rate", "200",
        "--duration", "1s", "--report-json", str(report_path),
    )  # fmt: skip
    assert run.code == ExitCode.REQUEST_ERRORS
    assert "First UnknownBidder: unknown bidder(s) not in the model: 'dsp-09'" in run.stderr
    doc = orjson.loads(report_path.read_bytes())
    assert doc["errors"] == {"UnknownBidder": 200}


def test_replays_iab_examples(server: Any, run_loadgen: Any, tmp_path: Path) -> None:
    files = sorted(SHARED.glob("*.json")) if SHARED.is_dir() else []
    if not files:
        pytest.skip(f"IAB OpenRTB 2.6 examples not found in {SHARED}")
    replay = tmp_path / "iab.jsonl"
    replay.write_bytes(b"".join(orjson.dumps(orjson.loads(f.read_bytes())) + b"\n" for f in files))
    report_path = tmp_path / "report.json"
    run = run_loadgen(
        "--target", _target(server), "--replay", str(replay), "--loop", "--rate", "200",
        "--duration", "1s", "--report-json", str(report_path),
    )  # fmt: skip
    assert run.code == 0, run.stderr
    doc = orjson.loads(report_path.read_bytes())
    assert doc["requests"]["ok"] == 200
    # no bidders named: the server scores every bidder it knows
    assert doc["filtering"]["pairs"] == 8 * doc["filtering"]["replies_parsed"]
