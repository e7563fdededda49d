"""Training data sources: paths and globs, local or s3://, of JSONL(.gz) or Parquet files.

    files = expand_sources(["s3://logs/2026-12-0*/*.jsonl.gz", "./extra.parquet"])
    for f in files:
        for example in read_source(f): ...

A file is the unit a distributed run hands to one task (`model_server.dask_training`), so a
task's memory follows the file's size: write the logs as many bounded files (hourly, or every
few hundred MB), as Firehose, Spark and most log shippers do anyway.

Parquet files hold one example per row: `request` (the bid request as a JSON string),
`bidders` (list of strings), `bids` (list of strings, optional) and `ts` (seconds since the
epoch, optional); see docs/training-data.md. A bad row is named by file and row number.
"""

from __future__ import annotations

import fnmatch
import glob
import io
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from model_server.training import Example, TrainingDataError, example_from_object, read_examples

_GLOB_CHARS = frozenset("*?[")


def is_parquet(uri: str) -> bool:
    return uri.endswith((".parquet", ".pq"))


def expand_sources(patterns: Sequence[str]) -> list[str]:
    """Every file the patterns name, each pattern's matches sorted; a pattern matching
    nothing is an error (a typo must not train on less data than meant)."""
    out: list[str] = []
    for pattern in patterns:
        if not _GLOB_CHARS & set(pattern):
            out.append(pattern)
            continue
        found = _s3_glob(pattern) if pattern.startswith("s3://") else sorted(glob.glob(pattern))
        if not found:
            raise TrainingDataError(f"{pattern}: no files match")
        out += [f for f in found if f not in out]
    return out


def _s3_glob(pattern: str) -> list[str]:
    """Objects matching an s3:// glob: listed from the prefix before the first glob character."""
    from model_server.artifact import ArtifactError
    from model_server.s3 import _s3_errors, parse_s3_uri, s3_client

    bucket, key_pattern = parse_s3_uri(pattern)
    key_pattern = key_pattern.rstrip("/")
    first = min(key_pattern.index(c) for c in _GLOB_CHARS if c in key_pattern)
    prefix = key_pattern[:first]
    keys: list[str] = []
    try:
        with _s3_errors(bucket, prefix):
            pages = (
                s3_client().get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
            )
            for page in pages:
                keys += [o["Key"] for o in page.get("Contents", [])]
    except ArtifactError as exc:
        raise TrainingDataError(str(exc)) from None
    # fnmatch's `*` also crosses "/", so split both into path segments to match glob's rules.
    want = key_pattern.split("/")
    return sorted(
        f"s3://{bucket}/{k}"
        for k in keys
        if len(k.split("/")) == len(want)
        and all(fnmatch.fnmatchcase(s, w) for s, w in zip(k.split("/"), want, strict=True))
    )


def read_source(uri: str) -> Iterator[Example]:
    """The examples of one file, in order; TrainingDataError names the file and line (row)."""
    if is_parquet(uri):
        return _read_parquet(uri)
    return read_examples(uri)


def _parquet_bytes(uri: str) -> io.BytesIO | Path:
    if not uri.startswith("s3://"):
        path = Path(uri)
        if not path.is_file():
            raise TrainingDataError(f"{uri}: cannot open: no such file")
        return path
    from model_server.artifact import ArtifactError
    from model_server.s3 import _s3_errors, parse_s3_uri, s3_client

    bucket, key = parse_s3_uri(uri)
    key = key.rstrip("/")
    try:
        with _s3_errors(bucket, key):
            return io.BytesIO(s3_client().get_object(Bucket=bucket, Key=key)["Body"].read())
    except ArtifactError as exc:
        raise TrainingDataError(str(exc)) from None


def _read_parquet(uri: str) -> Iterator[Example]:
    import orjson
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(_parquet_bytes(uri))
    except (pa.ArrowException, OSError) as exc:
        raise TrainingDataError(f"{uri}: not a readable Parquet file: {exc}") from None
    names = set(pf.schema_arrow.names)
    if not {"request", "bidders"} <= names:
        raise TrainingDataError(f"{uri}: Parquet columns must include 'request' and 'bidders'")
    columns = [c for c in ("request", "bidders", "bids", "ts") if c in names]
    row = 0
    for group in range(pf.num_row_groups):  # one row group in memory at a time
        for obj in pf.read_row_group(group, columns=columns).to_pylist():
            row += 1
            where = f"{uri}:row {row}"
            request: Any = obj["request"]
            if isinstance(request, str | bytes):
                try:
                    obj["request"] = orjson.loads(request)
                except orjson.JSONDecodeError as exc:
                    raise TrainingDataError(
                        f"{where}: 'request' is not valid JSON: {exc}"
                    ) from None
            if obj.get("bids") is None:
                obj.pop("bids", None)
            yield example_from_object(obj, where)


def write_parquet(
    path: str | Path, examples: Sequence[Example], row_group_size: int = 65536
) -> int:
    """Write examples as Parquet in the layout `read_source` reads; returns how many."""
    import orjson
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.table(
        {
            "request": pa.array([orjson.dumps(e.request).decode() for e in examples], pa.string()),
            "bidders": pa.array([list(e.bidders) for e in examples], pa.list_(pa.string())),
            "bids": pa.array([sorted(e.bids) for e in examples], pa.list_(pa.string())),
            "ts": pa.array([e.ts for e in examples], pa.float64()),
        }
    )
    pq.write_table(table, str(path), row_group_size=row_group_size)
    return len(examples)
