"""spec.loadTest end to end: the operator creates the load test as an Indexed Job.

kwok runs no containers, so the pods never send load; the sending, the per-pod results and their
merge run as real processes in tests/unit/test_loadgen_shards.py.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.e2e.test_operator_lifecycle import SETTLE, Models, spec_for, unique
from tests.operator_fixtures import OperatorHarness, PublishedModels, wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(600)]


@pytest.fixture
def models(kube_cluster: Any, running_operator: OperatorHarness) -> Models:
    return Models(kube_cluster, running_operator.namespace)


def test_load_test_pods_become_an_indexed_job_per_model(
    models: Models, published_models: PublishedModels
) -> None:
    first, second = published_models.first, published_models.second
    name = unique("lt")
    load_test = {"pods": 3, "rate": "30k", "duration": "30s", "shardStore": "s3://reports/shards/"}
    models.apply(name, spec_for(first.uri, replicas=1, loadTest=load_test))
    models.wait_ready(name)

    def jobs() -> list[dict[str, Any]]:
        found = models.json("get", "jobs", "-l", f"rtbserve.io/load-test-of={name}")["items"]
        return list(found)

    (job,) = wait_until(lambda: jobs() or None, SETTLE, f"{name}: load-test Job", interval=1)
    spec = job["spec"]
    assert (spec["completionMode"], spec["completions"], spec["parallelism"]) == ("Indexed", 3, 3)
    args = spec["template"]["spec"]["containers"][0]["args"]
    assert "--shards=3" in args
    assert "--merge" in args
    assert f"--target={name}.{models.ns}.svc:9090" in args
    assert job["metadata"]["annotations"]["rtbserve.io/model-sha256"] == first.sha256
    (owner,) = job["metadata"]["ownerReferences"]
    assert (owner["kind"], owner["name"]) == ("InferenceModel", name)

    # A new model gets a load test of its own; the first run's Job is left as it was.
    models.patch_spec(name, {"artifact": {"uri": second.uri}})

    def two() -> list[dict[str, Any]] | None:
        found = jobs()
        return found if len(found) == 2 else None

    shas = {
        j["metadata"]["annotations"]["rtbserve.io/model-sha256"]
        for j in wait_until(two, SETTLE, f"{name}: second load-test Job", interval=1)
    }
    assert shas == {first.sha256, second.sha256}
