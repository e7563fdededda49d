"""A load test run as N pods (a Kubernetes Indexed Job): each pod's share, result and merge.

    shard = Shard(index, count, store)                   # store: a directory or s3://prefix/
    schedule = shard.share(schedule)                     # this pod offers rate / count
    shard.write(shard_document(result, ...))             # shard-00001-of-00003.json
    docs = wait_for_shards(store, count, wait_s)         # {index: document or None}
    merged = merge_runs([result_from_document(d) ...], total_schedule)

A pod's document is its whole measurement: counters, the HDR histogram of its latencies (the
standard compressed encoding, base64) and one histogram per second, so the merge adds
histograms bucket by bucket and its percentiles are those of all requests of all pods. Each pod
records latency from the intended send time of its own schedule, so coordinated omission is
corrected per pod and therefore in the sum. A pod that left no document is a missing shard,
reported as such by the merge.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, fields
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson

from loadgen import s3io
from loadgen.aggregate import RunResult, SecondRow, combined_counts, merge_histograms
from loadgen.exit_codes import ExitCode, LoadgenError
from loadgen.records import Quality
from loadgen.schedule import RateSchedule, Segment

SHARD_SCHEMA = "rtbserve.io/loadgen-shard/v1"
#: how often `wait_for_shards` looks for the documents still missing
POLL_S = 2.0


@dataclass(frozen=True)
class Shard:
    index: int
    count: int
    #: where every pod writes its document: a directory (a shared volume) or s3://bucket/prefix/
    store: str

    def __post_init__(self) -> None:
        if self.count < 1 or not 0 <= self.index < self.count:
            raise ValueError(f"shard index {self.index} is not in 0..{self.count - 1}")

    @property
    def name(self) -> str:
        return shard_name(self.index, self.count)

    def share(self, schedule: RateSchedule) -> RateSchedule:
        """This pod's part of the whole run's schedule: every rate divided by the pod count
        (and --requests split as evenly as possible)."""
        n = self.count
        segments = tuple(
            Segment(s.start_rate / n, s.end_rate / n, s.duration) for s in schedule.segments
        )
        limit = schedule.max_requests
        if limit is not None:
            base, extra = divmod(limit, n)
            limit = max(1, base + (1 if self.index < extra else 0))
        return RateSchedule(segments, limit)


def shard_name(index: int, count: int) -> str:
    return f"shard-{index:05d}-of-{count:05d}.json"


# ---- one pod's document ------------------------------------------------------------------------
def _b64(blob: bytes) -> str:
    return blob.decode("ascii")  # HdrHistogram.encode() is already base64 text


def _schedule_doc(schedule: RateSchedule) -> dict[str, Any]:
    return {
        "segments": [asdict(s) for s in schedule.segments],
        "max_requests": schedule.max_requests,
    }


def schedule_from_doc(doc: dict[str, Any]) -> RateSchedule:
    return RateSchedule(tuple(Segment(**s) for s in doc["segments"]), doc["max_requests"])


def result_to_doc(result: RunResult) -> dict[str, Any]:
    """Everything a RunResult holds, as JSON."""
    out: dict[str, Any] = {}
    for f in fields(result):
        value = getattr(result, f.name)
        if f.name == "schedule":
            value = _schedule_doc(value)
        elif f.name == "histogram":
            value = _b64(value.encode())
        elif f.name == "started_at":
            value = value.isoformat()
        elif f.name in ("series", "quality"):
            value = [asdict(r) for r in value] if f.name == "series" else asdict(value)
        elif f.name == "worker_histograms":
            value = [_b64(h) for h in value]
        elif f.name == "second_histograms":
            value = {str(k): _b64(h) for k, h in value.items()}
        out[f.name] = value
    return out


def result_from_doc(doc: dict[str, Any]) -> RunResult:
    """The RunResult `result_to_doc` wrote."""
    d = dict(doc)
    d["schedule"] = schedule_from_doc(d["schedule"])
    d["histogram"] = merge_histograms([d["histogram"].encode("ascii")])
    d["started_at"] = datetime.fromisoformat(d["started_at"])
    d["series"] = [SecondRow(**r) for r in d["series"]]
    d["quality"] = Quality(**d["quality"])
    d["worker_histograms"] = [h.encode("ascii") for h in d["worker_histograms"]]
    d["second_histograms"] = {int(k): h.encode("ascii") for k, h in d["second_histograms"].items()}
    return RunResult(**d)


def shard_document(
    shard: Shard,
    *,
    result: RunResult | None,
    run_schedule: RateSchedule,
    exit_code: ExitCode,
    messages: Sequence[str],
    settings: dict[str, Any],
) -> dict[str, Any]:
    """What one pod leaves for the merge: its result (None if the run never started), its own
    verdict, the whole run's schedule and the settings the merged report echoes."""
    return {
        "schema": SHARD_SCHEMA,
        "index": shard.index,
        "count": shard.count,
        "exit_code": int(exit_code),
        "messages": list(messages),
        "run_schedule": _schedule_doc(run_schedule),
        "settings": settings,
        "result": None if result is None else result_to_doc(result),
    }


# ---- the store ---------------------------------------------------------------------------------
def _join(store: str, name: str) -> str:
    return store.rstrip("/") + "/" + name


