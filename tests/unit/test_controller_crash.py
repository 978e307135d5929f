"""The controller killed between any two of its actions, then resumed: over fakes that apply every write
to in-memory state (Swarm's stable and canary services, Consul's weights and maintenance, the ledger),
so the test sees consequences, not call counts. Whatever the instant of the kill, the resumed rollout
ends safely and the history says what really happened:
- the stable service runs the new image  <=> the outcome recorded is `promoted`;
- otherwise the stable service is exactly as it was (never updated, or rolled back by Swarm);
- no canary service, no canary in maintenance left registered, no weights left, no state left.
"""
import json
from dataclasses import dataclass, field

import pytest

from fleet.adapters.consul import ConsulUnavailable
from fleet.core.analysis import Stats
from fleet.controller import _abandon
from fleet.errors import Unreachable
from fleet.core.events import ConsulView, GoldenChecked, MetricsSample, PromotionObserved, Tick
from fleet.core.records import Revision, RolloutState
from fleet.core.rollout import TERMINAL, Phase, Plan, Rollout, resumed, start
from fleet.core.tasks import Instance
from fleet.executor import Executor, run_loop

OLD, NEW = "fleet/inference:1", "fleet/inference:2"
PLAN = Plan(steps=(10, 50), step_duration=10, progress_deadline=60, canary_replicas=1, version="2")


class Killed(BaseException):
    """The controller process dies here (BaseException: nothing in the controller may catch it)."""


@dataclass
class World:
    """Swarm and Consul as the fakes leave them; `budget` side effects before the kill (None: never)."""
    stable_image: str = OLD
    stable_updates: int = 0
    rolled_back: bool = False
    canary: bool = False
    weights: dict = field(default_factory=dict)
    maintenance: bool = False
    state: RolloutState | None = None
    history: dict[int, Revision] = field(default_factory=dict)
    budget: int | None = None
    swarm_fails_promotion: bool = False
    tags: dict = field(default_factory=dict)  # a tag pushed again: what the registry names by it now
    hand_deploy_at: Phase | None = None  # someone's `docker stack deploy` once a state of this phase is saved
    hand_deployed: bool = False
    canary_ref: str = f"{NEW}@sha256:{'0' * 64}"  # the canary's image as Swarm pinned it
    stable_build: str | None = None  # the engine's image ID that the stable's containers run (None: not known)

    @property
    def stable_name(self) -> str:
        return self.stable_image.split("@")[0]

    def act(self) -> None:
        if self.budget is not None:
            if self.budget == 0:
                raise Killed()
            self.budget -= 1


class FakeCluster:
    def __init__(self, w: World):
        self.w = w

    def stable_runs(self, image, container):  # as changes.runs: the name, and the digest where `image` has one
        if (image.startswith("sha256:") and self.resolve(self.w.stable_image) == image  # SwarmCluster._named
                and self.w.stable_build in (None, image)):
            image = self.w.stable_image
        return self.w.stable_name == image.split("@")[0] and ("@" not in image or self.w.stable_image == image)

    def resolve(self, image):  # a tag, as the registry names it now
        return self.w.tags.get(image, image)

    def stable_replicas(self):
        return 2

    def stable_image(self):
        return self.w.stable_name

    def stable_rolled_back_since(self, since):
        return self.w.rolled_back

    def stable_spec_key(self):
        return f"{self.w.stable_image} {self.w.stable_updates} {self.w.hand_deployed}"

    def create_canary(self, image, replicas, container):
        self.w.act()
        self.w.canary = True
        return "canary-id"

    def canary_image(self):
        return self.w.canary_ref if self.w.canary else ""

    def set_weights(self, stable, canary):
        self.w.act()
        for role, weight in (("stable", stable), ("canary", canary)):
            if weight is None:
                self.w.weights.pop(role, None)
            else:
                self.w.weights[role] = weight

    def take_canary_out(self, reason):
        self.w.act()
        self.w.maintenance = self.w.canary

    def remove_canary(self):
        self.w.act()
        self.w.canary = self.w.maintenance = False

    def canary_gone(self):
        return not self.w.canary

    def update_stable(self, image, container):
        self.w.act()
        self.w.stable_updates += 1
        if self.w.swarm_fails_promotion:  # Swarm's failure_action: rollback, by itself
            self.w.rolled_back = True
        else:
            self.w.stable_image = image
            self.w.stable_build = self.resolve(image) if self.w.stable_build else None

    def revert_stable(self):
        self.w.act()
        self.w.stable_image = OLD


