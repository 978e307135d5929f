"""Rollout state, control requests, history and the per-service lock, in Consul KV (py-consul).

Keys, under fleet/rollouts/<stack>/<service>/: `lock` (held through a Consul session, TTL renewed by a
thread; it lapses when the holder dies), `state` (the rollout in progress, JSON), `control` (promote or
abort, written by other fleet processes), `history/<revision>` (one JSON record per revision).
Traffic weights live in fleet/traffic/<consul service>/<role>, which the replicas follow.
"""
import json
import os
import socket
import threading
import time

import consul
import requests

from .consul import ConsulUnavailable

SESSION_TTL = 10  # seconds; Consul may take up to twice this to let a dead holder's lock go


class Store:
    def __init__(self, c: consul.Consul, stack: str, service: str):
        self.consul, self.prefix = c, f"fleet/rollouts/{stack}/{service}"
        self.session: str | None = None
        self._renewing = threading.Event()

    def _get(self, key: str, **kw):
        try:
            return self.consul.kv.get(f"{self.prefix}/{key}", **kw)
        except (requests.RequestException, consul.ConsulException) as e:
            raise ConsulUnavailable(f"Consul does not answer ({e}); check CONSUL_HTTP_ADDR") from None

    # lock -----------------------------------------------------------------------------------
    def acquire(self, command: str) -> dict | None:
        """Take the lock; None when taken, else the holder found there (who has it, since when)."""
        holder = {"host": socket.gethostname(), "pid": os.getpid(), "command": command, "since": time.time()}
        self.session = self.consul.session.create(name=f"fleet {self.prefix}", ttl=SESSION_TTL,
                                                  behavior="release", lock_delay=0)
        if self.consul.kv.put(f"{self.prefix}/lock", json.dumps(holder), acquire=self.session):
            threading.Thread(target=self._renew, name="consul-session", daemon=True).start()
            return None
        self.consul.session.destroy(self.session)
        self.session = None
        return self.holder() or {"host": "?", "pid": "?", "command": "?"}

    def holder(self) -> dict | None:
        _, item = self._get("lock")
        if not item or not item.get("Session") or not item.get("Value"):
            return None
        return json.loads(item["Value"])

    def _renew(self) -> None:
        while not self._renewing.wait(3.0):
            try:
                self.consul.session.renew(self.session)
            except Exception:
                pass  # the next renewal tries again; a lapsed lock only lets `--resume` in

    def release(self) -> None:
        self._renewing.set()
        if self.session:
            try:
                self.consul.kv.put(f"{self.prefix}/lock", "", release=self.session)
                self.consul.session.destroy(self.session)
            finally:
                self.session = None

    # state and control ----------------------------------------------------------------------
    def load(self) -> dict | None:
        _, item = self._get("state")
        return json.loads(item["Value"]) if item and item.get("Value") else None

    def save(self, doc: dict) -> None:
        self.consul.kv.put(f"{self.prefix}/state", json.dumps(doc))

    def clear(self) -> None:
        self.consul.kv.delete(f"{self.prefix}/state")
        self.consul.kv.delete(f"{self.prefix}/control")

    def request(self, action: str) -> None:
        self.consul.kv.put(f"{self.prefix}/control", action)

    def control(self, index: int | None = None, wait: str = "5s") -> tuple[int, str | None]:
        """Blocking query on the control key: returns when it changes (or after `wait`)."""
        index, item = self._get("control", index=index, wait=wait)
        return index, (item["Value"].decode() if item and item.get("Value") else None)

    # history --------------------------------------------------------------------------------
    def history(self) -> list[dict]:
        _, items = self._get("history/", recurse=True)
        return sorted((json.loads(i["Value"]) for i in items or []), key=lambda r: r["revision"])

    def record(self, doc: dict) -> None:
        self.consul.kv.put(f"{self.prefix}/history/{doc['revision']:06d}", json.dumps(doc))


def set_weight(c: consul.Consul, consul_service: str, role: str, weight: int | None) -> None:
    """The weight the replicas of a role register with; None puts back their own default."""
    key = f"fleet/traffic/{consul_service}/{role}"
    if weight is None:
        c.kv.delete(key)
    else:
        c.kv.put(key, str(weight))
