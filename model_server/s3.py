"""Publishing artifacts to S3 and fetching them into a local, verified cache.

    parse_s3_uri("s3://bucket/prefix/") -> ("bucket", "prefix/")
    upload_artifact(local_dir, "s3://bucket/prefix/", client=None)
        -> Published(uri, sha256, version_id)
    fetch_artifact(source, cache_dir, expected_sha256=None, version_id=None, client=None) -> Path
    s3_client(max_attempts=5) -> a boto3 S3 client

Credentials come from the standard AWS chain (IRSA / Pod Identity on EKS) and the endpoint from
the standard `AWS_ENDPOINT_URL` / `AWS_ENDPOINT_URL_S3` variables, which botocore reads itself.
Uploads put the model files first and `manifest.json` last, so a reader that sees the new
manifest also finds its files; every object carries its sha256 as metadata, which lets a fetch
of an older (pinned) manifest find the matching older object versions in a versioned bucket.
A fetch downloads into `cache_dir/.<tmp>/`, verifies, then renames to `cache_dir/<sha256>/`.
S3 failures become `ArtifactError` subclasses that name the bucket and key, never credentials.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError

from model_server.artifact import (
    MANIFEST_FILE,
    ArtifactAccessError,
    ArtifactError,
    ArtifactNotFoundError,
    ChecksumMismatchError,
    Manifest,
    MissingArtifactFileError,
    sha256_bytes,
    verify_artifact,
)

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client
else:
    S3Client = Any

_SHA_META = "sha256"  # user metadata key (x-amz-meta-sha256) holding each object's sha256
_CHUNK = 1 << 20


@dataclass(frozen=True)
class Published:
    uri: str
    sha256: str
    version_id: str | None


def parse_s3_uri(uri: str) -> tuple[str, str]:
    """("bucket", "prefix/") from "s3://bucket/prefix" (the prefix is "" or ends with "/")."""
    if not uri.startswith("s3://"):
        raise ValueError(f"not an s3:// URI: {uri!r}")
    bucket, _, prefix = uri[5:].partition("/")
    if not bucket:
        raise ValueError(f"s3 URI has no bucket: {uri!r}")
    prefix = prefix.strip("/")
    return bucket, f"{prefix}/" if prefix else ""


def s3_client(max_attempts: int = 5, connect_timeout: float = 5.0) -> S3Client:
    """An S3 client with standard-mode retries; endpoint and credentials from the environment."""
    config = Config(
        retries={"mode": "standard", "max_attempts": max_attempts},
        connect_timeout=connect_timeout,
        read_timeout=60,
    )
    client: S3Client = boto3.client("s3", config=config)
    return client


def _describe(bucket: str, key: str | None, version_id: str | None = None) -> str:
    where = f"s3://{bucket}/{key}" if key is not None else f"s3://{bucket}"
    return f"{where} (version {version_id})" if version_id else where


@contextmanager
def _s3_errors(bucket: str, key: str | None, version_id: str | None = None) -> Iterator[None]:
    """Turn botocore failures into ArtifactErrors with a clear, credential-free message."""
    where = _describe(bucket, key, version_id)
    try:
        yield
    except ClientError as exc:
        err = exc.response.get("Error", {})
        code = str(err.get("Code", "")) or "unknown"
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        if code == "NoSuchBucket":
            raise ArtifactNotFoundError(f"{where}: bucket {bucket!r} does not exist") from None
        if code in {"NoSuchKey", "404", "NotFound", "NoSuchVersion"} or status == 404:
            raise ArtifactNotFoundError(f"{where}: no such object") from None
        if code in {"AccessDenied", "403", "Forbidden", "InvalidAccessKeyId"} or status == 403:
            raise ArtifactAccessError(f"{where}: access denied ({code})") from None
        if code == "InvalidArgument" and version_id:
            raise ArtifactNotFoundError(f"{where}: invalid version id") from None
        raise ArtifactAccessError(f"{where}: S3 error {code} (HTTP {status})") from None
    except NoCredentialsError:
        raise ArtifactAccessError(
            f"{where}: no AWS credentials found (use IRSA/Pod Identity or the standard chain)"
        ) from None
    except BotoCoreError as exc:
        # Connection failures: the message names the endpoint URL, never credentials.
        raise ArtifactAccessError(f"{where}: cannot reach S3: {exc}") from None


def upload_artifact(local_dir: Path | str, uri: str, client: S3Client | None = None) -> Published:
    """Verify `local_dir`, upload its files, then manifest.json; returns the published identity."""
    d = Path(local_dir)
    manifest = verify_artifact(d)
    raw = (d / MANIFEST_FILE).read_bytes()
    identity = sha256_bytes(raw)
    bucket, prefix = parse_s3_uri(uri)
    s3 = client or s3_client()
    for rel, digest in sorted(manifest.files.items()):
        key = prefix + rel
        # One PUT per file (models are far below S3's 5 GiB single-PUT limit); plain put_object
        # keeps S3's error codes, which upload_file would wrap in S3UploadFailedError.
        with _s3_errors(bucket, key), (d / rel).open("rb") as body:
            s3.put_object(Bucket=bucket, Key=key, Body=body, Metadata={_SHA_META: digest})
    key = prefix + MANIFEST_FILE
    with _s3_errors(bucket, key):
        resp = s3.put_object(
            Bucket=bucket,
            Key=key,
            Body=raw,
            ContentType="application/json",
            Metadata={_SHA_META: identity},
        )
    return Published(f"s3://{bucket}/{prefix}", identity, resp.get("VersionId"))


def fetch_artifact(
    source: str | Path,
    cache_dir: Path | str,
    expected_sha256: str | None = None,
    version_id: str | None = None,
    client: S3Client | None = None,
) -> Path:
    """A verified local artifact directory for `source` (a local directory or s3:// prefix).

    A local source is verified in place. An s3:// source is downloaded into
    `cache_dir/<sha256>/` (reused when already there and intact); `version_id` pins the S3
    version of manifest.json.
    """
    src = str(source)
    if not src.startswith("s3://"):
        if version_id is not None:
            raise ValueError("version_id applies only to s3:// sources")
        verify_artifact(Path(src), expected_sha256)
        return Path(src)
    bucket, prefix = parse_s3_uri(src)
    s3 = client or s3_client()
    mkey = prefix + MANIFEST_FILE
    raw = _get_bytes(s3, bucket, mkey, version_id)
    identity = sha256_bytes(raw)
    if expected_sha256 is not None and identity != expected_sha256.lower():
        raise ChecksumMismatchError(
            f"{_describe(bucket, mkey, version_id)}: artifact sha256 is {identity}, expected "
            f"{expected_sha256.lower()}"
        )
    manifest = Manifest.from_json(raw)
    cache = Path(cache_dir)
    cache.mkdir(parents=True, exist_ok=True)
    target = cache / identity
    if target.is_dir():
        try:
            verify_artifact(target, identity)
            return target
        except ArtifactError:
            shutil.rmtree(target, ignore_errors=True)  # a damaged cache entry: fetch again
    tmp = Path(tempfile.mkdtemp(dir=cache, prefix=f".{identity[:16]}-"))
    try:
        for rel, digest in sorted(manifest.files.items()):
            dest = tmp / rel
            dest.parent.mkdir(parents=True, exist_ok=True)
            _download_matching(s3, bucket, prefix + rel, digest, dest)
        (tmp / MANIFEST_FILE).write_bytes(raw)
        verify_artifact(tmp, identity)
        try:
            os.rename(tmp, target)
        except OSError:
            # Another process finished the same download first; keep whichever is intact.
            verify_artifact(target, identity)
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target


def _get_bytes(s3: S3Client, bucket: str, key: str, version_id: str | None) -> bytes:
    kwargs: dict[str, Any] = {"Bucket": bucket, "Key": key}
    if version_id:
        kwargs["VersionId"] = version_id
    with _s3_errors(bucket, key, version_id):
        body: bytes = s3.get_object(**kwargs)["Body"].read()
    return body


def _download(s3: S3Client, bucket: str, key: str, version_id: str | None, dest: Path) -> str:
    """Stream one object to `dest`; returns its sha256."""
    kwargs: dict[str, Any] = {"Bucket": bucket, "Key": key}
    if version_id:
        kwargs["VersionId"] = version_id
    h = hashlib.sha256()
    with _s3_errors(bucket, key, version_id):
        body = s3.get_object(**kwargs)["Body"]
        with dest.open("wb") as f:
            for chunk in body.iter_chunks(_CHUNK):
                h.update(chunk)
                f.write(chunk)
    return h.hexdigest()


def _download_matching(s3: S3Client, bucket: str, key: str, digest: str, dest: Path) -> None:
    """Download the version of `key` whose sha256 is `digest`: the latest, else an older one."""
    try:
        actual = _download(s3, bucket, key, None, dest)
    except ArtifactNotFoundError:
        raise MissingArtifactFileError(
            f"{_describe(bucket, key)} is listed in manifest.json but missing"
        ) from None
    if actual == digest:
        return
    # The latest object was replaced (a newer upload, or a pinned older manifest): look for the
    # version the manifest names among the object's versions, by the sha256 recorded at upload.
    for vid in _versions_with_sha(s3, bucket, key, digest):
        if _download(s3, bucket, key, vid, dest) == digest:
            return
    raise ChecksumMismatchError(
        f"{_describe(bucket, key)}: sha256 is {actual}, manifest.json expects {digest}"
    )


def _versions_with_sha(s3: S3Client, bucket: str, key: str, digest: str) -> Iterator[str]:
    with _s3_errors(bucket, key):
        pages = s3.get_paginator("list_object_versions").paginate(Bucket=bucket, Prefix=key)
        for page in pages:
            for v in page.get("Versions", []):
                vid = v.get("VersionId")
                if v.get("Key") != key or not vid or vid == "null":
                    continue
                head = s3.head_object(Bucket=bucket, Key=key, VersionId=vid)
                if head.get("Metadata", {}).get(_SHA_META) == digest:
                    yield vid
