"""Cold start of one model-server container, phase by phase (`python -m bench.cold_start`;
`make bench` runs it too when the image is built).

What decides how fast the HPA's new pods add capacity: the image pull (from a local registry
into an empty image store, so every layer is fetched and unpacked), the container start, the
artifact download from S3 and the model load (the server's own rtbserve_startup_seconds), and
the time from `podman run` to the first 200 from /readyz. For the 20-tree model and the full
(default `rtbserve train`) model, each measured `--repeats` times; the median is reported.
The container runs as a pod does: read-only root, /tmp a tmpfs, uid 10001, no capabilities.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from model_server.s3 import upload_artifact
from rtbserve.local_podman import AS_A_POD, Podman, write_containers_conf
from rtbserve.local_registry import LocalRegistry
from rtbserve.local_s3 import LocalS3

IMAGE = os.environ.get("IMAGE", "localhost/rtbserve:dev")
NETWORK = "rtbserve-pods"
READY_TIMEOUT = 300.0
MODELS = {"20 trees": 20, "full (60 trees)": 60}
START = "<!-- cold-start:start -->"
END = "<!-- cold-start:end -->"
CHART_README = Path(__file__).resolve().parents[1] / "charts" / "rtbserve" / "README.md"


@dataclass(frozen=True)
class ColdStart:
    model: str
    trees: int
    model_bytes: int
    pull_s: float
    start_s: float  # `podman run -d` until the container runs
    download_s: float  # the server's own figure: fetch and verify the artifact
    load_s: float  # the server's own figure: parse the model, build the predictor
    ready_s: float  # `podman run` until /readyz answers 200

    @property
    def total_s(self) -> float:
        return self.pull_s + self.ready_s


def host_arch() -> str:
    machine = os.uname().machine
    return {"x86_64": "amd64", "aarch64": "arm64"}.get(machine, machine)


def _ok(done: subprocess.CompletedProcess[str], what: str) -> subprocess.CompletedProcess[str]:
    if done.returncode != 0:
        raise RuntimeError(f"{what}: exit {done.returncode}: {done.stderr[-800:]}")
    return done


def image_available(arch: str) -> bool:
    if shutil.which("podman") is None:
        return False
    found = subprocess.run(
        ["podman", "image", "exists", f"{IMAGE}-{arch}"], capture_output=True, check=False
    )
    return found.returncode == 0


def train_model(out: Path, trees: int) -> Path:
    argv = [sys.executable, "-m", "rtbserve", "train", "--synthetic", "20000", "--seed", "3",
            "--bidders", "16", "--trees", str(trees), "--version", f"cold-{trees}",
            "--out", str(out)]  # fmt: skip
    _ok(subprocess.run(argv, capture_output=True, text=True, check=False), "rtbserve train")
    return out


def _metric(body: str, name: str) -> float:
    for line in body.splitlines():
        if line.startswith(name + " "):
            return float(line.rsplit(" ", 1)[1])
    raise RuntimeError(f"{name} missing from /metrics")


def _wait_ready(url: str, started: float) -> float:
    while time.monotonic() - started < READY_TIMEOUT:
        try:
            with urllib.request.urlopen(url, timeout=1) as r:
                if r.status == 200:
                    return time.monotonic() - started
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.05)
    raise RuntimeError(f"{url} not ready after {READY_TIMEOUT:.0f} s")


def measure_once(
    host: Podman, ref: str, uri: str, s3_env: dict[str, str], *, model: str, trees: int,
    model_bytes: int,
) -> ColdStart:  # fmt: skip
    """One cold start from an empty image store (so the pull fetches every layer)."""
    store = Path(tempfile.mkdtemp(prefix="rtbserve-cold-"))
    podman = Podman(host.network, host.conf, store=store)
    name = f"cold-{os.getpid()}-{trees}"
    try:
        t0 = time.monotonic()
        _ok(podman.run("pull", "--quiet", "--tls-verify=false", ref), "podman pull")
        pull_s = time.monotonic() - t0
        env = [f"--env={k}={v}" for k, v in sorted(s3_env.items())]
        started = time.monotonic()
        _ok(podman.run(
            "run", "-d", "--name", name, "--network", host.network, *AS_A_POD,
            "-p", "127.0.0.1::8080", *env, "--env", f"RTBSERVE_MODEL_URI={uri}",
            "--env", "RTBSERVE_WORKERS=1", ref, "serve",
        ), "podman run")  # fmt: skip
        start_s = time.monotonic() - started
        port = _ok(podman.run("port", name, "8080/tcp"), "podman port").stdout
        port = port.strip().rsplit(":", 1)[1]
        ready_s = _wait_ready(f"http://127.0.0.1:{port}/readyz", started)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
            body = r.read().decode()
        return ColdStart(
            model, trees, model_bytes, pull_s, start_s,
            _metric(body, 'rtbserve_startup_seconds{phase="download"}'),
            _metric(body, 'rtbserve_startup_seconds{phase="load"}'), ready_s,
        )  # fmt: skip
    finally:
        podman.run("rm", "-f", "-t", "0", name)
        podman.run("rmi", "-a", "-f")
        shutil.rmtree(store, ignore_errors=True)


def median_of(runs: Sequence[ColdStart]) -> ColdStart:
    first = runs[0]
    fields = ("pull_s", "start_s", "download_s", "load_s", "ready_s")
    values = {f: statistics.median(getattr(r, f) for r in runs) for f in fields}
    return ColdStart(first.model, first.trees, first.model_bytes, **values)


def measure(repeats: int = 3, log: Any = print) -> dict[str, Any]:
    """Every model's median cold start; the image must be built (`make image`)."""
    arch = host_arch()
    if not image_available(arch):
        raise RuntimeError(f"no image {IMAGE}-{arch}: run `make image` first")
    work = Path(tempfile.mkdtemp(prefix="rtbserve-cold-models-"))
    host = Podman(NETWORK, write_containers_conf(work))
    rows: list[ColdStart] = []
    try:
        with LocalRegistry() as registry, LocalS3(host=host.hold_bridge()) as s3:
            ref = f"{registry.address}/rtbserve:cold"
            _ok(host.run("push", "--quiet", "--tls-verify=false", f"{IMAGE}-{arch}",
                         f"docker://{ref}"), "podman push")  # fmt: skip
            inspected = host.run("image", "inspect", "--format", "{{.Size}}", f"{IMAGE}-{arch}")
            image_bytes = int(_ok(inspected, "podman image inspect").stdout)
            bucket = s3.make_bucket("cold-start")
            for model, trees in MODELS.items():
                local = train_model(work / f"trees-{trees}", trees)
                size = sum(p.stat().st_size for p in local.iterdir())
                uri = upload_artifact(local, f"s3://{bucket}/{trees}/", client=s3.client()).uri
                runs = [
                    measure_once(host, ref, uri, s3.env, model=model, trees=trees,
                                 model_bytes=size)
                    for _ in range(repeats)
                ]  # fmt: skip
                row = median_of(runs)
                log(f"  {model}: " + ", ".join(f"{k} {v:.2f} s" for k, v in asdict(row).items()
                                             if k.endswith("_s")))  # fmt: skip
                rows.append(row)
    finally:
        host.release()
        shutil.rmtree(work, ignore_errors=True)
    return {
        "arch": arch,
        "image": IMAGE,
        "image_mib": round(image_bytes / 2**20),
        "repeats": repeats,
        "rows": [{**asdict(r), "total_s": r.total_s} for r in rows],
    }


