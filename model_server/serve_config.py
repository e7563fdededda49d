"""`rtbserve serve` configuration: every flag has an environment variable; a flag wins.

The table is docs/contracts.md's "Server configuration"; `--bind-address` and `--backend` are
this command's additions. The operator runs the server with environment variables only.
"""

from __future__ import annotations

import argparse
import math
import os
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from model_server.logs import LEVELS
from model_server.machine import cgroup_cpu_limit
from model_server.predictor import BACKENDS

MIB = 1 << 20


class ConfigError(ValueError):
    """A flag or environment variable has an invalid value; the message names it."""


@dataclass(frozen=True)
class ServeConfig:
    model_uri: str
    model_sha256: str | None = None
    model_version_id: str | None = None
    thrift_port: int = 9090
    http_port: int = 8080
    workers: int = 1
    drain_seconds: float = 15.0
    conn_max_age_seconds: float = 300.0  # 0 = off
    conn_max_requests: int = 0  # 0 = off
    max_bidders: int = 64
    max_batch: int = 256
    max_frame_bytes: int = MIB
    read_timeout_seconds: float = 10.0
    cache_dir: str = ""
    log_level: str = "info"
    bind_address: str = "0.0.0.0"  # a pod serves on its own IP
    backend: str = "auto"

    def public_fields(self) -> dict[str, Any]:
        """Every setting, for the start-up log line (none of them is a secret)."""
        return {f.name: getattr(self, f.name) for f in fields(self)}


