"""Names shared by the CRD, the builders and the handlers."""

from __future__ import annotations

from typing import Final

GROUP: Final = "rtbserve.io"
VERSION: Final = "v1alpha1"
API_VERSION: Final = f"{GROUP}/{VERSION}"
KIND: Final = "InferenceModel"
PLURAL: Final = "inferencemodels"

# Server-side apply and update requests are recorded under this manager in managedFields.
FIELD_MANAGER: Final = "rtbserve-operator"

# Labels on every owned object; the selector uses only the stable pair (name, instance).
LABEL_NAME: Final = "app.kubernetes.io/name"
LABEL_INSTANCE: Final = "app.kubernetes.io/instance"
LABEL_COMPONENT: Final = "app.kubernetes.io/component"
LABEL_MANAGED_BY: Final = "app.kubernetes.io/managed-by"
LABEL_INFERENCE_MODEL: Final = f"{GROUP}/inferencemodel"
APP_NAME: Final = "rtbserve"
MANAGED_BY: Final = "rtbserve-operator"

# Model identity, on the pod template (so each model is its own ReplicaSet) and in status.
ANNOTATION_MODEL_URI: Final = f"{GROUP}/model-uri"
ANNOTATION_MODEL_SHA256: Final = f"{GROUP}/model-sha256"
ANNOTATION_MODEL_VERSION_ID: Final = f"{GROUP}/model-version-id"
ANNOTATION_MODEL_NAME: Final = f"{GROUP}/model-name"
ANNOTATION_MODEL_VERSION: Final = f"{GROUP}/model-version"
ANNOTATION_CHANGE_CAUSE: Final = "kubernetes.io/change-cause"

# kopf keeps its bookkeeping (handler progress, last handled spec) under our own prefix.
KOPF_ANNOTATION_PREFIX: Final = f"operator.{GROUP}"

# The server's ports inside the pod (docs/contracts.md defaults).
THRIFT_PORT: Final = 9090
HTTP_PORT: Final = 8080
THRIFT_PORT_NAME: Final = "thrift"
HTTP_PORT_NAME: Final = "http"

# Writable scratch space in a read-only-root pod: the server caches artifacts in $TMPDIR/rtbserve.
TMP_VOLUME: Final = "tmp"
TMP_MOUNT_PATH: Final = "/tmp"

# The image's non-root user (Dockerfile: uid and gid 10001).
RUN_AS_USER: Final = 10001

# HPA Pods metric served by a metrics adapter (e.g. prometheus-adapter) from the server's counters.
RPS_METRIC: Final = "rtbserve_requests_per_second"
