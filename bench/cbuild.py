"""Build the benchmark's small C programs with the system compiler, once per source change."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path


def build_c_program(source: Path, binary: Path, purpose: str) -> Path:
    """Compile `source` to `binary` (reused while newer than the source); `purpose` names what
    needs it in the error raised when no C compiler is on PATH."""
    if binary.exists() and binary.stat().st_mtime >= source.stat().st_mtime:
        return binary
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        raise RuntimeError(f"{purpose} needs a C compiler (cc or gcc) on PATH")
    binary.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [cc, "-O2", "-Wall", "-Wextra", "-o", str(binary), str(source)],
        check=True,
        capture_output=True,
    )
    return binary
