"""The operator's Deployment as a real pod: the built image, pulled from a local registry by a
podman-backed node of the local cluster (tests/realpod), for linux/arm64 under qemu as on a
Graviton node.

The operator runs as a host process (as in the other e2e tests) and knows nothing of podman: it
creates the Deployment, Service and load-test Job as on EKS. The pod downloads its model from
the S3 server, turns Ready by its own probes, answers Thrift calls and the load-test Job's
traffic; `kubectl rollout undo` brings back the previous model in a new container; a missing
image and a crashing one are reported in the InferenceModel's status while the old pod serves.
"""

from __future__ import annotations

import time
from typing import Any

import orjson
import pytest

from model_server.synthetic import TrafficGenerator
from tests.e2e.test_operator_lifecycle import Models, unique
from tests.operator_fixtures import OperatorHarness, PublishedModels, wait_until

pytestmark = [pytest.mark.image, pytest.mark.timeout(1800)]

# arm64 runs under qemu here: image pull, Python imports and the model load take minutes.
SETTLE = 600.0


def model_spec(s3_env: dict[str, str], uri: str, image: str, **extra: Any) -> dict[str, Any]:
    # moto's dummy credentials and endpoint; on EKS the pod's IRSA or Pod Identity role instead.
    env = [{"name": k, "value": v} for k, v in sorted(s3_env.items())]
    return {
        "artifact": {"uri": uri},
        "image": image,
        "replicas": 1,
        "env": env,
        "service": {"type": "ClusterIP"},
        "server": {"drainSeconds": 1, "workers": 1},
        "resources": {"requests": {"cpu": "100m", "memory": "256Mi"}},
        **extra,
    }


def serving_pod(models: Models, name: str, sha256: str) -> dict[str, Any] | None:
    """The Ready pod of `name` whose container serves the model `sha256`, asked over Thrift."""
    pods = models.json("get", "pods", "-l", f"rtbserve.io/inferencemodel={name}")["items"]
    for pod in pods:
        ready = any(
            c["type"] == "Ready" and c["status"] == "True"
            for c in pod.get("status", {}).get("conditions", [])
        )
        ip = pod.get("status", {}).get("podIP")
        if ready and ip and not pod["metadata"].get("deletionTimestamp"):
            try:
                info = thrift_client(ip).info()
            except Exception:
                continue
            if info.sha256 == sha256:
                return {"pod": pod, "info": info}
    return None


def thrift_client(host: str) -> Any:
    from thriftpy2.protocol import TCyBinaryProtocolFactory
    from thriftpy2.rpc import make_client
    from thriftpy2.transport import TCyFramedTransportFactory

    from model_server.thrift_contract import ModelServer

    return make_client(
        ModelServer, host, 9090,
        proto_factory=TCyBinaryProtocolFactory(),  # type: ignore[no-untyped-call]
        trans_factory=TCyFramedTransportFactory(), timeout=60_000,
    )  # fmt: skip


def wait_serving(models: Models, name: str, sha256: str) -> dict[str, Any]:
    found: dict[str, Any] = wait_until(
        lambda: serving_pod(models, name, sha256), SETTLE, f"{name}: a pod serving {sha256[:12]}"
    )
    return found


def grant_loadgen(models: Models, name: str) -> str:
    """What the chart grants the load generator: patching this one model's status."""
    account = f"{name}-loadgen"
    models.kubectl("create", "serviceaccount", account)
    models.kubectl(
        "create", "role", account, "--verb=patch",
        "--resource=inferencemodels.rtbserve.io/status", f"--resource-name={name}",
    )  # fmt: skip
    models.kubectl(
        "create", "rolebinding", account, f"--role={account}",
        f"--serviceaccount={models.ns}:{account}",
    )  # fmt: skip
    return account


@pytest.fixture
def models(kube_cluster: Any, running_operator: OperatorHarness, podman_nodes: Any) -> Models:
    return Models(kube_cluster, running_operator.namespace, settle=SETTLE)


