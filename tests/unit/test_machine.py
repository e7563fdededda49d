"""What a capacity profile records of the machine: CPU model, architecture, CPU limit."""

from __future__ import annotations

from pathlib import Path

import pytest

from model_server import machine

X86 = "processor\t: 0\nvendor_id\t: AuthenticAMD\nmodel name\t: AMD EPYC 7R13 Processor\n"
GRAVITON3 = "processor\t: 0\nBogoMIPS\t: 2100.00\nCPU implementer\t: 0x41\nCPU part\t: 0xd40\n"


@pytest.mark.parametrize(
    ("text", "model"),
    [
        (X86, "AMD EPYC 7R13 Processor"),
        (GRAVITON3, "Neoverse V1 (AWS Graviton3)"),
        ("CPU part\t: 0xabc\n", "Arm CPU part 0xabc"),
        ("", "unknown"),
    ],
)
def test_cpu_model(text: str, model: str, tmp_path: Path) -> None:
    path = tmp_path / "cpuinfo"
    path.write_text(text)
    assert machine.cpu_model(path) == model


def test_cpu_model_of_a_missing_file(tmp_path: Path) -> None:
    assert machine.cpu_model(tmp_path / "none") == "unknown"


@pytest.mark.parametrize(
    ("files", "limit"),
    [
        ({"cpu.max": "200000 100000\n"}, 2.0),
        ({"cpu.max": "150000 100000\n"}, 1.5),
        ({"cpu.max": "max 100000\n"}, None),
        ({"cpu/cpu.cfs_quota_us": "50000\n", "cpu/cpu.cfs_period_us": "100000\n"}, 0.5),
        ({"cpu/cpu.cfs_quota_us": "-1\n", "cpu/cpu.cfs_period_us": "100000\n"}, None),
        ({}, None),
    ],
)
def test_cgroup_cpu_limit(files: dict[str, str], limit: float | None, tmp_path: Path) -> None:
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    assert machine.cgroup_cpu_limit(tmp_path) == limit


def test_kubernetes_arch_names() -> None:
    assert machine.kubernetes_arch("x86_64") == "amd64"
    assert machine.kubernetes_arch("aarch64") == "arm64"


def test_this_machine_is_described() -> None:
    here = machine.this_machine()
    assert here.arch in ("amd64", "arm64")
    assert here.cpu_limit > 0
    assert here.cpu_model
