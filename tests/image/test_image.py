"""The built image, run as a user runs it, for each architecture (`make image-test`).

Each container runs with a read-only root, a tmpfs at /tmp, uid 10001, every capability
dropped, and only its two ports published on loopback. The host sends real Thrift calls and
checks the scores against its own pure-Python reference (the feature pipeline's Python path and
XGBoost's predict), and the two architectures against each other; a second container runs the
load generator through the server's network namespace. arm64 runs under qemu-user-static.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest

from model_server.artifact import load_artifact
from model_server.predictor import XGBoostPredictor
from model_server.service import ScoringService
from model_server.synthetic import TrafficGenerator
from rtbserve.local_podman import AS_A_POD as RESTRICTED_POD
from tests.artifacts import train_artifact
from tests.fuzz.oracles import pure_copy

pytestmark = [pytest.mark.image, pytest.mark.timeout(1800)]

REPO = Path(__file__).resolve().parents[2]
IMAGE = os.environ.get("IMAGE", "localhost/rtbserve:dev")
ARCHES = os.environ.get("ARCHES", "amd64 arm64").split()
# Podman on this kind of host: runc (crun fails on hybrid cgroups), no raising of rlimits.
PODMAN = ["podman", "--runtime", "runc"]
LIMITS = ["--ulimit", "nofile=1024:1024", "--ulimit", "nproc=1024:1024"]
# What a restricted pod gets (rtbserve.local_podman), with the rlimits passed on the command.
AS_A_POD = [*RESTRICTED_POD, *LIMITS]
READY_TIMEOUT = 600.0  # arm64 under qemu imports numpy, xgboost and the model slowly
BIDDERS = 8
TOLERANCE = 1e-6


def _podman(
    *args: str, timeout: float = 600, check: bool = True
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*PODMAN, *args], capture_output=True, text=True, timeout=timeout, check=check
    )


def _tag(arch: str) -> str:
    return f"{IMAGE}-{arch}"


@pytest.fixture(scope="module", autouse=True)
def _images_built() -> None:
    if shutil.which("podman") is None:
        pytest.fail("podman is not installed: run `make image` first")
    for arch in ARCHES:
        found = _podman(
            "image", "inspect", "--format", "{{.Architecture}}", _tag(arch), check=False
        )
        assert found.returncode == 0, (
            f"{_tag(arch)} is not built: run `make image` ({found.stderr})"
        )
        assert found.stdout.strip() == arch


@pytest.fixture(scope="module")
def model_dir() -> Iterator[Path]:
    """A 20-tree model the containers read through a read-only volume (uid 10001 reads it)."""
    root = Path(tempfile.mkdtemp(prefix="rtbserve-image-"))
    out = root / "model"
    train_artifact(out, seed=11, version="image", requests=2000, bidders=BIDDERS, trees=20,
                   max_depth=5)  # fmt: skip
    for path in [root, *root.rglob("*")]:
        path.chmod(0o755 if path.is_dir() else 0o644)
    yield out
    shutil.rmtree(root, ignore_errors=True)


@dataclass
class Served:
    arch: str
    name: str
    thrift_port: int
    http_port: int
    seconds_to_ready: float

    def client(self) -> Any:
        from thriftpy2.protocol import TCyBinaryProtocolFactory
        from thriftpy2.rpc import make_client
        from thriftpy2.transport import TCyFramedTransportFactory

        from model_server.thrift_contract import ModelServer

        return make_client(
            ModelServer, "127.0.0.1", self.thrift_port,
            proto_factory=TCyBinaryProtocolFactory(),  # type: ignore[no-untyped-call]
            trans_factory=TCyFramedTransportFactory(), timeout=120_000,
        )  # fmt: skip

    def http_get(self, path: str) -> tuple[int, str]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.http_port}{path}", timeout=5) as r:
                return r.status, r.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode()


def _published(name: str, port: int) -> int:
    out = _podman("port", name, f"{port}/tcp").stdout.strip().splitlines()[0]
    return int(out.rsplit(":", 1)[1])


def _wait_ready(served: Served, started: float) -> float:
    deadline = started + READY_TIMEOUT
    while time.monotonic() < deadline:
        state = _podman("inspect", "--format", "{{.State.Status}}", served.name, check=False)
        if state.stdout.strip() not in ("running", "created", "configured"):
            logs = _podman("logs", served.name, check=False)
            raise AssertionError(f"{served.name} stopped: {logs.stdout}{logs.stderr}")
        try:
            if served.http_get("/readyz")[0] == 200:
                return time.monotonic() - started
        except OSError:
            pass
        time.sleep(0.1)
    raise AssertionError(f"{served.name}: /readyz not 200 within {READY_TIMEOUT:.0f} s")


@pytest.fixture(scope="module")
def servers(model_dir: Path) -> Iterator[dict[str, Served]]:
    """One `rtbserve serve` container per architecture, all running at once."""
    running: dict[str, Served] = {}
    try:
        for arch in ARCHES:
            name = f"rtbserve-image-test-{arch}-{os.getpid()}"
            started = time.monotonic()
            _podman(
                "run", "--detach", "--name", name, *AS_A_POD,
                "--volume", f"{model_dir}:/model:ro",
                "--publish", "127.0.0.1::9090", "--publish", "127.0.0.1::8080",
                _tag(arch), "serve", "--model", "/model", "--workers", "2",
            )  # fmt: skip
            served = Served(arch, name, _published(name, 9090), _published(name, 8080), 0.0)
            served.seconds_to_ready = _wait_ready(served, started)
            running[arch] = served
        yield running
    finally:
        for arch in ARCHES:
            _podman("rm", "--force", f"rtbserve-image-test-{arch}-{os.getpid()}", check=False)


def _reference(model_dir: Path) -> Any:
    pure = load_artifact(model_dir)
    pure = dataclasses.replace(pure, pipeline=pure_copy(pure.pipeline))
    now = [0.0]
    service = ScoringService(pure, XGBoostPredictor(pure.booster), BIDDERS, 4, clock=lambda: now[0])
    return service, now


def _hour(t: float) -> int:
    return int(t // 3600 % 24)


def test_image_sizes_and_time_to_ready(servers: dict[str, Served]) -> None:
    for arch, served in servers.items():
        size = int(_podman("image", "inspect", "--format", "{{.Size}}", _tag(arch)).stdout)
        user = _podman("image", "inspect", "--format", "{{.Config.User}}", _tag(arch)).stdout
        print(
            f"{arch}: image {size / 2**20:,.0f} MiB, run -> /readyz {served.seconds_to_ready:.1f} s"
        )
        assert user.strip() == "10001:10001"
        assert served.seconds_to_ready > 0


def test_scores_match_the_host_reference_and_each_other(
    servers: dict[str, Served], model_dir: Path
) -> None:
    reference, now = _reference(model_dir)
    bidders = list(reference.bidders)
    requests = [
        orjson.dumps(sr.request) for sr in TrafficGenerator(seed=5, n_bidders=BIDDERS).requests(200)
    ]
    clients = {arch: s.client() for arch, s in servers.items()}
    worst = dict.fromkeys(servers, 0.0)
    across = 0.0
    compared = 0
    try:
        while compared < len(requests):
            raw = requests[compared]
            names = bidders[: 1 + compared % BIDDERS]
            before = time.time()
            replies = {arch: c.score(raw, names) for arch, c in clients.items()}
            after = time.time()
            if _hour(before) != _hour(after):
                continue  # the hour of day is a feature: score again within one hour
            now[0] = before
            expected = reference.score(raw, names)
            for arch, reply in replies.items():
                got = [s.probability for s in reply.scores]
                assert [s.bidder for s in reply.scores] == names, arch
                diff = max(abs(a - b) for a, b in zip(got, expected.probabilities, strict=True))
                worst[arch] = max(worst[arch], diff)
            if len(replies) > 1:
                first, *rest = ([s.probability for s in r.scores] for r in replies.values())
                for other in rest:
                    across = max(across, *(abs(a - b) for a, b in zip(first, other, strict=True)))
            compared += 1
    finally:
        for c in clients.values():
            c.close()
    shown = ", ".join(f"{a} {d:.2e}" for a, d in worst.items())
    if len(servers) > 1:
        shown += f"; max |{' - '.join(servers)}| {across:.2e}"
    print(f"{compared} requests: max |score - host reference| {shown}")
    assert all(d <= TOLERANCE for d in worst.values()), worst
    assert across <= TOLERANCE


def test_readyz_and_metrics(servers: dict[str, Served]) -> None:
    for served in servers.values():
        assert served.http_get("/readyz")[0] == 200
        status, body = served.http_get("/metrics")
        assert status == 200
        assert "rtbserve_model_info{" in body, body[:2000]
        assert "rtbserve_request_latency_seconds_bucket" in body


def test_loadgen_from_a_second_container(servers: dict[str, Served]) -> None:
    for arch, served in servers.items():
        run = _podman(
            "run", "--rm", "--network", f"container:{served.name}", *AS_A_POD, _tag(arch),
            "loadgen", "--plain", "--target", "127.0.0.1:9090", "--synthetic-bidders", "8",
            "--rate", "100", "--duration", "3s", "--connections", "4",
            "--report-json", "/tmp/report.json",
        )  # fmt: skip
        print(f"{arch} loadgen: " + " | ".join(run.stdout.strip().splitlines()[-3:]))
        assert "achieved rate" in run.stdout, run.stdout + run.stderr


def test_operator_help(servers: dict[str, Served]) -> None:
    for arch in servers:
        run = _podman(
            "run", "--rm", "--network", "none", *AS_A_POD, _tag(arch), "operator", "--help"
        )
        assert run.stdout.startswith("usage: rtbserve operator"), run.stdout + run.stderr


NATIVE_TESTS = [
    "tests/unit/test_parity.py",
    "tests/unit/test_native_encode.py",
    "tests/unit/test_request_scan.py",
    "tests/unit/test_fast_codec_native.py",
    "tests/unit/test_score_path.py",
]


def _pytest_dir() -> Path:
    """The host venv's site-packages: pytest and its dependencies are pure Python, so they are
    lent to the image read-only (it ships no test tools)."""
    return Path(pytest.__file__).resolve().parent.parent


@pytest.mark.parametrize("arch", ARCHES)
def test_native_parity_inside_the_image(arch: str) -> None:
    """The C extensions built for the image's CPU against the pure-Python reference, inside it."""
    site = _pytest_dir()
    mounts = ["--volume", f"{REPO / 'tests'}:/src/tests:ro"]
    mounts += ["--volume", f"{REPO / 'bench'}:/src/bench:ro"]  # the tests' workload helpers
    shared = REPO.parent / "shared"
    if shared.is_dir():  # IAB's examples as seeds, where ../shared exists (as on the host)
        mounts += ["--volume", f"{shared}:/shared:ro"]
    for pkg in ("_pytest", "pytest", "pluggy", "iniconfig", "pygments", "py.py"):
        path = site / pkg
        if path.exists():
            mounts += ["--volume", f"{path}:/opt/pytest/{pkg}:ro"]
    run = _podman(
        "run", "--rm", "--network", "none", *AS_A_POD, *mounts,
        "--env", "PYTHONPATH=/opt/pytest:/src", "--workdir", "/src",
        "--entrypoint", "/opt/rtbserve/bin/python", _tag(arch),
        "-m", "pytest", "-q", "-p", "no:cacheprovider", "--noconftest", "-p",
        "tests.server_fixtures", "-o", "markers=native", "-m", "native", *NATIVE_TESTS,
        timeout=3000,
        check=False,
    )  # fmt: skip
    tail = run.stdout.strip().splitlines()[-1] if run.stdout.strip() else ""
    print(f"{arch}: native parity inside the image: {tail}")
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-2000:]
    assert " passed" in tail
