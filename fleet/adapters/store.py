"""Rollout state, control requests, history and the per-service lock, in Consul KV (py-consul).

Keys, under fleet/rollouts/<stack>/<service>/: `lock` (held through a Consul session, TTL renewed by a
thread; it lapses when the holder dies), `state` (the rollout in progress: a `RolloutState`), `control` (a
promote or abort request for one rollout, written by other fleet processes: fleet/core/control.py),
`history/<revision>` (one `Revision` each). The records and their JSON are fleet/core/records.py; this
module is the only one that reads or writes them in Consul.
Traffic weights live in fleet/traffic/<consul service>/<role>, which the replicas follow. They are held
by the lock's session (Consul's `lock` verb, session behaviour `delete`): when the controller dies, its
session lapses and Consul deletes them, so every replica falls back to its own default weight (a
canary's is 0). A canary's share never outlives the controller that gave it.

The lock is fenced: its session has a lock-delay (a lapsed holder's lock cannot be taken at once), a
renewal that Consul refuses marks the lock lost, and every write of the holder (state, history, the
traffic weights) is one Consul transaction whose first operation is `check-session` on the lock key:
once the holder's session is gone Consul rolls the whole transaction back, so a controller that was
paused or cut off past its TTL cannot write over the one that took over, even when it resumes in the
middle of an action; it stops (LockLost) there. Swarm actions cannot join a Consul transaction: they
are guarded by `check()` just before them.
"""
import base64
import json
import os
import socket
import threading
import time
from dataclasses import dataclass, field

import consul
from consul.callback import CB
from consul.exceptions import ClientError

from fleet_protocol import cut_key, weight_key

from ..core.control import ControlRequest, decode
from ..core.records import Revision, RolloutState
from ..core.secrets import redact_text
from .consul import call, patiently

SESSION_TTL = 10  # seconds; Consul may take up to twice this to let a dead holder's lock go
LOCK_DELAY = 10  # seconds after a holder's session ends before anyone may take the lock
# The catalog node fleet's lock sessions belong to: one fleet registers itself, with no agent behind it. A
# session belongs to a node, and Consul destroys it with its node; a server's node lost is deregistered
# within seconds (autopilot removes the dead server), so a session on the node of the agent fleet spoke to
# would end with that node. A node no agent runs is never failed, reaped or removed.
LOCK_NODE = "fleet-locks"


class LockLost(RuntimeError):
    """This process no longer holds the rollout lock: another fleet may act now, so this one must not."""


