"""The stacks the real tests deploy, and their sweeping: one stack a module (its own name and ports), with
its Consul reached over HTTPS with the stack's own tokens. Everything a stack creates carries its
namespace label (`com.docker.stack.namespace=fleettest*`), and `remove_stack` removes all of it by that
label, at a module's start too, so a killed earlier run leaves nothing in the way."""
import os
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import consul
import docker

from fleet.adapters.consul import Catalog
from fleet.adapters.gateway import unrouted
from fleet.adapters.swarm import Swarm
from tests.kit.helpers import wait_until

ROOT = Path(__file__).resolve().parents[2]
STACK = os.environ.get("FLEET_TEST_STACK", "fleettest")
CONSUL_PORT, GATEWAY_PORT = 18500, 18080
SECRETS = ROOT / "build/consul/secrets"  # scripts/consul-secrets.sh: the stacks' Consul credentials
CA = str(SECRETS / "ca.pem")
PROMETHEUS_PASSWORD = ROOT / "build/prometheus-auth/password"  # scripts/prometheus-secrets.sh: user fleet's
PROMETHEUS_CA = ROOT / "build/prometheus-auth/ca.pem"  # and the CA of the stacks' Prometheus's certificate


def token(who: str) -> str:
    """A token of the stack's Consul: fleet, replica, dns, agent or master (the management token)."""
    return (SECRETS / f"{who}.token").read_text().strip()


@dataclass
class StackUnderTest:
    name: str
    swarm: Swarm
    consul_port: int
    gateway_port: int

    @property
    def gateway(self) -> str:
        return f"http://127.0.0.1:{self.gateway_port}"

    @property
    def consul_url(self) -> str:
        return f"https://127.0.0.1:{self.consul_port}"

    def consul(self, who: str | None = "fleet", ca: str = CA) -> consul.Consul:
        """A client of the stack's Consul over HTTPS, with `who`'s token (None: no token)."""
        return consul.Consul(host="127.0.0.1", port=self.consul_port, scheme="https", verify=ca,
                             token=token(who) if who else None, connections_timeout=5)

    @property
    def catalog(self) -> Catalog:
        return Catalog(self.consul())

    def service(self, name: str) -> str:
        return f"{self.name}_{name}"

    @property
    def consul_service(self) -> str:
        """The replicas' name in Consul: scoped by stack (docker-stack.yml's FLEET_SERVICE_NAME)."""
        return f"{self.name}-inference"

    @property
    def ops(self) -> str:
        """The gateway's ops port (fleet's: every path, per-role routes)."""
        return f"http://127.0.0.1:{self.gateway_port + 1}"

    @property
    def prometheus_port(self) -> int:
        return self.gateway_port + 10

    @property
    def prometheus(self) -> str:
        return f"https://127.0.0.1:{self.prometheus_port}"

    def env(self) -> dict:
        return {**os.environ, "FLEET_CONSUL_PORT": str(self.consul_port), "FLEET_GATEWAY_PORT": str(self.gateway_port),
                "FLEET_GATEWAY_OPS_PORT": str(self.gateway_port + 1),
                "FLEET_PROMETHEUS_PORT": str(self.prometheus_port),
                # fleet as an operator runs it: HTTPS with the stack's CA, and fleet's own token
                "CONSUL_HTTP_ADDR": self.consul_url, "CONSUL_CACERT": CA,
                "CONSUL_HTTP_TOKEN_FILE": str(SECRETS / "fleet.token"),
                # and the stack's Prometheus's password and CA
                "FLEET_PROMETHEUS_PASSWORD_FILE": str(PROMETHEUS_PASSWORD), "FLEET_PROMETHEUS_CACERT": str(PROMETHEUS_CA),
                # Swarm's rolling update for `fleet deploy` (the tests of fleet's canary through `fleet deploy`
                # set canary): these stacks change their stable's image by deploying, to start from a known one
                "FLEET_ROLLOUT_STRATEGY": "rolling",
                # Swarm's monitor window, which every update of the replicas waits out: 10 s (> 2 s x 3 failed
                # checks, as fleet lint asks) where users get 30 s
                "FLEET_UPDATE_MONITOR": "10s"}


