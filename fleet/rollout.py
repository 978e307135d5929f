"""The canary rollout as a state machine: `step(rollout, event, now, plan) -> (rollout, actions)`.

This is a purely computational function with no side-effects: it never calls Docker, Consul or the
clock. The controller (fleet/controller.py) feeds it events and carries out the actions it returns.

    starting --ready--> verifying --golden ok--> stepping (share = steps[0], steps[1], ...)
       --last step passed--> promoting (auto) | paused (--no-auto-promote, waits for `fleet promote`)
       --stable converged--> promoted
    Any failing signal before promotion: the canary's share goes to 0, it is removed -> rolled_back.
"""
from dataclasses import asdict, dataclass, field, replace
from enum import Enum

from .analysis import Judgement, Outcome, Thresholds, judge
from .events import (ContainerEvent, ConsulView, ControlRequested, Event, GoldenChecked, MetricsSample,
                     PromotionObserved, SourceFailed, Tick)


class Phase(str, Enum):
    STARTING = "starting"  # canary service created, replicas loading
    VERIFYING = "verifying"  # replicas ready; golden inputs being checked, no traffic yet
    STEPPING = "stepping"  # the canary gets steps[step] percent of the traffic
    PAUSED = "paused"  # all steps passed, waiting for `fleet promote`
    PROMOTING = "promoting"  # the stable service is being updated to the new image
    PROMOTED = "promoted"
    ROLLED_BACK = "rolled_back"
    ABORTED = "aborted"


TERMINAL = {Phase.PROMOTED, Phase.ROLLED_BACK, Phase.ABORTED}
JUDGED = {Phase.STARTING, Phase.VERIFYING, Phase.STEPPING, Phase.PAUSED}  # the canary's signals count


class Reason(str, Enum):
    TASK_FAILED = "task_failed"
    UNHEALTHY = "unhealthy"
    CONSUL_CRITICAL = "consul_critical"
    METRICS = "metrics"
    GOLDEN = "golden"
    DEADLINE = "progress_deadline"
    NO_EVIDENCE = "no_evidence"
    ABORTED = "aborted"
    PROMOTION_FAILED = "promotion_failed"
    CONTROLLER_LOST = "controller_lost"


@dataclass(frozen=True)
class Plan:
    steps: tuple[int, ...] = (10, 25, 50)
    step_duration: float = 30.0
    progress_deadline: float = 300.0
    auto_promote: bool = True
    canary_replicas: int = 1
    version: str = ""  # the canary's model version, as its replicas report it in Consul
    thresholds: Thresholds = field(default_factory=Thresholds)
    evidence_max_age: float = 5.0  # metrics older than this are stale: no evidence


# Actions: what the controller is to do, in order.
@dataclass(frozen=True)
class CheckGolden:
    pass


@dataclass(frozen=True)
class SetShare:
    percent: int


@dataclass(frozen=True)
class CutCanary:
    """Share 0 at once (the canary's Consul instances go into maintenance), then remove the canary."""
    reason: str


@dataclass(frozen=True)
class PromoteStable:
    pass


@dataclass(frozen=True)
class RevertStable:
    """Roll the stable service's half-done update back (Swarm's previous spec)."""


@dataclass(frozen=True)
class Finish:
    phase: Phase


Action = CheckGolden | SetShare | CutCanary | PromoteStable | RevertStable | Finish


@dataclass(frozen=True)
class Rollout:
    phase: Phase
    started_at: float
    phase_since: float
    step: int = -1
    share: int = 0
    ready: bool = False
    judgement: Judgement | None = None
    judged_at: float | None = None
    reason: str = ""
    failure: Reason | None = None
    last_seen: str = ""  # the latest word on a canary not yet ready, for the deadline's message

    def to_dict(self) -> dict:
        d = asdict(self)
        d["phase"], d["failure"] = self.phase.value, self.failure.value if self.failure else None
        d["judgement"] = {"outcome": self.judgement.outcome.value, "reason": self.judgement.reason} \
            if self.judgement else None
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "Rollout":
        j = d.get("judgement")
        return cls(**{**d, "phase": Phase(d["phase"]), "failure": Reason(d["failure"]) if d.get("failure") else None,
                      "judgement": Judgement(Outcome(j["outcome"]), j["reason"]) if j else None})


