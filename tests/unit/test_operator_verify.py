"""Artifact verification against the local S3 server: pin what is good, say why what is not."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.config import Config
from prometheus_client import REGISTRY
from rtbserve_operator.spec import ArtifactSpec
from rtbserve_operator.verify import ArtifactUnusableError, verify_artifact

from tests.operator_fixtures import PublishedModels, free_port

pytestmark = pytest.mark.timeout(120)


def spec(uri: str, **pins: str) -> ArtifactSpec:
    return ArtifactSpec.model_validate({"uri": uri, **pins})


def rejected(uri: str, scratch: Path, **pins: str) -> ArtifactUnusableError:
    with pytest.raises(ArtifactUnusableError) as info:
        verify_artifact(spec(uri, **pins), scratch)
    return info.value


def verification_count(result: str) -> float:
    value = REGISTRY.get_sample_value(
        "rtbserve_operator_artifact_verifications_total", {"result": result}
    )
    return value or 0.0


def test_verified_identity_is_pinned(published_models: PublishedModels, tmp_path: Path) -> None:
    before = verification_count("Verified")
    first = published_models.first
    identity = verify_artifact(spec(first.uri), tmp_path)
    assert identity.sha256 == first.sha256
    assert identity.version_id == first.version_id
    assert identity.version_id  # the bucket is versioned: the manifest's version is pinned
    assert (identity.name, identity.version) == (first.name, first.version)
    assert identity.uri == first.uri
    assert verification_count("Verified") == before + 1
    # Verification leaves nothing behind in its scratch space.
    assert list(tmp_path.iterdir()) == []


def test_expected_sha256_and_version_id_are_honoured(
    published_models: PublishedModels, tmp_path: Path
) -> None:
    first = published_models.first
    assert first.version_id is not None
    identity = verify_artifact(
        spec(first.uri, sha256=first.sha256, versionId=first.version_id), tmp_path
    )
    assert identity.sha256 == first.sha256


def test_wrong_sha256_is_rejected_for_good(
    published_models: PublishedModels, tmp_path: Path
) -> None:
    before = verification_count("ChecksumMismatch")
    problem = rejected(published_models.first.uri, tmp_path, sha256="0" * 64)
    assert problem.reason == "ChecksumMismatch"
    assert not problem.retryable
    assert published_models.first.sha256 in problem.message
    assert verification_count("ChecksumMismatch") == before + 1


def test_corrupt_model_file_is_rejected(published_models: PublishedModels, tmp_path: Path) -> None:
    problem = rejected(published_models.corrupt_uri, tmp_path)
    assert problem.reason == "ChecksumMismatch"
    assert "model.ubj" in problem.message
    assert not problem.retryable


def test_a_model_that_does_not_load_is_rejected(
    published_models: PublishedModels, tmp_path: Path
) -> None:
    problem = rejected(published_models.unloadable_uri, tmp_path)
    assert problem.reason == "InvalidArtifact"
    assert "loadable" in problem.message
    assert not problem.retryable


def test_missing_artifact_is_retried(published_models: PublishedModels, tmp_path: Path) -> None:
    problem = rejected(published_models.missing_uri, tmp_path)
    assert problem.reason == "ArtifactNotFound"
    assert problem.retryable  # it may be uploaded after the InferenceModel was applied
    assert "does-not-exist/manifest.json" in problem.message


def test_pinned_version_survives_an_overwrite(
    s3_server: Any,
    published_models: PublishedModels,
    small_artifact: Path,
    second_artifact: Path,
    tmp_path: Path,
) -> None:
    from model_server.s3 import upload_artifact

    uri = f"s3://{published_models.bucket}/overwritten/"
    old = upload_artifact(small_artifact, uri, client=s3_server.client())
    new = upload_artifact(second_artifact, uri, client=s3_server.client())
    assert old.version_id
    assert new.version_id
    latest = verify_artifact(spec(uri), tmp_path)
    assert (latest.sha256, latest.version_id) == (new.sha256, new.version_id)
    pinned = verify_artifact(spec(uri, versionId=old.version_id), tmp_path)
    assert (pinned.sha256, pinned.version_id) == (old.sha256, old.version_id)


def test_unreachable_s3_is_retried(tmp_path: Path) -> None:
    dead = boto3.client(
        "s3",
        endpoint_url=f"http://127.0.0.1:{free_port()}",
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        config=Config(retries={"max_attempts": 1}, connect_timeout=1, read_timeout=1),
    )
    with pytest.raises(ArtifactUnusableError) as info:
        verify_artifact(spec("s3://models/ctr/1/"), tmp_path, s3=dead)
    assert info.value.reason == "ArtifactUnreachable"
    assert info.value.retryable
    assert "testing" not in str(info.value)  # never credentials in messages
