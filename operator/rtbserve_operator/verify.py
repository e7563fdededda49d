"""Verify an artifact before anything is rolled out, and pin exactly what was verified.

Verification downloads into a fresh scratch directory (never a shared cache: the point is to
prove what S3 holds now), checks every file's sha256 against the manifest and the manifest's
own sha256 against the spec, and loads the model. The result is the identity pods will be
given: URI, the S3 version id of manifest.json and its sha256.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from botocore.exceptions import BotoCoreError, ClientError

from model_server.artifact import (
    MANIFEST_FILE,
    ArtifactAccessError,
    ArtifactError,
    ArtifactNotFoundError,
    ChecksumMismatchError,
    InvalidManifestError,
    MissingArtifactFileError,
    load_artifact,
)
from model_server.s3 import fetch_artifact, parse_s3_uri, s3_client
from rtbserve_operator.identity import ModelIdentity
from rtbserve_operator.metrics import VERIFICATION_SECONDS, VERIFICATIONS
from rtbserve_operator.spec import ArtifactSpec

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client
else:
    S3Client = Any


class ArtifactUnusableError(Exception):
    """The artifact cannot be rolled out. `retryable`: it may succeed later unchanged
    (not there yet, S3 unreachable); otherwise only a spec change can fix it."""

    def __init__(self, reason: str, message: str, retryable: bool) -> None:
        super().__init__(reason, message)
        self.reason = reason
        self.message = message
        self.retryable = retryable

    def __str__(self) -> str:
        return f"{self.reason}: {self.message}"


# (exception type, condition reason, retryable), most specific first.
_CLASSIFICATION: tuple[tuple[type[ArtifactError], str, bool], ...] = (
    (ChecksumMismatchError, "ChecksumMismatch", False),
    (MissingArtifactFileError, "MissingArtifactFile", False),
    (InvalidManifestError, "InvalidArtifact", False),
    (ArtifactNotFoundError, "ArtifactNotFound", True),
    (ArtifactAccessError, "ArtifactUnreachable", True),
)


def classify(exc: ArtifactError) -> ArtifactUnusableError:
    for kind, reason, retryable in _CLASSIFICATION:
        if isinstance(exc, kind):
            return ArtifactUnusableError(reason, str(exc), retryable)
    return ArtifactUnusableError("InvalidArtifact", str(exc), False)


def current_version_id(s3: S3Client, uri: str) -> str | None:
    """The S3 version id of the artifact's manifest.json now (None on unversioned buckets)."""
    bucket, prefix = parse_s3_uri(uri)
    key = prefix + MANIFEST_FILE
    where = f"s3://{bucket}/{key}"
    try:
        head = s3.head_object(Bucket=bucket, Key=key)
    except ClientError as exc:
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        code = str(exc.response.get("Error", {}).get("Code", "")) or "unknown"
        if status == 404 or code in {"404", "NoSuchKey", "NoSuchBucket", "NotFound"}:
            raise ArtifactNotFoundError(f"{where}: no such object") from None
        raise ArtifactAccessError(f"{where}: S3 error {code} (HTTP {status})") from None
    except BotoCoreError as exc:
        raise ArtifactAccessError(f"{where}: cannot reach S3: {exc}") from None
    version = head.get("VersionId")
    return version if version and version != "null" else None


def verify_artifact(
    artifact: ArtifactSpec, scratch_root: Path, s3: S3Client | None = None
) -> ModelIdentity:
    """Download, verify and load the artifact; raises ArtifactUnusableError saying why not."""
    started = time.monotonic()
    try:
        identity = _verify(artifact, scratch_root, s3 or s3_client())
    except ArtifactUnusableError as problem:
        VERIFICATIONS.labels(result=problem.reason).inc()
        raise
    VERIFICATIONS.labels(result="Verified").inc()
    VERIFICATION_SECONDS.observe(time.monotonic() - started)
    return identity


def _verify(artifact: ArtifactSpec, scratch_root: Path, s3: S3Client) -> ModelIdentity:
    try:
        version_id = artifact.version_id or current_version_id(s3, artifact.uri)
        scratch_root.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=scratch_root, prefix="verify-") as scratch:
            path = fetch_artifact(
                artifact.uri,
                Path(scratch),
                expected_sha256=artifact.sha256,
                version_id=version_id,
                client=s3,
            )
            model = load_artifact(path, expected_sha256=artifact.sha256)
            return ModelIdentity(
                uri=artifact.uri,
                sha256=model.sha256,
                version_id=version_id,
                name=model.manifest.name,
                version=model.manifest.version,
            )
    except ArtifactError as exc:
        raise classify(exc) from exc
    except ValueError as exc:  # a URI the CRD pattern let through but S3 cannot parse
        raise ArtifactUnusableError("InvalidArtifactURI", str(exc), False) from exc
    except OSError as exc:  # scratch space: full or unwritable disk may clear up
        raise ArtifactUnusableError(
            "VerificationError", f"local scratch space: {exc}", True
        ) from exc
