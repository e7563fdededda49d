"""Pytest plugin for the operator's tests: published models on the local S3 server, and the
operator itself running as a real `rtbserve operator` subprocess against the test cluster.

    pytest_plugins = ["tests.s3_fixtures", "tests.cluster.fixtures", "tests.operator_fixtures"]

`published_models` (session): two trained artifacts (`first`, `second`) on a versioned bucket of
the `s3_server` fixture, plus broken ones: `corrupt_uri` (model file bytes differ from the
manifest), `unloadable_uri` (checksums agree but the model does not load), `missing_uri`.
`operator_namespace` (session): a namespace on `kube_cluster` with the CRD applied.
`running_operator` (session): `rtbserve operator --namespace <that namespace>` with the S3
server's endpoint and dummy credentials, authenticated as the ServiceAccount of
operator/rbac.yaml (so the tests also prove that RBAC suffices; its ClusterRoles get a
per-session name suffix); stopped, and the RBAC removed, at the end.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.artifacts import train_artifact

REPO_ROOT = Path(__file__).resolve().parents[1]
CRD_PATH = REPO_ROOT / "crds" / "inferencemodel.yaml"
RBAC_PATH = REPO_ROOT / "operator" / "rbac.yaml"
OPERATOR_SA = "rtbserve-operator"
START_TIMEOUT = 60.0


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def wait_until(check: Callable[[], Any], timeout: float, what: str, interval: float = 0.5) -> Any:
    """Poll `check` until it returns something truthy; fail with `what` on timeout."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what} (last: {last!r})")


# --- models on S3 -------------------------------------------------------------------------


@dataclass(frozen=True)
class PublishedModel:
    uri: str
    sha256: str
    version_id: str | None
    name: str
    version: str


@dataclass(frozen=True)
class PublishedModels:
    bucket: str
    first: PublishedModel
    second: PublishedModel
    corrupt_uri: str
    unloadable_uri: str
    missing_uri: str


def _train_artifact(out: Path, seed: int, version: str) -> Path:
    return train_artifact(out, seed=seed, version=version).path


