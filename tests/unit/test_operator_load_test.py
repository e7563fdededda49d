"""spec.loadTest: the operator's load-test Job, an Indexed Job of `pods` pods when above one."""

from __future__ import annotations

from typing import Any

import kubernetes_validate
import pytest
from rtbserve_operator.builders import build_load_test_job, selector_labels
from rtbserve_operator.identity import ModelIdentity
from rtbserve_operator.spec import InvalidSpecError

from loadgen.options import parse_config
from tests.chart_tools import KUBE_VERSION
from tests.unit.test_operator_builders import IDENTITY, make_im

LOAD_TEST = {"pods": 3, "rate": "30k", "duration": "2m", "shardStore": "s3://reports/shards/"}


def _container(job: dict[str, Any]) -> dict[str, Any]:
    c: dict[str, Any] = job["spec"]["template"]["spec"]["containers"][0]
    return c


def test_pods_make_an_indexed_job_whose_pods_share_the_rate(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    job = build_load_test_job(make_im({"loadTest": LOAD_TEST}), IDENTITY)
    assert job is not None
    kubernetes_validate.validate(job, KUBE_VERSION, strict=True)
    spec = job["spec"]
    assert (spec["completionMode"], spec["completions"], spec["parallelism"]) == ("Indexed", 3, 3)
    args = _container(job)["args"]
    assert args[0] == "loadgen"
    assert "--target=ctr.rtb.svc:9090" in args
    # What pod 2 runs, with the Job's name where Kubernetes substitutes it.
    monkeypatch.setenv("JOB_COMPLETION_INDEX", "2")
    name = job["metadata"]["name"]
    config = parse_config([a.replace("$(RTBSERVE_LOADGEN_JOB)", name) for a in args[1:]])
    assert config.shard is not None
    assert config.shard.merge  # the last pod merges
    assert config.shard.shard.store == f"s3://reports/shards/{name}/"
    assert config.schedule.segments[0].start_rate == 10_000
    assert config.output.inference_model == "ctr"
    assert config.output.namespace == "rtb"
    # The loadgen pods are not model-server pods: the Service and PDB do not select them.
    labels = spec["template"]["metadata"]["labels"]
    assert not set(selector_labels(make_im()).items()) <= set(labels.items())


def test_one_pod_is_a_plain_job_and_none_without_a_load_test() -> None:
    job = build_load_test_job(make_im({"loadTest": {}}), IDENTITY)
    assert job is not None
    assert "completionMode" not in job["spec"]
    assert not any(a.startswith("--shards") for a in _container(job)["args"])
    assert build_load_test_job(make_im(), IDENTITY) is None


def test_a_new_model_or_new_settings_is_a_new_job() -> None:
    im = make_im({"loadTest": LOAD_TEST})
    other = ModelIdentity(IDENTITY.uri, "b" * 64, "v-2", "ctr", "2")
    names = {
        build_load_test_job(im, IDENTITY)["metadata"]["name"],  # type: ignore[index]
        build_load_test_job(im, other)["metadata"]["name"],  # type: ignore[index]
        build_load_test_job(make_im({"loadTest": {**LOAD_TEST, "pods": 4}}), IDENTITY)[  # type: ignore[index]
            "metadata"
        ]["name"],
    }
    assert len(names) == 3
    assert build_load_test_job(im, IDENTITY) == build_load_test_job(im, IDENTITY)


def test_pods_need_a_shard_store() -> None:
    with pytest.raises(InvalidSpecError, match="shardStore"):
        make_im({"loadTest": {"pods": 2}})
