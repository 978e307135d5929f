"""Consul through py-consul: the instances of a service and their checks."""
import atexit
import os
import tempfile
from pathlib import Path
from urllib.parse import urlparse

import consul
import requests
import tenacity
import urllib3
from consul.callback import CB
from fleet_protocol import SecretUnreadable, ServerName, secret

from ..errors import BadInput, Unreachable
from ..core.tasks import Instance
from .rotation import after, moved_on

STATUS_ORDER = {"passing": 0, "warning": 1, "critical": 2}


class ConsulUnavailable(Unreachable):
    """Consul's HTTP API does not answer, or refuses fleet (exit 3)."""


TIMEOUT = 5.0  # seconds for any Consul call to connect and answer (a blocking query adds its wait)
PATIENCE = 60.0  # seconds a rollout's reads and writes wait out a Consul that does not answer (an election, a restart)
UNANSWERED = (requests.RequestException, consul.ConsulException)


ACL_FIX = ("give fleet a token with its policy (README, \"fleet's Consul policy\") in CONSUL_HTTP_TOKEN or "
           "CONSUL_HTTP_TOKEN_FILE")


def call(fn, *args, unanswered: tuple = UNANSWERED, **kw):
    """`fn(*args, **kw)`, with Consul not answering (the `unanswered` errors) as ConsulUnavailable (exit 3),
    naming an ACL refusal or a TLS failure as such."""
    try:
        return fn(*args, **kw)
    except consul.ACLPermissionDenied as e:
        if not issubclass(consul.ACLPermissionDenied, unanswered):  # the caller judges Consul's refusals
            raise
        raise ConsulUnavailable(f"Consul refused fleet's token (ACL: {str(e).strip() or 'permission denied'}); "
                                f"{ACL_FIX}") from None
    except requests.exceptions.SSLError as e:
        raise ConsulUnavailable(f"the TLS handshake with Consul failed ({e}); check CONSUL_CACERT (the CA that "
                                "signed Consul's certificate) and that CONSUL_HTTP_ADDR is the HTTPS port") from None
    except unanswered as e:
        raise ConsulUnavailable(f"Consul does not answer ({e}); check CONSUL_HTTP_ADDR") from None


def patiently(seconds: float, fn, *args, **kw):
    """`call(fn, *args, **kw)`, tried again while Consul is unavailable (ConsulUnavailable), for up to `seconds`:
    a leader election after a server's node is lost stalls reads and writes for a few seconds, and a server
    just restarted refuses every token until it has a leader (its ACL system is in legacy mode until then).
    A token that is wrong from the start is found before anything is changed (`check_access`)."""
    if seconds <= 0:
        return call(fn, *args, **kw)
    return tenacity.Retrying(retry=tenacity.retry_if_exception_type(ConsulUnavailable), reraise=True,
                             wait=tenacity.wait_exponential(multiplier=0.25, max=2),
                             stop=tenacity.stop_after_delay(seconds))(call, fn, *args, **kw)


def check_access(c: consul.Consul) -> None:
    """Consul answers, and lets fleet's token read fleet's keys (where ACLs are on, an anonymous read of
    the catalog may pass while every write fails): ConsulUnavailable (exit 3) naming what is wrong,
    before anything is changed."""
    try:
        call(c.kv.get, "fleet/rollouts")  # a refused or unknown token is a 403 (a listing would be filtered)
    except ConsulUnavailable as e:
        if "ACL" in str(e) and not (c.token or os.environ.get("CONSUL_HTTP_TOKEN_FILE")):
            raise ConsulUnavailable(f"Consul has ACLs on and fleet has no token; {ACL_FIX}") from None
        raise


def token_from(env: dict) -> str | None:
    """CONSUL_HTTP_TOKEN, else the contents of CONSUL_HTTP_TOKEN_FILE (as Consul's CLI reads them: a
    Swarm secret is a file); BadInput naming the file when it cannot be read."""
    try:
        return secret(env, "CONSUL_HTTP_TOKEN") or None
    except SecretUnreadable as e:
        raise BadInput(f"{e}; point it at a readable file holding the token") from None


