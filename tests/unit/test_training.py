"""Training: data formats, metrics, thresholds, and `rtbserve train` end to end."""

from __future__ import annotations

import gzip
import itertools
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest

from model_server.artifact import load_artifact
from model_server.s3 import fetch_artifact
from model_server.train_cli import main as train_main
from model_server.training import (
    Example,
    TrainConfig,
    TrainingDataError,
    TrainResult,
    auc,
    is_held_out,
    parse_example,
    read_examples,
    recall_threshold,
    sample_negatives,
    split_examples,
    synthetic_examples,
    train,
    write_examples,
)

REQ = {"id": "r", "imp": [{"id": "1", "banner": {"w": 300, "h": 250}}]}


@pytest.fixture(scope="module")
def examples() -> list[Example]:
    return synthetic_examples(4000, seed=3, n_bidders=6)


@pytest.fixture(scope="module")
def result(examples: list[Example]) -> TrainResult:
    return train(examples, TrainConfig(trees=25, max_depth=5, seed=3))


# ---- metrics ---------------------------------------------------------------------------------
def test_auc_matches_pairwise_definition() -> None:
    rng = np.random.default_rng(0)
    scores = np.round(rng.random(60), 1)  # many ties
    labels = rng.random(60) < 0.3
    pos, neg = scores[labels], scores[~labels]
    pairs = [(p > n) + 0.5 * (p == n) for p, n in itertools.product(pos, neg)]
    assert auc(scores, labels) == pytest.approx(sum(pairs) / len(pairs))
    assert auc([0.1, 0.2], [0, 0]) is None


def test_recall_threshold_keeps_the_requested_share() -> None:
    rng = np.random.default_rng(1)
    scores = rng.random(1000)
    labels = rng.random(1000) < scores  # higher scores bid more often
    for recall in (0.5, 0.9, 0.99, 1.0):
        t = recall_threshold(scores, labels, recall)
        kept = (scores[labels] >= t).mean()
        assert kept >= recall
        # ...and is the highest such threshold: the next bid score up would miss the target.
        pos = np.sort(scores[labels])
        deciding = pos[pos >= t][0]
        above = pos[pos > deciding]
        assert (pos >= above[0]).mean() < recall
    assert recall_threshold(scores, np.zeros(1000, bool), 0.99) == 0.0


# ---- training on synthetic traffic ----------------------------------------------------------
def test_training_learns_and_thresholds_keep_99_percent(
    examples: list[Example], result: TrainResult
) -> None:
    m = result.metrics
    assert m["auc"] > 0.75
    assert m["recall"] >= 0.99
    assert 0.05 < m["filter_rate"] < 1.0
    held_out = sum(is_held_out(e, 3, 0.2) for e in examples)
    assert m["requests_test"] == held_out
    assert 700 < held_out < 900  # the hash split holds out about test_fraction of requests
    assert set(result.thresholds) == set(result.pipeline.bidders) == set(m["per_bidder"])
    for b, pb in m["per_bidder"].items():
        assert pb["auc"] is None or pb["auc"] > 0.6, b
        assert pb["recall"] is None or pb["recall"] >= 0.99, b


def test_thresholds_hold_when_recomputed_from_the_booster(
    examples: list[Example], result: TrainResult
) -> None:
    # Re-create the held-out split and score it through the serving path (rows + booster).
    _, test = split_examples(examples, 3, 0.2)
    pipe, booster = result.pipeline, result.booster
    rows, bid, thresholds = [], [], []
    for ex in test:
        rows.append(pipe.rows(ex.request, pipe.bidder_indices(list(ex.bidders)), ex.ts))
        bid += [b in ex.bids for b in ex.bidders]
        thresholds += [result.thresholds[b] for b in ex.bidders]
    p = booster.inplace_predict(np.concatenate(rows))
    is_bid = np.array(bid)
    kept = int((p[is_bid] >= np.array(thresholds)[is_bid]).sum())
    total = int(is_bid.sum())
    assert total > 100
    assert kept / total >= 0.99


def test_training_is_reproducible(examples: list[Example], result: TrainResult) -> None:
    again = train(examples, TrainConfig(trees=25, max_depth=5, seed=3))
    assert again.thresholds == result.thresholds
    assert again.metrics["auc"] == result.metrics["auc"]


