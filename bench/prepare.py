"""Set-up before any measurement: the model, the requests in every wire format, the peers'
virtualenvs, the echo server and the driver for Thrift servers."""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import orjson
import xgboost

import rtbserve
from bench import echo_limit, workload
from bench.config import REPO_DIR, BenchConfig
from bench.report import BenchReport
from bench.systems import (
    Prepared,
    ThriftDriverFactory,
    loadgen_thrift_driver,
    open_loop_thrift_driver,
)
from bench.venvs import PEER_ENVS, ensure_venv
from model_server.artifact import MANIFEST_FILE, LoadedModel, load_artifact

Log = Callable[[str], None]

# Distinct requests each driver cycles through, and the seed they are drawn with.
WORKLOAD_REQUESTS = 500
WORKLOAD_SEED = 7
# Trained once per row count and reused by later runs.
TRAIN_TIMEOUT = 1800.0


def rtbserve_argv() -> list[str]:
    return [sys.executable, "-m", "rtbserve"]


def train_model(cfg: BenchConfig, log: Log) -> Path:
    out = cfg.work_dir / f"model-synthetic-{cfg.synthetic_rows}"
    if (out / MANIFEST_FILE).exists():
        log(f"  model: reusing {out}")
        return out
    if importlib.util.find_spec("model_server.train_cli") is None:
        raise RuntimeError("`rtbserve train` is not available here; pass --model DIR")
    log(f"  model: rtbserve train --synthetic {cfg.synthetic_rows} --out {out}")
    argv = [*rtbserve_argv(), "train", f"--synthetic={cfg.synthetic_rows}", f"--out={out}"]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=TRAIN_TIMEOUT, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"rtbserve train failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return out


def echo_replies(model: LoadedModel, load: workload.Workload) -> dict[str, bytes]:
    """The echo's canned replies: what rtbserve answers to the workload's first request."""
    thrift = echo_limit.thrift_module()
    pipeline, manifest = model.pipeline, model.manifest
    request = orjson.loads(load.requests[0])
    names = load.bidders[0]
    rows = pipeline.rows(request, pipeline.bidder_indices(names), now=load.timestamps[0])
    probabilities = np.asarray(model.booster.inplace_predict(rows), dtype=np.float64)
    scores = [
        (name, float(p), float(p) >= model.thresholds[name])
        for name, p in zip(names, probabilities, strict=True)
    ]
    info = thrift.ModelInfo(
        name=manifest.name,
        version=manifest.version,
        sha256=model.sha256,
        bidders=list(manifest.bidders),
        feature_count=pipeline.n_features,
        backend="native",
        thresholds=dict(model.thresholds),
    )
    return {
        "score": echo_limit.score_reply(thrift, request["id"], manifest.version, scores),
        "info": echo_limit.info_reply(thrift, info),
    }


def pinned_versions(requirements: Path) -> dict[str, str]:
    pins = {}
    for line in requirements.read_text().splitlines():
        m = re.match(r"^([A-Za-z0-9_.\-\[\]]+)==([^\s#]+)", line.strip())
        if m:
            pins[m.group(1)] = m.group(2)
    return pins


def choose_thrift_driver(prep: Prepared, name: str, log: Log) -> ThriftDriverFactory:
    """`rtbserve loadgen` (the default), or `bench.peer_driver` speaking Thrift (a cross-check)."""
    if name == "loadgen":
        if importlib.util.find_spec("loadgen.cli") is None:
            raise RuntimeError("`rtbserve loadgen` is not available; use --thrift-driver open-loop")
        log("  Thrift servers are driven by `rtbserve loadgen`")
        return loadgen_thrift_driver(prep)
    log("  Thrift servers are driven by bench.peer_driver (open loop, Thrift transport)")
    return open_loop_thrift_driver(prep, Path(sys.executable))


def prepare(
    cfg: BenchConfig,
    *,
    run_dir: Path,
    model_dir: Path | None,
    thrift_driver: str,
    report: BenchReport,
    log: Log,
) -> Prepared:
    artifact = model_dir if model_dir is not None else train_model(cfg, log)
    model = load_artifact(artifact)
    m = model.manifest
    report.model = {
        "name": m.name,
        "version": m.version,
        "sha256": model.sha256,
        "bidders": len(m.bidders),
        "features": model.pipeline.n_features,
        "trees": model.booster.num_boosted_rounds(),
        "params": m.params,
        "path": str(artifact),
    }
    log(
        f"  model {m.name} {m.version}: {len(m.bidders)} bidders, "
        f"{model.pipeline.n_features} features, {model.booster.num_boosted_rounds()} rounds"
    )
    report.versions["rtbserve"] = rtbserve.__version__
    report.versions["xgboost"] = xgboost.__version__

    payload_dir = run_dir / "payloads"
    needs_v2 = any(s.startswith("mlserver") for s in cfg.systems)
    thrift_payloads, replays, v2_payloads, replies = {}, {}, {}, {}
    for bidders in cfg.bidder_counts:
        load = workload.make_workload(list(m.bidders), bidders, WORKLOAD_REQUESTS, WORKLOAD_SEED)
        thrift_payloads[bidders] = workload.write_thrift_payloads(
            payload_dir / f"thrift-{bidders}.json", load
        )
        replays[bidders] = workload.write_replay(payload_dir / f"replay-{bidders}.jsonl", load)
        if needs_v2:
            matrices = workload.feature_matrices(load, model.pipeline)
            v2_payloads[bidders] = workload.write_v2_payloads(
                payload_dir / f"v2-{bidders}.json", matrices, "rtb"
            )
        replies[bidders] = echo_replies(model, load)
    log(f"  requests: {WORKLOAD_REQUESTS} per bidder count, payloads in {payload_dir}")

    pythons: dict[str, Path] = {}
    for env_name, env in PEER_ENVS.items():
        if any(s.startswith(env_name) for s in cfg.systems):
            log(f"  venv {env_name}: pinned in {env.requirements.relative_to(REPO_DIR)}")
            pythons[env_name] = ensure_venv(env, cfg.work_dir / "venvs", run_dir / "venvs.log")
            for pkg, version in pinned_versions(env.requirements).items():
                if pkg in {"mlserver", "mlserver-xgboost", "thriftpy2"}:
                    report.versions[pkg] = version

    echo_binary = None
    if "echo" in cfg.systems or "echo-cold" in cfg.systems:
        echo_binary = echo_limit.build_echo_server(cfg.work_dir / "echo")
        log(f"  echo server built: {echo_binary}")

    prep = Prepared(
        cfg=cfg,
        artifact=artifact,
        model_file=artifact / m.model_file,
        logs=run_dir / "logs",
        thrift_payloads=thrift_payloads,
        replays=replays,
        v2_payloads=v2_payloads,
        echo_replies=replies,
        rtbserve_argv=rtbserve_argv(),
        pythons=pythons,
        echo_binary=echo_binary,
    )
    prep.thrift_driver_factory = choose_thrift_driver(prep, thrift_driver, log)
    return prep
