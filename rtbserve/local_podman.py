"""podman as this kind of host needs it, for the local tooling (real-pod nodes, cold start).

crun fails on this host's cgroups and raising rlimits is not permitted: every container runs
with runc and fixed rlimits, set once in a containers.conf rather than on each command.
"""

from __future__ import annotations

import json
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

# What a restricted pod gets, for `podman run`: the image's user, nothing writable but /tmp,
# no capabilities.
AS_A_POD = [
    "--read-only", "--tmpfs", "/tmp:rw,size=256m,mode=1777", "--user", "10001:10001",
    "--cap-drop", "ALL", "--security-opt", "no-new-privileges",
]  # fmt: skip


@dataclass(frozen=True)
class Podman:
    """podman with this host's settings: runc, fixed rlimits (containers.conf), one network."""

    network: str
    conf: Path
    insecure_registries: frozenset[str] = frozenset()
    #: an image and container store of its own (a node's), not the host's default one
    store: Path | None = None

    def run(self, *args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, "CONTAINERS_CONF": str(self.conf)}
        where = (
            ["--root", str(self.store / "root"), "--runroot", str(self.store / "run")]
            if self.store is not None
            else []
        )
        return subprocess.run(
            ["podman", *where, *args], check=False, capture_output=True, text=True,
            timeout=timeout, env=env,
        )  # fmt: skip

    def tls_flags(self, image: str) -> list[str]:
        registry = image.split("/", 1)[0]
        return ["--tls-verify=false"] if registry in self.insecure_registries else []

    @property
    def holder(self) -> str:
        return f"{self.network}-gateway"

    def gateway(self) -> str:
        """The network's gateway: the host as containers reach it (the network is created if
        missing)."""
        if self.run("network", "exists", self.network).returncode != 0:
            made = self.run("network", "create", self.network)
            if made.returncode != 0:
                raise RuntimeError(f"podman network create {self.network}: {made.stderr}")
        info = json.loads(self.run("network", "inspect", self.network).stdout)[0]
        gateway: str = info["subnets"][0]["gateway"]
        return gateway

    def hold_bridge(self) -> str:
        """An empty pod keeps the network's bridge, and so the gateway address, up: host
        services can listen there before any pod runs. `release` removes it."""
        gateway = self.gateway()
        if self.run("pod", "exists", self.holder).returncode != 0:
            self.run("pod", "create", "--name", self.holder, "--network", self.network)
        started = self.run("pod", "start", self.holder)
        if started.returncode != 0:
            raise RuntimeError(f"podman pod start {self.holder}: {started.stderr}")
        return gateway

    def release(self) -> None:
        self.run("pod", "rm", "-f", "-t", "0", self.holder)


def write_containers_conf(directory: Path) -> Path:
    # crun fails on this kind of host's cgroups, and raising rlimits is not permitted.
    path = directory / "containers.conf"
    path.write_text(
        '[containers]\ndefault_ulimits = ["nofile=1024:1024", "nproc=1024:1024"]\n'
        '[engine]\nruntime = "runc"\n'
    )
    return path
