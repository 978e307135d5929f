import pytest

from fleet.core.convergence import ServiceView, State, assess
from fleet.core.tasks import Instance, Task

NOW = 1_000.0
SVC = ServiceView(name="s_inference", image="fleet/inference:2", replicas=2, has_healthcheck=True,
                  consul_name="inference", version="2")


def task(i, state="running", health="healthy", image="fleet/inference:2", **kw):
    return Task(id=f"t{i}", service="s_inference", slot=i, node="n", image=image, state=state,
                desired_state=kw.pop("desired_state", "running"), health=health, created_at=kw.pop("created_at", NOW - 5),
                **kw)


def inst(i, status="passing", version="2"):
    return Instance(id=f"inference-t{i}", name="inference", address="10.0.0.1", port=8000, version=version,
                    role="stable", task_id=f"t{i}", status=status, output="HTTP GET ... 503 loading")


CASES = [
    ("all-healthy-and-passing", SVC, [task(1), task(2)], [inst(1), inst(2)], State.CONVERGED, "2 passing"),
    ("one-still-starting", SVC, [task(1), task(2, health="starting")], [inst(1)], State.PROGRESSING, "1/2"),
    ("healthy-but-consul-critical", SVC, [task(1), task(2)], [inst(1), inst(2, "critical")], State.PROGRESSING,
     "Consul: 1/2 passing"),
    ("consul-old-version-is-not-converged", SVC, [task(1), task(2)], [inst(1), inst(2, version="1")],
     State.PROGRESSING, "version 2"),
    ("instances-of-other-tasks-do-not-count", SVC, [task(1), task(2)], [inst(1), inst(3)], State.PROGRESSING,
     "1/2 passing"),
    ("old-image-tasks-do-not-count", SVC, [task(1), task(2, image="fleet/inference:1")], [inst(1), inst(2)],
     State.PROGRESSING, "1/2"),
    ("missing-image", SVC, [task(1, state="rejected", health=None, error="No such image: fleet/inference:9")], [],
     State.FAILED, "cannot be found"),
    ("unhealthy-names-health-output", SVC, [task(1, health="unhealthy", health_output='{"phase":"loading"}')], [],
     State.FAILED, '"phase":"loading"'),
    ("a-replica-swarm-stops-drains-unhealthy-by-design", SVC,
     [task(1), task(2), task(3, health="unhealthy", desired_state="shutdown",
                                 health_output="no answer from http://127.0.0.1:8001/ready: [Errno 111] refused")],
     [inst(1), inst(2)], State.CONVERGED, "2 passing"),
    ("killed-as-unhealthy-is-unhealthy", SVC, [task(1, state="failed", health="unhealthy", exit_code=137,
                                                  error="task: non-zero exit (137): dockerexec: unhealthy container",
                                                  health_output="phase loading")], [], State.FAILED, "phase loading"),
    ("crashed-container-marked-unhealthy-is-a-crash", SVC,
     [task(1, state="failed", health="unhealthy", exit_code=3, error="task: non-zero exit (3)"),
      task(2, state="failed", health="unhealthy", exit_code=3, error="task: non-zero exit (3)")], [], State.FAILED,
     "exit code 3"),
    ("one-crash-is-not-yet-a-loop", SVC, [task(1, state="failed", health=None, exit_code=3), task(2, "starting", None)],
     [], State.PROGRESSING, "0/2"),
    ("two-crashes-are-a-loop", SVC, [task(1, state="failed", health=None, exit_code=3, error="task: non-zero exit (3)"),
                                     task(2, state="failed", health=None, exit_code=3)], [], State.FAILED, "exit code 3"),
    ("crash-then-swarm-rollback", ServiceView(**{**SVC.__dict__, "update_state": "rollback_started"}),
     [task(1, state="failed", health=None, exit_code=3)], [], State.FAILED, "exit code 3"),
    ("swarm-rollback-alone", ServiceView(**{**SVC.__dict__, "update_state": "rollback_completed",
                                            "update_message": "rollback completed"}), [task(1), task(2)], [],
     State.FAILED, "rolled the update back"),
    ("swarm-update-still-monitoring", ServiceView(**{**SVC.__dict__, "update_state": "updating"}),
     [task(1), task(2)], [inst(1), inst(2)], State.PROGRESSING, "still in progress"),
    ("swarm-update-completed", ServiceView(**{**SVC.__dict__, "update_state": "completed"}),
     [task(1), task(2)], [inst(1), inst(2)], State.CONVERGED, "2 passing"),
    ("pending-within-grace", SVC, [task(1, state="pending", health=None, created_at=NOW - 5,
                                        message="no suitable node")], [], State.PROGRESSING, "0/2"),
    ("pending-past-grace-quotes-swarm", SVC, [task(1, state="pending", health=None, created_at=NOW - 60,
                                                   message="no suitable node (insufficient resources on 1 node)")],
     [], State.FAILED, "no suitable node (insufficient resources on 1 node)"),
    ("no-consul-service-converges-on-tasks", ServiceView(name="s_gw", image="gw:1", replicas=1, has_healthcheck=True),
     [task(1, image="gw:1")], None, State.CONVERGED, "1/1"),
    ("no-healthcheck-running-is-enough", ServiceView(name="s_x", image="x:1", replicas=1, has_healthcheck=False),
     [task(1, image="x:1", health=None)], None, State.CONVERGED, "1/1"),
    # on another node than the engine's, a container cannot be inspected: Swarm's `running` says healthy
    ("remote-running-task-counts-as-healthy", SVC, [task(1), task(2, health=None)], [inst(1), inst(2)],
     State.CONVERGED, "2 passing"),
    ("remote-starting-task-does-not-count", SVC, [task(1), task(2, state="starting", health=None)], [inst(1)],
     State.PROGRESSING, "1/2"),
    ("pinned-digest-must-match", ServiceView(**{**SVC.__dict__, "digest": "sha256:new"}),
     [task(1, digest="sha256:new"), task(2, digest="sha256:old")], [inst(1), inst(2)], State.PROGRESSING, "1/2"),
    ("pinned-digest-on-every-task-converges", ServiceView(**{**SVC.__dict__, "digest": "sha256:new"}),
     [task(1, digest="sha256:new"), task(2, digest="sha256:new")], [inst(1), inst(2)], State.CONVERGED, "2 passing"),
]


