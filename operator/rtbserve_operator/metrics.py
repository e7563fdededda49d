"""The operator's Prometheus metrics (served by `rtbserve operator --metrics-port`)."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

RECONCILES = Counter(
    "rtbserve_operator_reconciles_total",
    "Handler runs, by handler and result (ok, retry, failed).",
    ["handler", "result"],
)
VERIFICATIONS = Counter(
    "rtbserve_operator_artifact_verifications_total",
    "Artifact verifications, by result (Verified or the rejection reason).",
    ["result"],
)
VERIFICATION_SECONDS = Histogram(
    "rtbserve_operator_artifact_verification_seconds",
    "Time to download, checksum and load an artifact.",
    buckets=(0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300),
)
ERRORS = Counter(
    "rtbserve_operator_errors_total",
    "Errors talking to the Kubernetes API or S3, by kind.",
    ["kind"],
)
ROLLOUTS = Counter(
    "rtbserve_operator_rollouts_total",
    "Deployment writes for a new spec, by action (created, updated, unchanged).",
    ["action"],
)
STATUS_WRITES = Counter(
    "rtbserve_operator_status_writes_total",
    "InferenceModel status patches, by result (written, unchanged, conflict).",
    ["result"],
)
