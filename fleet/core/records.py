"""What fleet keeps of a rollout, as typed records with their JSON in one place. Pure.

`RolloutState` is the rollout in progress (Consul KV `fleet/rollouts/<stack>/<service>/state`): what it
rolls out, its plan, the state machine's `Rollout`, its timeline, and the latest evidence kept for
watchers. `Revision` is one entry of the service's history (`.../history/<revision>`): what ran, how it
ended, and what its report draws. fleet/adapters/store.py is the only reader and writer of both.
"""
from dataclasses import asdict, dataclass, field, fields, replace

from . import secrets
from .analysis import Thresholds
from .rollout import Phase, Plan, Rollout

STABLE_OUTCOMES = ("deployed", "promoted")  # a revision that ran as the stable service
IN_PROGRESS = "in_progress"


def plan_to_dict(plan: Plan) -> dict:
    """The plan as fleet writes it, its gate and webhook URLs redacted (fleet/core/secrets.py)."""
    return {**asdict(plan), "steps": list(plan.steps), "webhooks": list(secrets.redacted(plan.webhooks)),
            "pre_rollout": secrets.redact(plan.pre_rollout), "confirm_promotion": secrets.redact(plan.confirm_promotion)}


def plan_from_dict(d: dict) -> Plan:
    return Plan(**{**known(Plan, d), "steps": tuple(d["steps"]), "webhooks": tuple(d.get("webhooks") or ()),
                   "gate_env": tuple(d.get("gate_env") or ()),
                   "thresholds": Thresholds(**known(Thresholds, d["thresholds"]))})


def restored(plan: Plan, given: tuple[str, ...]) -> tuple[Plan, list[str]]:
    """A plan read back from a record, its redacted URLs restored from `given` (the URLs the operator gave
    the resumed rollout, and the service's policy): what cannot be restored is dropped, and said. A gate
    that cannot be asked any more leaves the promotion to `fleet promote`. Pure."""
    notes, webhooks = [], []
    for url in plan.webhooks:
        real = secrets.restore(url, given)
        if real is None:
            notes.append(f"webhook {url} dropped: its URL held a secret fleet does not keep; give it again with "
                         "--webhook")
        else:
            webhooks.append(real)
    pre = secrets.restore(plan.pre_rollout, given) or ""
    confirm = secrets.restore(plan.confirm_promotion, given)
    auto = plan.auto_promote
    if confirm is None:
        notes.append(f"the confirm-promotion gate {plan.confirm_promotion} held a secret fleet does not keep: "
                     "the promotion waits for `fleet promote` (or give the gate again with --confirm-promotion)")
        confirm, auto = "", False
    return replace(plan, webhooks=tuple(webhooks), pre_rollout=pre, confirm_promotion=confirm,
                   auto_promote=auto), notes


def known(cls, d: dict) -> dict:
    """The keys of `d` that are fields of `cls` (a record written by another version may hold others)."""
    names = {f.name for f in fields(cls)}
    return {k: v for k, v in d.items() if k in names}


def unknown(cls, d: dict) -> dict:
    """The keys of `d` that are no field of `cls`: kept as they came, and written back (a newer fleet's)."""
    names = {f.name for f in fields(cls)}
    return {k: v for k, v in d.items() if k not in names}


def build_of(ref: str) -> str | None:
    """The immutable part of an image reference: its registry digest, or an engine's image ID; None for a tag."""
    if "@" in ref:
        return ref.partition("@")[2] or None
    return ref if ref.startswith("sha256:") else None


