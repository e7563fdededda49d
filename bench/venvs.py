"""Each peer gets its own pinned virtualenv under bench/work/venvs/, built once and reused.

A venv is rebuilt when its requirement files change: a stamp file holds their hash.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from bench.config import BENCH_DIR

PEERS_DIR = BENCH_DIR / "peers"
STAMP = ".bench-installed"


@dataclass(frozen=True)
class PeerEnv:
    name: str
    requirements: Path
    constraints: Path | None = None

    def files(self) -> list[Path]:
        return [p for p in (self.requirements, self.constraints) if p is not None]


PEER_ENVS: dict[str, PeerEnv] = {
    "mlserver": PeerEnv(
        "mlserver",
        PEERS_DIR / "mlserver-requirements.txt",
        PEERS_DIR / "mlserver-constraints.txt",
    ),
    "plain-thrift": PeerEnv("plain-thrift", PEERS_DIR / "plain-thrift-requirements.txt"),
}


def requirements_hash(env: PeerEnv) -> str:
    digest = hashlib.sha256()
    for path in env.files():
        digest.update(path.name.encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


def venv_python(venv: Path) -> Path:
    return venv / "bin" / "python"


def ensure_venv(env: PeerEnv, venvs_dir: Path, log: Path) -> Path:
    """The peer's venv python, creating or rebuilding the venv when its pins changed."""
    venv = venvs_dir / env.name
    stamp = venv / STAMP
    wanted = requirements_hash(env)
    if stamp.exists() and stamp.read_text().strip() == wanted and venv_python(venv).exists():
        return venv_python(venv)
    if venv.exists():
        shutil.rmtree(venv)
    venvs_dir.mkdir(parents=True, exist_ok=True)
    log.parent.mkdir(parents=True, exist_ok=True)
    pip = [str(venv_python(venv)), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    install = [*pip, "-r", str(env.requirements)]
    if env.constraints is not None:
        install += ["-c", str(env.constraints)]
    with log.open("ab") as out:
        for argv in ([sys.executable, "-m", "venv", str(venv)], install):
            result = subprocess.run(argv, stdout=out, stderr=subprocess.STDOUT, check=False)
            if result.returncode != 0:
                raise RuntimeError(f"setting up the {env.name} venv failed ({argv[0]}); see {log}")
    stamp.write_text(wanted + "\n")
    return venv_python(venv)
