"""deploy/loadgen-job.yaml: valid for the cluster's Kubernetes, locked down, and runnable."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from loadgen.options import parse_config
from tests.chart_tools import KUBE_VERSION

MANIFEST = Path(__file__).resolve().parents[2] / "deploy" / "loadgen-job.yaml"


@pytest.fixture(scope="module")
def docs() -> dict[str, dict[str, Any]]:
    loaded = [d for d in yaml.safe_load_all(MANIFEST.read_text()) if d]
    return {d["kind"]: d for d in loaded}


def test_every_document_validates(docs: dict[str, dict[str, Any]]) -> None:
    assert set(docs) == {"ServiceAccount", "Role", "RoleBinding", "Job"}
    for doc in docs.values():
        kubernetes_validate.validate(doc, KUBE_VERSION, strict=True)


def test_job_runs_loadgen_with_flags_the_cli_accepts(docs: dict[str, dict[str, Any]]) -> None:
    job = docs["Job"]
    container = job["spec"]["template"]["spec"]["containers"][0]
    assert container["command"] == ["rtbserve"]
    args = container["args"]
    assert args[0] == "loadgen"
    config = parse_config(args[1:])
    model = config.output.inference_model
    namespace = config.output.namespace
    assert model
    assert namespace == job["metadata"]["namespace"]
    assert (config.target.host, config.target.port) == (f"{model}.{namespace}.svc", 9090)
    report = config.output.report_json
    assert report is not None
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in job["spec"]["template"]["spec"]["volumes"]}
    assert "emptyDir" in volumes[mounts[str(report.parent)]]
    assert "emptyDir" in volumes[mounts["/tmp"]]


def test_job_is_locked_down_and_bounded(docs: dict[str, dict[str, Any]]) -> None:
    job = docs["Job"]
    spec = job["spec"]
    pod = spec["template"]["spec"]
    container = pod["containers"][0]
    assert spec["backoffLimit"] == 0
    assert spec["ttlSecondsAfterFinished"] > 0
    assert spec["activeDeadlineSeconds"] > 0
    assert pod["restartPolicy"] == "Never"
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] != 0
    sc = container["securityContext"]
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"]["drop"] == ["ALL"]
    assert container["resources"]["requests"]["cpu"]
    assert container["resources"]["requests"]["memory"]
    text = MANIFEST.read_text().lower()
    assert "aws_secret_access_key" not in text
    assert "aws_access_key_id" not in text


def test_service_account_may_only_patch_that_models_status(
    docs: dict[str, dict[str, Any]],
) -> None:
    pod = docs["Job"]["spec"]["template"]["spec"]
    account = docs["ServiceAccount"]["metadata"]["name"]
    assert pod["serviceAccountName"] == account
    binding = docs["RoleBinding"]
    assert binding["roleRef"]["name"] == docs["Role"]["metadata"]["name"]
    assert binding["subjects"] == [
        {
            "kind": "ServiceAccount",
            "name": account,
            "namespace": docs["Job"]["metadata"]["namespace"],
        }
    ]
    args = pod["containers"][0]["args"]
    model = next(a.split("=", 1)[1] for a in args if a.startswith("--inference-model="))
    assert docs["Role"]["rules"] == [
        {
            "apiGroups": ["rtbserve.io"],
            "resources": ["inferencemodels/status"],
            "resourceNames": [model],
            "verbs": ["patch"],
        }
    ]
