"""charts/rtbserve: `helm lint` and `helm template` pass, and every rendered manifest is valid.

Core Kubernetes objects are validated strictly (unknown fields are errors) against the schemas
of the Kubernetes release EKS and the local cluster run (kubernetes-validate). InferenceModels
are validated against our own CRD's openAPIV3Schema. ServiceMonitors have no schema here (the
Prometheus Operator's CRDs are not installed anywhere in this project), so they are checked for
the fields Prometheus Operator requires and against the Services they select.
"""

from __future__ import annotations

import copy
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from tests.chart_tools import (
    ALL_OPTIONS_VALUES,
    CHART_CRD,
    CHART_DIR,
    KUBE_VERSION,
    Manifest,
    by_kind,
    one,
    render,
    run_helm,
)

OWN_API_GROUPS = {"rtbserve.io/v1alpha1"}
PROMETHEUS_OPERATOR = "monitoring.coreos.com/v1"

# name -> extra `helm template` arguments
VARIANTS: dict[str, list[str]] = {
    "defaults": [],
    "all-options": ["-f", str(ALL_OPTIONS_VALUES)],
    "watch-namespaces": [
        "--set", "operator.watchNamespaces={bidding,rtbserve}",
        "--set", "serviceMonitor.enabled=true",
        "--set", "loadgen.enabled=true",
        "--set", "loadgen.target=ctr.bidding.svc:9090",
        "--set", "loadgen.inferenceModel=ctr",
        "--set", "loadgen.inferenceModelNamespace=bidding",
    ],
    "loadgen-pods": [
        "--set", "loadgen.enabled=true",
        "--set", "loadgen.target=ctr.bidding.svc:9090",
        "--set", "loadgen.pods=4",
        "--set", "loadgen.shardStore=s3://reports/shards",
        "--set", "loadgen.env[0].name=AWS_REGION",
        "--set", "loadgen.env[0].value=us-east-1",
    ],
}  # fmt: skip


@pytest.fixture(scope="module", params=sorted(VARIANTS))
def variant(request: pytest.FixtureRequest) -> tuple[str, list[Manifest]]:
    name: str = request.param
    return name, render(*VARIANTS[name])


def strict_crd_schema(node: Any) -> Any:
    """The CRD schema as the API server applies it with strict field validation (kubectl's
    default): an object that lists its properties accepts no others."""
    if isinstance(node, list):
        return [strict_crd_schema(item) for item in node]
    if not isinstance(node, dict):
        return node
    out = {key: strict_crd_schema(value) for key, value in node.items()}
    if (
        out.get("type") == "object"
        and "properties" in out
        and "additionalProperties" not in out
        and not out.get("x-kubernetes-preserve-unknown-fields")
    ):
        out["additionalProperties"] = False
    return out


def crd_validator() -> jsonschema.protocols.Validator:
    crd = yaml.safe_load(CHART_CRD.read_text())
    version = next(v for v in crd["spec"]["versions"] if v["storage"])
    schema = strict_crd_schema(version["schema"]["openAPIV3Schema"])
    return jsonschema.Draft7Validator(schema)


def validate(manifest: Manifest) -> None:
    api_version = manifest["apiVersion"]
    if api_version in OWN_API_GROUPS:
        errors = [f"{e.json_path}: {e.message}" for e in crd_validator().iter_errors(manifest)]
        assert not errors, f"{manifest['kind']}/{manifest['metadata']['name']}: {errors}"
    elif api_version == PROMETHEUS_OPERATOR:
        check_service_monitor_shape(manifest)
    else:
        kubernetes_validate.validate(manifest, KUBE_VERSION, strict=True)


def check_service_monitor_shape(monitor: Manifest) -> None:
    assert monitor["kind"] == "ServiceMonitor"
    spec = monitor["spec"]
    assert set(spec) <= {"selector", "namespaceSelector", "endpoints", "jobLabel"}
    assert spec["selector"]["matchLabels"]
    namespaces = spec["namespaceSelector"]
    assert namespaces == {"any": True} or namespaces["matchNames"]
    for endpoint in spec["endpoints"]:
        assert set(endpoint) <= {"port", "path", "interval", "scrapeTimeout"}
        assert endpoint["port"]


def test_helm_lint_strict() -> None:
    run_helm("lint", "--strict", str(CHART_DIR))
    run_helm("lint", "--strict", str(CHART_DIR), "-f", str(ALL_OPTIONS_VALUES))


def test_every_manifest_validates(variant: tuple[str, list[Manifest]]) -> None:
    _, manifests = variant
    assert manifests
    for manifest in manifests:
        validate(manifest)