def _flag(env, name: str) -> bool | None:
    """A boolean variable as Go's strconv.ParseBool reads it (Consul's CLI); None when unset; BadInput else."""
    value = env.get(name, "").strip()
    if not value:
        return None
    if value.lower() in ("1", "t", "true"):
        return True
    if value.lower() in ("0", "f", "false"):
        return False
    raise BadInput(f"{name}={value!r} is not a boolean: set it to true or false")


def verify_of(env) -> bool | str:
    """How Consul's certificate is checked: not at all with CONSUL_HTTP_SSL_VERIFY=false, else against
    CONSUL_CACERT (a file), else against the certificates in CONSUL_CAPATH (a folder, as Consul reads it:
    every PEM file in it, joined into one bundle), else the system's."""
    if _flag(env, "CONSUL_HTTP_SSL_VERIFY") is False:  # asked for: not warned about at every call
        urllib3.disable_warnings(urllib3.exceptions.InsecureRequestWarning)
        return False
    if env.get("CONSUL_CACERT"):
        return env["CONSUL_CACERT"]
    if env.get("CONSUL_CAPATH"):
        return _bundle(env["CONSUL_CAPATH"])
    return True


_BUNDLES: dict[str, str] = {}


def _bundle(folder: str) -> str:
    """One file holding every certificate of `folder` (made once a process); BadInput when it has none."""
    if folder not in _BUNDLES:
        try:
            texts = [p.read_text(errors="replace") for p in sorted(Path(folder).iterdir()) if p.is_file()]
            pems = [t for t in texts if "-----BEGIN CERTIFICATE-----" in t]
        except OSError as e:
            raise BadInput(f"CONSUL_CAPATH={folder}: {e.strerror}; point it at a folder of PEM certificates") from None
        if not pems:
            raise BadInput(f"CONSUL_CAPATH={folder} holds no PEM certificate; point it at the folder of your CA's")
        with tempfile.NamedTemporaryFile("w", prefix="fleet-consul-ca-", suffix=".pem", delete=False) as f:
            f.write("\n".join(pems))
        atexit.register(os.unlink, f.name)
        _BUNDLES[folder] = f.name
    return _BUNDLES[folder]


def client(addr: str | None = None, token: str | None = None) -> consul.Consul:
    """A client for CONSUL_HTTP_ADDR (flags override), with the ecosystem's variables: CONSUL_HTTP_TOKEN
    (or CONSUL_HTTP_TOKEN_FILE), CONSUL_HTTP_SSL, CONSUL_HTTP_SSL_VERIFY, CONSUL_CACERT, CONSUL_CAPATH,
    CONSUL_CLIENT_CERT, CONSUL_CLIENT_KEY, CONSUL_TLS_SERVER_NAME and CONSUL_HTTP_AUTH; every call times out
    (TIMEOUT, plus the wait of a blocking query). The address may list several agents of one Consul cluster,
    comma-separated: a call that one does not answer goes to the next."""
    env = os.environ
    ssl = _flag(env, "CONSUL_HTTP_SSL")
    addrs = [a.strip() for a in (addr or env.get("CONSUL_HTTP_ADDR", "http://127.0.0.1:8500")).split(",") if a.strip()]
    urls = [urlparse(a if "://" in a else f"{'https' if ssl else 'http'}://{a}") for a in addrs]
    if ssl:  # as Consul's CLI: CONSUL_HTTP_SSL=true is HTTPS whatever the address says
        urls = [u._replace(scheme="https") for u in urls]
    url = urls[0]
    cert = (env["CONSUL_CLIENT_CERT"], env["CONSUL_CLIENT_KEY"]) \
        if env.get("CONSUL_CLIENT_CERT") and env.get("CONSUL_CLIENT_KEY") else None
    c = consul.Consul(host=url.hostname, port=url.port or 8500, scheme=url.scheme,
                      token=token or token_from(env), verify=verify_of(env), cert=cert, connections_timeout=TIMEOUT)
    if env.get("CONSUL_TLS_SERVER_NAME"):
        c.http.session.mount("https://", ServerName(env["CONSUL_TLS_SERVER_NAME"]))
    if env.get("CONSUL_HTTP_AUTH"):  # user[:password], HTTP basic authentication in front of the agent
        user, _, password = env["CONSUL_HTTP_AUTH"].partition(":")
        c.http.session.auth = (user, password)
    if len(urls) > 1:
        failover(c.http, [f"{u.scheme}://{u.hostname}:{u.port or 8500}" for u in urls])
    return c