@dataclass
class Revision:
    """One revision of a service's history, as `fleet history` lists it."""
    revision: int
    image: str
    outcome: str  # deployed, promoted, rolled_back, in_progress (a Phase's value, or deployed)
    reason: str = ""
    previous_image: str | None = None
    cause: str | None = None
    started_at: float | None = None
    ended_at: float | None = None
    # what `fleet history N --report` draws: the steps, when each began, the golden gate's answer
    plan: dict | None = None
    timeline: list[dict] | None = None
    golden: dict | None = None
    pinned: str | None = None  # the image as it ran (its canary, or the stable): by digest where a registry has one
    extra: dict = field(default_factory=dict, repr=False, compare=False)  # a newer fleet's fields, kept

    @property
    def stable(self) -> bool:
        return self.outcome in STABLE_OUTCOMES

    def to_dict(self) -> dict:
        d = asdict(self)
        return {**d.pop("extra"), **d}

    @classmethod
    def from_dict(cls, d: dict) -> "Revision":
        return cls(**known(cls, d), extra=unknown(cls, d))

    def ended(self, state: "RolloutState", r: Rollout, at: float) -> "Revision":
        """This revision once its rollout ended as `r` at `at`, with what the report draws."""
        return replace(self, image=state.image, outcome=r.phase.value, reason=r.reason, ended_at=at,
                       plan=plan_to_dict(state.plan), timeline=list(state.timeline), golden=state.golden,
                       pinned=state.canary_image or self.pinned)


@dataclass
class RolloutState:
    """The rollout in progress: a controller killed at any point leaves this for `fleet rollout --resume`."""
    revision: int
    image: str
    previous_image: str
    plan: Plan
    rollout: Rollout
    cause: str = "fleet rollout"
    timeline: list[dict] = field(default_factory=list)  # {"at", "event", "detail"}
    container: dict | None = None  # the stack file's container settings (from `fleet deploy`)
    canary_id: str | None = None  # the canary service, once created
    canary_image: str | None = None  # its image as Swarm pinned it (with the digest)
    stable_spec: str | None = None  # the stable's spec the canary was made beside (Cluster.stable_spec_key)
    promotion_started: float | None = None  # when the stable's update to the canary's image began
    control_applied: list[str] = field(default_factory=list)  # the control requests already applied
    golden: dict | None = None  # the golden gate's answer: passed, detail
    evidence: dict | None = None  # the latest metrics window's figures (fleet/core/view.py), for watchers
    extra: dict = field(default_factory=dict, repr=False, compare=False)  # a newer fleet's fields, kept
    # and those it wrote within the plan, its thresholds and the rollout: {"plan": {...}, "thresholds": {...}, ...}
    extra_within: dict = field(default_factory=dict, repr=False, compare=False)

    @property
    def phase(self) -> Phase:
        return self.rollout.phase

    @property
    def shipped(self) -> str:
        """The reference the canary ran and a promotion ships: pinned by digest where the registry has one
        (resolved once, when the canary was made), else the image as given."""
        return self.canary_image or self.image

    def note(self, at: float, event: str, detail: str) -> None:
        self.timeline.append({"at": at, "event": event, "detail": detail})

    def started(self, at: float | None) -> Revision:
        """Its revision in the history while it runs."""
        return Revision(self.revision, self.image, IN_PROGRESS, "", self.previous_image, self.cause,
                        started_at=at)

    def to_dict(self) -> dict:
        d = {f.name: getattr(self, f.name) for f in fields(self) if f.name not in ("extra", "extra_within")}
        within = self.extra_within
        plan = {**within.get("plan", {}), **plan_to_dict(self.plan)}
        plan["thresholds"] = {**within.get("thresholds", {}), **plan["thresholds"]}
        return {**self.extra, **d, "plan": plan, "rollout": {**within.get("rollout", {}), **self.rollout.to_dict()},
                "timeline": list(self.timeline), "control_applied": list(self.control_applied)}

    @classmethod
    def from_dict(cls, d: dict) -> "RolloutState":
        within = {"plan": unknown(Plan, d["plan"]), "thresholds": unknown(Thresholds, d["plan"]["thresholds"]),
                  "rollout": unknown(Rollout, d["rollout"])}
        return cls(**{**known(cls, d), "extra": unknown(cls, d), "extra_within": {k: v for k, v in within.items() if v},
                      "plan": plan_from_dict(d["plan"]), "rollout": Rollout.from_dict(d["rollout"]),
                      "timeline": list(d.get("timeline") or []), "control_applied": list(d.get("control_applied") or [])})
