"""The evidence sources of a rollout (fleet/evidence.py) over fakes of what they read (its `Reach`): the
control key's requests applied once each, and only this canary's tasks' instances counted."""
from types import SimpleNamespace

from fleet.core.control import ControlRequest
from fleet.core.events import ControlRequested, SourceUp
from fleet.core.records import RolloutState
from fleet.core.rollout import Plan, start
from fleet.core.tasks import Instance, Task
from fleet.evidence import Evidence
from fleet.stream import EventStream

LOCKED_AT = 100  # Consul's index of this controller's lock


class ControlKey:
    """The control key as Consul gives it to a blocking query: each read returns the next write (index,
    request, the index it was written at); once none is left, the stream is stopped."""

    def __init__(self, stream: EventStream, writes: list[tuple[int, ControlRequest | None]]):
        self.stream, self.writes, self.lock_index = stream, list(writes), LOCKED_AT

    def control(self, index=None, wait="5s"):
        if not self.writes:
            self.stream.stop()
            return index, None, 0
        written, request = self.writes.pop(0)
        return written, request, written


def evidence(store=None, swarm=None, stream=None, revision=7) -> tuple[Evidence, RolloutState]:
    state = RolloutState(revision, "fleet/inference:2", "fleet/inference:1", Plan(), start(0.0), canary_id="svc-c")
    t = SimpleNamespace(store=store, swarm=swarm, consul_name="s-inference", stack="s", service="inference")
    return Evidence(t, state, stream or EventStream(), Plan()), state


def test_a_control_request_is_applied_once_and_only_when_it_is_this_rollouts_and_after_the_lock():
    stream = EventStream()
    promote, abort = ControlRequest("promote", 7, "p1"), ControlRequest("abort", 7, "a1")
    writes = [(150, promote), (150, promote),  # the same request seen again (a blocking query's timeout)
              (160, ControlRequest("abort", 6, "old")),  # another rollout's
              (90, ControlRequest("abort", 7, "before")),  # written before this controller took the lock
              (170, abort)]
    ev, state = evidence(ControlKey(stream, writes), stream=stream)
    seen = list(ev._control())
    assert seen == [SourceUp("control"), ControlRequested("promote"), ControlRequested("abort")]
    assert state.control_applied == ["p1", "a1"]  # kept in the rollout's state: a resumed controller skips them


def test_a_resumed_rollout_does_not_apply_again_what_its_state_says_was_applied():
    stream = EventStream()
    ev, state = evidence(ControlKey(stream, [(150, ControlRequest("promote", 7, "p1"))]), stream=stream)
    state.control_applied.append("p1")
    assert list(ev._control()) == [SourceUp("control")]


def test_only_this_canarys_tasks_count_and_swarm_is_asked_once_for_a_new_one():
    asked = []
    tasks = [Task(id="mine", service="s_inference-canary", slot=1, node="n1", image="fleet/inference:2",
                  state="running", desired_state="running")]
    swarm = SimpleNamespace(tasks=lambda service, desired_state=None: asked.append(service) or tasks)
    ev, _ = evidence(swarm=swarm)

    def instance(task_id, role, status="passing"):
        return Instance(id=f"i-{task_id}", name="s-inference", address="10.0.0.1", port=8000, version="2", role=role,
                        task_id=task_id, status=status)
    kept = ev._ours([instance("mine", "canary"), instance("old", "canary", "critical"), instance("s1", "stable")])
    assert [i.task_id for i in kept] == ["mine", "s1"]
    assert asked == ["svc-c"]  # by the canary service's ID
    assert [i.task_id for i in ev._ours([instance("mine", "canary")])] == ["mine"] and asked == ["svc-c"]
