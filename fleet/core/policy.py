"""A service's rollout policy, written beside it in the stack file as `deploy.labels` (`fleet.rollout.*`),
so `docker stack deploy` still takes the file by hand and the policy travels with the running service.

    deploy:
      labels:
        fleet.rollout.strategy: canary          # canary (fleet's) or rolling (Swarm's update_config)
        fleet.rollout.steps: "10,25,50"
        fleet.rollout.step-duration: 30s
        fleet.rollout.max-error-rate: "0.01"
        fleet.rollout.max-latency-ratio: "1.5"
        fleet.rollout.max-divergence: "0.2"     # predicted-class mix, canary against stable (total variation)
        fleet.rollout.golden-tolerance: "0.01"
        fleet.rollout.progress-deadline: 5m
        fleet.rollout.auto-promote: "true"
        fleet.rollout.canary-replicas: "1"
        fleet.rollout.webhooks: "https://chat.example/hooks/fleet"   # comma-separated URLs (fleet/core/gates.py)
        fleet.rollout.pre-rollout: "https://ci.example/load-test"    # gates: a URL, or a command line
        fleet.rollout.confirm-promotion: "https://ci.example/approve"
        fleet.rollout.gate-deadline: 10m
        fleet.rollout.gate-env: "CI_TOKEN"       # variables a command gate gets (it gets no other of fleet's)

Every key is optional; a service with no `fleet.rollout.*` label has no policy (Swarm's rolling update).
Parsing is pure: labels in, a Policy or the errors that name the fix out.
"""
from dataclasses import dataclass, field, replace

from . import durations, gates
from .analysis import Thresholds
from .rollout import Plan, parse_steps

PREFIX = "fleet.rollout."


class Strategy:
    CANARY = "canary"
    ROLLING = "rolling"


@dataclass(frozen=True)
class Policy:
    strategy: str = Strategy.CANARY
    plan: Plan = field(default_factory=Plan)


def _fraction(text: str) -> float:
    value = float(text)
    if not 0 <= value <= 1:
        raise ValueError(f"{text!r} is not a fraction within 0..1, e.g. 0.01")
    return value


def _ratio(text: str) -> float:
    value = float(text)
    if value <= 0:
        raise ValueError(f"{text!r} is not a ratio above 0, e.g. 1.5")
    return value


def _bool(text: str) -> bool:
    if text.lower() not in ("true", "false"):
        raise ValueError(f"{text!r} is not true or false")
    return text.lower() == "true"


def _replicas(text: str) -> int:
    value = int(text)
    if value < 1:
        raise ValueError(f"{text!r}: at least 1")
    return value


def _strategy(text: str) -> str:
    if text not in (Strategy.CANARY, Strategy.ROLLING):
        raise ValueError(f"{text!r} is neither canary nor rolling")
    return text


def _webhooks(text: str) -> tuple[str, ...]:
    urls = tuple(u.strip() for u in text.split(",") if u.strip())
    if not urls or not all(gates.is_webhook(u) for u in urls):
        raise ValueError(f"{text!r} is not a list of http(s) URLs (each may start slack:, teams: or discord: for "
                         "that service's incoming-webhook format)")
    return urls


def _names(text: str) -> tuple[str, ...]:
    names = tuple(n.strip() for n in text.split(",") if n.strip())
    bad = [n for n in names if not n.isascii() or not (n.replace("_", "a").isalnum() and not n[0].isdigit())]
    if not names or bad:
        raise ValueError(f"{text!r} is not a list of environment variable names")
    return names


