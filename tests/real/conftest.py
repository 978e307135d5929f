"""Fixtures on the real engine, Consul and images. A missing engine is a failure, never a skip.

Everything the tests create carries a label (the stack namespace `fleettest*`, or `fleet.test=1` on
plain containers) and is removed at the start too, so a killed earlier run leaves nothing in the way.
"""
import os
import time
from dataclasses import dataclass

import docker
import httpx
import pytest

from fleet.adapters.swarm import Swarm
from tests.kit.helpers import SAMPLE, wait_until
from tests.kit.stacks import (CONSUL_PORT, GATEWAY_PORT, PROMETHEUS_PASSWORD, STACK, StackUnderTest, converged, deploy,
                              remove_stack, remove_test_containers)

# fleet's adapters made in this process (tests that read Prometheus as fleet does) use the stacks' password
os.environ.setdefault("FLEET_PROMETHEUS_PASSWORD_FILE", str(PROMETHEUS_PASSWORD))


@pytest.fixture(scope="session")
def swarm() -> Swarm:
    s = Swarm()
    s.check()  # raises: the real tests must run
    return s


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


__all__ = ["Replica", "time"]


def pytest_collection_modifyitems(items):
    """The 3-node cluster's tests run last: the cluster (three engines in containers) comes up for the first
    of them and stays up to the session's end, so in alphabetical order it would run beside every test after
    it and take CPU from the zero-failure rollouts of the single-node ones (CI has two cores)."""
    items.sort(key=lambda item: "cluster_session" in getattr(item, "fixturenames", ()))


@pytest.fixture(scope="session")
def cluster_session():
    """The 3-node test cluster (tests/kit/cluster.py), one for every module that uses it."""
    from tests.kit import cluster
    c = cluster.bring_up()
    yield c
    cluster.take_down()