@pytest.fixture(scope="session")
def second_artifact(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Another small model (different seed and version), so its identity differs."""
    return _train_artifact(tmp_path_factory.mktemp("artifact") / "second", 11, "test-2")


def _publish(s3_client: Any, local: Path, uri: str) -> PublishedModel:
    from model_server.artifact import read_manifest
    from model_server.s3 import upload_artifact

    published = upload_artifact(local, uri, client=s3_client)
    manifest, _ = read_manifest(local)
    return PublishedModel(
        published.uri, published.sha256, published.version_id, manifest.name, manifest.version
    )


def _put_dir(s3_client: Any, bucket: str, prefix: str, local: Path) -> None:
    """Upload files as they are, without the publishing tool's checks or sha metadata."""
    for path in sorted(local.iterdir()):
        s3_client.put_object(Bucket=bucket, Key=prefix + path.name, Body=path.read_bytes())


@pytest.fixture(scope="session")
def published_models(
    s3_server: Any,
    small_artifact: Path,
    second_artifact: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> PublishedModels:
    from model_server.artifact import MANIFEST_FILE, Manifest, sha256_file

    s3 = s3_server.client()
    bucket = s3_server.make_bucket(f"operator-models-{uuid.uuid4().hex[:8]}")
    first = _publish(s3, small_artifact, f"s3://{bucket}/small/1/")
    second = _publish(s3, second_artifact, f"s3://{bucket}/small/2/")

    # Corrupt: the manifest of a good model, but damaged model bytes (no good version exists).
    work = tmp_path_factory.mktemp("broken")
    corrupt = work / "corrupt"
    shutil.copytree(small_artifact, corrupt)
    model = corrupt / "model.ubj"
    model.write_bytes(model.read_bytes()[:-64] + b"\0" * 64)
    _put_dir(s3, bucket, "corrupt/", corrupt)

    # Unloadable: consistent checksums, but the model file is not a model.
    unloadable = work / "unloadable"
    shutil.copytree(small_artifact, unloadable)
    (unloadable / "model.ubj").write_bytes(b"this is not an XGBoost model")
    manifest = Manifest.from_json((unloadable / MANIFEST_FILE).read_bytes())
    files = {**manifest.files, "model.ubj": sha256_file(unloadable / "model.ubj")}
    fixed = dataclasses.replace(manifest, files=files)
    (unloadable / MANIFEST_FILE).write_bytes(fixed.to_json())
    _put_dir(s3, bucket, "unloadable/", unloadable)

    return PublishedModels(
        bucket=bucket,
        first=first,
        second=second,
        corrupt_uri=f"s3://{bucket}/corrupt/",
        unloadable_uri=f"s3://{bucket}/unloadable/",
        missing_uri=f"s3://{bucket}/does-not-exist/",
    )


# --- the operator on the test cluster ------------------------------------------------------


@pytest.fixture(scope="session")
def operator_namespace(kube_cluster: Any) -> Iterator[str]:
    """A namespace for the operator's e2e tests, with the CRD installed (left installed: it is
    cluster-wide and other suites may use it)."""
    kube_cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(CRD_PATH))
    kube_cluster.kubectl(
        "wait", "--for=condition=Established", "crd/inferencemodels.rtbserve.io", "--timeout=60s"
    )
    name = f"op-e2e-{uuid.uuid4().hex[:8]}"
    kube_cluster.kubectl("create", "namespace", name)
    kube_cluster.kubectl(
        "-n", name, "wait", "--for=create", "serviceaccount/default", "--timeout=60s"
    )
    try:
        yield name
    finally:
        kube_cluster.kubectl("delete", "namespace", name, "--wait=false", check=False)


@dataclass(frozen=True)
class OperatorIdentity:
    """The operator's ServiceAccount and RBAC from operator/rbac.yaml, installed under names of
    this session's own (so a chart installed in the same cluster keeps its names)."""

    kubeconfig: Path
    sa_namespace: str
    cluster_scoped: tuple[str, ...]  # "kind/name" of the ClusterRoles and bindings created


def install_operator_rbac(kube_cluster: Any, watched: str, directory: Path) -> OperatorIdentity:
    """Apply operator/rbac.yaml as its header describes for `--namespace watched`: the
    namespaced ClusterRole through a RoleBinding in `watched`, the discovery ClusterRole
    cluster-wide; return a kubeconfig with a token of that ServiceAccount."""
    suffix = uuid.uuid4().hex[:6]
    sa_namespace = f"op-sa-{suffix}"
    kube_cluster.kubectl("create", "namespace", sa_namespace)
    docs = [d for d in yaml.safe_load_all(RBAC_PATH.read_text()) if d]
    renamed = {
        d["metadata"]["name"]: f"{d['metadata']['name']}-{suffix}"
        for d in docs
        if d["kind"] == "ClusterRole"
    }
    keep: list[dict[str, Any]] = []
    for doc in docs:
        kind = doc["kind"]
        if kind == "ServiceAccount":
            doc["metadata"]["namespace"] = sa_namespace
        elif kind == "ClusterRole":
            doc["metadata"]["name"] = renamed[doc["metadata"]["name"]]
        elif kind == "ClusterRoleBinding":
            if doc["roleRef"]["name"] == OPERATOR_SA:
                continue  # namespaced mode: replaced by the RoleBinding below
            doc["metadata"]["name"] = f"{doc['metadata']['name']}-{suffix}"
            doc["roleRef"]["name"] = renamed[doc["roleRef"]["name"]]
            for subject in doc["subjects"]:
                subject["namespace"] = sa_namespace
        keep.append(doc)
    keep.append(
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": {"name": OPERATOR_SA, "namespace": watched},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "ClusterRole",
                "name": renamed[OPERATOR_SA],
            },
            "subjects": [
                {"kind": "ServiceAccount", "name": OPERATOR_SA, "namespace": sa_namespace}
            ],
        }
    )
    kube_cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump_all(keep))
    token = kube_cluster.kubectl(
        "-n", sa_namespace, "create", "token", OPERATOR_SA, "--duration=2h"
    ).stdout.strip()
    admin = yaml.safe_load(Path(kube_cluster.kubeconfig).read_text())
    context = next(c for c in admin["contexts"] if c["name"] == admin["current-context"])
    cluster = next(c for c in admin["clusters"] if c["name"] == context["context"]["cluster"])
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [cluster],
        "users": [{"name": OPERATOR_SA, "user": {"token": token}}],
        "contexts": [
            {"name": OPERATOR_SA, "context": {"cluster": cluster["name"], "user": OPERATOR_SA}}
        ],
        "current-context": OPERATOR_SA,
    }
    path = directory / "operator.kubeconfig"
    path.write_text(yaml.safe_dump(config))
    path.chmod(0o600)
    cluster_scoped = tuple(
        f"{d['kind'].lower()}/{d['metadata']['name']}"
        for d in keep
        if d["kind"] in ("ClusterRole", "ClusterRoleBinding")
    )
    return OperatorIdentity(path, sa_namespace, cluster_scoped)