class Store:
    """`patience`: seconds each read and write waits out a Consul that does not answer (fleet/adapters/consul.py
    `patiently`: PATIENCE for a rollout, so that a leader election does not end it); `control`, an evidence
    source's blocking query, never waits."""

    def __init__(self, c: consul.Consul, stack: str, service: str, patience: float = 0.0):
        self.consul, self.prefix, self.patience = c, f"{rollouts_prefix(stack)}{service}", patience
        self.session: str | None = None
        self.lock_index = 0  # Consul's index of our lock: control requests written before it are ignored
        self.lost = threading.Event()
        self.lost_why = ""  # what Consul said when the lock was found lost
        self._renewing = threading.Event()

    def _get(self, key: str, **kw):
        return patiently(self.patience, self.consul.kv.get, f"{self.prefix}/{key}", **kw)

    def _put(self, key: str, value: str, **kw):
        return patiently(self.patience, self.consul.kv.put, f"{self.prefix}/{key}", value, **kw)

    # lock -----------------------------------------------------------------------------------
    def acquire(self, command: str) -> dict | None:
        """Take the lock; None when taken, else the holder found there (who has it, since when)."""
        holder = {"host": socket.gethostname(), "pid": os.getpid(), "command": command, "since": time.time()}
        # TTL only, no node check, on fleet's own node: the lock stays fleet's whichever node is lost
        patiently(self.patience, _register_lock_node, self.consul)
        self.session = patiently(self.patience, self.consul.session.create, name=f"fleet {self.prefix}",
                                 node=LOCK_NODE, ttl=SESSION_TTL, behavior="delete", lock_delay=LOCK_DELAY, checks=[])
        if self._put("lock", json.dumps(holder), acquire=self.session):
            _, item = self._get("lock", consistency="consistent")
            self.lock_index = (item or {}).get("ModifyIndex", 0)  # requests older than this are not ours
            self.lost.clear()
            self._renewing.clear()
            threading.Thread(target=self._renew, name="consul-session", daemon=True).start()
            return None
        patiently(self.patience, self.consul.session.destroy, self.session)
        self.session = None
        return self.holder() or {"host": "?", "pid": "?", "command": "? (the lock is in its lock-delay)"}

    def holder(self) -> dict | None:
        _, item = self._get("lock")
        if not item or not item.get("Session") or not item.get("Value"):
            return None
        return json.loads(item["Value"])

    def _renew(self) -> None:
        """Renew every 3 s. Consul saying the session is gone means the lock is lost, once a consistent
        read confirms it (a server replaying its log after a restart may not know a recent session yet);
        an unreachable Consul is tried again (the session outlives a short outage: TTL, and Consul
        restarts its timers)."""
        while not self._renewing.wait(3.0):
            try:
                self.consul.session.renew(self.session)
            except consul.NotFound:
                try:
                    gone = self.consul.session.info(self.session, consistency="consistent")[1] is None
                except Exception:  # not ready for consistent reads: unknown, not gone
                    gone = False
                if gone:
                    self.lost_why = "Consul no longer knows its session"
                    self.lost.set()
                    return
            except Exception:
                pass

    def check(self) -> None:
        """Raise LockLost when this process no longer holds the lock: call before acting."""
        if self.session is None or self.lost.is_set():
            raise LockLost("this fleet lost the rollout lock (its Consul session ended: paused or cut off past "
                           f"its {SESSION_TTL}s TTL{': ' + self.lost_why if self.lost_why else ''}); another fleet "
                           "may act now, so this one changed nothing more")

    def release(self) -> None:
        self._renewing.set()
        if self.session:
            try:
                self.consul.kv.put(f"{self.prefix}/lock", "", release=self.session)
                self.consul.session.destroy(self.session)
            except Exception:  # Consul away: the session's TTL lets the lock go
                pass
            finally:
                self.session = None

    # state and control ----------------------------------------------------------------------
    def load(self) -> RolloutState | None:
        _, item = self._get("state")
        return _state(item)

    def write(self, changes: dict[str, str | None], held: bool = False, patient: bool = True) -> None:
        """Set (None: delete) these keys in one transaction that Consul applies only while this process's
        session holds the lock; LockLost, with nothing written, once it does not. `held`: the keys set are
        held by the session too, so Consul deletes them when it lapses. Retried while Consul does not answer,
        for the store's patience unless not `patient` (fenced by the lock, so a retry is safe)."""
        self.check()
        ops = [{"KV": {"Verb": "check-session", "Key": f"{self.prefix}/lock", "Session": self.session}}]
        for key, value in changes.items():
            if value is None:
                ops.append({"KV": {"Verb": "delete", "Key": key}})
                continue
            op = {"Verb": "set", "Key": key, "Value": base64.b64encode(value.encode()).decode()}
            ops.append({"KV": {**op, "Verb": "lock", "Session": self.session} if held else op})
        refused = patiently(self.patience if patient else 0, _transaction, self.consul, ops)
        if isinstance(refused, str):
            self.lost_why = f"a fenced write was refused: {refused}"
            self.lost.set()
            self.check()

    def save(self, state: RolloutState, patient: bool = True) -> None:
        """Write the state, fenced: only while this process's session holds the lock."""
        self.write({f"{self.prefix}/state": _doc(state.to_dict())}, patient=patient)

    def set_weights(self, consul_service: str, weights: dict[str, int | None]) -> None:
        """The weight each role's replicas register with (None puts back their own default, and takes away a
        cut), fenced, and held by the lock's session: gone, so back to each replica's default, when the
        controller is. (Deleted here, not left to the session's end: a key a session held when it ends is
        in Consul's lock-delay, and the next rollout's write of it would fail as if its lock were lost.)"""
        changes = {weight_key(consul_service, role): None if w is None else str(w) for role, w in weights.items()}
        changes.update({cut_key(consul_service, role): None for role, w in weights.items() if w is None})
        self.write(changes, held=True)

    def cut(self, consul_service: str, role: str, reason: str) -> None:
        """A role's replicas out of traffic: each puts itself into maintenance on its own node's agent when it
        sees this key (fenced, and held by the lock's session like the weights)."""
        self.write({cut_key(consul_service, role): reason}, held=True)

    def begin(self, state: RolloutState) -> None:
        """The state of a new rollout, and no control request left from before it, in one fenced write."""
        self.write({f"{self.prefix}/state": _doc(state.to_dict()), f"{self.prefix}/control": None})

    def clear(self) -> None:
        self.write({f"{self.prefix}/state": None, f"{self.prefix}/control": None})

    def request(self, request: ControlRequest) -> None:
        self._put("control", request.encode())

    def control(self, index: int | None = None, wait: str = "5s") -> tuple[int, ControlRequest | None, int]:
        """Blocking query on the control key: returns when it changes (or after `wait`), with the request
        there (None when none or unreadable) and the index Consul wrote it at."""
        index, item = call(self.consul.kv.get, f"{self.prefix}/control", index=index, wait=wait)
        return index, decode(item["Value"] if item else None), (item or {}).get("ModifyIndex", 0)

    # history --------------------------------------------------------------------------------
    def history(self) -> list[Revision]:
        _, items = self._get("history/", recurse=True)
        return sorted((_revision(i) for i in items or []), key=lambda r: r.revision)

    def revision(self, number: int) -> Revision | None:
        return next((h for h in self.history() if h.revision == number), None)

    def record(self, revision: Revision) -> None:
        self.write({self.history_key(revision.revision): _doc(revision.to_dict())})

    def history_key(self, revision: int) -> str:
        return f"{self.prefix}/history/{revision:06d}"


