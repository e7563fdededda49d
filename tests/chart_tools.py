"""Helpers for the chart tests: find the helm binary and render charts/rtbserve.

The helm binary is the one hack/build-cluster-tools.sh builds (see tools.env), or any
helm on PATH. Tests that need it call `helm_or_skip()`.
"""

from __future__ import annotations

import copy
import functools
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO_ROOT = Path(__file__).resolve().parents[1]
CHART_DIR = REPO_ROOT / "charts" / "rtbserve"
CRD_SOURCE = REPO_ROOT / "crds" / "inferencemodel.yaml"
CHART_CRD = CHART_DIR / "crds" / "inferencemodel.yaml"
# The Kubernetes release the chart is checked against: the one EKS and the local cluster run.
KUBE_VERSION = "1.34"

Manifest = dict[str, Any]


def _tools_dir() -> Path:
    default = Path.home() / ".cache" / "rtbserve" / "tools"
    return Path(os.environ.get("RTBSERVE_TOOLS_DIR", default))


def find_helm() -> Path | None:
    """$RTBSERVE_HELM, then tools.env from the cluster-tools build, then PATH."""
    candidates: list[str] = []
    if env := os.environ.get("RTBSERVE_HELM"):
        candidates.append(env)
    tools_env = _tools_dir() / "tools.env"
    if tools_env.is_file():
        for line in tools_env.read_text().splitlines():
            key, _, value = line.removeprefix("export ").partition("=")
            if key.strip() == "RTBSERVE_HELM":
                candidates.append(value.strip())
    candidates += sorted(str(p) for p in _tools_dir().glob("helm-*/helm"))
    if on_path := shutil.which("helm"):
        candidates.append(on_path)
    for candidate in candidates:
        path = Path(candidate)
        if path.is_file() and os.access(path, os.X_OK):
            return path
    return None


def helm_or_skip() -> Path:
    helm = find_helm()
    if helm is None:
        pytest.skip(
            "helm not found: run `make cluster-tools` (builds it into "
            f"{_tools_dir()}) or put helm on PATH"
        )
    return helm


def run_helm(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        [str(helm_or_skip()), *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        # helm writes its cache/config under HOME; keep it out of the repo.
        env={
            **os.environ,
            "HELM_CACHE_HOME": "/tmp/rtbserve-helm/cache",
            "HELM_CONFIG_HOME": "/tmp/rtbserve-helm/config",
            "HELM_DATA_HOME": "/tmp/rtbserve-helm/data",
        },
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"helm {' '.join(args)} exited {proc.returncode}:\n{proc.stderr}")
    return proc


def set_args(values: dict[str, str]) -> list[str]:
    return [arg for key, value in values.items() for arg in ("--set-string", f"{key}={value}")]


def render(
    *extra_args: str,
    release: str = "rtbserve",
    namespace: str = "rtbserve",
    include_crds: bool = True,
) -> list[Manifest]:
    """`helm template` the chart and return the manifests (empty documents dropped)."""
    return copy.deepcopy(_render(extra_args, release, namespace, include_crds))


@functools.cache
def _render(
    extra_args: tuple[str, ...], release: str, namespace: str, include_crds: bool
) -> list[Manifest]:
    args = [
        "template", release, str(CHART_DIR),
        "--namespace", namespace,
        "--kube-version", f"v{KUBE_VERSION}.0",
        *extra_args,
    ]  # fmt: skip
    if include_crds:
        args.append("--include-crds")
    out = run_helm(*args).stdout
    return [doc for doc in yaml.safe_load_all(out) if doc]


# Values that switch on every optional part of the chart (examples, loadgen, monitoring).
ALL_OPTIONS_VALUES = CHART_DIR / "ci" / "all-options-values.yaml"


def by_kind(manifests: list[Manifest], kind: str) -> list[Manifest]:
    return [m for m in manifests if m["kind"] == kind]


def one(manifests: list[Manifest], kind: str, name_suffix: str = "") -> Manifest:
    found = [m for m in by_kind(manifests, kind) if m["metadata"]["name"].endswith(name_suffix)]
    assert len(found) == 1, f"expected one {kind} named *{name_suffix}, got {len(found)}"
    return found[0]


def pod_spec(workload: Manifest) -> dict[str, Any]:
    spec: dict[str, Any] = workload["spec"]["template"]["spec"]
    return spec


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text())
