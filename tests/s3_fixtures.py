"""Pytest plugin: a real S3 (moto's standalone server) on 127.0.0.1 for the test session.

    def test_x(s3_server, s3_bucket):
        s3 = s3_server.client()                 # boto3 S3 client pointed at the server
        s3.put_object(Bucket=s3_bucket, Key="k", Body=b"v")
        subprocess.run([...], env={**os.environ, **s3_server.env})   # for child processes

`s3_server` (session): starts `python -m moto.server` on a free loopback port, sets dummy AWS
credentials and AWS_ENDPOINT_URL (this server) in os.environ for the session, so code using the
standard AWS chain talks to it and never to AWS, and stops the server at the end.
It offers `endpoint_url`, `env` (credentials, region and AWS_ENDPOINT_URL for subprocesses),
`client(**config)` and `make_bucket(name=None, versioned=True) -> name`.
`s3_bucket` (function): a fresh, empty, versioned bucket's name.
`small_artifact` (session): a small trained model artifact directory (synthetic traffic, seed 7,
4 bidders) to upload, fetch or serve; treat it as read-only (copy it before changing files).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from rtbserve.local_s3 import LocalS3
from tests.artifacts import train_artifact

# The fixture's type, for annotations in tests.
S3Server = LocalS3


@contextlib.contextmanager
def exported(server: LocalS3) -> Iterator[LocalS3]:
    """The server's endpoint and dummy credentials in os.environ while the block runs."""
    saved = {k: os.environ.get(k) for k in server.env}
    os.environ.update(server.env)
    try:
        yield server
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@pytest.fixture(scope="session")
def s3_server() -> Iterator[LocalS3]:
    with LocalS3() as server, exported(server):
        yield server


@pytest.fixture
def s3_bucket(s3_server: LocalS3) -> str:
    return s3_server.make_bucket()


@pytest.fixture(scope="session")
def small_artifact(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("artifact") / "small-model"
    return train_artifact(out, seed=7, version="test-1").path