class FakeLedger:
    def __init__(self, w: World):
        self.w = w

    def load(self):
        return self.w.state

    def begin(self, state):
        self.save(state)

    def save(self, state):  # as Consul keeps it: JSON
        self.w.act()
        self.w.state = RolloutState.from_dict(json.loads(json.dumps(state.to_dict())))
        if state.phase is self.w.hand_deploy_at and not self.w.hand_deployed:
            self.w.hand_deployed = True  # the stable's environment changed by hand: not the canary's spec

    def record(self, revision):
        self.w.act()
        self.w.history[revision.revision] = Revision.from_dict(json.loads(json.dumps(revision.to_dict())))

    def history(self):
        return [self.w.history[k] for k in sorted(self.w.history)]

    def clear(self):
        self.w.act()
        self.w.state = None


class Clock:
    def __init__(self):
        self.now = 1_000.0

    def __call__(self):
        return self.now


def evidence(w: World, clock: Clock):
    """What the sources would report, given the world as it is now: the canary ready and passing in
    Consul, golden passing, good metrics, and the stable update's outcome once it was issued."""
    def next_event():
        clock.now += 1.0
        canary = Instance("inference-c", "inference", "10.0.0.9", 8000, "2", "canary", "c",
                          "critical" if w.maintenance else "passing")
        cycle = int(clock.now) % 4
        if w.hand_deployed and w.state and w.state.phase is Phase.PROMOTING:
            return PromotionObserved("superseded", "the stable service's spec was changed during the promotion")
        if w.stable_updates and (w.stable_name == NEW or w.stable_image == w.canary_ref):  # by tag, or by ID
            return PromotionObserved("converged", "2/2 healthy")
        if w.rolled_back:
            return PromotionObserved("failed", "Swarm rolled the update back")
        if cycle == 0:
            return ConsulView((canary,) if w.canary else ())
        if cycle == 1:
            return GoldenChecked(True, "accuracy 0.92")
        if cycle == 2:
            return MetricsSample(Stats(100 * int(clock.now), 0, int(clock.now)),
                                 Stats(900 * int(clock.now), 0, 9 * int(clock.now)))
        return Tick()
    return next_event


def begin(w: World, clock: Clock) -> tuple[Executor, Rollout]:
    """The start of a rollout before its loop, as `controller.run_canary` makes it: `Executor.begin`."""
    state = RolloutState(2, NEW, OLD, PLAN, start(clock()))
    x = Executor(FakeCluster(w), FakeLedger(w), state, clock=clock)
    x.begin(PLAN.canary_replicas, clock())
    return x, state.rollout


def drive(x: Executor, r: Rollout, actions, w: World, clock: Clock) -> Rollout:
    r = run_loop(x, r, PLAN, actions, evidence(w, clock), clock=clock)
    x.finish(r)
    return r


def resume(w: World, clock: Clock) -> Rollout | None:
    """What `fleet rollout --resume` does: decide from the saved state and what Swarm shows now."""
    if w.state is None:
        return None
    state = RolloutState.from_dict(w.state.to_dict())
    x = Executor(FakeCluster(w), FakeLedger(w), state, clock=clock)
    clock.now += 60  # the dead holder's lock lapses
    r, actions = resumed(state.rollout, clock(), x.observe_stable())
    return drive(x, r, actions, w, clock)


def _count(world) -> int:
    w, clock = World(budget=10_000, **world), Clock()
    x, r = begin(w, clock)
    drive(x, r, [], w, clock)
    return 10_000 - w.budget


def assert_safe(w: World, outcome: str | None):
    assert w.state is None, "no rollout state may be left behind"
    assert not w.canary and not w.maintenance and w.weights == {}
    record = w.history[2]
    if w.stable_name == NEW:
        assert record.outcome == "promoted", record
    else:
        assert record.outcome in ("aborted", "rolled_back"), record
        assert w.stable_name == OLD
    if outcome is not None:
        assert record.outcome == outcome


def test_an_uninterrupted_rollout_promotes():
    w, clock = World(), Clock()
    x, r = begin(w, clock)
    r = drive(x, r, [], w, clock)
    assert r.phase is Phase.PROMOTED and w.stable_name == NEW and w.stable_updates == 1
    assert_safe(w, "promoted")


@pytest.mark.parametrize("fails", [False, True], ids=["swarm-completes", "swarm-rolls-back"])
def test_killed_between_any_two_actions_then_resumed_ends_safely(fails):
    total = _count({"swarm_fails_promotion": fails})
    assert total > 10  # creates, saves, weights, cut, promotion, finish: every one a place to die
    for kill_at in range(total):
        w, clock = World(budget=kill_at, swarm_fails_promotion=fails), Clock()
        try:
            x, r = begin(w, clock)
            drive(x, r, [], w, clock)
        except Killed:
            pass
        else:
            pytest.fail(f"the kill at action {kill_at} did not happen")
        w.budget = None
        r = resume(w, clock)
        if r is not None:
            assert r.phase in TERMINAL
        if w.state is None and 2 not in w.history:
            assert w.stable_name == OLD and not w.canary  # killed before anything was written
            continue
        expected = "rolled_back" if fails and w.stable_updates else None
        assert_safe(w, expected)
        assert w.stable_updates <= 1, f"killed at action {kill_at}: the stable was updated twice"


