"""The pure rules fleet needs on several nodes: a canary judged from Swarm's task states, control
requests applied once, image references read as Docker reads them, a node's reachable address."""
import pytest

from fleet.adapters.registry import Reference, loopback
from fleet.adapters.swarm import node_address
from fleet.core.control import ControlRequest, decode, to_apply
from fleet.core.events import TaskFailed
from fleet.core.tasks import Task
from fleet.core.rollout import CutCanary, Finish, Phase, Plan, Reason, start, step
from fleet.core.taskstates import PENDING_BOUND, task_failure


def task(state="running", desired="running", node="fleet-node2", err="", message="", exit_code=None, id="t1"):
    return Task(id=id, service="s", slot=1, node=node, image="img", state=state, desired_state=desired, error=err,
                message=message, exit_code=exit_code, created_at=1.0)


READY = {"fleet-node2": "ready"}
TASK_CASES = [
    # (id, tasks, seconds pending by id, node states, failure contains or None)
    ("running-is-fine", [task()], {}, READY, None),
    ("starting-is-fine", [task("starting")], {}, READY, None),
    ("preparing-is-fine-however-long", [task("preparing")], {"t1": 600}, READY, None),
    ("crash-names-exit-code", [task("failed", "shutdown", err="task: non-zero exit (3)", exit_code=3)], {}, READY,
     "exit code 3"),
    ("crash-names-the-node", [task("failed", "shutdown", err="task: non-zero exit (3)", exit_code=3)], {}, READY,
     "on fleet-node2"),
    ("no-such-image-rejected", [task("rejected", "shutdown", err="No such image: reg/x:1", exit_code=0)], {}, READY,
     "No such image: reg/x:1"),
    ("exit-0-of-a-server-fails", [task("complete", "running", exit_code=0)], {}, READY, "complete"),
    ("replaced-task-still-counts", [task("failed", "shutdown", err="oom", id="t1"), task("running", id="t2")], {},
     READY, "oom"),
    ("node-down", [task()], {}, {"fleet-node2": "down"}, "node fleet-node2 is down"),
    ("pending-briefly-is-fine", [task("pending", message="pending task scheduling")], {"t1": 3}, READY, None),
    ("pending-past-bound-names-swarm-reason", [task("pending", err="no suitable node (insufficient resources on 3 nodes)")],
     {"t1": PENDING_BOUND + 1}, READY, "no suitable node"),
    ("orphaned", [task("orphaned")], {}, READY, "orphaned"),
]


@pytest.mark.parametrize("tasks,pending,nodes,expected", [c[1:] for c in TASK_CASES], ids=[c[0] for c in TASK_CASES])
def test_task_states_judge_the_canary(tasks, pending, nodes, expected):
    why = task_failure(tasks, pending, nodes)
    if expected is None:
        assert why is None
    else:
        assert why is not None and expected in why, why


def test_a_rejected_task_never_ran_so_names_no_exit_code():
    why = task_failure([task("rejected", "shutdown", err="No such image: reg/x:1", exit_code=0)], {}, READY)
    assert "exit code" not in why


@pytest.mark.parametrize("phase", [Phase.STARTING, Phase.VERIFYING, Phase.STEPPING, Phase.PAUSED])
def test_a_failed_task_rolls_the_canary_back_in_every_judged_phase(phase):
    from dataclasses import replace
    r = replace(start(0.0), phase=phase)
    new, actions = step(r, TaskFailed("canary task abc on fleet-node2 failed: task: non-zero exit (3) (exit code 3)"),
                        1.0, Plan())
    assert new.phase is Phase.ROLLED_BACK and new.failure is Reason.TASK_FAILED and "exit code 3" in new.reason
    assert [type(a) for a in actions] == [CutCanary, Finish]


def test_a_failed_canary_task_does_not_stop_a_promotion():
    from dataclasses import replace
    r = replace(start(0.0), phase=Phase.PROMOTING)
    new, actions = step(r, TaskFailed("canary task gone"), 1.0, Plan())
    assert new.phase is Phase.PROMOTING and actions == []