def available_cpus(cgroup_root: Path = Path("/sys/fs/cgroup")) -> int:
    """CPUs this process may use: its affinity mask, capped by the cgroup quota (Kubernetes)."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cpus = os.cpu_count() or 1
    limit = cgroup_cpu_limit(cgroup_root)
    if limit is not None:
        # A 1.5-CPU limit runs 2 workers: a partly used core is still worth a worker.
        cpus = min(cpus, max(1, math.ceil(limit)))
    return max(1, cpus)


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise ValueError("must be at least 1")
    return value


def _non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise ValueError("must be 0 or more")
    return value


def _port(text: str) -> int:
    value = int(text)
    if not 0 <= value <= 65535:
        raise ValueError("must be a port number (0 picks a free one)")
    return value


def _non_negative_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value) or value < 0:
        raise ValueError("must be a finite number, 0 or more")
    return value


def _positive_float(text: str) -> float:
    value = _non_negative_float(text)
    if value == 0:
        raise ValueError("must be more than 0")
    return value


def _sha256(text: str) -> str:
    value = text.strip().lower()
    if len(value) != 64 or any(c not in "0123456789abcdef" for c in value):
        raise ValueError("must be 64 hex digits")
    return value


def _choice(options: Sequence[str]) -> Callable[[str], str]:
    def parse(text: str) -> str:
        value = text.strip().lower()
        if value not in options:
            raise ValueError(f"must be one of {', '.join(options)}")
        return value

    return parse


def _text(text: str) -> str:
    if not text.strip():
        raise ValueError("must not be empty")
    return text.strip()


@dataclass(frozen=True)
class _Option:
    flag: str
    env: str
    field: str
    parse: Callable[[str], Any]
    help: str


OPTIONS: tuple[_Option, ...] = (
    _Option("--model", "RTBSERVE_MODEL_URI", "model_uri", _text, "artifact: local path or s3://"),
    _Option("--model-sha256", "RTBSERVE_MODEL_SHA256", "model_sha256", _sha256,
            "refuse to serve unless the artifact's identity is this sha256"),
    _Option("--model-version-id", "RTBSERVE_MODEL_VERSION_ID", "model_version_id", _text,
            "S3 version id of manifest.json"),
    _Option("--thrift-port", "RTBSERVE_THRIFT_PORT", "thrift_port", _port,
            "Thrift port (framed, binary); default 9090"),
    _Option("--http-port", "RTBSERVE_HTTP_PORT", "http_port", _port,
            "HTTP port for /healthz, /readyz, /metrics; default 8080"),
    _Option("--workers", "RTBSERVE_WORKERS", "workers", _positive_int,
            "worker processes; default: CPUs available (affinity and cgroup quota)"),
    _Option("--drain-seconds", "RTBSERVE_DRAIN_SECONDS", "drain_seconds", _non_negative_float,
            "after SIGTERM, keep serving this long before closing; default 15"),
    _Option("--conn-max-age-seconds", "RTBSERVE_CONN_MAX_AGE_SECONDS", "conn_max_age_seconds",
            _non_negative_float, "close connections older than this, between calls; 0 = off"),
    _Option("--conn-max-requests", "RTBSERVE_CONN_MAX_REQUESTS", "conn_max_requests",
            _non_negative_int, "close connections after this many calls; 0 = off"),
    _Option("--max-bidders", "RTBSERVE_MAX_BIDDERS", "max_bidders", _positive_int,
            "most candidate bidders in one call; default 64"),
    _Option("--max-batch", "RTBSERVE_MAX_BATCH", "max_batch", _positive_int,
            "most requests in one score_batch call; default 256"),
    _Option("--max-frame-bytes", "RTBSERVE_MAX_FRAME_BYTES", "max_frame_bytes", _positive_int,
            "largest Thrift frame accepted; default 1048576"),
    _Option("--read-timeout-seconds", "RTBSERVE_READ_TIMEOUT_SECONDS", "read_timeout_seconds",
            _positive_float, "close a connection stalled mid-frame this long; default 10"),
    _Option("--cache-dir", "RTBSERVE_CACHE_DIR", "cache_dir", _text,
            "where s3:// artifacts are downloaded; default $TMPDIR/rtbserve"),
    _Option("--log-level", "RTBSERVE_LOG_LEVEL", "log_level", _choice(LEVELS),
            "debug, info, warning or error; default info"),
    _Option("--bind-address", "RTBSERVE_BIND_ADDRESS", "bind_address", _text,
            "address both ports listen on; default 0.0.0.0"),
    _Option("--backend", "RTBSERVE_BACKEND", "backend", _choice(BACKENDS),
            "prediction backend: auto (native when the model allows), native or xgboost"),
)  # fmt: skip


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rtbserve serve",
        description="Serve a model artifact over Thrift, with /healthz, /readyz and /metrics.",
        epilog="Every option can also be set with the environment variable shown; a flag wins.",
    )
    for opt in OPTIONS:
        # Parsed as text here; _parse_value checks it, so flags and env get the same messages.
        parser.add_argument(opt.flag, dest=opt.field, metavar=opt.env, help=opt.help)
    return parser


def _parse_value(opt: _Option, text: str, source: str) -> Any:
    try:
        return opt.parse(text)
    except ValueError as exc:
        raise ConfigError(f"{source} {text!r} is invalid: {exc}") from None


def load_config(argv: Sequence[str], environ: Mapping[str, str] | None = None) -> ServeConfig:
    """The configuration from flags, then environment variables, then defaults."""
    env = os.environ if environ is None else environ
    args = build_parser().parse_args(list(argv))
    values: dict[str, Any] = {}
    for opt in OPTIONS:
        flag_value = getattr(args, opt.field)
        if flag_value is not None:
            values[opt.field] = _parse_value(opt, flag_value, opt.flag)
        elif env.get(opt.env, "") != "":
            values[opt.field] = _parse_value(opt, env[opt.env], opt.env)
    if "model_uri" not in values:
        raise ConfigError("a model is required: --model or RTBSERVE_MODEL_URI")
    values.setdefault("workers", available_cpus())
    values.setdefault("cache_dir", str(Path(tempfile.gettempdir()) / "rtbserve"))
    if values.get("model_version_id") and not str(values["model_uri"]).startswith("s3://"):
        raise ConfigError("--model-version-id applies only to an s3:// model")
    return ServeConfig(**values)
