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

from rtbserve.local_registry import LocalRegistry
from rtbserve.local_s3 import LocalS3

IMAGE = os.environ.get("IMAGE", "localhost/rtbserve:dev")
NETWORK = "rtbserve-pods"
PODMAN = ["podman", "--runtime", "runc"]
AS_A_POD = [
    "--read-only", "--tmpfs", "/tmp:rw,size=512m,mode=1777", "--user", "10001:10001",
    "--cap-drop", "ALL", "--security-opt", "no-new-privileges",
    "--ulimit", "nofile=1024:1024", "--ulimit", "nproc=1024:1024",
]  # fmt: skip
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


def _run(
    argv: Sequence[str], timeout: float = 900, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        argv, capture_output=True, text=True, timeout=timeout, check=False, env=env
    )
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv[:4])}: exit {done.returncode}: {done.stderr[-800:]}")
    return done


def image_available(arch: str) -> bool:
    if shutil.which("podman") is None:
        return False
    found = subprocess.run(
        ["podman", "image", "exists", f"{IMAGE}-{arch}"], capture_output=True, check=False
    )
    return found.returncode == 0


HOLDER = f"{NETWORK}-cold-start"


def gateway() -> str:
    """The pod network's gateway, held up by an empty pod so S3 can listen there first."""
    if subprocess.run(["podman", "network", "exists", NETWORK], check=False).returncode:
        _run(["podman", "network", "create", NETWORK])
    if subprocess.run(["podman", "pod", "exists", HOLDER], check=False).returncode:
        # The pod's infra container is created with runc and rlimits it may keep (see PODMAN).
        conf = Path(tempfile.mkdtemp(prefix="rtbserve-cold-conf-")) / "containers.conf"
        conf.write_text('[containers]\ndefault_ulimits = ["nofile=1024:1024", "nproc=1024:1024"]\n')
        _run([*PODMAN, "pod", "create", "--name", HOLDER, "--network", NETWORK],
             env={**os.environ, "CONTAINERS_CONF": str(conf)})  # fmt: skip
    _run([*PODMAN, "pod", "start", HOLDER])
    info = json.loads(_run(["podman", "network", "inspect", NETWORK]).stdout)[0]
    return str(info["subnets"][0]["gateway"])


def train_model(out: Path, trees: int) -> Path:
    _run(
        [sys.executable, "-m", "rtbserve", "train", "--synthetic", "20000", "--seed", "3",
         "--bidders", "16", "--trees", str(trees), "--version", f"cold-{trees}",
         "--out", str(out)],
    )  # fmt: skip
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
    ref: str, uri: str, s3_env: dict[str, str], *, model: str, trees: int, model_bytes: int
) -> ColdStart:
    """One cold start from an empty image store (so the pull fetches every layer)."""
    store = Path(tempfile.mkdtemp(prefix="rtbserve-cold-"))
    podman = [*PODMAN, "--root", str(store / "root"), "--runroot", str(store / "run")]
    name = f"cold-{os.getpid()}-{trees}"
    try:
        t0 = time.monotonic()
        _run([*podman, "pull", "--quiet", "--tls-verify=false", ref])
        pull_s = time.monotonic() - t0
        env = [f"--env={k}={v}" for k, v in sorted(s3_env.items())]
        started = time.monotonic()
        _run(
            [*podman, "run", "-d", "--name", name, "--network", NETWORK, *AS_A_POD,
             "-p", "127.0.0.1::8080", *env, "--env", f"RTBSERVE_MODEL_URI={uri}",
             "--env", "RTBSERVE_WORKERS=1", ref, "serve"],
        )  # fmt: skip
        start_s = time.monotonic() - started
        port = _run([*podman, "port", name, "8080/tcp"]).stdout.strip().rsplit(":", 1)[1]
        ready_s = _wait_ready(f"http://127.0.0.1:{port}/readyz", started)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
            body = r.read().decode()
        return ColdStart(
            model, trees, model_bytes, pull_s, start_s,
            _metric(body, 'rtbserve_startup_seconds{phase="download"}'),
            _metric(body, 'rtbserve_startup_seconds{phase="load"}'), ready_s,
        )  # fmt: skip
    finally:
        subprocess.run([*podman, "rm", "-f", "-t", "0", name], capture_output=True, check=False)
        subprocess.run([*podman, "rmi", "-a", "-f"], capture_output=True, check=False)
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
    rows: list[ColdStart] = []
    try:
        with LocalRegistry() as registry, LocalS3(host=gateway()) as s3:
            ref = f"{registry.address}/rtbserve:cold"
            _run(["podman", "push", "--quiet", "--tls-verify=false", f"{IMAGE}-{arch}",
                  f"docker://{ref}"])  # fmt: skip
            image_bytes = int(_run(["podman", "image", "inspect", "--format", "{{.Size}}",
                                    f"{IMAGE}-{arch}"]).stdout)  # fmt: skip
            bucket = s3.make_bucket("cold-start")
            client = s3.client()
            for model, trees in MODELS.items():
                local = train_model(work / f"trees-{trees}", trees)
                size = sum(p.stat().st_size for p in local.iterdir())
                for path in sorted(local.iterdir()):
                    client.put_object(
                        Bucket=bucket, Key=f"{trees}/{path.name}", Body=path.read_bytes()
                    )
                uri = f"s3://{bucket}/{trees}/"
                runs = [
                    measure_once(ref, uri, s3.env, model=model, trees=trees, model_bytes=size)
                    for _ in range(repeats)
                ]
                row = median_of(runs)
                log(f"  {model}: " + ", ".join(f"{k} {v:.2f} s" for k, v in asdict(row).items()
                                             if k.endswith("_s")))  # fmt: skip
                rows.append(row)
    finally:
        subprocess.run(["podman", "pod", "rm", "-f", "-t", "0", HOLDER], capture_output=True,
                       check=False)  # fmt: skip
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
