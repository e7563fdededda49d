"""A local OCI registry (Debian's docker-registry, the CNCF distribution server) on loopback."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path
from types import TracebackType

from rtbserve.local_process import stop_child, wait_http_ready
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
        with (self._dir / "registry.log").open("wb") as log:  # the child keeps its own handle
            self._process = subprocess.Popen(
                [binary, "serve", str(config)], stdout=log, stderr=subprocess.STDOUT
            )
        try:
            wait_http_ready(f"http://{self.address}/v2/", self._process, self._timeout,
                            "registry")  # fmt: skip
        except RuntimeError as exc:
            log_text = (self._dir / "registry.log").read_text()
            self.__exit__(None, None, None)
            raise RuntimeError(f"{exc}: {log_text[-1000:]}") from exc
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        stop_child(self._process)
        shutil.rmtree(self._dir, ignore_errors=True)