def remove_stack(swarm: Swarm, name: str) -> None:
    client = swarm.client
    label = f"com.docker.stack.namespace={name}"
    if swarm.stack_services(name) or client.networks.list(filters={"label": label}):
        # not checked: a stack already being removed (its networks still going) makes it fail; the wait decides
        subprocess.run(["docker", "stack", "rm", name], capture_output=True)
    wait_until(lambda: not client.services.list(filters={"label": label})
               and not client.containers.list(all=True, filters={"label": label})
               and not client.networks.list(filters={"label": label}), 90, f"stack {name} to be gone")
    for volume in client.volumes.list(filters={"label": label}):  # Consul's data: a new stack starts empty
        volume.remove(force=True)


def remove_test_containers(client: docker.DockerClient) -> None:
    for c in client.containers.list(all=True, filters={"label": "fleet.test=1"}):
        try:
            c.remove(force=True)
        except docker.errors.NotFound:  # gone since listed (its own test removed it)
            pass


def deploy(stack: StackUnderTest, env: dict | None = None) -> None:
    subprocess.run(["docker", "stack", "deploy", "--resolve-image", "never", "-c", str(ROOT / "docker-stack.yml"), stack.name],
                   check=True, capture_output=True, env={**stack.env(), **(env or {})})


def gateway_log(stack: StackUnderTest, since: float) -> list[str]:
    """The gateway's own log lines since `since` (epoch s) that say why a client got an error: its servers going
    DOWN or UP (with the check's reason and duration) and requests it had no server for."""
    return service_errors(stack.service("gateway"), since)


def service_errors(service: str, since: float, env: dict | None = None,
                   marks: tuple[str, ...] = ("DOWN", " is UP", "NOSRV", "no server available", " 503 ")) -> list[str]:
    """A service's log lines since `since` that hold one of `marks` (a gateway's: why a client got an error),
    through the docker CLI that `env` points at (None: this one)."""
    out = subprocess.run(["docker", "service", "logs", "--raw", "--timestamps", "--since", str(int(since)), service],
                         capture_output=True, text=True, timeout=60, env=env)
    return [line for line in (out.stdout + out.stderr).splitlines() if any(k in line for k in marks)]


def converged(stack: StackUnderTest, replicas: int = 2, version: str = "2"):
    """All tasks of every service running and healthy, and `replicas` passing instances in Consul."""
    for svc in stack.swarm.stack_services(stack.name):
        want = stack.swarm.desired_replicas(svc.attrs["Spec"])
        tasks = [t for t in stack.swarm.tasks(svc.name) if t.state == "running" and t.health in (None, "healthy")]
        if len(tasks) != want:
            return False
    instances = stack.catalog.instances(stack.consul_service)
    passing = [i for i in instances if i.status == "passing" and i.version == version]
    # and the gateway routes to them: it finds them by DNS a moment after Consul passes them (fleet deploy waits
    # for it too), and a test's first request must not be sent into that moment
    return len(passing) == replicas == len(instances) and passing and unrouted(stack.ops) is None


def running_ids(stack: StackUnderTest) -> set[str]:
    """The IDs of every task of the stack (a deploy that changes nothing keeps them all)."""
    return {t.id for svc in stack.swarm.stack_services(stack.name) for t in stack.swarm.tasks(svc.name)}


def stable_spec(stack: StackUnderTest) -> tuple[str, int]:
    """The stack's stable inference service: its image (without the digest) and its spec's version."""
    svc = stack.swarm.service(stack.service("inference"))
    return svc.attrs["Spec"]["TaskTemplate"]["ContainerSpec"]["Image"].split("@")[0], svc.attrs["Version"]["Index"]


def stable_image(stack: StackUnderTest) -> str:
    """The image of the stack's stable inference service, without its digest."""
    return stable_spec(stack)[0]


def canary_gone(stack: StackUnderTest) -> bool:
    """No canary service, and no canary instance left in Consul."""
    return (stack.swarm.service(stack.service("inference-canary")) is None
            and not any(i.role == "canary" for i in stack.catalog.instances(stack.consul_service)))


@contextmanager
def own_stack(swarm: Swarm, name: str, consul_port: int, gateway_port: int) -> Iterator[StackUnderTest]:
    """A module's own stack, swept before (a killed run's leftovers) and after, even when its setup fails:
    `with own_stack(swarm, NAME, 28500, 28080) as s: ... yield s` in a fixture."""
    s = StackUnderTest(name, swarm, consul_port, gateway_port)
    remove_stack(swarm, name)
    try:
        yield s
    finally:
        remove_stack(swarm, name)
