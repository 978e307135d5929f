"""The canary rollout as a state machine: `step(rollout, event, now, plan) -> (rollout, actions)`.

This is a purely computational function with no side-effects: it never calls Docker, Consul or the
clock. The controller (fleet/controller.py) feeds it events and carries out the actions it returns.

    starting --ready--> verifying --golden ok--> stepping (share = steps[0], steps[1], ...)
       --last step passed--> promoting (auto) | paused (--no-auto-promote, waits for `fleet promote`)
                           | confirming (a confirm-promotion gate: approved -> promoting, refused -> rolled_back)
       --stable converged on the canary's image--> promoted  (on another spec: superseded)
    Any failing signal before promotion: the canary's share goes to 0, it is removed -> rolled_back.

Missing evidence is never a pass: while a source is down (SourceFailed until SourceUp) no step
advances and no promotion starts; when it is back, the step's clock starts again, so a step passes
only after a whole step duration of complete evidence; a source down past the progress deadline fails
the canary. PAUSED ends after `pause_timeout`, and so does a hold: `fleet pause` holds a stepping canary at
its share (`held_since`: no step advances and nothing promotes by itself, but every signal is still judged,
so a failing canary still rolls back) until `fleet resume`, which goes on with the step's time left. The
controller saves each new state before it carries out the actions, and a rollout found orphaned is resumed
from what Swarm shows (`resumed`).
"""
import json
from dataclasses import asdict, dataclass, field, fields, replace
from enum import Enum

from .analysis import Judgement, Outcome, Thresholds, judge
from .events import (ContainerEvent, ConsulView, ControlRequested, Event, GateAnswered, GoldenChecked,
                     MetricsSample, PromotionObserved, SourceFailed, SourceUp, TaskFailed, Tick)


class Phase(str, Enum):
    STARTING = "starting"  # canary service created, replicas loading
    VERIFYING = "verifying"  # replicas ready; golden inputs being checked, no traffic yet
    STEPPING = "stepping"  # the canary gets steps[step] percent of the traffic
    PAUSED = "paused"  # all steps passed, waiting for `fleet promote`
    CONFIRMING = "confirming"  # all steps passed, waiting for the confirm-promotion gate (fleet/core/gates.py)
    PROMOTING = "promoting"  # the stable service is being updated to the new image
    PROMOTED = "promoted"
    ROLLED_BACK = "rolled_back"
    ABORTED = "aborted"
    SUPERSEDED = "superseded"  # during the promotion, someone else changed the stable service's spec


TERMINAL = {Phase.PROMOTED, Phase.ROLLED_BACK, Phase.ABORTED, Phase.SUPERSEDED}
JUDGED = {Phase.STARTING, Phase.VERIFYING, Phase.STEPPING, Phase.PAUSED, Phase.CONFIRMING}  # its signals count
AT_LAST_STEP = (Phase.STEPPING, Phase.PAUSED, Phase.CONFIRMING)  # the canary has a share; metrics are judged


class Reason(str, Enum):
    TASK_FAILED = "task_failed"
    UNHEALTHY = "unhealthy"
    CONSUL_CRITICAL = "consul_critical"
    DEGRADED = "canary_degraded"  # a canary warning in Consul: short of GPU memory, or its queue over its bound
    METRICS = "metrics"
    GOLDEN = "golden"
    DEADLINE = "progress_deadline"
    NO_EVIDENCE = "no_evidence"
    PAUSE_TIMEOUT = "pause_timeout"
    ABORTED = "aborted"
    PROMOTION_FAILED = "promotion_failed"
    CONTROLLER_LOST = "controller_lost"
    SUPERSEDED = "superseded"
    GATE = "gate"


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
    pause_timeout: float = 3600.0  # PAUSED waits this long for `fleet promote`, then rolls back
    golden: str = ""  # a golden set (JSON: inputs, labels); empty: the one shipped with the canary's model
    golden_tolerance: float = 0.01  # accuracy the canary may fall below the stable's on the golden set
    pre_rollout: str = ""  # a gate (URL or command, fleet/core/gates.py) asked before the canary is created
    confirm_promotion: str = ""  # a gate asked once all steps passed, before an automatic promotion
    gate_deadline: float = 600.0  # seconds a gate may go without answering; then the rollout rolls back
    webhooks: tuple[str, ...] = ()  # URLs posted a JSON event at each phase change and at the end
    gate_env: tuple[str, ...] = ()  # the variables a command gate gets beside PATH, HOME and FLEET_EVENT


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
class AskGate:
    """Ask a gate (fleet/core/gates.py) until it approves or refuses; its answer comes back as GateAnswered."""
    gate: str