def start(now: float) -> Rollout:
    return Rollout(Phase.STARTING, started_at=now, phase_since=now)


def step(r: Rollout, event: Event, now: float, plan: Plan) -> tuple[Rollout, list[Action]]:
    """Pure: the rollout after `event` at time `now`, and the actions that carry it out."""
    if r.phase in TERMINAL:
        return r, []
    if isinstance(event, ControlRequested):
        return _control(r, event.action, now)
    if r.phase is Phase.PROMOTING:
        return _promoting(r, event, now, plan)
    if isinstance(event, ContainerEvent):
        if event.kind in ("die", "oom"):
            return fail(r, now, Reason.TASK_FAILED, f"a canary task stopped ({event.kind}{': ' + event.detail if event.detail else ''})")
        if event.kind == "unhealthy":
            return fail(r, now, Reason.UNHEALTHY, f"a canary container is unhealthy: {event.detail}")
        return r, []
    if isinstance(event, ConsulView):
        return _consul(r, event, now, plan)
    if isinstance(event, GoldenChecked):
        if r.phase is not Phase.VERIFYING:
            return r, []
        if not event.passed:
            return fail(r, now, Reason.GOLDEN, f"golden check failed: {event.detail}")
        return _to_step(r, 0, now, plan)
    if isinstance(event, MetricsSample):
        if r.phase not in (Phase.STEPPING, Phase.PAUSED):
            return r, []
        j = judge(event.canary, event.stable, plan.thresholds)
        if j.outcome is Outcome.FAIL:
            return fail(r, now, Reason.METRICS, j.reason)
        return replace(r, judgement=j, judged_at=now), []
    if isinstance(event, SourceFailed):
        return replace(r, last_seen=f"{event.source}: {event.detail}"), []
    if isinstance(event, Tick):
        return _tick(r, now, plan)
    return r, []


def fail(r: Rollout, now: float, reason: Reason, detail: str, phase: Phase = Phase.ROLLED_BACK,
         revert_stable: bool = False) -> tuple[Rollout, list[Action]]:
    actions: list[Action] = [RevertStable()] if revert_stable else []
    return (replace(r, phase=phase, phase_since=now, share=0, reason=detail, failure=reason),
            actions + [CutCanary(detail), Finish(phase)])


def resumed(r: Rollout, now: float) -> tuple[Rollout, list[Action]]:
    """A rollout whose controller died: a promotion under way is finished, anything else reverted,
    since the evidence of the time nobody watched is lost."""
    if r.phase in TERMINAL:
        return r, []
    if r.phase is Phase.PROMOTING:
        return replace(r, phase_since=now), [PromoteStable()]
    return fail(r, now, Reason.CONTROLLER_LOST, f"the controller stopped while {r.phase.value}; "
                                                "reverted on resume", phase=Phase.ABORTED)


def _control(r: Rollout, action: str, now: float) -> tuple[Rollout, list[Action]]:
    if action == "abort":
        return fail(r, now, Reason.ABORTED, "aborted on request", phase=Phase.ABORTED,
                    revert_stable=r.phase is Phase.PROMOTING)
    if action == "promote" and r.phase in (Phase.STEPPING, Phase.PAUSED):
        return replace(r, phase=Phase.PROMOTING, phase_since=now, reason="promoted on request"), [PromoteStable()]
    return r, []


