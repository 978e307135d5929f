"""Talking to the stack's gateway: where it listens, and requests through one role's route.

The gateway (stacks/gateway/haproxy.cfg) sends a request with `X-Fleet-Route: canary` (or `stable`)
to that role's replicas only, whatever their share of the weighted pool: fleet's golden gate and its
synthetic load go through these routes, so they see what a client sees, on whichever node the
replicas run.
"""
import functools
import json
from dataclasses import dataclass
from pathlib import Path

import httpx

from .endpoints import Endpoints, Unanswered, fixed

ROUTE_HEADER = "X-Fleet-Route"
SYNTHETIC = {"X-Fleet-Origin": "synthetic"}  # the replicas count fleet's requests apart from users'
CONNECT_TIMEOUT = 2.0  # seconds: a lost node's address does not answer at all
MAX_GATEWAYS = 3  # gateways tried for one request before it is given up (no evidence)
CHUNK = 64  # rows per /predict request (the service's FLEET_MAX_ROWS default)


OPS_PORT = 8081  # the gateway's ops port (GATEWAY_OPS_PORT in docker-stack.yml)


def unrouted(url: str, timeout: float = 2.0) -> str | None:
    """None when the gateway whose ops port is `url` sends a request of its public pool to a ready replica
    now (GET /ready through the default, weighted backend answers 200); else what it answered. Replicas
    passing in Consul are not yet routed: the gateway finds them by resolving Consul's DNS every 250 ms."""
    try:
        r = _plain().get(f"{url}/ready", timeout=timeout)
    except httpx.HTTPError as e:
        return f"{url} did not answer: {e!r}"
    return None if r.status_code == 200 else f"{url}/ready answered {r.status_code}: {r.text.strip()[:120]}"


@functools.cache
def _plain() -> httpx.Client:
    """One client for the ops ports' plain HTTP, made once: `httpx.get` makes a client a call, and each loads
    the system's CA bundle into a new TLS context (two thirds of `fleet deploy`'s CPU while it waited). It keeps
    no connection, so each answer is the gateway's now, never a stale connection's."""
    return httpx.Client(verify=False, limits=httpx.Limits(max_keepalive_connections=0))


class GatewayError(Exception):
    """The gateway or a route did not answer: no evidence, never a verdict on the canary."""


class ReplicaError(GatewayError):
    """A replica behind the route answered, with an error: evidence against its role."""

    def __init__(self, message: str, role: str):
        super().__init__(message)
        self.role = role


@dataclass(frozen=True)
class GoldenSet:
    """Golden inputs with their labels (a classifier's), or with the outputs expected (a model of plain
    tensor outputs, whose canary must answer within `tolerance` of the stable). The inputs are rows, or for
    a model of several inputs each input's name with its rows, as /predict takes them."""
    inputs: list | dict
    labels: list | None
    source: str  # where it came from, for the report
    manifest_accuracy: float | None = None  # the canary model's own figure on it (its shipped set only)
    outputs: list | None = None
    tolerance: float | None = None

    @property
    def size(self) -> int:
        """How many rows it has."""
        return len(next(iter(self.inputs.values()), [])) if isinstance(self.inputs, dict) else len(self.inputs)

    def rows(self, start: int, stop: int) -> list | dict:
        """Its rows start..stop - 1, as /predict takes them."""
        if isinstance(self.inputs, dict):
            return {name: rows[start:stop] for name, rows in self.inputs.items()}
        return self.inputs[start:stop]

    @classmethod
    def of(cls, doc: dict, source: str, manifest: dict | None = None) -> "GoldenSet":
        """From a golden file's JSON (and the canary's manifest's golden entry, for a shipped set)."""
        manifest = manifest or {}
        if doc.get("labels") is None and doc.get("outputs") is None:
            raise KeyError("labels (a classifier's) or outputs (a tensor model's)")
        tolerance = manifest.get("tolerance", doc.get("tolerance"))
        if doc.get("labels") is None and not isinstance(tolerance, (int, float)):
            raise KeyError("tolerance: how far a canary's outputs may be from the stable's")
        return cls(doc["inputs"], doc.get("labels"), source, manifest.get("accuracy"), doc.get("outputs"),
                   None if tolerance is None else float(tolerance))


