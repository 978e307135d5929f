"""What fleet and its replicas agree on, written once and installed in both: fleet's environment has it
through pyproject.toml, the replica image through the root Dockerfile (the image does not ship fleet).

- the live-configuration knobs and their bounds (`fleet config`, fleet_inference/tuning.py)
- the Consul keys both read and write: the traffic weight of each role, the live-configuration document
  (stacks/consul/entrypoint.sh's ACL policies name the same prefixes, in shell)
- how both reach Consul: a token from CONSUL_HTTP_TOKEN or the file CONSUL_HTTP_TOKEN_FILE names (a Swarm
  secret), and TLS checked against one server name (CONSUL_TLS_SERVER_NAME) whatever address is dialled

The standard library and requests only: both sides have them.
"""
from pathlib import Path

import requests.adapters

# knob -> (type, lowest, highest, what it is)
KNOBS: dict[str, tuple[type, float, float, str]] = {
    "max_batch": (int, 1, 1024, "rows per inference batch"),
    "max_wait_ms": (float, 0, 1000, "how long a batch waits for company, in ms"),
    "max_queue": (int, 1, 100_000, "rows waiting before /predict is refused with 503"),
    "gpu_min_free_mb": (int, 0, 1_000_000, "free GPU memory under which the replica is degraded, in MiB"),
    "gpu_max_used_pct": (float, 0, 100, "GPU memory used over which the replica is degraded, in %"),
}


def check_knob(name: str, value: object) -> int | float:
    """A knob's value (a JSON value, or the text of `fleet config set`) as its type, or ValueError naming the
    problem and the bounds. Pure."""
    if name not in KNOBS:
        raise ValueError(f"unknown knob {name!r}; the knobs are: {', '.join(KNOBS)}")
    kind, low, high, _ = KNOBS[name]
    if isinstance(value, bool):
        raise ValueError(f"{name}={value!r}: not a number")
    try:
        number = kind(value) if kind is float else int(str(value), 10)
    except (TypeError, ValueError):
        raise ValueError(f"{name}={value!r}: not a {'whole number' if kind is int else 'number'}") from None
    if not (low <= number <= high) or number != number:
        raise ValueError(f"{name}={value!r}: must be between {low:g} and {high:g}")
    return number


def config_key(consul_service: str) -> str:
    """The live-configuration document of a service's replicas (JSON: knob -> value)."""
    return f"fleet/config/{consul_service}"


def weight_key(consul_service: str, role: str) -> str:
    """The weight the replicas of a role (stable, canary) register with, which fleet sets during a rollout."""
    return f"fleet/traffic/{consul_service}/{role}"


def cut_key(consul_service: str, role: str) -> str:
    """Present while fleet has cut a role's replicas out of traffic (its value: why): each replica then puts
    itself into maintenance on its own node's agent. Held by the rollout's session, so gone with it."""
    return f"fleet/traffic/{consul_service}/{role}-out"


class SecretUnreadable(ValueError):
    """The file a `NAME_FILE` variable names cannot be read."""


def secret(env: dict, name: str) -> str:
    """`name`, else the contents of the file `name_FILE` names (as Consul's CLI reads a token; Swarm's
    secrets are files); '' when neither is set; SecretUnreadable naming the file when it cannot be read."""
    if env.get(name):
        return env[name]
    path = env.get(f"{name}_FILE")
    if not path:
        return ""
    try:
        return Path(path).read_text().strip()
    except OSError as e:
        raise SecretUnreadable(f"{name}_FILE={path}: cannot read it ({e.strerror})") from None


class ServerName(requests.adapters.HTTPAdapter):
    """TLS to Consul checked against this name (CONSUL_TLS_SERVER_NAME), whatever address is dialled:
    e.g. a server certificate for `server.dc1.consul` reached at a node's address. Mount it on a
    requests session for "https://"."""

    def __init__(self, name: str):
        self.name = name
        super().__init__()

    def init_poolmanager(self, *args, **kw):
        super().init_poolmanager(*args, server_hostname=self.name, assert_hostname=self.name, **kw)