def test_strict_validation_rejects_unknown_fields(variant: tuple[str, list[Manifest]]) -> None:
    # Guards the test above: strict mode must really reject a misspelt field.
    _, manifests = variant
    deployment = copy.deepcopy(one(manifests, "Deployment", "-operator"))
    deployment["spec"]["template"]["spec"]["containers"][0]["imagePullPolcy"] = "Always"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, KUBE_VERSION, strict=True)


def test_crd_schema_rejects_unknown_fields() -> None:
    bad: dict[str, Any] = {
        "apiVersion": "rtbserve.io/v1alpha1",
        "kind": "InferenceModel",
        "metadata": {"name": "x"},
        "spec": {"artifact": {"uri": "s3://bucket/models/x/"}, "replicaz": 2},
    }
    assert not crd_validator().is_valid(bad)


def test_crd_is_installed_from_the_crds_directory() -> None:
    # Helm installs crds/ before any template, so the example InferenceModels can be created
    # in the same release.
    with_crds = render(include_crds=True)
    without = render(include_crds=False)
    crds = by_kind(with_crds, "CustomResourceDefinition")
    assert [c["metadata"]["name"] for c in crds] == ["inferencemodels.rtbserve.io"]
    assert not by_kind(without, "CustomResourceDefinition")


def test_defaults_render_the_operator_and_nothing_optional() -> None:
    kinds = sorted(m["kind"] for m in render(include_crds=False))
    assert kinds == sorted(
        [
            "ClusterRole",
            "ClusterRole",
            "ClusterRoleBinding",
            "Deployment",
            "RoleBinding",
            "Service",
            "ServiceAccount",
            "ServiceAccount",
        ]
    )


def test_all_options_render_every_optional_part() -> None:
    manifests = render("-f", str(ALL_OPTIONS_VALUES), include_crds=False)
    kinds = {m["kind"] for m in manifests}
    assert {"InferenceModel", "Job", "Role", "ServiceMonitor", "ConfigMap"} <= kinds


def test_resource_names_follow_the_release_name() -> None:
    manifests = render(release="bidding", include_crds=False)
    names = {m["metadata"]["name"] for m in manifests}
    assert "bidding-rtbserve-operator" in names
    # With "rtbserve" in the release name the prefix is not repeated, so the default release
    # gives the ServiceAccount names eksctl/cluster.yaml binds IAM roles to.
    assert "rtbserve-operator" in {m["metadata"]["name"] for m in render(include_crds=False)}


def test_rendering_is_deterministic() -> None:
    # A changing manifest (random names, timestamps) would make every upgrade a change.
    args = ["template", "rtbserve", str(CHART_DIR), "-f", str(ALL_OPTIONS_VALUES)]
    assert run_helm(*args).stdout == run_helm(*args).stdout


def test_chart_files_are_all_used() -> None:
    # files/ is only what templates read: a stray file would ship in the chart for nothing.
    templates = "\n".join(p.read_text() for p in (CHART_DIR / "templates").iterdir())
    for path in (CHART_DIR / "files").iterdir():
        assert f"files/{path.name}" in templates, path.name


def test_loadgen_pods_render_an_indexed_job_whose_last_pod_merges() -> None:
    manifests = render(
        "--set", "loadgen.enabled=true", "--set", "loadgen.target=ctr.bidding.svc:9090",
        "--set", "loadgen.rate=30k", "--set", "loadgen.pods=3",
        "--set", "loadgen.shardStore=s3://reports/shards/", "--set", "loadgen.inferenceModel=ctr",
    )  # fmt: skip
    job = one(manifests, "Job")
    spec = job["spec"]
    assert (spec["completionMode"], spec["completions"], spec["parallelism"]) == ("Indexed", 3, 3)
    container = spec["template"]["spec"]["containers"][0]
    args = container["args"]
    assert "--rate=30k" in args  # the whole run's rate: each pod offers a third
    assert "--shards=3" in args
    assert "--merge" in args
    assert "--shard-store=s3://reports/shards/$(RTBSERVE_LOADGEN_JOB)/" in args
    env = {e["name"]: e for e in container["env"]}
    field = env["RTBSERVE_LOADGEN_JOB"]["valueFrom"]["fieldRef"]["fieldPath"]
    assert field == "metadata.labels['batch.kubernetes.io/job-name']"
    single = one(render("--set", "loadgen.enabled=true",
                        "--set", "loadgen.target=ctr.bidding.svc:9090"), "Job")  # fmt: skip
    assert "completionMode" not in single["spec"]
    assert not any(
        a.startswith("--shards")
        for a in single["spec"]["template"]["spec"]["containers"][0]["args"]
    )
    proc = run_helm(
        "template", "rtbserve", str(CHART_DIR), "--set", "loadgen.enabled=true",
        "--set", "loadgen.target=x:1", "--set", "loadgen.pods=2", check=False,
    )  # fmt: skip
    assert proc.returncode != 0
    assert "loadgen.shardStore" in proc.stderr
