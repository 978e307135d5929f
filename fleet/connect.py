"""Reaching a stack: the engine, the stack's Consul, and the `Target` every rollout command works on.

Every command connects through here, once: an engine that does not answer, or a Consul that refuses
fleet's token, is exit 3 before anything is read or changed; an unknown service is exit 2. The target is
a frozen value: the stack, the service, its Consul name (read once from the running service's spec),
and the adapters that reach it, with the rollout's `Cluster` made once.
"""
from dataclasses import dataclass
from functools import cached_property

import consul

from .adapters.consul import PATIENCE, Catalog, ConsulUnavailable, check_access, client as consul_client
from .adapters.endpoints import Endpoints, fixed
from .adapters.gateway import OPS_PORT
from .adapters.store import Store
from .adapters.swarm import EngineUnavailable, Swarm, consul_name
from .cluster import SwarmCluster
from .core.tasks import Service
from .errors import BadInput, Unreachable


@dataclass(frozen=True)
class Target:
    """The stack's service a rollout works on, and the adapters that reach it."""
    stack: str
    service: str
    consul_name: str  # the replicas' service in Consul (`<stack>-inference` with the stack's file)
    swarm: Swarm
    catalog: Catalog
    store: Store
    gateway: str = ""  # the gateway's ops URL; found from the stack's gateway service when empty
    prometheus: str = ""  # Prometheus's URL; found from the stack's prometheus service when empty

    @property
    def stable_name(self) -> str:
        return f"{self.stack}_{self.service}"

    @property
    def canary_name(self) -> str:
        return f"{self.stable_name}-canary"

    def stable(self) -> Service | None:
        """The stable service as Swarm has it now."""
        return self.swarm.describe(self.stable_name)

    @cached_property
    def cluster(self) -> SwarmCluster:
        """What a rollout does to Swarm and to Consul's traffic, named by intent (fleet/cluster.py)."""
        return SwarmCluster(self.swarm, self.catalog, self.store, self.stable_name, self.canary_name, self.consul_name)

    def gateway_endpoints(self) -> Endpoints:
        """The gateway's ops port (per-role routes) on every live node that runs one, or --gateway's URLs."""
        return self._endpoints(self.gateway, "gateway", OPS_PORT, "--gateway")

    def prometheus_endpoints(self) -> Endpoints:
        """The stack's Prometheus where it is published (HTTPS: it serves TLS with the certificate
        scripts/prometheus-secrets.sh made), or --prometheus's URLs."""
        return self._endpoints(self.prometheus, "prometheus", 9090, "--prometheus", "https")

    def _endpoints(self, given: str, service: str, port: int, flag: str, scheme: str = "http") -> Endpoints:
        """BadInput when none is found now: the evidence comes through them, so fail before changing anything."""
        if given:
            return fixed(given)
        endpoints = Endpoints(lambda: self.swarm.published_urls(f"{self.stack}_{service}", port, scheme))
        if not endpoints.urls():
            raise BadInput(f"stack {self.stack!r} has no {service} service publishing port {port} on a ready node "
                           f"(fleet's canary evidence needs it: deploy the stack from docker-stack.yml), or give "
                           f"{flag} URL[,URL...]")
        return endpoints


def engine(swarm: Swarm | None = None) -> Swarm:
    """The Docker engine of a Swarm manager (DOCKER_HOST and friends, or `swarm`'s); exit 3 when it does not
    answer."""
    try:
        swarm = swarm or Swarm()
        swarm.check()
    except EngineUnavailable as e:
        raise Unreachable(str(e)) from None
    return swarm


def consul_of(swarm: Swarm, stack: str, addr: str | None) -> consul.Consul:
    """A client of `addr` (--consul), else of the stack's own Consul where it runs now, else of
    CONSUL_HTTP_ADDR."""
    return consul_client(addr or swarm.consul_url(stack))


def reach(c: consul.Consul, unchanged: str = "nothing was changed") -> None:
    """Exit 3 unless Consul answers and takes fleet's token (where ACLs are on, a read without a good token
    is silently empty)."""
    try:
        check_access(c)
    except ConsulUnavailable as e:
        raise Unreachable(f"{e}; {unchanged}") from None


def target(swarm: Swarm, stack: str, service: str, catalog: Catalog, store: Store, gateway: str = "",
           prometheus: str = "") -> Target:
    """The target of a service that runs (exit 2 when it does not), its Consul name read from its spec."""
    name = f"{stack}_{service}"
    svc = swarm.describe(name)
    if svc is None:
        names = sorted(s.name.removeprefix(f"{stack}_") for s in swarm.services(stack))
        raise BadInput(f"no service {service!r} in stack {stack!r} (services: {names or 'none, no such stack'}); "
                       "use --service and --stack")
    return Target(stack, service, consul_name(name, svc.spec), swarm, catalog, store, gateway, prometheus)


def connect(stack: str, service: str, consul_addr: str | None, gateway_url: str = "",
            prometheus_url: str = "") -> Target:
    """Reach Docker and Consul (exit 3 if not) and find the service (exit 2 if unknown). Consul answering now,
    its reads and writes after wait out a short loss of it (PATIENCE: a leader election, a restart)."""
    swarm = engine()
    c = consul_of(swarm, stack, consul_addr)
    reach(c)
    return target(swarm, stack, service, Catalog(c, PATIENCE), Store(c, stack, service, PATIENCE), gateway_url,
                  prometheus_url)