def test_a_real_pod_serves_its_model_and_load_test_and_rollout_undo_brings_back_the_first(
    models: Models, published_models: PublishedModels, pushed_images: Any, s3_server: Any
) -> None:
    first, second = published_models.first, published_models.second
    name = unique("real")
    started = time.monotonic()
    models.apply(name, model_spec(s3_server.env, first.uri, pushed_images["good"]))
    models.wait_ready(name)
    served = wait_serving(models, name, first.sha256)
    pod = served["pod"]
    print(f"{name}: first pod Ready and serving in {time.monotonic() - started:.0f} s")
    assert pod["spec"]["nodeName"] == "podman-graviton-0"
    assert served["info"].version == first.version
    statuses = pod["status"]["containerStatuses"]
    assert statuses[0]["containerID"].startswith("podman://")
    assert statuses[0]["imageID"].startswith(f"{pushed_images['good'].rsplit(':', 1)[0]}@sha256:")

    # Real scoring, through the real container.
    client = thrift_client(pod["status"]["podIP"])
    request = next(iter(TrafficGenerator(seed=3, n_bidders=4).requests(1))).request
    reply = client.score(orjson.dumps(request), list(served["info"].bidders))
    assert [s.bidder for s in reply.scores] == list(served["info"].bidders)
    assert all(0.0 <= s.probability <= 1.0 for s in reply.scores)

    # The load-test Job, added once the model serves: a real loadgen container on the loadgen
    # node reaches the Service by name and reports into status.lastLoadTest.
    account = grant_loadgen(models, name)
    models.patch_spec(
        name,
        {"loadTest": {"rate": "20", "duration": "5s", "connections": 2,
                      "serviceAccountName": account,
                      # the test models know 4 bidders (loadgen's synthetic default is 16)
                      "args": ["--synthetic-bidders", "4"]}},
    )  # fmt: skip
    report = wait_until(
        lambda: models.get(name).get("status", {}).get("lastLoadTest"),
        SETTLE,
        f"{name}: status.lastLoadTest from the load-test Job",
        interval=2,
    )

    def finished_jobs() -> list[dict[str, Any]]:
        jobs = models.json("get", "jobs", "-l", f"rtbserve.io/load-test-of={name}")["items"]
        return [j for j in jobs if j["status"].get("succeeded") or j["status"].get("failed")]

    (finished,) = wait_until(finished_jobs, SETTLE, f"{name}: the load-test Job ends")
    job = finished["metadata"]["name"]
    job_pods = models.json("get", "pods", "-l", f"batch.kubernetes.io/job-name={job}")["items"]
    ended = job_pods[0]["status"]["containerStatuses"][0]["state"].get("terminated")
    assert finished["status"].get("succeeded") == 1, ended  # exit code and the log's tail
    assert job_pods[0]["spec"]["nodeName"] == "podman-loadgen-0"
    assert report["achievedRate"] > 0, report
    print(f"{name}: load test from a real loadgen pod: {report}")

    # A new model rolls out to a new container; undo brings the first back, served for real.
    models.patch_spec(name, {"artifact": {"uri": second.uri}})
    wait_serving(models, name, second.sha256)
    models.wait_condition(name, "Ready", "True")
    models.kubectl("rollout", "undo", f"deployment/{name}")
    back = wait_serving(models, name, first.sha256)
    assert back["pod"]["metadata"]["uid"] != pod["metadata"]["uid"]
    models.wait_condition(name, "RolledBack", "True")
    print(f"{name}: after rollout undo a new container serves {back['info'].version}")
    models.kubectl("delete", "inferencemodel", name, "--wait=false")


@pytest.mark.parametrize(
    ("image", "reasons", "detail"),
    [
        ("missing", {"ErrImagePull", "ImagePullBackOff"}, "rtbserve:missing"),
        ("crash", {"CrashLoopBackOff"}, "exit code 3"),
    ],
)
def test_an_image_that_cannot_run_is_reported_while_the_old_pod_serves(  # noqa: PLR0917
    models: Models,
    published_models: PublishedModels,
    pushed_images: Any,
    s3_server: Any,
    image: str,
    reasons: set[str],
    detail: str,
) -> None:
    first = published_models.first
    name = unique(f"bad-{image}")
    models.apply(name, model_spec(s3_server.env, first.uri, pushed_images["good"]))
    models.wait_ready(name)
    old = wait_serving(models, name, first.sha256)

    models.patch_spec(name, {"image": pushed_images[image]})

    def degraded() -> dict[str, Any] | None:
        cond = models.condition(name, "Degraded")
        return cond if cond.get("status") == "True" and cond.get("reason") in reasons else None

    cond = wait_until(degraded, SETTLE, f"{name}: Degraded for {reasons}", interval=1)
    assert detail in cond["message"], cond
    assert "still serving" in cond["message"], cond
    print(f"{name}: Degraded {cond['reason']}: {cond['message']}")
    models.wait_event(name, cond["reason"])
    assert models.condition(name, "Ready")["status"] == "False"
    # The old container keeps serving throughout (maxUnavailable 0).
    info = thrift_client(old["pod"]["status"]["podIP"]).info()
    assert info.sha256 == first.sha256
    models.kubectl("delete", "inferencemodel", name, "--wait=false")