def _consul(r: Rollout, event: ConsulView, now: float, plan: Plan) -> tuple[Rollout, list[Action]]:
    canaries = [i for i in event.instances if i.role == "canary" and i.version == plan.version]
    passing = [i for i in canaries if i.status == "passing"]
    if not r.ready:
        if len(passing) >= plan.canary_replicas:
            return replace(r, ready=True, phase=Phase.VERIFYING, phase_since=now), [CheckGolden()]
        return replace(r, last_seen=f"{len(passing)}/{plan.canary_replicas} canary replicas passing in Consul"), []
    critical = [i for i in canaries if i.status == "critical"]
    if critical:
        return fail(r, now, Reason.CONSUL_CRITICAL, f"canary {critical[0].id} is critical in Consul: "
                                                    f"{critical[0].output[:200]}")
    if len(passing) < plan.canary_replicas:
        return fail(r, now, Reason.CONSUL_CRITICAL, f"only {len(passing)}/{plan.canary_replicas} canary "
                                                    "replicas left in Consul")
    return r, []


def _to_step(r: Rollout, index: int, now: float, plan: Plan) -> tuple[Rollout, list[Action]]:
    share = plan.steps[index]
    return (replace(r, phase=Phase.STEPPING, step=index, share=share, phase_since=now, judgement=None,
                    judged_at=None), [SetShare(share)])


def _tick(r: Rollout, now: float, plan: Plan) -> tuple[Rollout, list[Action]]:
    if r.phase in (Phase.STARTING, Phase.VERIFYING):
        if now - r.started_at > plan.progress_deadline:
            return fail(r, now, Reason.DEADLINE, f"the canary was not ready within the progress deadline "
                                                 f"({plan.progress_deadline:g}s): {r.last_seen or 'no word from it'}")
        return r, []
    if r.phase is not Phase.STEPPING or now - r.phase_since < plan.step_duration:
        return r, []
    fresh = r.judged_at is not None and now - r.judged_at <= plan.evidence_max_age
    if fresh and r.judgement.outcome is Outcome.PASS:
        if r.step + 1 < len(plan.steps):
            return _to_step(r, r.step + 1, now, plan)
        if plan.auto_promote:
            return replace(r, phase=Phase.PROMOTING, phase_since=now, reason="all steps passed"), [PromoteStable()]
        return replace(r, phase=Phase.PAUSED, phase_since=now, reason="all steps passed; waiting for fleet promote"), []
    if now - r.phase_since > plan.step_duration + plan.progress_deadline:
        why = r.judgement.reason if r.judgement and fresh else "metrics are stale or missing"
        return fail(r, now, Reason.NO_EVIDENCE, f"no passing evidence at {r.share}% within the progress "
                                                f"deadline: {why}")
    return r, []


def _promoting(r: Rollout, event: Event, now: float, plan: Plan) -> tuple[Rollout, list[Action]]:
    if isinstance(event, PromotionObserved):
        if event.state == "converged":
            return replace(r, phase=Phase.PROMOTED, phase_since=now, share=100), [CutCanary("promoted"),
                                                                                  Finish(Phase.PROMOTED)]
        if event.state == "failed":
            return fail(r, now, Reason.PROMOTION_FAILED, f"the stable service's update failed: {event.reason}",
                        revert_stable=True)
    if isinstance(event, Tick) and now - r.phase_since > plan.progress_deadline:
        return fail(r, now, Reason.PROMOTION_FAILED, f"the stable service did not converge within the progress "
                                                     f"deadline ({plan.progress_deadline:g}s)", revert_stable=True)
    return r, []


def parse_steps(text: str) -> tuple[int, ...]:
    """'10,25,50' -> (10, 25, 50): whole percentages, strictly rising, within 1..100. Pure."""
    try:
        steps = tuple(int(p) for p in text.split(","))
    except ValueError:
        raise ValueError(f"{text!r} is not a list of whole percentages; write e.g. 10,25,50") from None
    if not steps or any(not 1 <= s <= 100 for s in steps):
        raise ValueError(f"{text!r}: every step must lie within 1..100, e.g. 10,25,50")
    if any(b <= a for a, b in zip(steps, steps[1:])):
        raise ValueError(f"{text!r}: steps must rise, e.g. 10,25,50")
    return steps
