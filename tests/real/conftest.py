"""Fixtures on the real engine, Consul and images. A missing engine is a failure, never a skip.

Everything the tests create carries a label (the stack namespace `fleettest*`, or `fleet.test=1` on
plain containers) and is removed at the start too, so a killed earlier run leaves nothing in the way.
"""
import os
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import docker
import httpx
import pytest

import consul

from fleet.adapters.consul import Catalog
from fleet.adapters.swarm import Swarm
from tests.helpers import SAMPLE, wait_until

ROOT = Path(__file__).resolve().parents[2]
STACK = os.environ.get("FLEET_TEST_STACK", "fleettest")
CONSUL_PORT, GATEWAY_PORT = 18500, 18080
SECRETS = ROOT / "build/consul/secrets"  # scripts/consul-secrets.sh: the stacks' Consul credentials
CA = str(SECRETS / "ca.pem")


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
        return f"http://127.0.0.1:{self.prometheus_port}"

    def env(self) -> dict:
        return {**os.environ, "FLEET_CONSUL_PORT": str(self.consul_port), "FLEET_GATEWAY_PORT": str(self.gateway_port),
                "FLEET_GATEWAY_OPS_PORT": str(self.gateway_port + 1),
                "FLEET_PROMETHEUS_PORT": str(self.prometheus_port),
                # fleet as an operator runs it: HTTPS with the stack's CA, and fleet's own token
                "CONSUL_HTTP_ADDR": self.consul_url, "CONSUL_CACERT": CA,
                "CONSUL_HTTP_TOKEN_FILE": str(SECRETS / "fleet.token"),
                # Swarm's rolling update for `fleet deploy` (the tests of fleet's canary through `fleet deploy`
                # set canary): these stacks change their stable's image by deploying, to start from a known one
                "FLEET_ROLLOUT_STRATEGY": "rolling",
                # Swarm's monitor window, which every update of the replicas waits out: 10 s (> 2 s x 3 failed
                # checks, as fleet lint asks) where users get 30 s
                "FLEET_UPDATE_MONITOR": "10s"}


@pytest.fixture(scope="session")
def swarm() -> Swarm:
    s = Swarm()
    s.check()  # raises: the real tests must run
    return s


def remove_stack(swarm: Swarm, name: str) -> None:
    client = swarm.client
    label = f"com.docker.stack.namespace={name}"
    if swarm.stack_services(name) or client.networks.list(filters={"label": label}):
        subprocess.run(["docker", "stack", "rm", name], check=True, capture_output=True)
    wait_until(lambda: not client.services.list(filters={"label": label})
               and not client.containers.list(all=True, filters={"label": label})
               and not client.networks.list(filters={"label": label}), 90, f"stack {name} to be gone")
    for volume in client.volumes.list(filters={"label": label}):  # Consul's data: a new stack starts empty
        volume.remove(force=True)


def remove_test_containers(client: docker.DockerClient) -> None:
    for c in client.containers.list(all=True, filters={"label": "fleet.test=1"}):
        c.remove(force=True)


def deploy(stack: StackUnderTest, env: dict | None = None) -> None:
    subprocess.run(["docker", "stack", "deploy", "--resolve-image", "never", "-c", str(ROOT / "docker-stack.yml"), stack.name],
                   check=True, capture_output=True, env={**stack.env(), **(env or {})})


def converged(stack: StackUnderTest, replicas: int = 2, version: str = "2"):
    """All tasks of every service running and healthy, and `replicas` passing instances in Consul."""
    for svc in stack.swarm.stack_services(stack.name):
        want = svc.attrs["Spec"]["Mode"].get("Replicated", {}).get("Replicas", 1)
        tasks = [t for t in stack.swarm.tasks(svc.name) if t.state == "running" and t.health in (None, "healthy")]
        if len(tasks) != want:
            return False
    instances = stack.catalog.instances(stack.consul_service)
    passing = [i for i in instances if i.status == "passing" and i.version == version]
    return len(passing) == replicas == len(instances) and passing


@pytest.fixture(scope="session")
def stack(swarm):
    s = StackUnderTest(STACK, swarm, CONSUL_PORT, GATEWAY_PORT)
    remove_test_containers(swarm.client)
    remove_stack(swarm, s.name)
    deploy(s)
    wait_until(lambda: converged(s), 180, f"stack {s.name} to converge")
    wait_until(lambda: httpx.post(f"{s.gateway}/predict", json={"inputs": SAMPLE}, timeout=5).status_code == 200,
               60, "the gateway to answer /predict")
    yield s
    remove_stack(swarm, s.name)


@dataclass
class Replica:
    container: docker.models.containers.Container
    url: str

    def health(self) -> str | None:
        self.container.reload()
        return (self.container.attrs["State"].get("Health") or {}).get("Status")


@pytest.fixture
def run_replica(swarm):
    """Start the service image as a plain container on 127.0.0.1 (random port); removed after the test."""
    started = []

    def start(image: str, **kwargs) -> Replica:
        kwargs.setdefault("ports", {"8000/tcp": ("127.0.0.1", None)})
        c = swarm.client.containers.run(image, detach=True, labels={"fleet.test": "1"}, **kwargs)
        started.append(c)
        port = wait_until(lambda: (c.reload() or c.ports.get("8000/tcp") or [{}])[0].get("HostPort"), 30,
                          "a published port")
        return Replica(c, f"http://127.0.0.1:{port}")

    yield start
    for c in started:
        c.remove(force=True)


def seconds(s: float) -> int:
    return int(s * 1_000_000_000)


__all__ = ["StackUnderTest", "Replica", "deploy", "converged", "seconds", "time"]


def pytest_collection_modifyitems(items):
    """The 3-node cluster's tests run last: the cluster (three engines in containers) comes up for the first
    of them and stays up to the session's end, so in alphabetical order it would run beside every test after
    it and take CPU from the zero-failure rollouts of the single-node ones (CI has two cores)."""
    items.sort(key=lambda item: "cluster_session" in getattr(item, "fixturenames", ()))


@pytest.fixture(scope="session")
def cluster_session():
    """The 3-node test cluster (tests/real/cluster_kit.py), one for every module that uses it."""
    from tests.real import cluster_kit
    c = cluster_kit.bring_up()
    yield c
    cluster_kit.take_down()
