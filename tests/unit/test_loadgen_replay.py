"""Replay sources: JSON lines, gzipped or not, local or on S3, and their clear errors."""

from __future__ import annotations

import gzip
from pathlib import Path
from typing import Any

import orjson
import pytest

from loadgen.exit_codes import ExitCode, LoadgenError
from loadgen.pool import encode_pool
from loadgen.replay import read_replay
from model_server.synthetic import TrafficGenerator
from model_server.training import synthetic_examples, write_examples

SHARED = Path(__file__).resolve().parents[3] / "shared" / "openrtb-2.6"


def _requests(n: int) -> list[dict[str, Any]]:
    gen = TrafficGenerator(seed=3, n_bidders=4)
    return [sr.request for sr in gen.requests(n)]


def _jsonl(requests: list[dict[str, Any]]) -> bytes:
    return b"".join(orjson.dumps(r) + b"\n" for r in requests)


def test_plain_jsonl_sent_byte_for_byte_in_order(tmp_path: Path) -> None:
    requests = _requests(20)
    lines = [orjson.dumps(r) for r in requests]
    path = tmp_path / "requests.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n\n")  # a blank line is skipped
    items = read_replay(str(path), bidders=("dsp-01",))
    assert [item.payload for item in items] == lines
    assert all(item.bidders == ("dsp-01",) and item.bids is None for item in items)
    assert encode_pool(items).truth is None


def test_gzip_recognised_by_content_and_limit_keeps_the_head(tmp_path: Path) -> None:
    requests = _requests(30)
    path = tmp_path / "traffic.data"  # no .gz suffix on purpose
    path.write_bytes(gzip.compress(_jsonl(requests[:10])) + gzip.compress(_jsonl(requests[10:])))
    items = read_replay(str(path))
    assert [orjson.loads(i.payload)["id"] for i in items] == [r["id"] for r in requests]
    assert len(read_replay(str(path), limit=7)) == 7


def test_training_records_carry_candidates_and_ground_truth(tmp_path: Path) -> None:
    examples = synthetic_examples(25, seed=5, n_bidders=6)
    path = tmp_path / "train.jsonl.gz"
    write_examples(path, examples)
    items = read_replay(str(path))
    assert len(items) == 25
    for item, ex in zip(items, examples, strict=True):
        assert orjson.loads(item.payload) == ex.request
        assert item.bidders == ex.bidders
        assert item.bids == ex.bids
    truth = encode_pool(items).truth
    assert truth is not None
    assert [bin(mask).count("1") for mask in truth] == [len(ex.bids) for ex in examples]


def test_iab_examples_replay(tmp_path: Path) -> None:
    files = sorted(SHARED.glob("*.json")) if SHARED.is_dir() else []
    if not files:
        pytest.skip(f"IAB OpenRTB 2.6 examples not found in {SHARED}")
    path = tmp_path / "iab.jsonl"
    path.write_bytes(b"".join(orjson.dumps(orjson.loads(f.read_bytes())) + b"\n" for f in files))
    items = read_replay(str(path))
    assert len(items) == len(files)
    assert all(orjson.loads(i.payload).get("imp") for i in items)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b'{"id": "a", "imp": [{"id": "1"}]}\n{"id": "b", "imp": [\n', "line 2: not valid JSON"),
        (b"[1, 2]\n", "line 1: expected a JSON object"),
        (b"\n\n", "holds no bid requests"),
        (
            b'{"request": {"id": "x"}, "bidders": "dsp-01"}\n',
            "line 1: 'bidders' must be a list",
        ),
        (gzip.compress(b'{"id": "a"}\n' * 50)[:-12], "truncated"),
        (b"\x1f\x8bnot really gzip at all", "not valid gzip"),
    ],
)
def test_bad_replay_files_fail_with_the_line(tmp_path: Path, content: bytes, message: str) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_bytes(content)
    with pytest.raises(LoadgenError, match=message) as info:
        read_replay(str(path))
    assert info.value.code == ExitCode.BAD_INPUT
    assert str(path) in info.value.message


def test_missing_file_and_directory(tmp_path: Path) -> None:
    with pytest.raises(LoadgenError, match="not found"):
        read_replay(str(tmp_path / "nope.jsonl"))
    with pytest.raises(LoadgenError, match="is a directory"):
        read_replay(str(tmp_path))


def test_replay_from_s3(s3_server: Any, s3_bucket: str) -> None:
    requests = _requests(12)
    s3 = s3_server.client()
    s3.put_object(
        Bucket=s3_bucket, Key="replay/day1.jsonl.gz", Body=gzip.compress(_jsonl(requests))
    )
    items = read_replay(f"s3://{s3_bucket}/replay/day1.jsonl.gz")
    assert [orjson.loads(i.payload)["id"] for i in items] == [r["id"] for r in requests]


def test_missing_s3_object_is_bad_input(s3_server: Any, s3_bucket: str) -> None:
    with pytest.raises(LoadgenError, match="NoSuchKey") as info:
        read_replay(f"s3://{s3_bucket}/absent.jsonl")
    assert info.value.code == ExitCode.BAD_INPUT
