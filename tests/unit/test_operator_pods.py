"""Pods that cannot run (bad image, crash on start) reach the InferenceModel's status at once."""

from __future__ import annotations

from typing import Any

from rtbserve_operator.pods import pod_problem_of
from rtbserve_operator.status import status_patch

from tests.unit.test_operator_status import NOW, VERIFIED, A, B, conditions, deployment, im_body


def pod(
    name: str, *, waiting: str | None = None, message: str = "", **extra: Any
) -> dict[str, Any]:
    state: dict[str, Any] = (
        {"waiting": {"reason": waiting, "message": message}}
        if waiting
        else {"running": {"startedAt": NOW}}
    )
    container = {"name": "server", "ready": waiting is None, "state": state, **extra}
    return {"metadata": {"name": name}, "status": {"containerStatuses": [container]}}


def test_running_and_starting_pods_are_no_problem() -> None:
    assert pod_problem_of([pod("a"), pod("b", waiting="ContainerCreating")]) is None
    assert pod_problem_of([]) is None


def test_an_image_pull_back_off_names_the_pod_the_container_and_the_kubelets_words() -> None:
    stuck = pod_problem_of(
        [pod("m-2", waiting="ImagePullBackOff", message='Back-off pulling image "reg/x:nope"')]
    )
    assert stuck is not None
    assert stuck.reason == "ImagePullBackOff"
    assert stuck.message == (
        'pod m-2: container server: ImagePullBackOff: Back-off pulling image "reg/x:nope"'
    )


def test_a_crash_loop_gives_the_last_exit_and_counts_the_pods_alike() -> None:
    last = {"terminated": {"exitCode": 3, "reason": "Error"}}
    pods = [
        pod("m-b", waiting="CrashLoopBackOff", message="back-off 10s", lastState=last),
        pod("m-a", waiting="CrashLoopBackOff", message="back-off 20s", lastState=last),
        pod("m-c"),
    ]
    stuck = pod_problem_of(pods)
    assert stuck is not None
    assert (stuck.reason, stuck.pods) == ("CrashLoopBackOff", 2)
    assert stuck.message.startswith("pod m-a: container server: CrashLoopBackOff: back-off 20s")
    assert "(last run: Error, exit code 3)" in stuck.message
    assert stuck.message.endswith("(1 more pods likewise)")


def test_terminating_pods_are_not_reported() -> None:
    going = pod("old", waiting="CrashLoopBackOff")
    going["metadata"]["deletionTimestamp"] = NOW
    assert pod_problem_of([going]) is None


def test_a_stuck_new_revision_degrades_the_model_and_says_the_old_one_still_serves() -> None:
    # The rollout to B hangs: the new pod cannot pull its image, the old ones serve A.
    dep = deployment(B, rolling=True)
    stuck = pod("ctr-new", waiting="ImagePullBackOff", message="Back-off pulling image")
    patch = status_patch(
        im_body(), dep, None, now=NOW, verified=VERIFIED, artifact=B, pods=[pod("ctr-old"), stuck]
    )
    conds = conditions(patch)
    assert conds["Degraded"].true
    assert conds["Degraded"].reason == "ImagePullBackOff"
    assert "pod ctr-new: container server: ImagePullBackOff" in conds["Degraded"].message
    assert conds["Ready"].reason == "ImagePullBackOff"
    assert not conds["Ready"].true


def test_healthy_pods_leave_the_status_as_before() -> None:
    dep = deployment(A)
    with_pods = status_patch(
        im_body(), dep, None, now=NOW, verified=VERIFIED, artifact=A, pods=[pod("a"), pod("b")]
    )
    without = status_patch(im_body(), dep, None, now=NOW, verified=VERIFIED, artifact=A)
    assert with_pods == without
    assert conditions(with_pods)["Ready"].true
