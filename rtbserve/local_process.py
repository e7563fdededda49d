"""Child servers of the local tooling (S3, registry): wait until they answer, stop them."""

from __future__ import annotations

import subprocess
import time
import urllib.error
import urllib.request


def wait_http_ready(
    url: str,
    process: subprocess.Popen[bytes],
    timeout: float,
    what: str,
    error: type[Exception] = RuntimeError,
) -> None:
    """Return once `url` answers; `error` if `process` exits first or time runs out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise error(f"{what} exited early with code {process.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=1.0):
                return
        except (urllib.error.URLError, OSError):
            time.sleep(0.1)
    raise error(f"{what} at {url} did not answer in time")


def stop_child(process: subprocess.Popen[bytes] | None) -> None:
    """SIGTERM, then SIGKILL after 10 s; nothing if it is gone already."""
    if process is None or process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