def write_document(store: str, doc: dict[str, Any]) -> str:
    """Write one pod's document; returns where."""
    name = shard_name(doc["index"], doc["count"])
    data = orjson.dumps(doc)
    if s3io.is_s3_uri(store):
        bucket, key = s3io.split_s3_uri(_join(store, name))
        try:
            s3io.client().put_object(Bucket=bucket, Key=key, Body=data)
        except Exception as exc:  # botocore's errors have no common base worth importing here
            raise LoadgenError(
                ExitCode.PUBLISH_FAILED, f"cannot write shard to s3://{bucket}/{key}: {exc}"
            ) from None
        return f"s3://{bucket}/{key}"
    path = Path(store) / name
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_bytes(data)
        tmp.replace(path)  # the merge never reads half a document
    except OSError as exc:
        raise LoadgenError(ExitCode.PUBLISH_FAILED, f"cannot write shard {path}: {exc}") from None
    return str(path)


def read_document(store: str, index: int, count: int) -> dict[str, Any] | None:
    """One pod's document, or None when it has not been written."""
    name = shard_name(index, count)
    if s3io.is_s3_uri(store):
        from botocore.exceptions import ClientError

        bucket, key = s3io.split_s3_uri(_join(store, name))
        try:
            data = s3io.client().get_object(Bucket=bucket, Key=key)["Body"].read()
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
                return None
            raise LoadgenError(
                ExitCode.BAD_INPUT, f"cannot read s3://{bucket}/{key}: {exc}"
            ) from None
    else:
        path = Path(store) / name
        if not path.is_file():
            return None
        data = path.read_bytes()
    doc: dict[str, Any] = orjson.loads(data)
    if doc.get("schema") != SHARD_SCHEMA or (doc.get("index"), doc.get("count")) != (index, count):
        raise LoadgenError(
            ExitCode.BAD_INPUT, f"{_join(store, name)} is not shard {index} of {count}"
        )
    return doc


def wait_for_shards(
    store: str,
    count: int,
    wait_s: float,
    *,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> dict[int, dict[str, Any] | None]:
    """Every pod's document, waiting up to `wait_s` for those not written yet (None: missing)."""
    deadline = clock() + wait_s
    docs: dict[int, dict[str, Any] | None] = dict.fromkeys(range(count))
    while True:
        for i in [i for i, d in docs.items() if d is None]:
            docs[i] = read_document(store, i, count)
        if all(d is not None for d in docs.values()) or clock() >= deadline:
            return docs
        sleep(min(POLL_S, max(0.0, deadline - clock())))


# ---- the merge ---------------------------------------------------------------------------------
def _merge_second(second: int, rows: list[SecondRow], hists: list[bytes] | None) -> SecondRow:
    p50 = p99 = peak = None
    if hists is not None:
        h = merge_histograms(hists)
        if h.get_total_count():
            p50 = h.get_value_at_percentile(50) / 1000.0
            p99 = h.get_value_at_percentile(99) / 1000.0
            peak = h.get_max_value() / 1000.0
    return SecondRow(
        second=second,
        target_rate=sum(r.target_rate for r in rows),
        sent=sum(r.sent for r in rows),
        ok=sum(r.ok for r in rows),
        errors=sum(r.errors for r in rows),
        dropped=sum(r.dropped for r in rows),
        late=sum(r.late for r in rows),
        completed=sum(r.completed for r in rows),
        p50_ms=p50,
        p99_ms=p99,
        max_ms=peak,
    )


def merge_runs(runs: Sequence[RunResult], schedule: RateSchedule) -> RunResult:
    """The pods' results as one run of `schedule`: counts added, histograms added bucket by
    bucket (overall and per second), so every percentile is that of all the pods' requests."""
    by_second: dict[int, list[tuple[SecondRow, bytes | None]]] = {}
    for run in runs:
        for row in run.series:
            by_second.setdefault(row.second, []).append(
                (row, run.second_histograms.get(row.second))
            )
    series = []
    for second in sorted(by_second):
        parts = by_second[second]
        hists = [h for _, h in parts if h is not None]
        series.append(
            _merge_second(
                second, [r for r, _ in parts], hists if len(hists) == len(parts) else None
            )
        )
    return RunResult(
        target=runs[0].target,
        schedule=schedule,
        workers=sum(r.workers for r in runs),
        connections=sum(r.connections for r in runs),
        started_at=min(r.started_at for r in runs),
        histogram=merge_histograms(r.histogram.encode() for r in runs),
        series=series,
        worker_histograms=[h for r in runs for h in r.worker_histograms],
        aborted=next((r.aborted for r in runs if r.aborted), None),
        **combined_counts(runs),
    )


def shard_statuses(docs: dict[int, dict[str, Any] | None]) -> list[dict[str, Any]]:
    """One line per pod for the merged report: ok, failed (its own verdict) or missing."""
    out = []
    for i, doc in sorted(docs.items()):
        if doc is None:
            out.append({"index": i, "status": "missing", "exit_code": None, "messages": []})
            continue
        code = doc["exit_code"]
        status = "ok" if code == 0 else ("failed" if doc["result"] is not None else "error")
        out.append({"index": i, "status": status, "exit_code": code, "messages": doc["messages"]})
    return out
