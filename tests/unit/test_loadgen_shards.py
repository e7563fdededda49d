"""A load test as several pods: each offers rate/N, the merge adds their histograms exactly.

The pods are real `rtbserve loadgen` processes against the real model server; the store is a
directory (a shared volume) and, for the S3 path, the moto server.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from hdrh.histogram import HdrHistogram

from loadgen.exit_codes import ExitCode
from loadgen.recorder import new_histogram
from loadgen.schedule import RateSchedule
from loadgen.shards import Shard, read_document, shard_name, wait_for_shards, write_document
from tests.loadgen_fixtures import PYTHON, REPO_ROOT

pytestmark = pytest.mark.timeout(300)
SYNTHETIC = ["--seed", "11", "--synthetic-bidders", "8"]


@pytest.fixture(scope="module")
def server(tiny_artifact: Any) -> Iterator[Any]:
    from tests.server_fixtures import running_rtbserve

    with running_rtbserve(tiny_artifact.path) as running:
        yield running


def _loadgen(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [PYTHON, "-m", "rtbserve", "loadgen", *args],
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=os.environ.copy(),
    )


def _finish(proc: subprocess.Popen[str]) -> tuple[int, str, str]:
    out, err = proc.communicate(timeout=180)
    return proc.returncode, out, err


def _pod(target: str, index: int, store: str, *extra: str) -> subprocess.Popen[str]:
    return _loadgen(
        "--plain", "--target", target, *SYNTHETIC, "--rate", "600", "--duration", "2s",
        "--connections", "2", "--shards", "3", "--shard-index", str(index),
        "--shard-store", store, *extra,
    )  # fmt: skip


def _hist(data: str) -> HdrHistogram:
    h = new_histogram()
    h.decode_and_add(data.encode("ascii"))
    return h


@pytest.fixture(scope="module")
def three_pods(server: Any, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Three pods at 600/3 req/s; the last merges into merged.json."""
    store = tmp_path_factory.mktemp("shards")
    target = f"{server.host}:{server.thrift_port}"
    merged = store / "merged.json"
    # The same flags for every pod, as an Indexed Job gives them: only the last one merges.
    same = ["--merge", "--merge-wait", "120s", "--report-json", str(merged),
            "--plot-dir", str(store / "plots")]  # fmt: skip
    procs = [_pod(target, i, str(store), *same) for i in range(3)]
    runs = [_finish(p) for p in procs]
    return {"store": store, "runs": runs, "merged": merged}


def test_three_pods_merge_into_one_report_of_sums(three_pods: dict[str, Any]) -> None:
    for code, _, err in three_pods["runs"]:
        assert code == 0, err
    assert ["merged 3 of 3 pods" in out for _, out, _ in three_pods["runs"]] == [False, False, True]
    store: Path = three_pods["store"]
    pods = [orjson.loads((store / shard_name(i, 3)).read_bytes())["result"] for i in range(3)]
    doc = orjson.loads(three_pods["merged"].read_bytes())
    for pod in pods:  # each pod offered a third of the rate
        assert pod["schedule"]["segments"][0]["start_rate"] == 200
        assert pod["scheduled"] == 400
    assert doc["status"] == "ok"
    assert doc["target_rate"] == 600
    for key in ("scheduled", "sent", "ok"):
        assert doc["requests"][key] == sum(p[key] for p in pods) == 1200
    assert doc["requests"]["errors"] == 0
    assert doc["workers"] == 3
    assert doc["connections"] == 6
    assert [s["status"] for s in doc["shards"]] == ["ok", "ok", "ok"]
    # The merged histogram is the three added by hand: same counts, same percentiles.
    by_hand = new_histogram()
    for pod in pods:
        by_hand.add(_hist(pod["histogram"]))
    merged = _hist(doc["histogram"]["data"])
    assert merged.get_total_count() == by_hand.get_total_count() == 1200
    assert list(merged.counts) == list(by_hand.counts)
    for key, pct in (("p50", 50), ("p90", 90), ("p99", 99), ("p99_9", 99.9)):
        assert doc["latency_ms"][key] == by_hand.get_value_at_percentile(pct) / 1000.0
    assert doc["latency_ms"]["max"] == by_hand.get_max_value() / 1000.0
    # Per second: counts are the pods' sums; percentiles those of the seconds' histograms.
    for row in doc["series"]:
        s = row["second"]
        assert row["ok"] == sum(p["series"][s]["ok"] for p in pods)
        second = new_histogram()
        for pod in pods:
            second.add(_hist(pod["second_histograms"][str(s)]))
        assert row["p99_ms"] == second.get_value_at_percentile(99) / 1000.0
    assert sorted(p.name for p in (store / "plots").iterdir())


