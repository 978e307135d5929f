"""Which nodes a service's placement constraints leave it (Swarm's `node.*` and `engine.labels.*`). Pure."""
import re

_CONSTRAINT = re.compile(r"^\s*([\w.\-]+)\s*(==|!=)\s*(.*?)\s*$")


def _value(attribute: str, node: dict) -> str | None:
    """The node's value of a constraint's attribute; None for one this module does not know."""
    if attribute.startswith("node.labels."):
        return (node.get("labels") or {}).get(attribute[len("node.labels."):], "")
    if attribute.startswith("engine.labels."):
        return (node.get("engine_labels") or {}).get(attribute[len("engine.labels."):], "")
    known = {"node.id": "id", "node.hostname": "hostname", "node.role": "role", "node.platform.os": "os",
             "node.platform.arch": "arch"}
    return str(node.get(known[attribute], "")) if attribute in known else None


def parse(constraint: str) -> tuple[str, str, str] | None:
    """A constraint as (attribute, "==" or "!=", value); None for one that is not of that form."""
    m = _CONSTRAINT.match(constraint)
    return (m.group(1), m.group(2), m.group(3)) if m else None


def allows(constraints: list[str] | None, node: dict) -> bool:
    """Whether every constraint lets a task on `node` (a dict of Swarm.nodes()); one it cannot read allows."""
    for attribute, op, wanted in filter(None, map(parse, constraints or [])):
        value = _value(attribute, node)
        if value is not None and (value == wanted) != (op == "=="):
            return False
    return True
