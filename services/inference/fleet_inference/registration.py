"""Self-registration in Consul (the seed pattern): each replica registers with its version through the
Consul agent of its own node (FLEET_NODE, looked up in the catalog through the agent at CONSUL_HTTP_ADDR;
that agent itself where none is named or found), keeps that registration true while it runs
(anti-entropy: Consul may restart or lose it), and deregisters when it drains. Retries back off
(bounded) and are logged; after a failure the agent is looked up again (it may have moved).

Traffic weights: fleet writes a weight per role to Consul KV (`fleet/traffic/<service>/<role>`); each
replica follows its key with a blocking query and re-registers with the new weight, which the gateway
reads from Consul's DNS SRV records. Without a key, FLEET_WEIGHT applies. fleet's canary cut is a key
beside it (`<role>-out`): a replica that sees it puts itself into maintenance on its own agent."""
import logging
import socket
import threading
import time
from urllib.parse import urlparse

import consul
import tenacity

import fleet_protocol
from fleet_protocol import ServerName

from .config import Settings
from .model_store import Manifest

log = logging.getLogger("fleet_inference.registration")


def advertise_address(settings: Settings) -> str:
    """The address other containers reach this replica on: the source address of the route to Consul."""
    if settings.advertise_addr:
        return settings.advertise_addr
    target = urlparse(settings.consul_addr).hostname or "127.0.0.1"
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.connect((target, 9))  # UDP connect sends nothing; it only picks the route
        return s.getsockname()[0]


def service_id(settings: Settings) -> str:
    return f"{settings.service_name}-{settings.task_id or socket.gethostname()}"


MAX_WEIGHT = 255  # Consul weight 255 x 256 is the highest the gateway maps below its own 256


def weight_key(settings: Settings) -> str:
    return fleet_protocol.weight_key(settings.service_name, settings.role)


def parse_weight(raw: bytes | None, default: int) -> int:
    """The weight a KV value asks for, clamped to 0..255; the default when absent or unreadable. Pure.
    Weight 0 keeps the replica out of the gateway's weighted pool (reachable only by its role's route)."""
    try:
        return min(MAX_WEIGHT, max(0, int(raw))) if raw is not None else default
    except ValueError:
        return default


def service_definition(settings: Settings, manifest: Manifest, address: str, weight: int | None = None) -> dict:
    """The agent registration for this replica. Pure.

    Tags: the role (the gateway's route for it: `X-Fleet-Route: canary`), the model version, and
    `live-<role>` when the weight is above 0: only live replicas are in the gateway's weighted pool, so a
    canary registered with weight 0 takes no share until fleet gives it one."""
    weight = settings.weight if weight is None else weight
    task_query = f"?task={settings.task_id}" if settings.task_id else ""
    return {
        "name": settings.service_name,
        "service_id": service_id(settings),
        "address": address,
        "port": settings.port,
        "tags": [settings.role, f"v{manifest.version}"] + ([f"live-{settings.role}"] if weight > 0 else []),
        "meta": {"version": manifest.version, "model": manifest.name, "model_sha256": manifest.sha256,
                 "role": settings.role, "task_id": settings.task_id},
        # The gateway maps SRV weight w to w/256+1, so weights shift traffic in multiples of 256.
        "weights": {"Passing": max(1, weight) * 256, "Warning": 256},
        # the probe server answers /ready beside the service, never behind /predict; naming the task, so
        # that this registration fails once another replica holds its address (fleet_inference/admin.py)
        "check": {"http": f"http://{address}:{settings.admin_port}/ready{task_query}",
                  "interval": settings.check_interval, "timeout": "2s",
                  "DeregisterCriticalServiceAfter": settings.deregister_after},
    }


def client(settings: Settings, host: str | None = None) -> consul.Consul:
    """A client of the agent at CONSUL_HTTP_ADDR, or of the one at `host` on the same port and scheme (its
    certificate still checked against CONSUL_HTTP_ADDR's name, or CONSUL_TLS_SERVER_NAME)."""
    url = urlparse(settings.consul_addr if "://" in settings.consul_addr else f"http://{settings.consul_addr}")
    cert = (settings.consul_client_cert, settings.consul_client_key) \
        if settings.consul_client_cert and settings.consul_client_key else None
    c = consul.Consul(host=host or url.hostname, port=url.port or 8500, scheme=url.scheme,
                      token=settings.consul_token or None, verify=settings.consul_cacert or True, cert=cert,
                      connections_timeout=5)
    server_name = settings.consul_tls_server_name or (url.hostname if host and host != url.hostname else "")
    if server_name:  # the certificate's name, whatever address is dialled
        c.http.session.mount("https://", ServerName(server_name))
    return c


def own_agent(settings: Settings) -> tuple[consul.Consul, bool]:
    """A client of the agent on this replica's node (the catalog's node named FLEET_NODE), and True; else of
    the agent at CONSUL_HTTP_ADDR, and False (no node named, or its agent not in the catalog yet)."""
    c = client(settings)
    if not settings.node:
        return c, False
    _, found = c.catalog.node(settings.node)
    address = ((found or {}).get("Node") or {}).get("Address")
    return (client(settings, address), True) if address else (c, False)


def cut_key(settings: Settings) -> str:
    return fleet_protocol.cut_key(settings.service_name, settings.role)


def maintenance_check_id(sid: str) -> str:
    return f"_service_maintenance:{sid}"


