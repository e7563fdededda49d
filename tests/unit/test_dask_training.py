"""Training on a real `distributed` LocalCluster of worker processes, data in a real S3 (moto)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest

pytest.importorskip("distributed", reason="the 'dask' extra is not installed")

import dask
from distributed import Client, LocalCluster

from model_server.dask_training import (
    fit_pipeline,
    train_distributed,
    worker_peak_memory,
)
from model_server.data_sources import expand_sources, read_source, write_parquet
from model_server.features import FeaturePipeline
from model_server.train_cli import main as train_main
from model_server.training import (
    Example,
    TrainConfig,
    TrainingDataError,
    split_examples,
    synthetic_examples,
    train,
    write_examples,
)

CONFIG = TrainConfig(trees=30, max_depth=5, seed=3)


@pytest.fixture(scope="module")
def client() -> Iterator[Client]:
    with (
        LocalCluster(
            n_workers=3, threads_per_worker=1, processes=True, memory_limit="1GiB",
            dashboard_address=":0",
        ) as cluster,
        Client(cluster) as c,
    ):  # fmt: skip
        yield c


@pytest.fixture(scope="module")
def examples() -> list[Example]:
    out = []
    # Varied candidate lists (and a bid from a bidder not offered, which the fit ignores).
    for i, e in enumerate(synthetic_examples(9000, seed=3, n_bidders=6)):
        cut = e.bidders[: 2 + i % 5]
        out.append(Example(e.request, cut, e.bids & set(cut), e.ts if i % 7 else None))
    return out


def _upload_mixed(s3: Any, bucket: str, examples: list[Example], tmp: Path) -> list[str]:
    """Six files of three formats under one S3 prefix."""
    names = []
    for i in range(6):
        part = examples[i * len(examples) // 6 : (i + 1) * len(examples) // 6]
        name = ("d{}.jsonl", "d{}.jsonl.gz", "d{}.parquet")[i % 3].format(i)
        path = tmp / name
        if name.endswith(".parquet"):
            write_parquet(path, part, row_group_size=500)
        else:
            write_examples(path, part)
        s3.upload_file(str(path), bucket, f"logs/day1/{name}")
        names.append(name)
    s3.put_object(Bucket=bucket, Key="logs/day1/sub/ignored.jsonl", Body=b"not matched")
    return names


def _write_parts(tmp: Path, examples: list[Example], n: int, name: str) -> list[str]:
    """`examples` in `n` local files named `name` (with {} for the part), as one glob's files."""
    size = len(examples) // n
    for i in range(n):
        write_examples(tmp / name.format(i), examples[i * size : (i + 1) * size])
    return expand_sources([str(tmp / name.format("*"))])


def test_s3_glob_lists_the_matching_objects(s3_server: Any, s3_bucket: str, tmp_path: Path) -> None:
    examples = synthetic_examples(60, seed=1, n_bidders=3)
    names = _upload_mixed(s3_server.client(), s3_bucket, examples, tmp_path)
    found = expand_sources([f"s3://{s3_bucket}/logs/day1/*"])
    assert found == sorted(f"s3://{s3_bucket}/logs/day1/{n}" for n in names)
    back = [e for f in sorted(found, key=lambda f: int(f.rsplit("/d", 1)[1].split(".")[0]))
            for e in read_source(f)]  # fmt: skip
    assert back == examples
    with pytest.raises(TrainingDataError, match="no files match"):
        expand_sources([f"s3://{s3_bucket}/logs/day2/*.jsonl"])


def test_distributed_fit_equals_the_single_process_fit(
    client: Client, s3_server: Any, s3_bucket: str, tmp_path: Path, examples: list[Example]
) -> None:
    _upload_mixed(s3_server.client(), s3_bucket, examples, tmp_path)
    sources = expand_sources([f"s3://{s3_bucket}/logs/day1/d*"])
    assert len(sources) == 6
    distributed, first = fit_pipeline(client, sources, CONFIG)
    train_set, test = split_examples(examples, CONFIG.seed, CONFIG.test_fraction)
    single = FeaturePipeline.fit(
        [e.request for e in train_set],
        sorted({b for e in examples for b in e.bidders}),
        bids=[e.bids for e in train_set],
        candidates=[e.bidders for e in train_set],
        nows=[0.0 if e.ts is None else e.ts for e in train_set],
    )
    assert (first.requests_train, first.requests_test) == (len(train_set), len(test))
    assert orjson.dumps(distributed.to_dict()) == orjson.dumps(single.to_dict())
    # ...and the rate tables have something in them to compare.
    assert len(distributed.vocabularies["publisher"].values) > 10
    assert np.unique(distributed.cross_rates).size > 100


