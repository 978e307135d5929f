"""Control requests (`fleet promote`, `abort`, `pause`, `resume`) as values, and the rule that applies each once.

A request names the rollout (revision) it was made for and carries an id; the controller applies it
only when it is for its rollout, made while it held the lock (Consul's index of the request is above
the lock's), and not applied already. So a request left from an earlier rollout, one made before this
rollout or this controller began, or one Consul delivers again (a blocking query's timeout returns the
same key) is never applied. This is a purely computational module with no side-effects.
"""
import json
import uuid
from collections.abc import Collection
from dataclasses import dataclass

ACTIONS = ("promote", "abort", "pause", "resume")


@dataclass(frozen=True)
class ControlRequest:
    action: str
    revision: int
    id: str

    def encode(self) -> str:
        return json.dumps({"action": self.action, "revision": self.revision, "id": self.id})

    @classmethod
    def new(cls, action: str, revision: int) -> "ControlRequest":
        return cls(action, revision, uuid.uuid4().hex)


def decode(raw: bytes | str | None) -> ControlRequest | None:
    """A request from the control key's value; None for anything else (an old plain word, garbage)."""
    try:
        doc = json.loads(raw) if raw else None
        if isinstance(doc, dict) and doc.get("action") in ACTIONS and isinstance(doc.get("revision"), int):
            return ControlRequest(doc["action"], doc["revision"], str(doc.get("id", "")))
    except (TypeError, ValueError):
        pass
    return None


def to_apply(request: ControlRequest | None, modify_index: int, revision: int, since_index: int,
             applied: Collection[str]) -> ControlRequest | None:
    """The request to apply now, or None: for this `revision`, written after `since_index` (the lock's
    index when this controller took it), with an id not in `applied`."""
    if request is None or not request.id or request.id in applied:
        return None
    if request.revision != revision or modify_index <= since_index:
        return None
    return request
