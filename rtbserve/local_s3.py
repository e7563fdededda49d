"""A real S3-compatible server on loopback (moto's standalone server), for the demo and tests.

It runs as a child process on 127.0.0.1 with dummy credentials, so nothing that talks to it can
reach AWS by mistake. Use it as a context manager; the process is gone when the block ends.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import uuid
from types import TracebackType
from typing import Any

import boto3

from rtbserve.local_process import stop_child, wait_http_ready

# moto accepts any credentials; these make the standard AWS chain resolve without a profile.
DUMMY_CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}


class LocalS3Error(RuntimeError):
    """The local S3 server could not start."""


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        port: int = s.getsockname()[1]
        return port


class LocalS3:
    """moto's S3 server on a free loopback port.

    `env` holds AWS_ENDPOINT_URL and the dummy credentials, for child processes that use the
    standard AWS chain. `host` is the address it listens on: loopback unless containers must
    reach it too (their network's gateway, say).
    """

    def __init__(self, start_timeout: float = 30.0, host: str = "127.0.0.1") -> None:
        self.host = host
        self.port = free_port(host)
        self.endpoint_url = f"http://{host}:{self.port}"
        self.env: dict[str, str] = {**DUMMY_CREDENTIALS, "AWS_ENDPOINT_URL": self.endpoint_url}
        self._start_timeout = start_timeout
        self._process: subprocess.Popen[bytes] | None = None

    def start(self) -> LocalS3:
        self._process = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", self.host, "-p", str(self.port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_ready(self) -> None:
        assert self._process is not None
        wait_http_ready(f"{self.endpoint_url}/moto-api/", self._process, self._start_timeout,
                        "moto server", LocalS3Error)  # fmt: skip

    def stop(self) -> None:
        proc, self._process = self._process, None
        stop_child(proc)

    @property
    def process(self) -> subprocess.Popen[bytes] | None:
        return self._process

    def client(self, **config: Any) -> Any:
        """A boto3 S3 client for this server (keyword arguments go to botocore's Config)."""
        from botocore.config import Config

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint_url,
            region_name=DUMMY_CREDENTIALS["AWS_DEFAULT_REGION"],
            aws_access_key_id=DUMMY_CREDENTIALS["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=DUMMY_CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
            config=Config(**config) if config else None,
        )

    def make_bucket(self, name: str | None = None, versioned: bool = True) -> str:
        bucket = name or f"rtbserve-{uuid.uuid4().hex[:12]}"
        s3 = self.client()
        s3.create_bucket(Bucket=bucket)
        if versioned:
            s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
        return bucket

    def __enter__(self) -> LocalS3:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
