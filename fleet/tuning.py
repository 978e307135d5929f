"""Live configuration of the service's batching, admission and GPU-watermark knobs (`fleet config`).

The document lives in Consul KV at `fleet/config/<consul service>` (JSON, knob -> value); every replica
follows it with a blocking query and applies a change without a restart (fleet_inference/tuning.py).
fleet checks every value before it writes (a bad one: exit 2, nothing written) and writes with
check-and-set, so two operators changing different knobs at once both keep their change.

KNOBS and the key are fleet_protocol's, which the replicas use too.
"""
import json

import consul

from fleet_protocol import KNOBS, check_knob, config_key

from .adapters.consul import call
from .errors import BadInput

CAS_TRIES = 5


def check(name: str, value: str) -> int | float:
    """The knob's value as its type, or BadInput naming the problem and the fix. Pure."""
    try:
        return check_knob(name, value)
    except ValueError as e:
        raise BadInput(f"{e} ({KNOBS[name][3]})" if name in KNOBS else str(e)) from None


def parse_assignments(pairs: list[str]) -> dict[str, int | float]:
    """`KNOB=VALUE` arguments, each checked. Pure."""
    if not pairs:
        raise BadInput("nothing to set: give KNOB=VALUE, e.g. `fleet config set max_batch=8`")
    values = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep:
            raise BadInput(f"{pair!r}: expected KNOB=VALUE, e.g. max_batch=8")
        values[name.strip()] = check(name.strip(), value.strip())
    return values


def read(c: consul.Consul, consul_service: str) -> tuple[int | None, dict]:
    """The document (knobs set through fleet) and its modify index; {} and None when there is none."""
    _, item = call(c.kv.get, config_key(consul_service))
    if not item or not item.get("Value"):
        return (item or {}).get("ModifyIndex"), {}
    try:
        doc = json.loads(item["Value"])
    except ValueError:
        doc = {}
    return item["ModifyIndex"], doc if isinstance(doc, dict) else {}


def change(c: consul.Consul, consul_service: str, edit) -> dict:
    """Apply `edit(doc) -> doc` with check-and-set, retried when another writer came first."""
    for _ in range(CAS_TRIES):
        index, doc = read(c, consul_service)
        new = edit(dict(doc))
        if new == doc:
            return new
        if call(c.kv.put, config_key(consul_service), json.dumps(new, sort_keys=True), cas=index or 0):
            return new
    raise BadInput(f"{config_key(consul_service)} kept changing under fleet ({CAS_TRIES} tries); try again")


def set_knobs(c: consul.Consul, consul_service: str, values: dict) -> dict:
    return change(c, consul_service, lambda doc: {**doc, **values})


def check_names(names: list[str]) -> list[str]:
    """Knob names to unset, each known. Pure."""
    unknown = [n for n in names if n not in KNOBS]
    if unknown or not names:
        raise BadInput(f"unknown knob(s) {unknown}; the knobs are: {', '.join(KNOBS)}" if unknown
                       else "nothing to unset: name the knobs, e.g. `fleet config unset max_batch`")
    return names


def unset_knobs(c: consul.Consul, consul_service: str, names: list[str]) -> dict:
    return change(c, consul_service, lambda doc: {k: v for k, v in doc.items() if k not in names})