class Gateway:
    """The gateway's ops port on any live node (fleet/adapters/endpoints.py): a gateway that does not
    answer is left for the next node's, within one request."""

    def __init__(self, endpoints: Endpoints | str, timeout: float = 10.0):
        self.endpoints = fixed(endpoints) if isinstance(endpoints, str) else endpoints
        self.http = httpx.Client(timeout=httpx.Timeout(timeout, connect=CONNECT_TIMEOUT))

    @property
    def url(self) -> str:
        return self.endpoints.current

    def close(self) -> None:
        self.http.close()

    def _send(self, method: str, path: str, what: str, **kw) -> httpx.Response:
        """The request through the first gateway that answers; GatewayError when none does."""
        try:
            return self.endpoints.first(lambda url: self.http.request(method, f"{url}{path}", **kw), MAX_GATEWAYS)
        except Unanswered as e:
            raise GatewayError(f"no gateway answered {what}: {e}") from None

    def _get(self, role: str, path: str) -> httpx.Response:
        return self._send("GET", path, f"GET {path} ({role} route)", headers={ROUTE_HEADER: role})

    def info(self, role: str) -> dict | None:
        """The /info of a replica of `role`, or None while the route has no replica ready."""
        r = self._get(role, "/info")
        return r.json() if r.status_code == 200 else None

    def golden_set(self, path: str | None = None) -> GoldenSet:
        """The golden set of `path` (JSON with inputs and labels), or the one shipped with the canary's model."""
        try:
            if path:
                return GoldenSet.of(json.loads(Path(path).read_text()), path)
            info = self.info("canary") or {}
            r = self._get("canary", "/golden")
            if r.status_code != 200:
                raise GatewayError(f"the canary's /golden answered {r.status_code}: {r.text[:200]}")
            return GoldenSet.of(r.json(), f"model {info.get('model')} v{info.get('version')}", info.get("golden"))
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise GatewayError(f"cannot read the golden set {path or '(shipped with the canary)'}: {e!r}") from None

    def predict(self, role: str, inputs: list | dict) -> httpx.Response:
        return self._send("POST", "/predict", f"/predict ({role} route)", json={"inputs": inputs},
                          headers={ROUTE_HEADER: role, **SYNTHETIC})

    def accuracy(self, role: str, golden: GoldenSet) -> float:
        """The share of the golden rows a role's replicas classify right, through its route."""
        classes = [c for answer in self._answers(role, golden, "classes") for c in answer]
        return sum(int(c == y) for c, y in zip(classes, golden.labels)) / len(golden.labels) if golden.labels else 0.0

    def outputs(self, role: str, golden: GoldenSet) -> list:
        """A role's replicas' outputs on the golden rows (a model of tensor outputs), through its route."""
        return [row for answer in self._answers(role, golden, "outputs") for row in answer]

    def _answers(self, role: str, golden: GoldenSet, field: str):
        """`field` of each /predict answer to the golden rows, CHUNK rows a request."""
        for i in range(0, golden.size, CHUNK):
            r = self.predict(role, golden.rows(i, i + CHUNK))
            why = f"/predict through the {role} route answered {r.status_code} on golden rows {i}..{i + CHUNK - 1}: " \
                  f"{r.text[:200]}"
            if r.status_code == 200 and field not in r.json():
                why = f"/predict through the {role} route answers no {field!r}: its model is of another kind"
            elif r.status_code == 200:
                yield r.json()[field]
                continue
            raise ReplicaError(why, role) if "X-Fleet-Server" in r.headers else GatewayError(why)
