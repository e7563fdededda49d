"""A local OCI registry (Debian's docker-registry, the CNCF distribution server) on loopback."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from types import TracebackType

from rtbserve.local_s3 import free_port

BINARY = "docker-registry"


class LocalRegistry:
    """`with LocalRegistry() as reg:` images pushed to `reg.address` live until the block ends."""

    def __init__(self, start_timeout: float = 30.0) -> None:
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        self._dir = Path(tempfile.mkdtemp(prefix="rtbserve-registry-"))
        self._timeout = start_timeout
        self._process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> LocalRegistry:
        binary = shutil.which(BINARY)
        if binary is None:
            raise RuntimeError(f"{BINARY} not found: apt-get install docker-registry")
        config = self._dir / "config.yml"
        config.write_text(
            "version: 0.1\nlog: {level: warn}\n"
            f"storage: {{filesystem: {{rootdirectory: {self._dir / 'data'}}}}}\n"
            f"http: {{addr: '{self.address}'}}\n"
        )
        log = (self._dir / "registry.log").open("wb")
        self._process = subprocess.Popen(
            [binary, "serve", str(config)], stdout=log, stderr=subprocess.STDOUT
        )
        deadline = time.monotonic() + self._timeout
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise RuntimeError(f"registry exited: {(self._dir / 'registry.log').read_text()}")
            try:
                with urllib.request.urlopen(f"http://{self.address}/v2/", timeout=1):
                    return self
            except (urllib.error.URLError, OSError):
                time.sleep(0.1)
        self.__exit__(None, None, None)
        raise RuntimeError(f"registry at {self.address} did not answer in time")

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._process is not None and self._process.poll() is None:
            self._process.terminate()
            self._process.wait(timeout=10)
        shutil.rmtree(self._dir, ignore_errors=True)
