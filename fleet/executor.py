"""The executor: carries out the pure core's actions, intent first, through narrow interfaces.

The rollout's side effects go through two Protocols named by intent: `Cluster` (what is done to Swarm
and to Consul's traffic) and `Ledger` (where the rollout's intent and outcome are written, fenced by the
lock). fleet/cluster.py implements them on Docker and Consul; the unit tests implement them with fakes
that apply each write to in-memory state, and kill the controller between any two of them.

`run_loop` is the controller's loop with the clock and the evidence injected: for each event it asks
`rollout.step`, saves the new state (the intent) and only then acts, so a controller killed at any
instant leaves a state from which `rollout.resumed` reaches a safe end.
"""
import time
from collections.abc import Callable
from typing import Protocol

from .core.events import Event
from .core.records import Revision, RolloutState, build_of
from .core.rollout import (TERMINAL, Action, AskGate, CheckGolden, CutCanary, Finish, Phase, Plan, PromoteStable,
                      RevertStable, Rollout, SetShare, StableObserved, step)
from .core.traffic import weights_for


class Cluster(Protocol):
    """What a rollout does to Swarm and to Consul's traffic, named by intent. Idempotent each."""

    def stable_runs(self, image: str, container: dict | None) -> bool:
        """Whether the stable service's spec is the canary's: its image, and the container settings a
        deploy's canary carries (environment, command, entrypoint, resources), when given."""

    def stable_replicas(self) -> int: ...

    def stable_image(self) -> str:
        """The image the stable's spec names, without a digest."""

    def stable_rolled_back_since(self, since: float) -> bool: ...

    def stable_spec_key(self) -> str:
        """A fingerprint of the stable's spec: another one means someone else changed the service."""

    def create_canary(self, image: str, replicas: int, container: dict | None) -> str:
        """The canary service beside the stable (the stable's spec with `image` and `container`); its id."""

    def resolve(self, image: str) -> str:
        """What `image` names now: pinned by its registry's digest where it has one, its image ID
        (`sha256:…`) where only the engine has it, else as given."""
        ...

    def canary_image(self) -> str:
        """The canary's image as Swarm pinned it (with its digest, or the engine's image ID)."""

    def set_weights(self, stable: int | None, canary: int | None) -> None: ...

    def take_canary_out(self, reason: str) -> None:
        """Share 0 at once: the canary's Consul instances into maintenance (out of DNS, so the gateway)."""

    def remove_canary(self) -> None: ...

    def canary_gone(self) -> bool: ...

    def update_stable(self, image: str, container: dict | None) -> None:
        """Swarm's own rolling update of the stable service to the canary's image and container settings
        (its update_config, failure_action rollback)."""

    def revert_stable(self) -> None:
        """Swarm's rollback of the stable service to its previous spec."""


class Ledger(Protocol):
    """The rollout's state, control and history; writes are refused once the lock is lost."""

    def load(self) -> RolloutState | None: ...

    def begin(self, state: RolloutState) -> None:
        """A new rollout's state, with no control request left from before it."""

    def save(self, state: RolloutState) -> None: ...

    def record(self, revision: Revision) -> None: ...

    def history(self) -> list[Revision]: ...

    def clear(self) -> None: ...


class Hooks(Protocol):
    """Evidence sources the actions start (golden check, metrics window, gate, promotion watch)."""

    def golden(self) -> None: ...

    def gate(self, name: str) -> None: ...

    def traffic_started(self) -> None: ...

    def promotion(self, since: float) -> None: ...


class NoHooks:
    def golden(self) -> None:
        pass

    def gate(self, name: str) -> None:
        pass

    def traffic_started(self) -> None:
        pass

    def promotion(self, since: float) -> None:
        pass