def rollouts_prefix(stack: str) -> str:
    """Where a stack's rollout records live: one folder per service under it."""
    return f"fleet/rollouts/{stack}/"


@dataclass
class StackRollout:
    """One service's rollout records as a read of the whole stack's keys finds them."""
    state: RolloutState | None = None  # the rollout in progress, if any
    held: bool = False  # a fleet process holds the lock (else an unfinished rollout is orphaned)
    history: dict[int, Revision] = field(default_factory=dict)


def stack_rollouts(c: consul.Consul, stack: str, index: int | None = None,
                   wait: str | None = None) -> tuple[int, dict[str, StackRollout]]:
    """Every service's rollout records in a stack, in one read (a blocking query with `index`)."""
    kw = {"index": index, "wait": wait} if wait else {}
    index, items = call(c.kv.get, rollouts_prefix(stack), recurse=True, **kw)
    found: dict[str, StackRollout] = {}
    for item in items or []:
        parts = item["Key"].split("/")  # fleet/rollouts/<stack>/<service>/<key>[/<revision>]
        if len(parts) < 5:
            continue
        entry = found.setdefault(parts[3], StackRollout())
        if parts[4] == "state":
            entry.state = _state(item)
        elif parts[4] == "lock":
            entry.held = bool(item.get("Session") and item.get("Value"))
        elif parts[4] == "history" and item.get("Value"):
            record = _revision(item)
            entry.history[record.revision] = record
    return index, found


def _doc(record: dict) -> str:
    """A record as KV holds it: JSON, with every URL in it redacted (fleet/core/secrets.py)."""
    return redact_text(json.dumps(record))


def _state(item: dict | None) -> RolloutState | None:
    return RolloutState.from_dict(json.loads(item["Value"])) if item and item.get("Value") else None


def _revision(item: dict) -> Revision:
    return Revision.from_dict(json.loads(item["Value"]))


def _register_lock_node(c: consul.Consul) -> None:
    """LOCK_NODE in the catalog (idempotent). On py-consul's HTTP client directly: its `catalog.register`
    (1.8.0) puts the token in the body as `WriteRequest`, a field Consul 1.8 refuses."""
    c.http.put(CB.json(), "/v1/catalog/register", data=json.dumps({"Node": LOCK_NODE, "Address": "127.0.0.1"}),
               headers=c.prepare_headers())


def _transaction(c: consul.Consul, ops: list[dict]) -> str | None:
    """Consul's /v1/txn: None when applied, else Consul's reason for rolling it back (409: a check failed).
    Called on py-consul's HTTP client directly: its `txn.put` (1.8.0) sends no ACL token, so with ACLs on every
    operation was denied."""
    try:
        c.http.put(CB.json(), "/v1/txn", data=json.dumps(ops), headers=c.prepare_headers())
        return None
    except ClientError as e:
        if not str(e).startswith("409"):
            raise
        if "Permission denied" in str(e):  # the token's policy, not the fence
            raise consul.ACLPermissionDenied(f"a transaction on {[op['KV']['Key'] for op in ops]}: Permission denied")
        return str(e).removeprefix("409 ").strip()[:300]
