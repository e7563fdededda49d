"""Pytest plugin: a real local Kubernetes control plane (kwok) for e2e tests.

Load it with ``pytest_plugins = ["tests.cluster.fixtures"]`` (or ``-p
tests.cluster.fixtures``). See tests/cluster/README.md for the rules.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
CLUSTER_SH = REPO_ROOT / "hack" / "cluster.sh"
BUILD_SH = REPO_ROOT / "hack" / "build-cluster-tools.sh"

# A name of its own so a test session never takes over (or deletes) the
# cluster a developer started with `make cluster-up`.
DEFAULT_TEST_CLUSTER = "rtbserve-pytest"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "e2e: end-to-end test against a real Kubernetes API (local kwok cluster, "
        "see tests/cluster/README.md)",
    )


def use_existing_cluster() -> bool:
    """The one rule for reusing a cluster: opt in explicitly and name its kubeconfig."""
    return os.environ.get("RTBSERVE_USE_EXISTING_CLUSTER") == "1" and bool(
        os.environ.get("KUBECONFIG")
    )


@dataclass(frozen=True)
class KubeCluster:
    """A running cluster and the CLI tools to talk to it."""

    kubeconfig: Path
    kubectl_bin: Path
    helm_bin: Path
    #: every tool path from tools.env (kube-apiserver, etcd, kwokctl, ...), by name
    tools: dict[str, Path] = field(default_factory=dict)
    name: str = ""
    #: True when this session created the cluster and will delete it
    managed: bool = True

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env["KUBECONFIG"] = str(self.kubeconfig)
        return env

    def _run(
        self,
        argv: list[str],
        check: bool,
        input: str | None,
        timeout: float,
    ) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(
            argv,
            env=self.env(),
            input=input,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if check and proc.returncode != 0:
            raise AssertionError(
                f"{' '.join(argv)} exited {proc.returncode}\n"
                f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
            )
        return proc

    def kubectl(
        self,
        *args: str,
        check: bool = True,
        input: str | None = None,
        timeout: float = 120,
    ) -> subprocess.CompletedProcess[str]:
        """Run the built kubectl against this cluster; raise on failure unless check=False."""
        return self._run([str(self.kubectl_bin), *args], check, input, timeout)

    def kubectl_json(self, *args: str, timeout: float = 120) -> Any:
        """``kubectl get ... -o json`` parsed."""
        return json.loads(self.kubectl(*args, "-o", "json", timeout=timeout).stdout)

    def apply(self, manifest: str, namespace: str | None = None) -> None:
        ns = ["-n", namespace] if namespace else []
        self.kubectl(*ns, "apply", "-f", "-", input=manifest)

    def helm(
        self,
        *args: str,
        check: bool = True,
        timeout: float = 300,
    ) -> subprocess.CompletedProcess[str]:
        """Run the built helm with this cluster's kubeconfig."""
        return self._run(
            [str(self.helm_bin), "--kubeconfig", str(self.kubeconfig), *args],
            check,
            None,
            timeout,
        )


def read_tools_env(path: Path) -> dict[str, str]:
    """Parse the ``export KEY=VALUE`` lines that build-cluster-tools.sh writes."""
    values: dict[str, str] = {}
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if line.startswith("export ") and "=" in line:
            key, _, value = line.removeprefix("export ").partition("=")
            values[key] = value
    return values


def _tools_from_env(values: dict[str, str]) -> dict[str, Path]:
    return {
        key.removeprefix("RTBSERVE_").lower().replace("_", "-"): Path(value)
        for key, value in values.items()
        if key.startswith("RTBSERVE_") and value.startswith("/") and ":" not in value
    }


def _build_tools() -> dict[str, Path]:
    # Cheap when the cache is warm. On a cold machine run `make cluster-tools`
    # first: a cold build takes far longer than a test's timeout.
    proc = subprocess.run(
        [str(BUILD_SH)], capture_output=True, text=True, check=False, timeout=3 * 3600
    )
    if proc.returncode != 0:
        raise RuntimeError(f"hack/build-cluster-tools.sh failed:\n{proc.stderr[-5000:]}")
    return _tools_from_env(read_tools_env(Path(proc.stdout.strip().splitlines()[-1])))


def _existing_tools() -> dict[str, Path]:
    """Tools for a cluster we did not start: the cache if built, else PATH."""
    cache = Path(
        os.environ.get("RTBSERVE_TOOLS_DIR", Path.home() / ".cache" / "rtbserve" / "tools")
    )
    tools = (
        _tools_from_env(read_tools_env(cache / "tools.env"))
        if (cache / "tools.env").is_file()
        else {}
    )
    for name in ("kubectl", "helm"):
        if name not in tools or not tools[name].exists():
            found = shutil.which(name)
            if found is None:
                raise RuntimeError(f"{name} not found: run `make cluster-tools` or put it on PATH")
            tools[name] = Path(found)
    return tools


def _cluster_sh(command: str, cluster_name: str) -> str:
    env = dict(os.environ, RTBSERVE_CLUSTER_NAME=cluster_name)
    proc = subprocess.run(
        [str(CLUSTER_SH), command],
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=900,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"hack/cluster.sh {command} failed:\n{proc.stderr[-5000:]}")
    return proc.stdout.strip()


@pytest.fixture(scope="session")
def kube_cluster() -> Iterator[KubeCluster]:
    """A Kubernetes cluster for the whole session.

    Default: a fresh local kwok cluster named ``rtbserve-pytest`` (override
    with RTBSERVE_TEST_CLUSTER_NAME), deleted at session end.
    With RTBSERVE_USE_EXISTING_CLUSTER=1 and KUBECONFIG set: that cluster,
    left running.
    """
    if use_existing_cluster():
        tools = _existing_tools()
        yield KubeCluster(
            kubeconfig=Path(os.environ["KUBECONFIG"]),
            kubectl_bin=tools["kubectl"],
            helm_bin=tools["helm"],
            tools=tools,
            name="existing",
            managed=False,
        )
        return

    name = os.environ.get("RTBSERVE_TEST_CLUSTER_NAME", DEFAULT_TEST_CLUSTER)
    tools = _build_tools()
    # A cluster left by an interrupted session would carry old objects.
    _cluster_sh("down", name)
    try:
        kubeconfig = Path(_cluster_sh("up", name).splitlines()[-1])
        yield KubeCluster(
            kubeconfig=kubeconfig,
            kubectl_bin=tools["kubectl"],
            helm_bin=tools["helm"],
            tools=tools,
            name=name,
            managed=True,
        )
    finally:
        _cluster_sh("down", name)


@pytest.fixture
def kube_namespace(kube_cluster: KubeCluster) -> Iterator[str]:
    """A fresh namespace for one test, deleted (without waiting) afterwards."""
    name = f"t-{uuid.uuid4().hex[:10]}"
    kube_cluster.kubectl("create", "namespace", name)
    # Pods are refused until the namespace's default ServiceAccount exists.
    kube_cluster.kubectl(
        "-n",
        name,
        "wait",
        "--for=create",
        "serviceaccount/default",
        "--timeout=60s",
    )
    try:
        yield name
    finally:
        kube_cluster.kubectl("delete", "namespace", name, "--wait=false", check=False)