class Executor:
    def __init__(self, cluster: Cluster, ledger: Ledger, state: RolloutState, hooks: Hooks = NoHooks(),
                 clock: Callable[[], float] = time.time):
        self.cluster, self.ledger, self.state, self.hooks, self.clock = cluster, ledger, state, hooks, clock

    def begin(self, replicas: int, now: float) -> None:
        """The start of every canary, in the order that a kill at any point leaves safe: no share for the
        canary whatever a key said, the intent saved (from here a killed controller leaves a rollout to
        resume), the history's in-progress record, then the canary, its id and pinned image saved."""
        s = self.state
        self.cluster.set_weights(None, 0)
        self.ledger.begin(s)
        self.ledger.record(s.started(now))
        s.stable_spec = self.cluster.stable_spec_key()
        s.canary_id = self.cluster.create_canary(s.image, replicas, s.container)
        s.canary_image = self.cluster.canary_image()
        self.ledger.save(s)

    def intend(self, r: Rollout, actions: list[Action], event: Event | None = None) -> None:
        """Save the state that intends `actions` before any of them runs (fenced: raises LockLost)."""
        if any(isinstance(a, PromoteStable) for a in actions) and self.state.promotion_started is None:
            self.state.promotion_started = self.clock() - 1
        before = self.state.rollout
        self.state.rollout = r
        if event is not None and (before.phase, before.share) != (r.phase, r.share):
            self.note("phase", f"{r.phase.value} at {r.share}% after {type(event).__name__}: {r.reason}"
                      if r.reason else f"{r.phase.value} at {r.share}%")
        if event is not None and before.paused != r.paused:
            self.note("pause" if r.paused else "resume", r.reason)
        self.ledger.save(self.state)

    def execute(self, a: Action, plan: Plan) -> None:
        c = self.cluster
        if isinstance(a, CheckGolden):
            self.hooks.golden()
        elif isinstance(a, SetShare):
            stable_w, canary_w = weights_for(a.percent, plan.canary_replicas, c.stable_replicas())
            c.set_weights(stable_w, canary_w)
            self.hooks.traffic_started()
            self.note("share", f"{a.percent}% (weights stable {stable_w}, canary {canary_w})")
        elif isinstance(a, CutCanary):
            c.take_canary_out(a.reason)
            self.note("cut", a.reason)
            c.set_weights(None, 0)
            c.remove_canary()
        elif isinstance(a, AskGate):
            self.note("gate", f"asking the {a.gate} gate")
            self.hooks.gate(a.gate)
        elif isinstance(a, PromoteStable):
            # what the canary ran (pinned by digest), never the tag resolved again: it may name another
            # build by now, which nobody judged
            shipped = self.state.shipped
            now = c.resolve(self.state.image)
            judged, named = build_of(shipped), build_of(now)
            if judged and named and named != judged:
                self.note("tag", f"tag {self.state.image} now points to {named}; the canary judged {judged}; "
                                 f"{judged} shipped")
            elif shipped.startswith("sha256:") and now == shipped and c.stable_image() != self.state.image:
                # the engine's tag names the judged build still: shipped by its name, unless the stable's spec
                # names that tag already (an earlier build of it, which Swarm would keep running)
                shipped = self.state.image
            runs = c.stable_runs(shipped, self.state.container)
            if not runs and self.state.stable_spec and c.stable_spec_key() != self.state.stable_spec:
                # a `docker stack deploy` by hand between the promotion's intent and this update: theirs stays
                # (the promotion's watch reports it superseded), never overwritten by a build of the past
                self.note("promote", "not updating the stable service: its spec was changed since the canary "
                                     "started, by someone else")
            else:
                if not runs:
                    c.update_stable(shipped, self.state.container)
                self.note("promote", f"updating the stable service to {shipped}")
            self.hooks.promotion(self.state.promotion_started)
        elif isinstance(a, RevertStable):
            if c.stable_runs(self.state.shipped, self.state.container):
                c.revert_stable()
            self.note("revert", "the stable service rolled back to its previous spec")
        elif isinstance(a, Finish):
            self.note("finish", a.phase.value)

    def observe_stable(self) -> StableObserved:
        since = self.state.promotion_started
        return StableObserved(on_new_image=self.cluster.stable_runs(self.state.shipped, self.state.container),
                              rolled_back=since is not None and self.cluster.stable_rolled_back_since(since))

    def finish(self, r: Rollout, wait: Callable[[], bool] = lambda: True) -> None:
        """The end of every rollout: canary gone, weights put back, outcome recorded, state cleared.
        `wait` is called until the canary is gone (the real one bounds it; fakes are gone at once)."""
        self.cluster.remove_canary()
        while not self.cluster.canary_gone() and wait():
            pass
        self.cluster.set_weights(None, None)
        record = next((h for h in self.ledger.history() if h.revision == self.state.revision), None)
        self.ledger.record((record or self.state.started(None)).ended(self.state, r, self.clock()))
        self.ledger.clear()

    def note(self, what: str, detail: str, at: float | None = None) -> None:
        self.state.note(at or self.clock(), what, detail)


def run_loop(x: Executor, r: Rollout, plan: Plan, actions: list[Action], next_event: Callable[[], Event],
             clock: Callable[[], float] = time.time, on_progress: Callable[[Rollout], None] = lambda r: None,
             check: Callable[[], None] = lambda: None) -> Rollout:
    """Drive the rollout to a terminal phase: each new state is saved before its actions run.
    `check` runs before every action (the lock's fence); whatever it or an action raises escapes."""
    x.intend(r, actions)
    for a in actions:
        check()
        x.execute(a, plan)
    while r.phase not in TERMINAL:
        event = next_event()
        received = clock()
        new, actions = step(r, event, received, plan)
        if new.failure and not r.failure:  # the first failing signal, for the reaction time
            x.note("signal", f"{type(event).__name__}: {new.reason}", at=received)
        if new != r or actions:
            x.intend(new, actions, event)
            on_progress(new)
        for a in actions:
            check()
            x.execute(a, plan)
        r = new
    return r


__all__ = ["Cluster", "Ledger", "Hooks", "Executor", "run_loop", "Phase"]
