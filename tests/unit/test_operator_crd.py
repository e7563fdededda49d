"""crds/inferencemodel.yaml: a valid, structural apiextensions.k8s.io/v1 CRD whose schema agrees
with the operator's own spec model, and which accepts the shipped example."""

from __future__ import annotations

import copy
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml
from rtbserve_operator.conditions import CONDITION_TYPES
from rtbserve_operator.constants import GROUP, KIND, PLURAL, VERSION
from rtbserve_operator.spec import RESERVED_ENV, InvalidSpecError, parse_spec

REPO_ROOT = Path(__file__).resolve().parents[2]
CRD_PATH = REPO_ROOT / "crds" / "inferencemodel.yaml"
EXAMPLE_PATH = REPO_ROOT / "examples" / "inferencemodel.yaml"
SHA = "0123456789abcdef" * 4


@pytest.fixture(scope="module")
def crd() -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load(CRD_PATH.read_text())
    return doc


@pytest.fixture(scope="module")
def version(crd: dict[str, Any]) -> dict[str, Any]:
    (only,) = crd["spec"]["versions"]
    return dict(only)


@pytest.fixture(scope="module")
def schema(version: dict[str, Any]) -> dict[str, Any]:
    s: dict[str, Any] = version["schema"]["openAPIV3Schema"]
    return s


def strict_json_schema(node: Any) -> Any:
    """The OpenAPI schema as JSON Schema that, like the API server's pruning plus a typo check,
    refuses fields the CRD does not declare."""
    if isinstance(node, list):
        return [strict_json_schema(n) for n in node]
    if not isinstance(node, dict):
        return node
    out = {k: strict_json_schema(v) for k, v in node.items() if not k.startswith("x-kubernetes")}
    declared = node.get("type") == "object" and "properties" in node
    if declared and not node.get("x-kubernetes-preserve-unknown-fields"):
        out.setdefault("additionalProperties", False)
    return out


def validates(schema: dict[str, Any], instance: Any) -> bool:
    try:
        jsonschema.validate(instance, strict_json_schema(schema))
    except jsonschema.ValidationError:
        return False
    return True


