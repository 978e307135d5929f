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
import pytest

from fleet.adapters.swarm import Swarm
from tests.kit import diagnose, groups
from tests.kit.helpers import HTTP, SAMPLE, wait_until
from tests.kit.stacks import (CONSUL_PORT, GATEWAY_PORT, PROMETHEUS_CA, PROMETHEUS_PASSWORD, STACK, StackUnderTest, converged, deploy,
                              remove_stack, remove_test_containers)

# fleet's adapters made in this process (tests that read Prometheus as fleet does) use the stacks' password
# and trust the stacks' Prometheus's CA
os.environ.setdefault("FLEET_PROMETHEUS_PASSWORD_FILE", str(PROMETHEUS_PASSWORD))
os.environ.setdefault("FLEET_PROMETHEUS_CACERT", str(PROMETHEUS_CA))


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
    which share the run's id, workerinput['testrunuid']), each after the first's block has ended."""
    uid = getattr(config, "workerinput", {}).get("testrunuid")  # xdist's key (was read as "testrun_uid": None, so
    # every worker swept, and one reaching its first single-node test late removed the other's live containers)
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
    wait_until(lambda: HTTP.post(f"{s.gateway}/predict", json={"inputs": SAMPLE}, timeout=5).status_code == 200,
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


def group_by_fixtures(item) -> str:
    """The group a test must run in for its session fixtures: the cluster's, the session stack's, or its module's."""
    names = getattr(item, "fixturenames", ())
    if "cluster_session" in names:
        return "cluster"
    if "stack" in names:
        return "stack"
    return item.module.__name__.rsplit(".", 1)[-1]


def pytest_collection_modifyitems(items):
    """Real tests first, the longest group first (tests/kit/groups.py), unit and process tests after. A real
    test whose session fixtures do not match its module's group would share a session fixture (the cluster,
    the session stack) with another worker, which would make its own: refused here."""
    wrong = [f"{item.nodeid}: uses {group_by_fixtures(item)}'s fixtures, and its module's group is "
             f"{groups.group(item.nodeid)}" for item in items if "/real/" in item.nodeid
             and group_by_fixtures(item) != groups.group(item.nodeid)]
    if wrong:
        raise pytest.UsageError("tests in the wrong group (tests/kit/groups.py names each module's):\n"
                                + "\n".join(wrong))
    items.sort(key=lambda item: groups.rank(item.nodeid))


SHARED = ("stack", "cluster_session")  # session fixtures whose tests are one group each (tests/kit/groups.py)


@pytest.hookimpl(trylast=True)  # after the test's own fixtures are torn down
def pytest_runtest_teardown(item, nextitem):
    """The session's stack and the 3-node cluster go with the last test of their group, which runs whole in one
    worker, rather than at that worker's end: an idle stack cost a quarter of a core (its healthchecks, its
    250 ms scrapes) while the worker ran other groups, and CI's two cores are the bound. A later test that
    asked for one again would get a new one."""
    for name in SHARED:
        if name in item.fixturenames and (nextitem is None or name not in nextitem.fixturenames):
            for fixturedef in item._fixtureinfo.name2fixturedefs.get(name, ()):
                fixturedef.finish(item._request)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    """A failed real test's report ends with the state of every stack it used (tests/kit/diagnose.py)."""
    report = yield
    if report.failed and call.when in ("setup", "call"):
        try:
            text = diagnose.report(getattr(item, "funcargs", {}).values(), since=call.start - 5)
        except Exception as e:  # never hide the test's own failure behind the diagnosis's
            text = f"not read: {type(e).__name__}: {e}"
        if text:
            report.sections.append(("the stacks the test used", text))
    return report


@pytest.fixture(scope="session")
def cluster_session():
    """The 3-node test cluster (tests/kit/cluster.py), one for every module that uses it."""
    from tests.kit import cluster
    c = cluster.bring_up()
    yield c
    cluster.take_down()
