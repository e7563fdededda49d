"""Publishing to and fetching from a real S3 API (moto's server on loopback)."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import xgboost

from model_server.artifact import (
    ArtifactAccessError,
    ArtifactNotFoundError,
    ChecksumMismatchError,
    MissingArtifactFileError,
    load_artifact,
    write_artifact,
)
from model_server.s3 import fetch_artifact, parse_s3_uri, s3_client, upload_artifact


@pytest.mark.parametrize(
    ("uri", "expected"),
    [
        ("s3://b/models/x/", ("b", "models/x/")),
        ("s3://b/models/x", ("b", "models/x/")),
        ("s3://b", ("b", "")),
        ("s3://b/", ("b", "")),
    ],
)
def test_parse_s3_uri(uri: str, expected: tuple[str, str]) -> None:
    assert parse_s3_uri(uri) == expected


@pytest.mark.parametrize("uri", ["http://b/x", "s3://", "/local/path"])
def test_parse_s3_uri_rejects(uri: str) -> None:
    with pytest.raises(ValueError, match="s3"):
        parse_s3_uri(uri)


@pytest.fixture
def other_artifact(small_artifact: Path, tmp_path: Path) -> Path:
    """A second artifact with a different model: the small one plus one more tree."""
    model = load_artifact(small_artifact)
    rng = np.random.default_rng(0)
    x = rng.random((64, model.pipeline.n_features), dtype=np.float32)
    booster = xgboost.train(
        {"objective": "binary:logistic", "max_depth": 2},
        xgboost.DMatrix(x, label=rng.random(64) < 0.5),
        num_boost_round=1,
        xgb_model=model.booster,
    )
    m = model.manifest
    out = tmp_path / "other"
    write_artifact(
        out, booster, model.pipeline, m.thresholds, m.metrics, m.name, "test-2", m.params
    )
    return out


def _no_temp_dirs(cache: Path) -> bool:
    return not [p for p in cache.iterdir() if p.name.startswith(".")]


def test_round_trip_with_version_id(small_artifact: Path, s3_bucket: str, tmp_path: Path) -> None:
    pub = upload_artifact(small_artifact, f"s3://{s3_bucket}/models/small")
    assert pub.uri == f"s3://{s3_bucket}/models/small/"
    assert pub.sha256 == load_artifact(small_artifact).sha256
    assert pub.version_id  # the bucket is versioned
    cache = tmp_path / "cache"
    got = fetch_artifact(pub.uri, cache, pub.sha256, pub.version_id)
    assert got == cache / pub.sha256
    assert (got / "model.ubj").read_bytes() == (small_artifact / "model.ubj").read_bytes()
    assert load_artifact(got, pub.sha256).manifest.version == "test-1"
    assert _no_temp_dirs(cache)


def test_unversioned_bucket_has_no_version_id(
    small_artifact: Path, s3_server: Any, tmp_path: Path
) -> None:
    bucket = s3_server.make_bucket(versioned=False)
    pub = upload_artifact(small_artifact, f"s3://{bucket}/m/")
    assert pub.version_id is None
    assert fetch_artifact(pub.uri, tmp_path, pub.sha256).name == pub.sha256


def test_cached_artifact_is_reused_and_damage_is_repaired(
    small_artifact: Path, s3_server: Any, s3_bucket: str, tmp_path: Path
) -> None:
    pub = upload_artifact(small_artifact, f"s3://{s3_bucket}/m/")
    first = fetch_artifact(pub.uri, tmp_path, pub.sha256)
    # With the model object gone from S3, only the cache can satisfy the fetch.
    s3 = s3_server.client()
    versions = s3.list_object_versions(Bucket=s3_bucket, Prefix="m/model.ubj")["Versions"]
    for v in versions:
        s3.delete_object(Bucket=s3_bucket, Key="m/model.ubj", VersionId=v["VersionId"])
    assert fetch_artifact(pub.uri, tmp_path, pub.sha256) == first
    # A damaged cache entry is not trusted: it is fetched again (and here, cannot be).
    (first / "model.ubj").write_bytes(b"damaged")
    with pytest.raises(MissingArtifactFileError, match=r"m/model\.ubj"):
        fetch_artifact(pub.uri, tmp_path, pub.sha256)
    assert not first.exists()
    assert _no_temp_dirs(tmp_path)


def test_pinned_version_survives_a_newer_upload(
    small_artifact: Path, other_artifact: Path, s3_bucket: str, tmp_path: Path
) -> None:
    uri = f"s3://{s3_bucket}/models/rtb/"
    old = upload_artifact(small_artifact, uri)
    new = upload_artifact(other_artifact, uri)
    assert old.sha256 != new.sha256
    assert old.version_id != new.version_id
    latest = fetch_artifact(uri, tmp_path)
    assert latest.name == new.sha256
    pinned = fetch_artifact(uri, tmp_path, old.sha256, old.version_id)
    assert pinned.name == old.sha256
    # The older model object version was found by its recorded sha256.
    assert (pinned / "model.ubj").read_bytes() == (small_artifact / "model.ubj").read_bytes()
    assert (latest / "model.ubj").read_bytes() == (other_artifact / "model.ubj").read_bytes()


def test_corrupted_object(small_artifact: Path, s3_server: Any, tmp_path: Path) -> None:
    bucket = s3_server.make_bucket(versioned=False)
    pub = upload_artifact(small_artifact, f"s3://{bucket}/m/")
    s3_server.client().put_object(Bucket=bucket, Key="m/model.ubj", Body=b"corrupted bytes")
    with pytest.raises(ChecksumMismatchError, match=rf"s3://{bucket}/m/model\.ubj: sha256 is"):
        fetch_artifact(pub.uri, tmp_path, pub.sha256)
    assert list(tmp_path.iterdir()) == []  # nothing half-written is left behind


def test_corrupted_latest_in_versioned_bucket_falls_back_to_the_good_version(
    small_artifact: Path, s3_server: Any, s3_bucket: str, tmp_path: Path
) -> None:
    pub = upload_artifact(small_artifact, f"s3://{s3_bucket}/m/")
    s3_server.client().put_object(Bucket=s3_bucket, Key="m/model.ubj", Body=b"overwritten")
    got = fetch_artifact(pub.uri, tmp_path, pub.sha256)
    assert (got / "model.ubj").read_bytes() == (small_artifact / "model.ubj").read_bytes()


def test_wrong_checksum(small_artifact: Path, s3_bucket: str, tmp_path: Path) -> None:
    pub = upload_artifact(small_artifact, f"s3://{s3_bucket}/m/")
    with pytest.raises(ChecksumMismatchError, match=rf"artifact sha256 is {pub.sha256}, expected"):
        fetch_artifact(pub.uri, tmp_path, "ab" * 32)
    assert list(tmp_path.iterdir()) == []


def test_missing_object_bucket_and_version(
    small_artifact: Path, s3_server: Any, s3_bucket: str, tmp_path: Path
) -> None:
    with pytest.raises(ArtifactNotFoundError, match=rf"s3://{s3_bucket}/nothing/manifest\.json"):
        fetch_artifact(f"s3://{s3_bucket}/nothing/", tmp_path)
    with pytest.raises(ArtifactNotFoundError, match="bucket 'no-such-bucket' does not exist"):
        fetch_artifact("s3://no-such-bucket/m/", tmp_path)
    with pytest.raises(ArtifactNotFoundError, match="does not exist"):
        upload_artifact(small_artifact, "s3://no-such-bucket/m/")
    pub = upload_artifact(small_artifact, f"s3://{s3_bucket}/m/")
    with pytest.raises(ArtifactNotFoundError, match="version"):
        fetch_artifact(pub.uri, tmp_path, version_id="not-a-version")
    # A model file that the manifest lists but S3 does not hold.
    bucket = s3_server.make_bucket(versioned=False)
    pub = upload_artifact(small_artifact, f"s3://{bucket}/m/")
    s3_server.client().delete_object(Bucket=bucket, Key="m/model.ubj")
    with pytest.raises(MissingArtifactFileError, match=r"listed in manifest\.json but missing"):
        fetch_artifact(pub.uri, tmp_path)


def test_unreachable_endpoint_is_a_clear_error_without_secrets(
    small_artifact: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import socket

    with socket.socket() as s:  # a loopback port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    secret = "s3cr3t-Value-That-Must-Not-Leak"
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", secret)
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{port}")
    client = s3_client(max_attempts=1, connect_timeout=1.0)
    with pytest.raises(ArtifactAccessError, match="cannot reach S3") as info:
        fetch_artifact("s3://b/m/", tmp_path, client=client)
    assert secret not in str(info.value)
    assert "s3://b/m/manifest.json" in str(info.value)
    with pytest.raises(ArtifactAccessError, match="cannot reach S3"):
        upload_artifact(small_artifact, "s3://b/m/", client=client)


def test_endpoint_comes_from_aws_endpoint_url(
    small_artifact: Path, s3_server: Any, s3_bucket: str, tmp_path: Path
) -> None:
    # No client passed: boto3 finds the moto server through AWS_ENDPOINT_URL alone.
    pub = upload_artifact(small_artifact, f"s3://{s3_bucket}/env/")
    keys = {o["Key"] for o in s3_server.client().list_objects_v2(Bucket=s3_bucket)["Contents"]}
    assert keys == {"env/manifest.json", "env/model.ubj"}
    assert fetch_artifact(pub.uri, tmp_path).name == pub.sha256


def test_local_source_is_verified_in_place(small_artifact: Path, tmp_path: Path) -> None:
    identity = load_artifact(small_artifact).sha256
    assert fetch_artifact(small_artifact, tmp_path / "cache", identity) == small_artifact
    assert not (tmp_path / "cache").exists()
    with pytest.raises(ChecksumMismatchError):
        fetch_artifact(str(small_artifact), tmp_path, "0" * 64)
    with pytest.raises(ValueError, match="version_id"):
        fetch_artifact(small_artifact, tmp_path, version_id="v")
    copy = Path(shutil.copytree(small_artifact, tmp_path / "copy"))
    (copy / "model.ubj").write_bytes(b"x")
    with pytest.raises(ChecksumMismatchError, match=r"model\.ubj"):
        fetch_artifact(copy, tmp_path)
