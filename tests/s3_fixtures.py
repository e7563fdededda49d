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

import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.config import Config

_CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}
_START_TIMEOUT = 30.0


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@dataclass
class S3Server:
    endpoint_url: str
    process: subprocess.Popen[bytes]
    env: dict[str, str] = field(default_factory=dict)

    def client(self, **config: Any) -> Any:
        """A boto3 S3 client for this server (extra kwargs go to botocore's Config)."""
        return boto3.client(
            "s3",
            endpoint_url=self.endpoint_url,
            region_name=_CREDENTIALS["AWS_DEFAULT_REGION"],
            aws_access_key_id=_CREDENTIALS["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=_CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
            config=Config(**config) if config else None,
        )

    def make_bucket(self, name: str | None = None, versioned: bool = True) -> str:
        bucket = name or f"test-{uuid.uuid4().hex[:12]}"
        s3 = self.client()
        s3.create_bucket(Bucket=bucket)
        if versioned:
            s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
        return bucket


def _wait_ready(url: str, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + _START_TIMEOUT
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"moto server exited early with code {proc.returncode}")
        try:
            with urllib.request.urlopen(f"{url}/moto-api/", timeout=1.0):
                return
        except (urllib.error.URLError, OSError):
            time.sleep(0.1)
    raise RuntimeError(f"moto server at {url} did not answer within {_START_TIMEOUT:.0f}s")


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Server]:
    saved = {k: os.environ.get(k) for k in [*_CREDENTIALS, "AWS_ENDPOINT_URL"]}
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    os.environ.update(_CREDENTIALS)
    os.environ["AWS_ENDPOINT_URL"] = url
    proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        _wait_ready(url, proc)
        yield S3Server(url, proc, {**_CREDENTIALS, "AWS_ENDPOINT_URL": url})
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@pytest.fixture
def s3_bucket(s3_server: S3Server) -> str:
    return s3_server.make_bucket()


@pytest.fixture(scope="session")
def small_artifact(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from model_server.artifact import write_artifact
    from model_server.training import TrainConfig, synthetic_examples, train

    result = train(
        synthetic_examples(1500, seed=7, n_bidders=4), TrainConfig(trees=8, max_depth=4, seed=7)
    )
    out = tmp_path_factory.mktemp("artifact") / "small-model"
    write_artifact(
        out,
        result.booster,
        result.pipeline,
        result.thresholds,
        result.metrics,
        name="small",
        version="test-1",
        params=result.params,
    )
    return out