def test_merge_by_hand_equals_the_pods_merge(three_pods: dict[str, Any], tmp_path: Path) -> None:
    report = tmp_path / "again.json"
    code, _, err = _finish(
        _loadgen("merge", "--shards", "3", "--shard-store", str(three_pods["store"]),
                 "--report-json", str(report))
    )  # fmt: skip
    assert code == 0, err
    again, first = (orjson.loads(p.read_bytes()) for p in (report, three_pods["merged"]))
    for key in ("requests", "latency_ms", "histogram", "series", "shards", "target_rate"):
        assert again[key] == first[key], key


def test_a_pod_that_failed_or_left_nothing_is_reported(
    three_pods: dict[str, Any], tmp_path: Path, free_port: int
) -> None:
    store = tmp_path / "store"
    store.mkdir()
    # Pod 0 ran; pod 1 could not reach its target; pod 2 never wrote anything.
    shutil.copy(three_pods["store"] / shard_name(0, 3), store)
    code, _, _ = _finish(_pod(f"127.0.0.1:{free_port}", 1, str(store)))
    assert code == ExitCode.UNREACHABLE
    report = tmp_path / "merged.json"
    code, _, err = _finish(
        _loadgen("merge", "--shards", "3", "--shard-store", str(store), "--report-json",
                 str(report))
    )  # fmt: skip
    assert code == ExitCode.SHARD_FAILED
    doc = orjson.loads(report.read_bytes())
    assert [s["status"] for s in doc["shards"]] == ["ok", "error", "missing"]
    assert doc["shards"][1]["exit_code"] == ExitCode.UNREACHABLE
    assert doc["status"] == "failed"
    assert doc["requests"]["ok"] == 400  # pod 0's measurements are kept, and only them
    messages = " ".join(doc["messages"])
    assert "pod 1 of 3 exited 4" in messages
    assert "pod 2 of 3 left no result" in messages
    assert "pod 2 of 3" in err


def test_the_shard_store_can_be_s3(s3_server: Any, s3_bucket: str) -> None:
    store = f"s3://{s3_bucket}/runs/run-1/"
    doc = {"schema": "rtbserve.io/loadgen-shard/v1", "index": 1, "count": 2, "result": None}
    assert write_document(store, doc) == f"s3://{s3_bucket}/runs/run-1/{shard_name(1, 2)}"
    assert read_document(store, 1, 2) == doc
    assert read_document(store, 0, 2) is None


def test_waiting_for_pods_uses_the_given_clock(tmp_path: Path) -> None:
    now = [0.0]
    slept: list[float] = []

    def sleep(s: float) -> None:
        slept.append(s)
        now[0] += s

    docs = wait_for_shards(str(tmp_path), 2, 5.0, clock=lambda: now[0], sleep=sleep)
    assert docs == {0: None, 1: None}
    assert sum(slept) == pytest.approx(5.0)


def test_a_pods_share_of_the_schedule() -> None:
    whole = RateSchedule.steps([3000, 6000], 10.0, max_requests=100)
    shares = [Shard(i, 3, "/x").share(whole) for i in range(3)]
    assert [s.segments[1].start_rate for s in shares] == [2000, 2000, 2000]
    assert [s.max_requests for s in shares] == [34, 33, 33]
    with pytest.raises(ValueError, match=r"not in 0\.\.2"):
        Shard(3, 3, "/x")