def markdown(result: dict[str, Any]) -> list[str]:
    lines = [
        f"Cold start of one model-server container ({result['arch']}, image "
        f"{result['image_mib']:,} MiB, pulled from a registry on the same host into an empty "
        f"store; median of {result['repeats']}):",
        "",
        "| model | artifact | image pull | container start | artifact download | model load "
        "| imports, workers | `run` → /readyz | pull + ready |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in result["rows"]:
        rest = r["ready_s"] - r["start_s"] - r["download_s"] - r["load_s"]
        lines.append(
            f"| {r['model']} | {r['model_bytes'] / 1024:,.0f} KiB | {r['pull_s']:.1f} s "
            f"| {r['start_s']:.2f} s | {r['download_s']:.2f} s | {r['load_s']:.2f} s "
            f"| {rest:.2f} s | {r['ready_s']:.1f} s | {r['total_s']:.1f} s |"
        )
    lines += [
        "",
        "Download and load are the server's own `rtbserve_startup_seconds`; imports and workers "
        "is the rest of `run` → /readyz (Python's imports, the worker processes' start). A pull "
        "from ECR adds network time to the pull column, and a node that already holds the image "
        "skips it.",
    ]
    return lines


def update_doc(text: str, lines: list[str]) -> str:
    start, end = text.find(START), text.find(END)
    if start < 0 or end < start:
        raise ValueError(f"no {START} ... {END} block")
    return text[:start] + "\n".join([START, *lines, END]) + text[end + len(END) :]


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.cold_start", description=__doc__)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--json", type=Path, help="also write the result here")
    p.add_argument(
        "--render", type=Path, metavar="JSON", help="measure nothing: render this result"
    )
    p.add_argument(
        "--update-readme", action="store_true", help=f"rewrite the block in {CHART_README}"
    )
    args = p.parse_args(argv)
    result = json.loads(args.render.read_text()) if args.render else measure(args.repeats)
    print("\n".join(markdown(result)))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    if args.update_readme:
        CHART_README.write_text(update_doc(CHART_README.read_text(), markdown(result)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