@dataclass(frozen=True)
class PromoteStable:
    pass


@dataclass(frozen=True)
class RevertStable:
    """Roll the stable service's half-done update back (Swarm's previous spec)."""


@dataclass(frozen=True)
class Finish:
    phase: Phase


Action = CheckGolden | SetShare | CutCanary | AskGate | PromoteStable | RevertStable | Finish


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
    missing: tuple[str, ...] = ()  # evidence sources down now
    missing_since: float | None = None
    promote_requested: bool = False  # promote on the first fresh, complete, passing evidence
    held_since: float | None = None  # held at its share by `fleet pause` since then, until `fleet resume`

    @property
    def paused(self) -> bool:
        """Held at its share by `fleet pause` (until `fleet resume`)."""
        return self.held_since is not None

    def to_dict(self) -> dict:
        d = asdict(self)
        d["phase"], d["failure"] = self.phase.value, self.failure.value if self.failure else None
        d["missing"] = list(self.missing)
        d["judgement"] = {"outcome": self.judgement.outcome.value, "reason": self.judgement.reason} \
            if self.judgement else None
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "Rollout":
        j = d.get("judgement")
        names = {f.name for f in fields(cls)}  # a newer fleet's fields are ignored
        d = {k: v for k, v in d.items() if k in names}
        return cls(**{**d, "phase": Phase(d["phase"]), "failure": Reason(d["failure"]) if d.get("failure") else None,
                      "missing": tuple(d.get("missing") or ()),
                      "judgement": Judgement(Outcome(j["outcome"]), j["reason"]) if j else None})


def start(now: float) -> Rollout:
    return Rollout(Phase.STARTING, started_at=now, phase_since=now)


def step(r: Rollout, event: Event, now: float, plan: Plan) -> tuple[Rollout, list[Action]]:
    """Pure: the rollout after `event` at time `now`, and the actions that carry it out."""
    if r.phase in TERMINAL:
        return r, []
    if isinstance(event, SourceFailed):
        return _source_failed(r, event, now), []
    if isinstance(event, SourceUp):
        return _source_up(r, event, now), []
    if isinstance(event, ControlRequested):
        return _control(r, event.action, now)
    if r.phase is Phase.PROMOTING:
        return _promoting(r, event, now, plan)
    if isinstance(event, ContainerEvent):
        if event.kind in ("die", "oom"):
            return fail(r, now, Reason.TASK_FAILED, f"a canary task stopped ({event.kind}{': ' + event.detail if event.detail else ''})")
        if event.kind == "unhealthy":
            return fail(r, now, Reason.UNHEALTHY, f"a canary container is unhealthy: {event.detail}")
        if event.kind == "check_failed" and reported_phase(event.detail) == "failed":
            # the replica says its model will never serve (a corrupt artifact): Docker would call it unhealthy
            # only once the start period (40 s) and three more checks had passed
            return fail(r, now, Reason.UNHEALTHY, f"a canary replica failed (its health check): {event.detail}")
        return r, []
    if isinstance(event, TaskFailed):
        return fail(r, now, Reason.TASK_FAILED, event.detail)
    if isinstance(event, ConsulView):
        return _consul(r, event, now, plan)
    if isinstance(event, GoldenChecked):
        if r.phase is not Phase.VERIFYING:
            return r, []
        if not event.passed:
            return fail(r, now, Reason.GOLDEN, f"golden gate failed: {event.detail}")
        return _to_step(replace(r, reason=f"golden gate passed: {event.detail}"), 0, now, plan)
    if isinstance(event, GateAnswered):
        return _gate_answered(r, event, now)
    if isinstance(event, MetricsSample):
        if r.phase not in AT_LAST_STEP:
            return r, []
        thresholds = replace(plan.thresholds, min_latency_window=min(plan.thresholds.min_latency_window,
                                                                     plan.step_duration))
        j = judge(event.canary, event.stable, thresholds, event.synthetic, event.window)
        if j.outcome is Outcome.FAIL:
            return fail(r, now, Reason.METRICS, j.reason)
        r = replace(r, judgement=j, judged_at=now)
        if r.promote_requested and j.outcome is Outcome.PASS and not r.missing:
            return _promote(r, now, "promoted on request, on fresh evidence")
        return r, []
    if isinstance(event, Tick):
        return _tick(r, now, plan)
    return r, []