REQ = ControlRequest("promote", 7, "abc")
CONTROL_CASES = [
    # (id, request, its Consul index, rollout revision, lock index, applied ids, applied?)
    ("for-this-rollout-after-the-lock", REQ, 120, 7, 100, [], True),
    ("made-before-the-controller-took-the-lock", REQ, 90, 7, 100, [], False),
    ("for-an-earlier-rollout", ControlRequest("promote", 6, "abc"), 120, 7, 100, [], False),
    ("delivered-again", REQ, 120, 7, 100, ["abc"], False),
    ("none", None, 0, 7, 100, [], False),
    ("abort-too", ControlRequest("abort", 7, "x"), 120, 7, 100, ["abc"], True),
]


@pytest.mark.parametrize("request_,index,revision,lock_index,applied,expected",
                         [c[1:] for c in CONTROL_CASES], ids=[c[0] for c in CONTROL_CASES])
def test_control_requests_apply_once_to_their_rollout(request_, index, revision, lock_index, applied, expected):
    assert (to_apply(request_, index, revision, lock_index, applied) is not None) is expected


@pytest.mark.parametrize("raw", [b"promote", b"", None, b"{}", b'{"action": "delete", "revision": 1}',
                                 b'{"action": "promote", "revision": "7"}', b"\xff"])
def test_control_values_that_are_not_requests_are_none(raw):
    assert decode(raw) is None


def test_a_request_round_trips():
    r = ControlRequest.new("abort", 3)
    assert decode(r.encode().encode()) == r and len(r.id) == 32


@pytest.mark.parametrize("image,expected", [
    ("127.0.0.1:31500/fleet/inference:2", ("127.0.0.1:31500", "fleet/inference", "2")),
    ("127.0.0.1:31500/fleet/inference:2@sha256:ab", ("127.0.0.1:31500", "fleet/inference", "sha256:ab")),
    ("localhost/x", ("localhost", "x", "latest")),
    ("registry.example:5000/a/b/c", ("registry.example:5000", "a/b/c", "latest")),
    ("python:3.11-slim", ("registry-1.docker.io", "library/python", "3.11-slim")),
    ("fleet/inference:2", ("registry-1.docker.io", "fleet/inference", "2")),
])
def test_image_references_read_as_docker_reads_them(image, expected):
    ref = Reference.parse(image)
    assert (ref.registry, ref.repository, ref.reference) == expected


def test_loopback_registries():
    assert loopback("127.0.0.1:31500") and loopback("localhost:5000") and loopback("[::1]:5000")
    assert not loopback("10.0.0.2:5000") and not loopback("registry.example")


@pytest.mark.parametrize("attrs,expected", [
    ({"Status": {"Addr": "10.0.0.3"}}, "10.0.0.3"),
    ({"Status": {"Addr": "0.0.0.0"}, "ManagerStatus": {"Addr": "10.0.0.2:2377"}}, "10.0.0.2"),
    ({"Status": {"Addr": "127.0.0.1"}, "ManagerStatus": {"Addr": "10.0.0.2:2377"}}, "10.0.0.2"),
    ({"Status": {"Addr": "127.0.0.1"}, "ManagerStatus": {"Addr": "127.0.0.1:2377"}}, ""),
])
def test_a_node_address_others_can_reach(attrs, expected):
    assert node_address(attrs) == expected


@pytest.mark.parametrize("constraints,node,allowed", [
    (None, {"role": "worker"}, True),
    (["node.role == manager"], {"role": "manager"}, True),
    (["node.role == manager"], {"role": "worker"}, False),
    (["node.role==worker"], {"role": "worker"}, True),
    (["node.role != manager"], {"role": "manager"}, False),
    (["node.hostname == n1", "node.role == manager"], {"hostname": "n1", "role": "manager"}, True),
    (["node.hostname == n1"], {"hostname": "n2"}, False),
    (["node.labels.consul == server"], {"labels": {"consul": "server"}}, True),
    (["node.labels.consul == server"], {"labels": {}}, False),
    (["node.labels.consul != server"], {"labels": {}}, True),
    (["node.platform.os == linux"], {"os": "linux"}, True),
    (["engine.labels.gpu == true"], {"engine_labels": {"gpu": "false"}}, False),
    (["something.unknown == 1"], {}, True),  # unread: allows, as before constraints were read
])
def test_a_global_services_constraints_decide_which_nodes_it_wants_a_task_on(constraints, node, allowed):
    from fleet.core.placement import allows
    assert allows(constraints, node) is allowed