class Registration:
    """Keeps this replica's registration true in Consul (anti-entropy), until `close()`.

    Every `every` seconds, or at once when fleet changes this role's weight or cut in KV (a blocking
    query on both), it compares what its node's agent holds with what should be there: a registration
    Consul lost (a restart without data, a new agent) is made again with the current weight; fleet's cut
    puts it into maintenance, and maintenance mode once set is set again with a new registration.
    Errors are retried with tenacity's bounded backoff, logged, and never end the loop; only `close()`
    does, after which nothing is registered again."""

    def __init__(self, settings: Settings, manifest: Manifest, every: float = 2.0):
        self.settings, self.manifest, self.every = settings, manifest, every
        self.sid = service_id(settings)
        self.weight: int | None = None  # what the agent was last given
        self.maintenance: str | None = None  # the reason, while the agent holds us in maintenance
        self.registrations = 0
        self.agent: consul.Consul | None = None  # this node's agent, looked up again after a failure
        self.own = False  # whether `agent` is this node's (else CONSUL_HTTP_ADDR's, until this node's joins)
        self.looked_up = 0.0
        self._closed = threading.Event()
        self._lock = threading.Lock()  # a registration never overtakes close()

    def run(self) -> None:
        index = None
        retrying = tenacity.Retrying(
            wait=tenacity.wait_exponential(multiplier=0.2, max=5), sleep=self._closed.wait,
            retry=tenacity.retry_if_exception(  # a bug is not retried, and nothing is after close()
                lambda e: not isinstance(e, (TypeError, ValueError)) and not self._closed.is_set()),
            before_sleep=tenacity.before_sleep_log(log, logging.WARNING), reraise=True)
        try:
            while not self._closed.is_set():
                for attempt in retrying:
                    with attempt:
                        try:
                            self.find_agent()
                            index = self.reconcile(self.agent, index)
                        except Exception:
                            self.agent = None
                            raise
        except Exception as e:
            if not self._closed.is_set():
                log.error("keeping the Consul registration stopped: %r", e)
                raise

    def find_agent(self) -> None:
        """This node's agent; until it is in the catalog, CONSUL_HTTP_ADDR's, looked for again every 10 s
        and left (deregistered there) once it is."""
        if self.agent is not None and (self.own or time.monotonic() - self.looked_up < 10):
            return
        self.looked_up = time.monotonic()
        agent, own = own_agent(self.settings)
        if self.agent is not None and not own:
            return
        if self.agent is not None and self.registrations:
            log.info("this node's Consul agent (%s) joined: registering there", self.settings.node)
            try:
                self.agent.agent.service.deregister(self.sid)
            except Exception as e:  # its check and DeregisterCriticalServiceAfter remain the safety net
                log.warning("could not deregister %s from %s: %s", self.sid, self.settings.consul_addr, e)
        elif not own and self.settings.node:
            log.warning("no Consul agent named %s in the catalog yet: registering through %s", self.settings.node,
                        self.settings.consul_addr)
        self.agent, self.own = agent, own

    def reconcile(self, c: consul.Consul, index: int | None) -> int | None:
        """One round: wait for a change of the role's weight or cut (at most `every`), then make the agent's
        view true."""
        new_index, items = c.kv.get(weight_key(self.settings), recurse=True, index=index, wait=f"{self.every:g}s")
        values = {i["Key"]: i["Value"] for i in items or []}
        wanted = parse_weight(values.get(weight_key(self.settings)), self.settings.weight)
        cut = values.get(cut_key(self.settings))
        with self._lock:
            if self._closed.is_set():
                return new_index
            registered = self.sid in c.agent.services()
            if registered:
                check = c.agent.checks().get(maintenance_check_id(self.sid))
                seen = (check or {}).get("Notes") or ("maintenance" if check else None)
                if seen != self.maintenance:
                    log.info("maintenance %s: %s", "on" if seen else "off", seen or self.maintenance)
                self.maintenance = seen
            if not registered or wanted != self.weight:
                c.agent.service.register(**service_definition(
                    self.settings, self.manifest, advertise_address(self.settings), wanted))
                if self.maintenance:  # fleet had taken us out: stay out
                    c.agent.service.maintenance(self.sid, "true", self.maintenance)
                if not registered and self.registrations:
                    log.warning("Consul had lost %s: registered again (weight %d%s)", self.sid, wanted,
                                ", in maintenance" if self.maintenance else "")
                elif not registered:
                    log.info("registered %s in Consul, weight %d", self.sid, wanted)
                else:
                    log.info("weight %s -> %d (%s)", self.weight, wanted, weight_key(self.settings))
                self.registrations += 1
                self.weight = wanted
            if cut is not None and not self.maintenance:
                self.maintenance = cut.decode(errors="replace") or "fleet: out of traffic"
                c.agent.service.maintenance(self.sid, "true", self.maintenance)
                log.info("maintenance on: %s (%s)", self.maintenance, cut_key(self.settings))
        # Consul's index can go backwards (a restart without data): then start over.
        return None if index is not None and new_index < index else new_index

    def close(self) -> None:
        """Stop keeping the registration and deregister (the replica drains)."""
        with self._lock:
            self._closed.set()
        try:
            (self.agent or own_agent(self.settings)[0]).agent.service.deregister(self.sid)
            log.info("deregistered %s from Consul", self.sid)
        except Exception as e:  # Consul's check and DeregisterCriticalServiceAfter remain the safety net
            log.warning("could not deregister %s: %s", self.sid, e)