def reported_phase(output: str) -> str | None:
    """The phase a replica's health check output reports (its /ready answer: {"phase": ..., "reason": ...}),
    None where the output is no such answer (no answer at all, a timeout). Pure."""
    start = output.find("{")
    try:
        answer = json.loads(output[start:]) if start >= 0 else None
    except ValueError:
        return None
    return answer.get("phase") if isinstance(answer, dict) and isinstance(answer.get("phase"), str) else None


def fail(r: Rollout, now: float, reason: Reason, detail: str, phase: Phase = Phase.ROLLED_BACK,
         revert_stable: bool = False) -> tuple[Rollout, list[Action]]:
    actions: list[Action] = [RevertStable()] if revert_stable else []
    return (replace(r, phase=phase, phase_since=now, share=0, reason=detail, failure=reason),
            actions + [CutCanary(detail), Finish(phase)])


@dataclass(frozen=True)
class StableObserved:
    """What Swarm shows of the stable service when an orphaned rollout is resumed."""
    on_new_image: bool  # its spec already names the rollout's image (the promotion was issued)
    rolled_back: bool  # Swarm rolled an update back since the promotion began


def resumed(r: Rollout, now: float, stable: StableObserved, promote: bool = False) -> tuple[Rollout, list[Action]]:
    """A rollout whose controller died, decided from what Swarm shows now (level-triggered), not from the
    saved phase alone: a promotion Swarm rolled back is a failed promotion; one issued or intended is
    finished; anything else is reverted, since the evidence of the time nobody watched is lost. With
    `promote` (`fleet promote` on an orphan) a rollout in its steps is judged again from scratch and
    promoted only on fresh passing evidence."""
    if r.phase in TERMINAL:
        return r, []
    if stable.rolled_back and (r.phase is Phase.PROMOTING or stable.on_new_image):
        return fail(replace(r, phase=Phase.PROMOTING), now, Reason.PROMOTION_FAILED,
                    "Swarm rolled the stable service's update back while no controller watched")
    if r.phase is Phase.PROMOTING or stable.on_new_image:
        return replace(r, phase=Phase.PROMOTING, phase_since=now, reason=r.reason or "promotion resumed"), \
            [PromoteStable()]
    if promote and r.phase in AT_LAST_STEP:
        return (replace(r, phase=Phase.STEPPING, phase_since=now, judgement=None, judged_at=None, missing=(),
                        missing_since=None, promote_requested=True, held_since=None,
                        reason="promote requested on an orphaned rollout: judging fresh evidence first"),
                [SetShare(r.share)])
    return fail(r, now, Reason.CONTROLLER_LOST, f"the controller stopped while {r.phase.value}; "
                                                "reverted on resume", phase=Phase.ABORTED)


def _source_failed(r: Rollout, event: SourceFailed, now: float) -> Rollout:
    missing = r.missing if event.source in r.missing else r.missing + (event.source,)
    return replace(r, missing=missing, missing_since=r.missing_since or now,
                   last_seen=f"{event.source}: {event.detail}"[:300])


def _source_up(r: Rollout, event: SourceUp, now: float) -> Rollout:
    if event.source not in r.missing:
        return r
    missing = tuple(m for m in r.missing if m != event.source)
    r = replace(r, missing=missing, missing_since=r.missing_since if missing else None)
    if r.phase in AT_LAST_STEP and not missing:  # the gap's evidence is lost: judge anew
        since = (r.held_since or now) if r.phase is Phase.STEPPING else r.phase_since  # held: resume starts anew
        r = replace(r, phase_since=since, judgement=None, judged_at=None)
    return r


def _promote(r: Rollout, now: float, reason: str) -> tuple[Rollout, list[Action]]:
    return replace(r, phase=Phase.PROMOTING, phase_since=now, reason=reason, promote_requested=False,
                   held_since=None), [PromoteStable()]


def _control(r: Rollout, action: str, now: float) -> tuple[Rollout, list[Action]]:
    if action == "abort":
        return fail(r, now, Reason.ABORTED, "aborted on request", phase=Phase.ABORTED,
                    revert_stable=r.phase is Phase.PROMOTING)
    if action == "pause" and r.phase is Phase.STEPPING and not r.paused:
        return replace(r, held_since=now, reason=f"paused at {r.share}% on request: no step advances and nothing "
                                                   "is promoted until `fleet resume`; a failing canary still rolls "
                                                   "back"), []
    if action == "resume" and r.paused:  # the step goes on with the time it had left
        return replace(r, held_since=None, phase_since=r.phase_since + (now - r.held_since),
                       reason=f"resumed at {r.share}% on request after {now - r.held_since:.0f}s held"), []
    if action == "promote" and r.phase in AT_LAST_STEP:
        if r.missing:  # never on a gap in the evidence: promote once it is whole and passing again
            return replace(r, promote_requested=True, reason="promote requested; waiting for complete "
                                                             f"evidence ({', '.join(r.missing)} down)"), []
        return _promote(r, now, "promoted on request")
    return r, []


