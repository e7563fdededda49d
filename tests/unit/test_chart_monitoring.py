"""ServiceMonitors find what they should scrape, and the Grafana dashboard's queries are valid
PromQL over the metrics rtbserve really exports (docs/contracts.md)."""

from __future__ import annotations

import json
import re
from typing import Any

import promql_parser
import pytest

from tests.chart_tools import ALL_OPTIONS_VALUES, REPO_ROOT, Manifest, by_kind, one, render

CONTRACTS = REPO_ROOT / "docs" / "contracts.md"
KUBE_STATE_METRICS = {"kube_deployment_status_replicas_available"}
# Grafana replaces these before the query reaches Prometheus.
GRAFANA_VARIABLES = {
    "$__rate_interval": "5m",
    "$namespace": "rtbserve",
    "$inferencemodel": "ctr",
}


@pytest.fixture(scope="module")
def manifests() -> list[Manifest]:
    return render("-f", str(ALL_OPTIONS_VALUES), include_crds=False)


def monitor(manifests: list[Manifest], suffix: str) -> dict[str, Any]:
    found: dict[str, Any] = one(manifests, "ServiceMonitor", suffix)["spec"]
    return found


def test_operator_monitor_selects_the_operator_service(manifests: list[Manifest]) -> None:
    spec = monitor(manifests, "-operator")
    service = one(manifests, "Service", "-operator")
    assert spec["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    port_names = {p["name"] for p in service["spec"]["ports"]}
    assert {e["port"] for e in spec["endpoints"]} <= port_names


def operator_built_service() -> dict[str, Any]:
    builders = pytest.importorskip("rtbserve_operator.builders")
    from rtbserve_operator.spec import InferenceModel

    body = {
        "metadata": {"name": "ctr", "namespace": "rtbserve"},
        "spec": {"artifact": {"uri": "s3://bucket/models/ctr/"}},
    }
    service: dict[str, Any] = builders.build_service(InferenceModel.from_body(body, "img"))
    return service


def test_model_server_monitor_selects_the_services_the_operator_creates(
    manifests: list[Manifest],
) -> None:
    spec = monitor(manifests, "-model-servers")
    service = operator_built_service()
    assert spec["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    port_names = {p["name"] for p in service["spec"]["ports"]}
    assert {e["port"] for e in spec["endpoints"]} <= port_names
    # The Service is named after the InferenceModel: the dashboard's `service` label.
    assert service["metadata"]["name"] == "ctr"


def test_model_server_monitor_namespaces_follow_the_watch_mode() -> None:
    cluster_wide = render(
        "--set", "serviceMonitor.enabled=true", "--set", "operator.allNamespaces=true",
        include_crds=False,
    )  # fmt: skip
    assert monitor(cluster_wide, "-model-servers")["namespaceSelector"] == {"any": True}
    namespaced = render(
        "--set", "serviceMonitor.enabled=true", "--set", "operator.watchNamespaces={a,b}",
        include_crds=False,
    )  # fmt: skip
    assert monitor(namespaced, "-model-servers")["namespaceSelector"] == {"matchNames": ["a", "b"]}


def test_monitoring_is_off_by_default() -> None:
    manifests = render(include_crds=False)
    assert not by_kind(manifests, "ServiceMonitor")
    assert not by_kind(manifests, "ConfigMap")


def dashboard(manifests: list[Manifest]) -> dict[str, Any]:
    config_map = one(manifests, "ConfigMap", "-dashboard")
    assert config_map["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert config_map["metadata"]["namespace"] == "monitoring"
    loaded: dict[str, Any] = json.loads(config_map["data"]["rtbserve.json"])
    return loaded


def queries(board: dict[str, Any]) -> list[str]:
    return [t["expr"] for panel in board["panels"] for t in panel.get("targets", [])]


def metric_names(node: Any) -> set[str]:
    """Every metric a parsed PromQL expression selects."""
    if isinstance(node, promql_parser.VectorSelector):
        return {node.name} if node.name else set()
    names: set[str] = set()
    for attr in ("expr", "lhs", "rhs", "vector_selector", "param"):
        child = getattr(node, attr, None)
        if child is not None and not isinstance(child, str | int | float):
            names |= metric_names(child)
    for arg in getattr(node, "args", None) or []:
        names |= metric_names(arg)
    return names


def substitute(expr: str) -> str:
    for variable, value in GRAFANA_VARIABLES.items():
        expr = expr.replace(variable, value)
    assert "$" not in expr, f"undefined Grafana variable in {expr}"
    return expr


def contract_metrics() -> set[str]:
    names = set(re.findall(r"`(rtbserve_[a-z_]+)", CONTRACTS.read_text()))
    assert names, "docs/contracts.md lists the server's metrics"
    # Prometheus histograms are queried through their _bucket/_sum/_count series.
    histograms = {f"{n}{s}" for n in names for s in ("_bucket", "_sum", "_count")}
    return names | histograms


def test_dashboard_queries_are_valid_promql_over_real_metrics(
    manifests: list[Manifest],
) -> None:
    board = dashboard(manifests)
    used: set[str] = set()
    for expr in queries(board):
        used |= metric_names(promql_parser.parse(substitute(expr)))
    assert used <= contract_metrics() | KUBE_STATE_METRICS, used
    assert {
        "rtbserve_requests_total",
        "rtbserve_errors_total",
        "rtbserve_request_latency_seconds_bucket",
        "rtbserve_model_info",
        "kube_deployment_status_replicas_available",
    } <= used


def test_dashboard_shows_p50_and_p99(manifests: list[Manifest]) -> None:
    exprs = queries(dashboard(manifests))
    quantiles = {m for e in exprs for m in re.findall(r"histogram_quantile\((0\.\d+)", e)}
    assert quantiles == {"0.50", "0.99"}


def test_dashboard_variables_are_defined(manifests: list[Manifest]) -> None:
    board = dashboard(manifests)
    defined = {v["name"] for v in board["templating"]["list"]}
    text = json.dumps(board["panels"])
    referenced = set(re.findall(r"\$\{?([a-z]\w*)", text))
    assert referenced <= defined, referenced - defined
    for variable in board["templating"]["list"]:
        if variable["type"] == "query":
            promql_parser.parse(
                substitute(re.sub(r"^label_values\((.*), \w+\)$", r"\1", variable["definition"]))
            )


def test_promql_check_catches_a_broken_query() -> None:
    with pytest.raises(ValueError, match="parenthesis"):
        promql_parser.parse("sum(rate(rtbserve_requests_total[5m])")
