"""The few S3 operations the load generator needs, through boto3.

The endpoint comes from the standard AWS_ENDPOINT_URL (boto3 reads it) and credentials from
the standard chain (IRSA in EKS); nothing here takes a key.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from loadgen.exit_codes import ExitCode, LoadgenError

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

_CHUNK = 1 << 20


def is_s3_uri(uri: str) -> bool:
    return uri.startswith("s3://")


def split_s3_uri(uri: str) -> tuple[str, str]:
    """'s3://bucket/some/key' -> ('bucket', 'some/key')."""
    if not is_s3_uri(uri):
        raise ValueError(f"not an s3:// URI: {uri!r}")
    bucket, _, key = uri.removeprefix("s3://").partition("/")
    if not bucket:
        raise ValueError(f"no bucket in {uri!r}")
    return bucket, key


def client() -> S3Client:
    import boto3

    return boto3.client("s3")


def _describe(exc: Exception) -> str:
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        error = response.get("Error", {})
        return f"{error.get('Code', 'error')}: {error.get('Message', '')}".rstrip(": ")
    return str(exc)


def iter_object_chunks(uri: str) -> Iterator[bytes]:
    """The bytes of an S3 object, streamed in chunks."""
    from botocore.exceptions import BotoCoreError, ClientError

    bucket, key = split_s3_uri(uri)
    try:
        body = client().get_object(Bucket=bucket, Key=key)["Body"]
        yield from body.iter_chunks(_CHUNK)
    except (ClientError, BotoCoreError) as exc:
        raise LoadgenError(ExitCode.BAD_INPUT, f"cannot read {uri}: {_describe(exc)}") from None


def upload_files(files: list[Path], prefix_uri: str) -> list[str]:
    """Upload each file to `prefix_uri` + its name; returns the object URIs."""
    from boto3.exceptions import S3UploadFailedError
    from botocore.exceptions import BotoCoreError, ClientError

    bucket, prefix = split_s3_uri(prefix_uri)
    if prefix and not prefix.endswith("/"):
        prefix += "/"
    s3 = client()
    uploaded = []
    for path in files:
        key = prefix + path.name
        content_type = "application/json" if path.suffix == ".json" else "image/png"
        try:
            s3.upload_file(str(path), bucket, key, ExtraArgs={"ContentType": content_type})
        except (ClientError, BotoCoreError, S3UploadFailedError, OSError) as exc:
            raise LoadgenError(
                ExitCode.PUBLISH_FAILED,
                f"cannot upload {path.name} to s3://{bucket}/{key}: {_describe(exc)}",
            ) from None
        uploaded.append(f"s3://{bucket}/{key}")
    return uploaded