@pytest.mark.parametrize("svc,tasks,instances,state,reason", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_assess_truth_table(svc, tasks, instances, state, reason):
    v = assess(svc, tasks, instances, NOW, pending_grace=20)
    assert v.state is state, v.reason
    assert reason in v.reason


def killed_unhealthy(i):
    return task(i, state="failed", health="unhealthy", exit_code=137, desired_state="shutdown",
                error="task: non-zero exit (137): dockerexec: unhealthy container", health_output="deadline exceeded")


@pytest.mark.parametrize("killed,new,state", [
    (1, False, State.FAILED),  # an update: Swarm rolls it back, so one is a fault
    (1, True, State.PROGRESSING),  # a first start on a busy cluster: Swarm starts another
    (2, True, State.PROGRESSING),
    (3, True, State.FAILED),  # again and again: a real fault
])
def test_a_new_service_may_turn_unhealthy_once_or_twice_on_a_cold_start(killed, new, state):
    tasks = [killed_unhealthy(i) for i in range(1, killed + 1)] + [task(9, health="starting")]
    v = assess(SVC, tasks, [], NOW, new=new)
    assert v.state is state, v.reason
    assert "deadline exceeded" in v.reason


def test_waiting_says_what_for_on_which_node():
    tasks = [task(1, state="preparing", health=None), task(2, health="starting"), task(3, state="pending", health=None)]
    tasks[0] = Task(**{**tasks[0].__dict__, "node": "node2"})
    v = assess(SVC, tasks, [], NOW)
    assert v.state is State.PROGRESSING
    assert "pulling the image on node2" in v.reason and "starting up" in v.reason and "waiting for a node" in v.reason
