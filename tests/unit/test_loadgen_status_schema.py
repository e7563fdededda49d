"""The status.lastLoadTest the load generator writes fits the InferenceModel CRD's schema."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from loadgen.connections import Target
from loadgen.engine import SendOptions
from loadgen.k8s_status import GROUP, PLURAL, VERSION, last_load_test
from loadgen.pool import encode_pool
from loadgen.runner import RunSpec, run_load
from loadgen.schedule import RateSchedule
from loadgen.traffic import synthetic_items

CRD = Path(__file__).resolve().parents[2] / "crds" / "inferencemodel.yaml"


@pytest.fixture(scope="module")
def crd() -> dict[str, Any]:
    if not CRD.is_file():
        pytest.skip(f"{CRD} not found: the InferenceModel CRD is not written yet")
    doc: dict[str, Any] = yaml.safe_load(CRD.read_text())
    return doc


def test_crd_names_match(crd: dict[str, Any]) -> None:
    assert crd["spec"]["group"] == GROUP
    assert crd["spec"]["names"]["plural"] == PLURAL
    version = next(v for v in crd["spec"]["versions"] if v["name"] == VERSION)
    assert "status" in version["subresources"]


def test_last_load_test_validates(crd: dict[str, Any], fast_stub: Any) -> None:
    version = next(v for v in crd["spec"]["versions"] if v["name"] == VERSION)
    status = version["schema"]["openAPIV3Schema"]["properties"]["status"]
    schema = status["properties"]["lastLoadTest"]
    result = run_load(
        RunSpec(
            Target(fast_stub.host, fast_stub.port),
            RateSchedule.fixed(300, 1.0),
            SendOptions(connections=2),
        ),
        encode_pool(synthetic_items(300, seed=2)),
    )
    summary = last_load_test(result)
    assert set(summary) == set(schema["properties"]) - {"pods", "failedPods"}
    jsonschema.validate(summary, schema, format_checker=jsonschema.FormatChecker())
    # A merged run of many pods also says how many there were and how many failed.
    shards = [{"status": "ok"}, {"status": "missing"}, {"status": "ok"}]
    merged = last_load_test(result, shards)
    assert set(merged) == set(schema["properties"])
    assert (merged["pods"], merged["failedPods"]) == (3, 1)
    jsonschema.validate(merged, schema, format_checker=jsonschema.FormatChecker())
    assert summary["requests"] == 300
    assert summary["errors"] == 0
    assert summary["achievedRate"] == pytest.approx(300, rel=0.02)
    assert datetime.fromisoformat(summary["time"]) >= result.started_at
