"""What the server runs on, as a capacity profile records it: CPU model, architecture, and
the CPU limit of its container (cgroup v2 `cpu.max`, or v1 `cpu.cfs_quota_us`).

Each reader takes its paths, so tests give it files of their own.
"""

from __future__ import annotations

import os
import platform
from dataclasses import dataclass
from pathlib import Path

# Arm's CPU part numbers (/proc/cpuinfo "CPU part") of the cores AWS Graviton generations use.
ARM_PARTS = {
    "0xd0c": "Neoverse N1 (AWS Graviton2)",
    "0xd40": "Neoverse V1 (AWS Graviton3)",
    "0xd4f": "Neoverse V2 (AWS Graviton4)",
    "0xd49": "Neoverse N2",
}


@dataclass(frozen=True)
class Machine:
    arch: str  # "amd64" or "arm64", as Kubernetes names them
    cpu_model: str
    cpu_limit: float  # vCPUs the container may use: its quota, else the CPUs it may run on


def kubernetes_arch(machine: str) -> str:
    """`platform.machine()` in Kubernetes' words (kubernetes.io/arch)."""
    return {"x86_64": "amd64", "aarch64": "arm64", "arm64": "arm64"}.get(machine, machine)


def cpu_model(cpuinfo: Path = Path("/proc/cpuinfo")) -> str:
    """The CPU's model name; on Arm, where there is none, the core named by its part number."""
    try:
        text = cpuinfo.read_text()
    except OSError:
        return "unknown"
    fields: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep:
            fields.setdefault(key.strip().lower(), value.strip())
    if fields.get("model name"):
        return fields["model name"]
    part = fields.get("cpu part", "").lower()
    if part:
        return ARM_PARTS.get(part, f"Arm CPU part {part}")
    return "unknown"


def cgroup_cpu_limit(root: Path = Path("/sys/fs/cgroup")) -> float | None:
    """The container's CPU quota in vCPUs, or None where it has none."""
    try:
        quota, period = (root / "cpu.max").read_text().split()[:2]
        if quota != "max":
            return int(quota) / int(period)
        return None
    except (OSError, ValueError):
        pass
    try:
        quota_us = int((root / "cpu" / "cpu.cfs_quota_us").read_text())
        period_us = int((root / "cpu" / "cpu.cfs_period_us").read_text())
    except (OSError, ValueError):
        return None
    return quota_us / period_us if quota_us > 0 and period_us > 0 else None


def this_machine() -> Machine:
    cpus = float(len(os.sched_getaffinity(0)))
    quota = cgroup_cpu_limit()
    limit = cpus if quota is None else min(cpus, quota)
    return Machine(kubernetes_arch(platform.machine()), cpu_model(), round(limit, 3))