def failover(http, bases: list[str]) -> None:
    """py-consul's HTTP client moved on to the next of `bases` (agents of one cluster) when the one a call used
    does not answer (refused, unreachable or timed out); a call tries each at most once, and the client stays
    on the one that answered. Threads share the client: one that finds its agent dead moves the client on
    only if no other thread has already, and never back to an agent this call saw fail."""
    def each(verb):
        def call_(*args, **kw):
            failed: list[str] = []
            while True:
                used = http.base_uri
                try:
                    return verb(*args, **kw)
                except (requests.ConnectionError, requests.Timeout):
                    failed.append(used)
                    left = after(bases, used, failed)
                    if not left:
                        raise
                    http.base_uri = moved_on(http.base_uri, used, failed, left)
        return call_
    for name in ("get", "put", "delete", "post"):
        setattr(http, name, each(getattr(http, name)))


class Catalog:
    """`patience`: seconds its one-off reads and actions wait out a Consul that does not answer (PATIENCE for a
    rollout); `watch`, an evidence source, never waits: it fails at once, and its stream reports the evidence
    missing."""

    def __init__(self, c: consul.Consul, patience: float = 0.0):
        self.consul, self.patience = c, patience

    def instances(self, service: str) -> list[Instance]:
        _, entries = patiently(self.patience, self.consul.health.service, service)
        return [_instance(e) for e in entries]

    def watch(self, service: str, stopped, wait: str = "5s"):
        """Blocking queries on the service's health: yields its instances each time they change."""
        index = None
        while not stopped.is_set():
            new_index, entries = call(self.consul.health.service, service, index=index, wait=wait)
            if new_index != index:
                yield [_instance(e) for e in entries]
            index = new_index

    def maintenance(self, service_id: str, reason: str) -> None:
        """Take one instance out of DNS at once (its agent marks it critical). Consul's own refusal (an
        instance another agent holds) stays a ConsulException for the caller to judge."""
        patiently(self.patience, self.consul.agent.service.maintenance, service_id, "true", reason,
                  unanswered=(requests.RequestException,))

    def deregister(self, service_id: str) -> None:
        """Remove one instance whose replica is gone. Consul's own refusal (an instance another agent holds)
        stays a ConsulException, as for `maintenance`."""
        patiently(self.patience, self.consul.agent.service.deregister, service_id,
                  unanswered=(requests.RequestException,))


def _instance(entry: dict) -> Instance:
    svc = entry["Service"]
    checks = entry.get("Checks", [])
    worst = max(checks, key=lambda c: (STATUS_ORDER.get(c["Status"], 2), bool(c.get("ServiceID"))), default=None)
    meta = svc.get("Meta") or {}
    return Instance(
        id=svc["ID"], name=svc["Service"], address=svc.get("Address", ""), port=svc.get("Port", 0),
        version=meta.get("version", ""), role=meta.get("role", ""), task_id=meta.get("task_id", ""),
        status=worst["Status"] if worst else "passing", output=(worst or {}).get("Output", "").strip(),
        weights=svc.get("Weights") or {},
    )


def raft(c: consul.Consul) -> tuple[dict, list[dict]]:
    """The Raft configuration the server answering holds (stale: a server with no leader still says what it
    holds), and the gossip pool's members; fleet's policy has `operator = "read"` for the first.
    ConsulUnavailable when Consul does not answer or refuses. (py-consul sends no token with either.)"""
    headers = c.prepare_headers()
    return (call(c.http.get, CB.json(), "/v1/operator/raft/configuration", params=[("stale", "1")], headers=headers),
            call(c.http.get, CB.json(), "/v1/agent/members", headers=headers))