def test_negative_sampling_keeps_every_bid(examples: list[Example]) -> None:
    rng = np.random.default_rng(0)
    sampled = sample_negatives(examples, 0.25, rng)
    bids = sum(len(e.bids) for e in examples)
    assert sum(len(e.bids & set(e.bidders)) for e in sampled) == bids
    total = sum(len(e.bidders) for e in examples)
    kept_negatives = sum(len(e.bidders) - len(e.bids) for e in sampled)
    assert kept_negatives == pytest.approx(0.25 * (total - bids), rel=0.05)
    assert sample_negatives(examples, 1.0, rng) == examples


def test_negative_sampling_keeps_probabilities_calibrated(
    examples: list[Example], result: TrainResult
) -> None:
    full = train(examples, TrainConfig(trees=25, max_depth=5, seed=3, negative_rate=1.0))
    for r in (full, result):  # result used the default negative_rate < 1
        m = r.metrics
        # The mean predicted probability on held-out pairs tracks the observed bid rate.
        assert m["mean_probability"] == pytest.approx(m["bid_rate"], rel=0.25)
    assert result.metrics["pairs_train_sampled"] < 0.5 * result.metrics["pairs_train"]
    assert full.metrics["pairs_train_sampled"] == full.metrics["pairs_train"]
    assert abs(result.metrics["auc"] - full.metrics["auc"]) < 0.02


def held_out_mean_probability(result: TrainResult, test: list[Example], bidder: str) -> float:
    pipe = result.pipeline
    rows = [pipe.rows(e.request, pipe.bidder_indices([bidder]), e.ts) for e in test]
    return float(np.mean(result.booster.inplace_predict(np.concatenate(rows))))


def test_per_bidder_negative_rates_keep_probabilities_and_recall_true(
    examples: list[Example],
) -> None:
    rates = (("dsp-01", 0.05), ("dsp-02", 1.0))
    sampled = train(
        examples, TrainConfig(trees=25, max_depth=5, seed=3, bidder_negative_rates=rates)
    )
    full = train(examples, TrainConfig(trees=25, max_depth=5, seed=3, negative_rate=1.0))
    _, test = split_examples(examples, 3, 0.2)
    for bidder in sampled.pipeline.bidders:  # dsp-03.. keep the default 0.3
        # Weighted back, the probabilities track those of a model that saw every pair; without
        # the weights, dsp-01's (bid rate ~5%, 5% of non-bids kept) would be ~10x too high.
        p = held_out_mean_probability(sampled, test, bidder)
        assert p == pytest.approx(held_out_mean_probability(full, test, bidder), rel=0.5), bidder
        assert sampled.metrics["per_bidder"][bidder]["recall"] >= 0.99, bidder
    assert sampled.metrics["mean_probability"] == pytest.approx(
        sampled.metrics["bid_rate"], rel=0.25
    )
    train_set, _ = split_examples(examples, 3, 0.2)
    non_bids = {
        b: sum(b in e.bidders and b not in e.bids for e in train_set)
        for b in sampled.pipeline.bidders
    }
    expected = (
        sampled.metrics["pairs_train"]
        - 0.95 * non_bids["dsp-01"]
        - 0.7 * sum(n for b, n in non_bids.items() if b not in ("dsp-01", "dsp-02"))
    )
    assert sampled.metrics["pairs_train_sampled"] == pytest.approx(expected, rel=0.05)
    with pytest.raises(ValueError, match="dsp-01"):
        TrainConfig(bidder_negative_rates=(("dsp-01", 0.0),))


def test_bad_config_is_rejected() -> None:
    with pytest.raises(ValueError, match="recall"):
        TrainConfig(recall=1.5)
    with pytest.raises(ValueError, match="at least 10"):
        train([Example(REQ, ("a",), frozenset())] * 3)


# ---- JSONL training data ----------------------------------------------------------------------
@pytest.mark.parametrize("name", ["data.jsonl", "data.jsonl.gz"])
def test_jsonl_round_trip(tmp_path: Path, examples: list[Example], name: str) -> None:
    path = tmp_path / name
    assert write_examples(path, examples[:50]) == 50
    back = list(read_examples(path))
    assert back == examples[:50]
    if name.endswith(".gz"):
        with gzip.open(path) as f:
            assert f.readline().startswith(b"{")