# label (after the prefix) -> (parser, how it changes the policy, an example)
KEYS = {
    "strategy": (_strategy, lambda p, v: replace(p, strategy=v), "canary"),
    "steps": (parse_steps, lambda p, v: replace(p, plan=replace(p.plan, steps=v)), '"10,25,50"'),
    "step-duration": (durations.parse, lambda p, v: replace(p, plan=replace(p.plan, step_duration=v)), "30s"),
    "progress-deadline": (durations.parse, lambda p, v: replace(p, plan=replace(p.plan, progress_deadline=v)),
                          "5m"),
    "max-error-rate": (_fraction, lambda p, v: replace(p, plan=replace(
        p.plan, thresholds=replace(p.plan.thresholds, max_error_rate=v))), '"0.01"'),
    "max-latency-ratio": (_ratio, lambda p, v: replace(p, plan=replace(
        p.plan, thresholds=replace(p.plan.thresholds, max_latency_ratio=v))), '"1.5"'),
    "max-divergence": (_fraction, lambda p, v: replace(p, plan=replace(
        p.plan, thresholds=replace(p.plan.thresholds, max_divergence=v))), '"0.2"'),
    "golden-tolerance": (_fraction, lambda p, v: replace(p, plan=replace(p.plan, golden_tolerance=v)), '"0.01"'),
    "auto-promote": (_bool, lambda p, v: replace(p, plan=replace(p.plan, auto_promote=v)), '"true"'),
    "canary-replicas": (_replicas, lambda p, v: replace(p, plan=replace(p.plan, canary_replicas=v)), '"1"'),
    "webhooks": (_webhooks, lambda p, v: replace(p, plan=replace(p.plan, webhooks=v)),
                 '"https://chat.example/hooks/fleet,https://ops.example/rollouts"'),
    "pre-rollout": (gates.check_spec, lambda p, v: replace(p, plan=replace(p.plan, pre_rollout=v)),
                    '"https://ci.example/load-test"'),
    "confirm-promotion": (gates.check_spec, lambda p, v: replace(p, plan=replace(p.plan, confirm_promotion=v)),
                          '"https://ci.example/approve"'),
    "gate-deadline": (durations.parse, lambda p, v: replace(p, plan=replace(p.plan, gate_deadline=v)), "10m"),
    "gate-env": (_names, lambda p, v: replace(p, plan=replace(p.plan, gate_env=v)), '"CI_TOKEN,BUILD_ID"'),
}


def parse(labels: dict | None) -> tuple[Policy | None, list[tuple[str, str]]]:
    """The policy in a service's labels (None when it has no `fleet.rollout.*` label), and the errors
    as (label, message naming the fix). Pure."""
    ours = {k[len(PREFIX):]: str(v) for k, v in (labels or {}).items() if k.startswith(PREFIX)}
    if not ours:
        return None, []
    policy, errors = Policy(plan=Plan(thresholds=Thresholds())), []
    for key, text in sorted(ours.items()):
        if key not in KEYS:
            errors.append((PREFIX + key, f"unknown rollout setting; the known ones are "
                                         f"{', '.join(PREFIX + k for k in KEYS)}"))
            continue
        parser, apply, example = KEYS[key]
        try:
            policy = apply(policy, parser(text))
        except ValueError as e:
            errors.append((PREFIX + key, f"{e}; write e.g. {PREFIX}{key}: {example}"))
    return policy, errors


def governs(labels: dict | None) -> bool:
    """Whether a change of this service's containers goes through fleet's canary. Pure."""
    policy, errors = parse(labels)
    return policy is not None and not errors and policy.strategy == Strategy.CANARY


def labels(settings: dict) -> dict[str, str]:
    """Settings by key (`steps`, `step-duration`, ...) as policy labels, for `parse`: how the flags of
    `fleet rollout` go over a service's policy. Pure."""
    return {PREFIX + k: ("true" if v else "false") if isinstance(v, bool) else str(v) for k, v in settings.items()}


GATES = ("pre-rollout", "confirm-promotion")


def commands_in(labels: dict | None) -> list[str]:
    """The gate labels that name a command rather than a URL. `fleet rollout` runs no command it read from
    a running service's labels (whoever can update the service could run it on the operator's machine):
    a command gate comes from a flag, or from the stack file `fleet deploy` is given. Pure."""
    return [PREFIX + g for g in GATES if (labels or {}).get(PREFIX + g) and not gates.is_url(str(labels[PREFIX + g]))]