def test_distributed_model_matches_the_single_process_model(
    client: Client, tmp_path: Path, examples: list[Example]
) -> None:
    sources = _write_parts(tmp_path, examples, 6, "part-{}.jsonl.gz")
    single = train(examples, CONFIG)
    dist = train_distributed(client, sources, CONFIG)
    m, s = dist.metrics, single.metrics
    assert m["requests_test"] == s["requests_test"]
    assert m["pairs_test"] == s["pairs_test"]  # the same held-out split
    assert abs(m["auc"] - s["auc"]) < 0.002
    assert m["recall"] >= CONFIG.recall
    assert m["dask"] == {"workers": 3, "files": 6}
    # Without negative sampling both modes see the same rows: the same model, but for the
    # quantile sketch, which the workers build over their own parts.
    full = TrainConfig(trees=30, max_depth=5, seed=3, negative_rate=1.0)
    assert (
        abs(
            train_distributed(client, sources, full).metrics["auc"]
            - train(examples, full).metrics["auc"]
        )
        < 0.002
    )


def test_per_bidder_negative_rates_on_the_cluster(
    client: Client, tmp_path: Path, examples: list[Example]
) -> None:
    sources = _write_parts(tmp_path, examples, 3, "q{}.jsonl")
    rates = (("dsp-01", 0.05),)
    cfg = TrainConfig(trees=20, max_depth=5, seed=3, bidder_negative_rates=rates)
    dist = train_distributed(client, sources, cfg)
    single = train(examples, cfg)
    m = dist.metrics
    assert m["pairs_train_sampled"] == pytest.approx(
        single.metrics["pairs_train_sampled"], rel=0.02
    )
    assert m["mean_probability"] == pytest.approx(m["bid_rate"], rel=0.25)
    for bidder, pb in m["per_bidder"].items():
        assert pb["recall"] is None or pb["recall"] >= cfg.recall, bidder


def test_a_malformed_line_names_file_and_line_and_writes_nothing(
    tmp_path: Path, examples: list[Example], capsys: pytest.CaptureFixture[str]
) -> None:
    for i in range(3):
        write_examples(tmp_path / f"p{i}.jsonl", examples[i * 300 : (i + 1) * 300])
    bad = tmp_path / "p1.jsonl"
    lines = bad.read_bytes().splitlines(keepends=True)
    lines[41] = b'{"request": {"id": "x", "imp": []}, "bidders": ["dsp-01"]}\n'
    bad.write_bytes(b"".join(lines))
    out = tmp_path / "model"
    code = train_main(
        ["--dask", "local:2", "--data", str(tmp_path / "p*.jsonl"), "--out", str(out),
         "--trees", "3"]
    )  # fmt: skip
    assert code == 1
    err = capsys.readouterr().err
    assert f"{bad}:42: required field 'request.imp'" in err.replace("\n", "")
    assert not out.exists()


def test_a_data_set_larger_than_a_workers_memory_trains(tmp_path: Path) -> None:
    """Each worker may use 400 MiB; the files hold more than that (each request padded with a
    12 KB `ext` object the features never read), and the parsed examples several times more."""
    limit = 400 * 2**20
    rng = np.random.default_rng(0)
    examples = synthetic_examples(6000, seed=5, n_bidders=4)
    for f in range(16):
        with (tmp_path / f"big-{f:02d}.jsonl").open("wb") as out:
            for e in examples[f::16]:
                for copy in range(4):  # each request four times, under new ids
                    request = {**e.request, "id": f"{e.request['id']}-{copy}",
                               "ext": {"exchange": rng.bytes(12000).hex()}}  # fmt: skip
                    line = {"request": request, "bidders": list(e.bidders),
                            "bids": sorted(e.bids), "ts": e.ts}  # fmt: skip
                    out.write(orjson.dumps(line) + b"\n")
    sources = expand_sources([str(tmp_path / "big-*.jsonl")])
    data_bytes = sum(os.path.getsize(s) for s in sources)
    assert data_bytes > 1.3 * limit
    cfg = TrainConfig(trees=10, max_depth=4, seed=5)
    # No spilling to disk and no pausing: a worker over its limit is killed (and replaced by
    # one at a new address), which the checks below would see.
    with (
        dask.config.set({"distributed.worker.memory.target": False,
                         "distributed.worker.memory.spill": False,
                         "distributed.worker.memory.pause": False,
                         "distributed.worker.memory.terminate": 0.95}),
        LocalCluster(n_workers=3, threads_per_worker=1, processes=True, memory_limit=limit,
                     dashboard_address=":0") as cluster,
        Client(cluster) as c,
    ):  # fmt: skip
        before = set(c.scheduler_info()["workers"])
        result = train_distributed(c, sources, cfg)
        peaks = worker_peak_memory(c)
        workers = c.scheduler_info()["workers"]
    assert set(workers) == before == set(peaks)
    assert all(w["memory_limit"] == limit for w in workers.values())
    assert result.metrics["requests_train"] + result.metrics["requests_test"] == 24000
    assert result.metrics["auc"] > 0.7
    assert max(peaks.values()) < 0.95 * limit