def walk(node: dict[str, Any], path: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    yield path, node
    for name, child in (node.get("properties") or {}).items():
        yield from walk(child, f"{path}.{name}")
    if isinstance(node.get("items"), dict):
        yield from walk(node["items"], f"{path}[]")
    if isinstance(node.get("additionalProperties"), dict):
        yield from walk(node["additionalProperties"], f"{path}{{}}")


def test_is_a_valid_apiextensions_v1_object(crd: dict[str, Any]) -> None:
    assert crd["apiVersion"] == "apiextensions.k8s.io/v1"
    assert crd["kind"] == "CustomResourceDefinition"
    # Raises with the offending field on a schema error.
    kubernetes_validate.validate(crd, "1.34", strict=True)


def test_names(crd: dict[str, Any], version: dict[str, Any]) -> None:
    spec = crd["spec"]
    assert crd["metadata"]["name"] == f"{PLURAL}.{GROUP}"
    assert spec["group"] == GROUP
    assert spec["scope"] == "Namespaced"
    assert spec["names"]["kind"] == KIND
    assert spec["names"]["plural"] == PLURAL
    assert "im" in spec["names"]["shortNames"]
    assert version["name"] == VERSION
    assert version["served"] is True
    assert version["storage"] is True
    assert version["subresources"] == {"status": {}}


def test_schema_is_structural(schema: dict[str, Any]) -> None:
    """The API server's structural-schema rules that matter here: every node has a type (or is
    int-or-string / preserve-unknown), anyOf branches carry no type except int-or-string, and
    required fields exist."""
    for path, node in walk(schema):
        if node.get("x-kubernetes-int-or-string"):
            assert "type" not in node, path
            assert node.get("anyOf") in (None, [{"type": "integer"}, {"type": "string"}]), path
            continue
        assert "type" in node, f"{path or '<root>'} has no type"
        for branch in node.get("anyOf", []):
            assert "type" not in branch, path
        for name in node.get("required", []):
            assert name in node.get("properties", {}), f"{path}: required {name} not declared"
        if node["type"] == "object" and node is not schema["properties"]["metadata"]:
            has_fields = "properties" in node or "additionalProperties" in node
            assert has_fields or node.get("x-kubernetes-preserve-unknown-fields"), path


def test_printer_columns_point_at_declared_status_fields(
    version: dict[str, Any], schema: dict[str, Any]
) -> None:
    columns = {c["name"]: c["jsonPath"] for c in version["additionalPrinterColumns"]}
    assert {"Model", "Ready", "Endpoint", "Age"} <= set(columns)
    for name, json_path in columns.items():
        if json_path.startswith(".metadata"):
            continue
        fields = re.sub(r"\[\?.*?\]", "[]", json_path).strip(".").split(".")
        node = schema
        for field in fields:
            node = node["properties"][field.removesuffix("[]")]
            if node.get("type") == "array":
                node = node["items"]
        assert node, name


def test_status_declares_conditions_identity_and_load_test(schema: dict[str, Any]) -> None:
    status = schema["properties"]["status"]["properties"]
    condition = status["conditions"]["items"]
    assert set(condition["properties"]["type"]["enum"]) == set(CONDITION_TYPES)
    assert {"type", "status", "reason", "message", "lastTransitionTime"} <= set(
        condition["properties"]
    )
    for field in ("artifact", "serving"):
        assert {"uri", "sha256", "versionId", "name", "version"} <= set(status[field]["properties"])
    assert {
        "time",
        "targetRate",
        "achievedRate",
        "p50Ms",
        "p99Ms",
        "errors",
        "requests",
        "durationSeconds",
        "pods",
        "failedPods",
    } == set(status["lastLoadTest"]["properties"])
    assert {"observedGeneration", "readyReplicas", "replicas", "endpoint"} <= set(status)


def test_reserved_env_list_matches_the_cel_rule(schema: dict[str, Any]) -> None:
    (rule,) = schema["properties"]["spec"]["properties"]["env"]["x-kubernetes-validations"]
    assert set(re.findall(r"'([A-Z0-9_]+)'", rule["rule"])) == set(RESERVED_ENV)


def test_example_validates(schema: dict[str, Any]) -> None:
    example = yaml.safe_load(EXAMPLE_PATH.read_text())
    assert example["apiVersion"] == f"{GROUP}/{VERSION}"
    assert example["kind"] == KIND
    assert validates(schema, example)
    parse_spec(example["spec"])


def test_the_strict_check_catches_a_typo(schema: dict[str, Any]) -> None:
    example = yaml.safe_load(EXAMPLE_PATH.read_text())
    example["spec"]["artifact"]["sha265"] = SHA
    assert not validates(schema, example)


# Specs that both the CRD schema and the operator's model must accept.
VALID_SPECS: list[dict[str, Any]] = [
    {"artifact": {"uri": "s3://models/ctr/1/"}},
    {"artifact": {"uri": "s3://models.example/ctr", "sha256": SHA, "versionId": "3HL4kqtJlcpX"}},
    {"artifact": {"uri": "s3://models/a/"}, "replicas": 0},
    {
        "artifact": {"uri": "s3://models/a/"},
        "autoscaling": {"minReplicas": 2, "maxReplicas": 8, "targetRequestsPerSecond": 5000},
        "resources": {"requests": {"cpu": "500m", "memory": "1Gi"}, "limits": {"memory": 2e9}},
        "service": {"type": "ClusterIP", "port": 9000},
        "server": {"workers": 2, "logLevel": "debug"},
        "disruptionBudget": {"maxUnavailable": "10%"},
        "rollout": {"maxSurge": 1, "maxUnavailable": "0%"},
        "tolerations": [],
        "affinity": {"podAntiAffinity": {}},
        "tmpSizeLimit": "10Gi",
        "env": [{"name": "AWS_REGION", "value": "eu-west-1"}],
    },
    {
        "artifact": {"uri": "s3://models/a/"},
        "loadTest": {
            "pods": 4,
            "rate": "40k",
            "duration": "2m",
            "connections": 8,
            "shardStore": "s3://reports/shards/",
            "serviceAccountName": "rtbserve-loadgen",
            "args": ["--seed=7"],
        },
    },
    {"artifact": {"uri": "s3://models/a/"}, "loadTest": {}},
]

# Specs that both must refuse.
INVALID_SPECS: list[dict[str, Any]] = [
    {},
    {"artifact": {}},
    {"artifact": {"uri": "https://models/ctr/"}},
    {"artifact": {"uri": "s3://Models/ctr/"}},
    {"artifact": {"uri": "s3://models/ctr/", "sha256": "abc"}},
    {"artifact": {"uri": "s3://models/ctr/", "sha256": SHA.upper()}},
    {"artifact": {"uri": "s3://models/ctr/"}, "replicas": -1},
    {"artifact": {"uri": "s3://models/ctr/"}, "autoscaling": {"minReplicas": 2}},
    {"artifact": {"uri": "s3://models/ctr/"}, "autoscaling": {"maxReplicas": 0}},
    {"artifact": {"uri": "s3://models/ctr/"}, "service": {"type": "ExternalName"}},
    {"artifact": {"uri": "s3://models/ctr/"}, "service": {"port": 70000}},
    {"artifact": {"uri": "s3://models/ctr/"}, "server": {"drainSeconds": -5}},
    {"artifact": {"uri": "s3://models/ctr/"}, "server": {"logLevel": "chatty"}},
    {"artifact": {"uri": "s3://models/ctr/"}, "resources": {"requests": {"cpu": "two"}}},
    {"artifact": {"uri": "s3://models/ctr/"}, "tmpSizeLimit": "lots"},
    {"artifact": {"uri": "s3://models/ctr/"}, "env": [{"name": "1BAD", "value": "x"}]},
    {"artifact": {"uri": "s3://models/ctr/"}, "imagePullPolicy": "Sometimes"},
    {"artifact": {"uri": "s3://models/ctr/"}, "replicaz": 2},
    {"artifact": {"uri": "s3://models/ctr/"}, "loadTest": {"pods": 0}},
    {"artifact": {"uri": "s3://models/ctr/"}, "loadTest": {"rate": "fast"}},
    {"artifact": {"uri": "s3://models/ctr/"}, "loadTest": {"shardStore": "/shared"}},
]

# Rules only CEL (x-kubernetes-validations) expresses in the CRD; the operator checks them too.
CEL_ONLY_INVALID: list[dict[str, Any]] = [
    {"artifact": {"uri": "s3://models/ctr/"}, "replicas": 2, "autoscaling": {"maxReplicas": 4}},
    {"artifact": {"uri": "s3://models/ctr/"}, "autoscaling": {"minReplicas": 5, "maxReplicas": 4}},
    {"artifact": {"uri": "s3://models/ctr/"}, "env": [{"name": "RTBSERVE_MODEL_URI", "value": ""}]},
    {"artifact": {"uri": "s3://models/ctr/"}, "rollout": {"maxSurge": "lots"}},
    {"artifact": {"uri": "s3://models/ctr/"}, "disruptionBudget": {"maxUnavailable": -1}},
    {"artifact": {"uri": "s3://models/ctr/"}, "loadTest": {"pods": 3}},
]


def as_object(spec: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": KIND,
        "metadata": {"name": "m"},
        "spec": copy.deepcopy(spec),
    }


@pytest.mark.parametrize("spec", VALID_SPECS)
def test_valid_specs_pass_both(schema: dict[str, Any], spec: dict[str, Any]) -> None:
    assert validates(schema, as_object(spec))
    parse_spec(spec)


@pytest.mark.parametrize("spec", INVALID_SPECS)
def test_invalid_specs_fail_both(schema: dict[str, Any], spec: dict[str, Any]) -> None:
    assert not validates(schema, as_object(spec))
    with pytest.raises(InvalidSpecError):
        parse_spec(spec)


@pytest.mark.parametrize("spec", CEL_ONLY_INVALID)
def test_cel_only_rules_are_enforced_by_the_operator(
    schema: dict[str, Any], spec: dict[str, Any]
) -> None:
    assert validates(schema, as_object(spec))  # the OpenAPI part alone lets it through
    with pytest.raises(InvalidSpecError):
        parse_spec(spec)


def test_invalid_spec_errors_name_the_field() -> None:
    with pytest.raises(InvalidSpecError, match=r"spec\.artifact\.sha256"):
        parse_spec({"artifact": {"uri": "s3://models/ctr/", "sha256": "abc"}})
    with pytest.raises(InvalidSpecError, match="either replicas or autoscaling"):
        parse_spec(CEL_ONLY_INVALID[0])
