"""Gates and webhooks, the pure part: what a rollout sends the outside world, and how an answer reads.

A gate is a URL or a command that must say yes before the rollout goes on: `pre-rollout` before the
canary is created, `confirm-promotion` once every step passed and before the automatic promotion. A URL
gate is POSTed the rollout's event (JSON); a command gets it on stdin and in FLEET_EVENT. Answers:

    URL      2xx: approve · 4xx: refuse (its body is quoted as the reason) · 408, 425, 429, 5xx, no
             connection or no answer within the timeout: no answer yet, asked again until the deadline
    command  exit 0: approve · any other exit: refuse (its last output quoted) · still running at the
             timeout: no answer yet

A webhook is a URL POSTed the same event at each phase change and at the end. Asking and posting are
fleet/adapters/hooks.py; this module is pure.
"""
import shlex
from dataclasses import dataclass

from .records import RolloutState

NOT_YET = {408, 425, 429}


@dataclass(frozen=True)
class Answer:
    approved: bool | None  # None: no answer yet
    detail: str


def is_url(spec: str) -> bool:
    return spec.startswith(("http://", "https://"))


def check_spec(spec: str) -> str:
    """A gate or webhook as written in a label or a flag: a URL, or a command line (gates only). Pure;
    ValueError naming the fix."""
    if not spec.strip():
        raise ValueError("empty; give a URL (http://...) or a command")
    if not is_url(spec):
        try:
            if not shlex.split(spec):
                raise ValueError
        except ValueError:
            raise ValueError(f"{spec!r} is neither a URL (http://...) nor a command line") from None
    return spec


def answer_of(status: int, body: str) -> Answer:
    """A URL gate's HTTP answer as approve, refuse or not yet. Pure."""
    said = f"{status}: {body.strip()[:300]}" if body.strip() else str(status)
    if 200 <= status < 300:
        return Answer(True, said)
    if 400 <= status < 500 and status not in NOT_YET:
        return Answer(False, said)
    return Answer(None, said)


def event(state: RolloutState, rollout: dict, stack: str, service: str, kind: str, links: dict | None = None, *,
          at: float) -> dict:
    """The JSON a webhook or gate receives, sent at `at` (epoch seconds). Pure."""
    return {"kind": kind, "stack": stack, "service": service, "revision": state.revision,
            "image": state.image, "pinned": state.canary_image, "previous_image": state.previous_image,
            "cause": state.cause, "tag_moved": next((e["detail"] for e in state.timeline if e["event"] == "tag"), None),
            "phase": rollout.get("phase"), "share": rollout.get("share"), "step": rollout.get("step"),
            "reason": rollout.get("reason", ""), "at": at, "links": links or {}}