class ConsulDownCluster(FakeCluster):
    """Consul stops answering once traffic shifted: weights and maintenance raise, Swarm still works."""

    def set_weights(self, stable, canary):
        if self.w.weights:
            raise ConsulUnavailable("Consul does not answer (connection refused)")
        super().set_weights(stable, canary)

    def take_canary_out(self, reason):
        raise ConsulUnavailable("Consul does not answer (connection refused)")


def test_an_adapter_error_mid_rollout_ends_in_the_safe_path_and_names_what_is_left():
    w, clock = World(), Clock()
    x, r = begin(w, clock)
    x.cluster = ConsulDownCluster(w)
    with pytest.raises(ConsulUnavailable) as raised:
        run_loop(x, r, PLAN, [], evidence(w, clock), clock=clock)
    with pytest.raises(Unreachable) as ended:
        _abandon(x, x.state.rollout, raised.value)
    message = str(ended.value)
    assert ended.value.exit_code == 3
    assert not w.canary and w.stable_name == OLD and w.stable_updates == 0  # canary removed, stable untouched
    assert "canary traffic" in message and "traffic weights" in message  # what could not be undone is named
    assert ended.value.result.phase is Phase.ROLLED_BACK  # --json reports the outcome, as on any other end


def test_a_tag_pushed_again_during_the_rollout_is_named_and_never_shipped():
    """On the 3-node cluster the same tag was pushed again (build B) while its canary (build A) ran: the
    promotion updated the stable to the tag, resolved again, so B shipped, which no canary judged."""
    judged = f"{NEW}@sha256:{'0' * 64}"  # what FakeCluster.canary_image pins
    w, clock = World(tags={NEW: f"{NEW}@sha256:{'b' * 64}"}), Clock()
    x, r = begin(w, clock)
    r = drive(x, r, [], w, clock)
    assert r.phase is Phase.PROMOTED and w.stable_image == judged, w.stable_image
    record = w.history[2]
    assert record.pinned == judged
    notes = [e["detail"] for e in record.timeline if e["event"] == "tag"]
    assert notes == [f"tag {NEW} now points to sha256:{'b' * 64}; the canary judged sha256:{'0' * 64}; "
                     f"sha256:{'0' * 64} shipped"], record.timeline


def test_a_hand_deploy_between_the_promotions_intent_and_its_update_stays_and_is_superseded():
    """`fleet status` shows `promoting` (the state is saved before the update is issued); a `docker stack deploy`
    by hand lands in that instant: the promotion must not overwrite it with the canary's spec."""
    w, clock = World(hand_deploy_at=Phase.PROMOTING), Clock()
    x, r = begin(w, clock)
    r = drive(x, r, [], w, clock)
    assert w.hand_deployed and w.stable_updates == 0 and w.stable_name == OLD, "theirs stays"
    assert r.phase is Phase.SUPERSEDED and w.history[2].outcome == "superseded", r
    notes = [e["detail"] for e in w.history[2].timeline if e["event"] == "promote"]
    assert notes == ["not updating the stable service: its spec was changed since the canary started, by someone "
                     "else"], notes


@pytest.mark.parametrize("case", ["kept", "moved", "rebuilt"])
def test_an_engine_only_build_ships_under_its_tag_while_the_tag_names_it_and_by_its_id_once_moved(case):
    """An image only on the engine: the canary runs its image ID, resolved once; the promotion ships the tag
    while the tag names that build, and the ID (named in the timeline) once the tag names another. A stable
    whose spec names the tag already (a tag rebuilt under it: its containers run the earlier build) gets
    the ID: the same tag again would change nothing in its spec, and Swarm would restart nothing."""
    judged, other = f"sha256:{'0' * 64}", f"sha256:{'b' * 64}"
    moved = case == "moved"
    w, clock = World(tags={NEW: other if moved else judged}, canary_ref=judged), Clock()
    if case == "rebuilt":
        w.stable_image, w.stable_build = NEW, f"sha256:{'a' * 64}"
    x, r = begin(w, clock)
    r = drive(x, r, [], w, clock)
    assert r.phase is Phase.PROMOTED and w.stable_image == (NEW if case == "kept" else judged), w.stable_image
    assert w.stable_updates == 1
    record = w.history[2]
    assert record.pinned == judged  # what `fleet rollback --to 2` puts back
    notes = [e["detail"] for e in record.timeline if e["event"] == "tag"]
    assert notes == ([f"tag {NEW} now points to {other}; the canary judged {judged}; {judged} shipped"] if moved
                     else []), record.timeline
