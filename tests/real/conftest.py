"""Fixtures on the real engine, Consul and images. A missing engine is a failure, never a skip.

Everything the tests create carries a label (the stack namespace `fleettest*`, or `fleet.test=1` on
plain containers) and is removed at the start too, so a killed earlier run leaves nothing in the way.
"""
import fcntl
import os
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

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
def swarm(request) -> Swarm:
    s = Swarm()
    s.check()  # raises: the real tests must run
    with once_a_run(request.config) as first:
        if first:  # a killed earlier run's plain containers, before any worker of this run starts one
            remove_test_containers(s.client)
    return s


@contextmanager
def once_a_run(config):
    """Yields True to the first process of this run that asks, False to the others (pytest-xdist's workers,
    which share the run's testrun_uid), each after the first's block has ended."""
    uid = getattr(config, "workerinput", {}).get("testrun_uid")
    if uid is None:  # one process runs every test
        yield True
        return
    with open(Path(tempfile.gettempdir()) / f"fleet-tests-{uid}.lock", "a+") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        f.seek(0)
        first = not f.read()
        try:
            yield first
        finally:
            f.write("swept")
            f.flush()
            fcntl.flock(f, fcntl.LOCK_UN)


@pytest.fixture(scope="session")
def stack(swarm):
    s = StackUnderTest(STACK, swarm, CONSUL_PORT, GATEWAY_PORT)
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


# The run's groups, longest first (CI, `make test`: pytest-xdist's loadgroup, in this order, to 3 workers): a
# group runs whole in one worker, and a worker takes the next group as its last ends. The 3-node cluster's
# tests are one group (one cluster, up for the first of them), started first since they take longest; the
# tests on the session's `stack` another (one stack a run); every other module of real tests has a stack of
# its own (its own name and ports) and is a group. Seconds from a fresh-clone run's --durations=0.
GROUPS = {"cluster": 1500, "stack": 400, "test_control_plane": 500, "test_rollout": 450, "test_model_package": 350,
          "test_deploy_canary": 300, "test_rollout_visible": 250, "test_canary_evidence": 250, "test_deploy": 240,
          "test_external_consul": 200, "test_shared_consul": 120, "test_replica": 60, "test_stackfiles": 30}


def group_of(item) -> str:
    """The group a test runs in: tests that share a session fixture share a worker."""
    names = getattr(item, "fixturenames", ())
    if "cluster_session" in names:
        return "cluster"
    if "stack" in names:
        return "stack"
    return item.module.__name__.rsplit(".", 1)[-1]


@pytest.hookimpl(tryfirst=True)  # before xdist's own hook reads the marks
def pytest_collection_modifyitems(items):
    """Real tests first, longest group first, each marked with its group (pytest-xdist's xdist_group); unit and
    process tests after, spread one by one over whichever workers are free. Without xdist, the same order."""
    real = [item for item in items if "/real/" in item.nodeid]
    for item in real:
        item.add_marker(pytest.mark.xdist_group(group_of(item)))
    rank = {id(item): -GROUPS.get(group_of(item), 100) for item in real}
    items.sort(key=lambda item: rank.get(id(item), 0))


@pytest.fixture(scope="session")
def cluster_session():
    """The 3-node test cluster (tests/kit/cluster.py), one for every module that uses it."""
    from tests.kit import cluster
    c = cluster.bring_up()
    yield c
    cluster.take_down()