def test_jsonl_from_s3(
    s3_server: Any, s3_bucket: str, tmp_path: Path, examples: list[Example]
) -> None:
    path = tmp_path / "d.jsonl.gz"
    write_examples(path, examples[:20])
    s3_server.client().upload_file(str(path), s3_bucket, "bids/d.jsonl.gz")
    assert list(read_examples(f"s3://{s3_bucket}/bids/d.jsonl.gz")) == examples[:20]
    with pytest.raises(TrainingDataError, match="no such object"):
        list(read_examples(f"s3://{s3_bucket}/bids/missing.jsonl"))


@pytest.mark.parametrize(
    ("line", "message"),
    [
        (b"{", "not valid JSON"),
        (b"[1]", "must be a JSON object"),
        (b'{"bidders": ["a"]}', "missing 'request'"),
        (orjson.dumps({"request": {"imp": []}, "bidders": ["a"]}), "request.id"),
        (orjson.dumps({"request": REQ, "bidders": []}), "'bidders' must be"),
        (orjson.dumps({"request": REQ, "bidders": ["a", "a"]}), "twice"),
        (orjson.dumps({"request": REQ, "bidders": ["a"], "bids": ["b"]}), "not among"),
        (orjson.dumps({"request": REQ, "bidders": ["a"], "ts": "noon"}), "'ts'"),
    ],
)
def test_bad_lines_name_the_problem(line: bytes, message: str) -> None:
    with pytest.raises(TrainingDataError, match=message) as info:
        parse_example(line, "f.jsonl:7")
    assert str(info.value).startswith("f.jsonl:7: ")


def test_bad_line_reports_file_and_line_number(tmp_path: Path) -> None:
    good = orjson.dumps({"request": REQ, "bidders": ["a"], "bids": ["a"], "ts": 1.0})
    path = tmp_path / "d.jsonl"
    path.write_bytes(good + b"\n\n" + good + b"\n" + b'{"request": 1}\n')
    with pytest.raises(TrainingDataError, match=r"d\.jsonl:4: bid request must be a JSON object"):
        list(read_examples(path))
    with pytest.raises(TrainingDataError, match="cannot open"):
        list(read_examples(tmp_path / "absent.jsonl"))


# ---- the command -----------------------------------------------------------------------------
def test_cli_trains_writes_and_uploads(
    tmp_path: Path, s3_bucket: str, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "model"
    code = train_main(
        [
            "--synthetic", "1500", "--seed", "4", "--bidders", "4", "--trees", "6",
            "--max-depth", "4", "--out", str(out), "--name", "demo", "--version", "v1",
            "--upload", f"s3://{s3_bucket}/models/demo/",
        ]
    )  # fmt: skip
    assert code == 0
    stdout = capsys.readouterr().out
    lines = dict(line.split(": ", 1) for line in stdout.splitlines() if ": " in line)
    model = load_artifact(out, lines["sha256"].strip())
    assert (model.manifest.name, model.manifest.version) == ("demo", "v1")
    assert model.manifest.params["max_depth"] == 4
    assert lines["uploaded"].strip() == f"s3://{s3_bucket}/models/demo/"
    fetched = fetch_artifact(
        lines["uploaded"].strip(), tmp_path / "cache", lines["sha256"].strip(),
        lines["version_id"].strip(),
    )  # fmt: skip
    assert (fetched / "model.ubj").read_bytes() == (out / "model.ubj").read_bytes()


def test_cli_trains_from_jsonl(
    tmp_path: Path, examples: list[Example], capsys: pytest.CaptureFixture[str]
) -> None:
    data = tmp_path / "d.jsonl"
    write_examples(data, examples[:600])
    code = train_main(["--data", str(data), "--out", str(tmp_path / "m"), "--trees", "3"])
    assert code == 0
    assert load_artifact(tmp_path / "m").manifest.bidders == sorted(examples[0].bidders)
    assert "held-out evaluation" in capsys.readouterr().out


def test_cli_reports_bad_data_clearly(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = tmp_path / "bad.jsonl"
    data.write_bytes(b'{"request": {"id": "r", "imp": []}, "bidders": ["a"]}\n')
    assert train_main(["--data", str(data), "--out", str(tmp_path / "m")]) == 1
    err = capsys.readouterr().err
    assert "bad.jsonl:1" in err
    assert "request.imp" in err
    assert not (tmp_path / "m").exists()
    assert train_main(["--synthetic", "100", "--recall", "2", "--out", str(tmp_path / "m")]) == 2
