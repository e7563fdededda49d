"""values.yaml, values.schema.json and the chart README agree, and bad values fail clearly."""

from __future__ import annotations

import json
import re
from typing import Any

import jsonschema
import pytest
import yaml

from tests.chart_tools import ALL_OPTIONS_VALUES, CHART_DIR, run_helm

VALUES = CHART_DIR / "values.yaml"
SCHEMA = CHART_DIR / "values.schema.json"
README = CHART_DIR / "README.md"


def leaf_keys(node: Any, prefix: str = "") -> list[str]:
    """Dotted paths of every key; lists and empty maps are leaves."""
    if isinstance(node, dict) and node:
        keys = []
        for key, value in node.items():
            path = f"{prefix}.{key}" if prefix else key
            keys.append(path)
            keys += leaf_keys(value, path)
        return keys
    return []


def values() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(VALUES.read_text())
    return loaded


def validator() -> jsonschema.protocols.Validator:
    schema = json.loads(SCHEMA.read_text())
    jsonschema.Draft7Validator.check_schema(schema)
    return jsonschema.Draft7Validator(schema)


def readme_keys() -> set[str]:
    return set(re.findall(r"^\| `([^`]+)` \|", README.read_text(), re.MULTILINE))


def is_documented(key: str, documented: set[str]) -> bool:
    """Listed itself, through a listed parent object (`operator.resources`) or through its
    listed leaves (`operator` through `operator.replicas`)."""
    parts = key.split(".")
    ancestors = {".".join(parts[:i]) for i in range(1, len(parts))}
    return (
        key in documented
        or bool(ancestors & documented)
        or any(d.startswith(key + ".") for d in documented)
    )


def test_readme_lists_every_value() -> None:
    documented = readme_keys()
    missing = [k for k in leaf_keys(values()) if not is_documented(k, documented)]
    assert not missing, f"values missing from charts/rtbserve/README.md: {missing}"


def test_readme_lists_no_value_that_does_not_exist() -> None:
    known = set(leaf_keys(values()))
    stale = sorted(readme_keys() - known)
    assert not stale, f"README documents values that values.yaml lacks: {stale}"


def test_default_and_example_values_match_the_schema() -> None:
    check = validator()
    for doc in (values(), yaml.safe_load(ALL_OPTIONS_VALUES.read_text())):
        merged = merge(values(), doc)
        errors = [f"{e.json_path}: {e.message}" for e in check.iter_errors(merged)]
        assert not errors, errors


def merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """Helm's coalescing of a values file over the defaults."""
    out = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


@pytest.mark.parametrize(
    ("path", "value"),
    [
        (("operator", "replicaCount"), 1),  # misspelt key
        (("operator", "replicas"), 2),  # would run two operators without peering
        (("operator", "serviceAccount", "roleArn"), "rtbserve-operator"),  # not an ARN
        (("image", "pullPolicy"), "Sometimes"),
        (("loadgen", "reportS3"), "https://bucket/reports/"),
        (("loadgen", "rate"), "fast"),
        (("operator", "env"), [{"name": "AWS_SECRET_ACCESS_KEY", "value": "x"}]),
        (("loadgen", "env"), [{"name": "AWS_ACCESS_KEY_ID", "valueFrom": {}}]),
    ],
)
def test_schema_rejects_bad_values(path: tuple[str, ...], value: Any) -> None:
    doc = values()
    node = doc
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    assert not validator().is_valid(doc)


def test_helm_enforces_the_schema() -> None:
    proc = run_helm(
        "template", "rtbserve", str(CHART_DIR), "--set", "operator.replicas=2", check=False
    )
    assert proc.returncode != 0
    assert "replicas" in proc.stderr


def test_loadgen_needs_a_target() -> None:
    proc = run_helm(
        "template", "rtbserve", str(CHART_DIR), "--set", "loadgen.enabled=true", check=False
    )
    assert proc.returncode != 0
    assert "loadgen.target is required" in proc.stderr


def test_values_comments_are_not_stale() -> None:
    # Every documented flag in values.yaml comments exists in the README too.
    flags = set(re.findall(r"`(--[a-z0-9-]+)`", VALUES.read_text()))
    assert flags
    readme = README.read_text()
    assert all(flag in readme for flag in flags), sorted(f for f in flags if f not in readme)
