"""Gates and webhooks, the pure part: what a rollout sends the outside world, and how an answer reads.

A gate is a URL or a command that must say yes before the rollout goes on: `pre-rollout` before the
canary is created, `confirm-promotion` once every step passed and before the automatic promotion. A URL
gate is POSTed the rollout's event (JSON); a command gets it on stdin and in FLEET_EVENT. Answers:

    URL      2xx: approve · 4xx: refuse (its body is quoted as the reason) · 408, 425, 429, 5xx, no
             connection or no answer within the timeout: no answer yet, asked again until the deadline
    command  exit 0: approve · any other exit: refuse (its last output quoted) · still running at the
             timeout: no answer yet

A webhook is a URL POSTed the same event at each phase change and at the end: fleet's JSON, or with
`slack:`, `teams:` or `discord:` before the URL that service's incoming-webhook format (`chat_payload`: one
short line people read). Asking and posting are fleet/adapters/hooks.py; this module is pure.
"""
import shlex
from dataclasses import dataclass

from .records import RolloutState
from .secrets import CHATS

NOT_YET = {408, 425, 429}


@dataclass(frozen=True)
class Answer:
    approved: bool | None  # None: no answer yet
    detail: str


def is_url(spec: str) -> bool:
    return spec.startswith(("http://", "https://"))


def webhook_of(spec: str) -> tuple[str | None, str]:
    """A webhook as written: (the chat service, its URL) for `slack:URL`, `teams:URL` or `discord:URL`, else
    (None, the URL: fleet's JSON event). Pure."""
    kind, _, url = spec.partition(":")
    return (kind, url) if kind in CHATS and is_url(url) else (None, spec)


def is_webhook(spec: str) -> bool:
    return is_url(webhook_of(spec)[1])


def chat_line(event: dict) -> str:
    """The event as one short line: service, image, phase, share, reason. Pure."""
    share = f" at {event['share']}%" if event.get("share") else ""
    reason = f": {event['reason']}" if event.get("reason") else ""
    return (f"fleet {event['kind']}: {event['stack']}/{event['service']} {event['image']} (revision "
            f"{event['revision']}) {event['phase']}{' (paused)' if event.get('paused') else ''}{share}{reason}")


def chat_payload(kind: str, event: dict) -> dict:
    """What a Slack, Microsoft Teams (a Workflows webhook: an Adaptive Card) or Discord incoming webhook takes,
    for one event: its line, and its links (commands as code, URLs as links). Pure."""
    line, links = chat_line(event), event.get("links") or {}
    commands = {name: v for name, v in links.items() if not is_url(v)}
    urls = {name: v for name, v in links.items() if is_url(v)}
    if kind == "slack":
        return {"text": line + "".join(f" · {name}: `{v}`" for name, v in commands.items())
                + "".join(f" · <{v}|{name}>" for name, v in urls.items())}
    if kind == "discord":  # at most 2,000 characters; <URL> shows no preview
        text = line + "".join(f" · {name}: `{v}`" for name, v in commands.items()) \
            + "".join(f" · {name}: <{v}>" for name, v in urls.items())
        return {"content": text[:2000]}
    if kind == "teams":
        card = {"$schema": "http://adaptivecards.io/schemas/adaptive-card.json", "type": "AdaptiveCard",
                "version": "1.4",
                "body": [{"type": "TextBlock", "text": line, "wrap": True}]
                + [{"type": "TextBlock", "text": f"{name}: `{v}`", "wrap": True, "isSubtle": True}
                   for name, v in commands.items()],
                "actions": [{"type": "Action.OpenUrl", "title": name, "url": v} for name, v in urls.items()]}
        return {"type": "message", "attachments": [{"contentType": "application/vnd.microsoft.card.adaptive",
                                                    "contentUrl": None, "content": card}]}
    raise ValueError(f"{kind!r} is none of {', '.join(CHATS)}")


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
            "paused": rollout.get("held_since") is not None, "reason": rollout.get("reason", ""), "at": at,
            "links": links or {}}
