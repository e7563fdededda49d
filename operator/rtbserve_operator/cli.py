"""`rtbserve operator`: run the InferenceModel operator."""

from __future__ import annotations

import argparse
import logging
import os
import socket
import tempfile
from collections.abc import Sequence
from pathlib import Path

import kopf
from prometheus_client import start_http_server

from rtbserve_operator.constants import GROUP, KOPF_ANNOTATION_PREFIX, LABEL_MANAGED_BY, MANAGED_BY
from rtbserve_operator.handlers import REGISTRY
from rtbserve_operator.kube import KubeApi
from rtbserve_operator.reconcile import OperatorContext

log = logging.getLogger("rtbserve.operator")

# Libraries whose debug output carries request signatures, tokens or per-probe noise: they stay
# quiet even with --verbose, so logs never hold credentials.
QUIET_LOGGERS = ("botocore", "boto3", "s3transfer", "urllib3", "kubernetes", "aiohttp.access")


def _default_image() -> str:
    from rtbserve import __version__

    return os.environ.get("RTBSERVE_DEFAULT_IMAGE", f"rtbserve:{__version__}")


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="rtbserve operator",
        description="Run the InferenceModel operator: verify model artifacts on S3, then roll "
        "them out as Deployments with a Service, HPA and PodDisruptionBudget.",
    )
    scope = p.add_mutually_exclusive_group(required=True)
    scope.add_argument(
        "-n",
        "--namespace",
        action="append",
        metavar="NS",
        help="watch this namespace (repeat for several); needs only namespaced RBAC",
    )
    scope.add_argument("-A", "--all-namespaces", action="store_true", help="watch every namespace")
    p.add_argument(
        "--metrics-port",
        type=int,
        default=9100,
        help="Prometheus /metrics port (0: off; default %(default)s)",
    )
    p.add_argument("--metrics-host", default="0.0.0.0", help="default %(default)s")
    p.add_argument(
        "--liveness-port",
        type=int,
        default=8081,
        help="liveness endpoint /healthz port (0: off; default %(default)s)",
    )
    p.add_argument("--liveness-host", default="0.0.0.0", help="default %(default)s")
    p.add_argument(
        "--cache-dir",
        type=Path,
        default=Path(tempfile.gettempdir()) / "rtbserve-operator",
        help="scratch space for artifact verification (default %(default)s)",
    )
    p.add_argument(
        "--default-image",
        default=_default_image(),
        help="model-server image when spec.image is empty (env RTBSERVE_DEFAULT_IMAGE; "
        "default %(default)s)",
    )
    peering = p.add_mutually_exclusive_group()
    peering.add_argument(
        "--standalone",
        action="store_true",
        default=True,
        help="no peering with other operator instances (the default: run one replica)",
    )
    peering.add_argument(
        "--peering",
        metavar="NAME",
        help="coordinate with other instances through kopf's KopfPeering object NAME "
        "(needs kopf's peering CRDs and RBAC)",
    )
    p.add_argument("--workers", type=int, default=4, help="handler threads (default %(default)s)")
    p.add_argument("--verbose", action="store_true", help="debug logging")
    return p.parse_args(list(argv))


def build_settings(args: argparse.Namespace) -> kopf.OperatorSettings:
    settings = kopf.OperatorSettings()
    # kopf's bookkeeping under our own prefix, in annotations: status stays ours alone.
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(
        prefix=KOPF_ANNOTATION_PREFIX
    )
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=KOPF_ANNOTATION_PREFIX, key="last-handled-configuration"
    )
    settings.persistence.finalizer = f"{GROUP}/operator"
    # Events are posted explicitly (kopf.event); log lines are not mirrored as events.
    settings.posting.level = logging.CRITICAL
    settings.posting.reporting_component = MANAGED_BY
    settings.posting.reporting_instance = socket.gethostname()
    # Watch only what this operator owns, filtered by the API server.
    owned = f"{LABEL_MANAGED_BY}={MANAGED_BY}"
    settings.watching.label_selectors["apps", "v1", "deployments"] = owned
    settings.watching.label_selectors["v1", "services"] = owned
    # Re-establish watches regularly so a silently dropped connection cannot stall us.
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    settings.execution.max_workers = args.workers
    settings.peering.standalone = args.peering is None
    if args.peering:
        settings.peering.name = args.peering
        settings.peering.mandatory = True
    return settings


def main(argv: Sequence[str]) -> int:
    args = parse_args(argv)
    kopf.configure(verbose=args.verbose)
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
    namespaces: tuple[str, ...] | None = None if args.all_namespaces else tuple(args.namespace)
    if args.metrics_port:
        start_http_server(args.metrics_port, addr=args.metrics_host)
        log.info("metrics on http://%s:%d/metrics", args.metrics_host, args.metrics_port)
    args.cache_dir.mkdir(parents=True, exist_ok=True)
    kube = KubeApi.from_environment()
    ctx = OperatorContext(
        kube=kube,
        scratch_dir=args.cache_dir,
        default_image=args.default_image,
        namespaces=namespaces,
    )
    liveness = (
        f"http://{args.liveness_host}:{args.liveness_port}/healthz" if args.liveness_port else None
    )
    try:
        kopf.run(
            registry=REGISTRY,
            settings=build_settings(args),
            standalone=args.peering is None,
            peering_name=args.peering,
            clusterwide=namespaces is None,
            namespaces=namespaces or (),
            liveness_endpoint=liveness,
            memo=kopf.Memo(ctx=ctx),
        )
    finally:
        kube.close()
    return 0