def remove_operator_rbac(kube_cluster: Any, identity: OperatorIdentity) -> None:
    kube_cluster.kubectl("delete", *identity.cluster_scoped, "--ignore-not-found", check=False)
    kube_cluster.kubectl("delete", "namespace", identity.sa_namespace, "--wait=false", check=False)


@dataclass
class OperatorProcess:
    process: subprocess.Popen[bytes]
    namespace: str
    metrics_url: str
    liveness_url: str
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def metrics(self) -> str:
        with urllib.request.urlopen(self.metrics_url, timeout=5) as resp:
            text: str = resp.read().decode()
            return text

    def alive(self) -> bool:
        return self.process.poll() is None


def _healthy(url: str, proc: subprocess.Popen[bytes], log: Path) -> bool:
    if proc.poll() is not None:
        tail = log.read_text(errors="replace")[-4000:]
        raise AssertionError(f"the operator exited with code {proc.returncode}:\n{tail}")
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            return bool(resp.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def start_operator(
    kubeconfig: Path, namespace: str, s3_env: dict[str, str], workdir: Path
) -> OperatorProcess:
    metrics_port, liveness_port = free_port(), free_port()
    log_path = workdir / f"operator-{uuid.uuid4().hex[:6]}.log"
    env = {
        **os.environ,
        **s3_env,
        "KUBECONFIG": str(kubeconfig),
        "PYTHONUNBUFFERED": "1",
    }
    argv = [
        sys.executable,
        "-m",
        "rtbserve",
        "operator",
        "--namespace",
        namespace,
        "--metrics-host",
        "127.0.0.1",
        "--metrics-port",
        str(metrics_port),
        "--liveness-host",
        "127.0.0.1",
        "--liveness-port",
        str(liveness_port),
        "--cache-dir",
        str(workdir / "cache"),
        "--default-image",
        "rtbserve:e2e",
        "--verbose",
    ]
    with log_path.open("wb") as log:
        proc = subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT)
    op = OperatorProcess(
        proc,
        namespace,
        f"http://127.0.0.1:{metrics_port}/metrics",
        f"http://127.0.0.1:{liveness_port}/healthz",
        log_path,
    )
    try:
        wait_until(
            lambda: _healthy(op.liveness_url, proc, log_path), START_TIMEOUT, "operator liveness"
        )
    except BaseException:
        stop_operator(op)
        raise
    return op


def stop_operator(op: OperatorProcess) -> None:
    if op.process.poll() is None:
        op.process.send_signal(signal.SIGTERM)
        try:
            op.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            op.process.kill()
            op.process.wait()


@dataclass
class OperatorHarness:
    """Start/stop the operator (tests restart it) with the same identity and settings."""

    kubeconfig: Path
    namespace: str
    s3_env: dict[str, str]
    workdir: Path
    current: OperatorProcess | None = None

    def start(self) -> OperatorProcess:
        self.current = start_operator(self.kubeconfig, self.namespace, self.s3_env, self.workdir)
        return self.current

    def stop(self) -> None:
        if self.current is not None:
            stop_operator(self.current)

    def log(self) -> str:
        return self.current.log() if self.current else ""


@pytest.fixture(scope="session")
def running_operator(
    kube_cluster: Any, operator_namespace: str, s3_server: Any
) -> Iterator[OperatorHarness]:
    workdir = Path(tempfile.mkdtemp(prefix="rtbserve-operator-e2e-"))
    identity = install_operator_rbac(kube_cluster, operator_namespace, workdir)
    harness = OperatorHarness(identity.kubeconfig, operator_namespace, dict(s3_server.env), workdir)
    try:
        harness.start()
        yield harness
    finally:
        harness.stop()
        remove_operator_rbac(kube_cluster, identity)
        if os.environ.get("RTBSERVE_KEEP_OPERATOR_LOGS"):
            print(f"operator logs kept in {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)


def get_json(kube_cluster: Any, *args: str) -> Any:
    return json.loads(kube_cluster.kubectl(*args, "-o", "json").stdout)