def _consul(r: Rollout, event: ConsulView, now: float, plan: Plan) -> tuple[Rollout, list[Action]]:
    canaries = [i for i in event.instances if i.role == "canary" and i.version == plan.version]
    passing = [i for i in canaries if i.status == "passing"]
    degraded = [i for i in canaries if i.status == "warning"]
    if not r.ready:
        if len(passing) >= plan.canary_replicas:
            return replace(r, ready=True, phase=Phase.VERIFYING, phase_since=now), [CheckGolden()]
        said = f"; canary {degraded[0].id} is degraded: {degraded[0].output[:200]}" if degraded else ""
        return replace(r, last_seen=f"{len(passing)}/{plan.canary_replicas} canary replicas passing in Consul"
                                    f"{said}"[:300]), []
    critical = [i for i in canaries if i.status == "critical"]
    if critical:
        return fail(r, now, Reason.CONSUL_CRITICAL, f"canary {critical[0].id} is critical in Consul: "
                                                    f"{critical[0].output[:200]}")
    if len(passing) < plan.canary_replicas:
        if degraded:
            return fail(r, now, Reason.DEGRADED, f"canary {degraded[0].id} is degraded (a warning in Consul): "
                                                 f"{degraded[0].output[:200]}")
        return fail(r, now, Reason.CONSUL_CRITICAL, f"only {len(passing)}/{plan.canary_replicas} canary "
                                                    "replicas left in Consul")
    return r, []


def _gate_answered(r: Rollout, event: GateAnswered, now: float) -> tuple[Rollout, list[Action]]:
    if r.phase is not Phase.CONFIRMING or event.gate != "confirm-promotion":
        return r, []
    if event.approved is None:  # asked, no answer yet: the deadline's message names the last word
        return replace(r, last_seen=event.detail[:300]), []
    if event.approved:
        return _promote(r, now, f"the confirm-promotion gate approved: {event.detail}")
    return fail(r, now, Reason.GATE, f"the confirm-promotion gate refused: {event.detail}")


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
    if r.missing and r.missing_since is not None and now - r.missing_since > plan.progress_deadline:
        return fail(r, now, Reason.NO_EVIDENCE, f"evidence missing past the progress deadline "
                                                f"({plan.progress_deadline:g}s): {r.last_seen}")
    if r.phase is Phase.CONFIRMING and now - r.phase_since > plan.gate_deadline:
        return fail(r, now, Reason.GATE, f"the confirm-promotion gate gave no answer within its deadline "
                                         f"({plan.gate_deadline:g}s): {r.last_seen or 'nothing heard'}")
    if r.paused:
        if now - r.held_since > plan.pause_timeout:
            return fail(r, now, Reason.PAUSE_TIMEOUT, f"nobody resumed the canary paused at {r.share}% within "
                                                      f"the pause timeout ({plan.pause_timeout:g}s)")
        return r, []
    if r.phase is Phase.PAUSED and now - r.phase_since > plan.pause_timeout:
        return fail(r, now, Reason.PAUSE_TIMEOUT, f"nobody promoted the paused canary within the pause timeout "
                                                  f"({plan.pause_timeout:g}s)")
    if r.phase is not Phase.STEPPING or now - r.phase_since < plan.step_duration or r.missing:
        return r, []
    fresh = r.judged_at is not None and now - r.judged_at <= plan.evidence_max_age
    if fresh and r.judgement.outcome is Outcome.PASS:
        passed = f"{r.share}% passed: {r.judgement.reason}"
        if r.step + 1 < len(plan.steps):
            return _to_step(replace(r, reason=passed), r.step + 1, now, plan)
        if r.promote_requested:
            return _promote(r, now, f"all steps passed ({passed})")
        if plan.auto_promote and plan.confirm_promotion:
            return replace(r, phase=Phase.CONFIRMING, phase_since=now, last_seen="",
                           reason=f"all steps passed ({passed}); asking the confirm-promotion gate"), \
                [AskGate("confirm-promotion")]
        if plan.auto_promote:
            return _promote(r, now, f"all steps passed ({passed})")
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
        if event.state == "superseded":  # the stable is someone else's now: not reverted, not promoted
            return fail(r, now, Reason.SUPERSEDED, event.reason, phase=Phase.SUPERSEDED)
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
