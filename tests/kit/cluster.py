"""The 3-node test cluster for the tests (scripts/cluster.sh: docker-in-docker nodes, a registry, TLS to the
manager), shared by every module that uses it: the `cluster` fixture (tests/real/conftest.py) brings it
up once a session (reused when it runs) and takes it down at the end, unless FLEET_KEEP_CLUSTER=1. fleet
runs from the host as from an operator's laptop: DOCKER_HOST=tcp://127.0.0.1:31376 with TLS, and no
CONSUL_HTTP_ADDR (fleet finds the stack's Consul on its node). Node i publishes its gateway on
127.0.0.1:3i080; load loops go there, bounded in count and time."""
import json
import os
import shlex
import subprocess
import sys
import time
from contextlib import ExitStack, contextmanager
from pathlib import Path

import consul
import docker

from fleet.adapters.consul import Catalog
from fleet.adapters.swarm import API_VERSION, Swarm
from tests.kit.helpers import HTTP, SAMPLE, LoadLoop, wait_until
from tests.kit.stacks import CA, ROOT, SECRETS

NAME = "fleetcluster"
NODES = ("fleet-node1", "fleet-node2", "fleet-node3")
REGISTRY = "127.0.0.1:31500"
REGISTRY_VOLUME = "fleet-registry-data"  # its storage (scripts/cluster.sh)
REPLICAS = 3


def read_env(path: Path) -> dict[str, str]:
    """The variables an `export A=B C=D` file sets."""
    found = {}
    for line in path.read_text().splitlines():
        if line.startswith("export "):
            found.update(pair.split("=", 1) for pair in shlex.split(line[len("export "):]))
    return found


class Cluster:
    def __init__(self, env: dict[str, str]):
        self.env = env  # what build/cluster/cluster.env exports
        self.engines = ""  # fleet's DOCKER_HOST when set: several managers' engines (tests/kit/consul_ha.py)
        self.swarm = Swarm(docker.from_env(environment=env, version=API_VERSION, timeout=30))
        self.consul = consul.Consul(host="127.0.0.1", port=31501, scheme="https", verify=CA, connections_timeout=5,
                                    token=(SECRETS / "fleet.token").read_text().strip())
        self.catalog = Catalog(self.consul)

    consul_service = f"{NAME}-inference"  # the replicas' name in Consul, scoped by stack

    def fleet_env(self, **extra: str) -> dict[str, str]:
        """fleet as an operator on another machine runs it: the remote manager, Consul found from the stack."""
        env = {k: v for k, v in os.environ.items() if not k.startswith(("CONSUL_HTTP_ADDR", "DOCKER_"))}
        return {**env, **self.env, **({"DOCKER_HOST": self.engines} if self.engines else {}), "CONSUL_CACERT": CA,
                "CONSUL_HTTP_TOKEN_FILE": str(SECRETS / "fleet.token"),
                "FLEET_REPLICAS": str(REPLICAS), "FLEET_ROLLOUT_STRATEGY": "rolling",
                # Swarm's monitor window, which every update of the replicas waits out: 10 s as on the one-node
                # stacks (> 2 s x 3 failed checks, as fleet lint asks); users get 30 s. No test here waits for
                # Swarm to roll an update back: fleet judges the canary
                "FLEET_UPDATE_MONITOR": "10s", **extra}

    def fleet(self, *args: str, timeout: float = 600, **extra: str) -> subprocess.CompletedProcess:
        started = time.monotonic()
        p = subprocess.run([sys.executable, "-m", "fleet.cli", *args, "--stack", NAME], capture_output=True, text=True,
                           env=self.fleet_env(**extra), cwd=ROOT, timeout=timeout)
        p.seconds = time.monotonic() - started
        return p

    def fleet_background(self, *args: str, **extra: str) -> subprocess.Popen:
        """fleet in the background (stdout: its JSON), for killing it or acting from another shell meanwhile."""
        return subprocess.Popen([sys.executable, "-m", "fleet.cli", *args, "--stack", NAME], cwd=ROOT, text=True,
                                env=self.fleet_env(**extra), stdout=subprocess.PIPE, stderr=subprocess.PIPE)

    def docker(self, *args: str) -> str:
        """The docker CLI against the cluster's manager."""
        return subprocess.run(["docker", *args], capture_output=True, text=True, check=True,
                              env=self.fleet_env(DOCKER_HOST=self.env["DOCKER_HOST"]),
                              timeout=120).stdout

    def on(self, node: str, *args: str) -> str:
        """The docker CLI inside a node, against that node's own engine."""
        return subprocess.run(["docker", "exec", node, "docker", *args], capture_output=True, text=True, check=True,
                              timeout=120, env=local_env()).stdout

    def tasks(self, service: str = "inference"):
        return [t for t in self.swarm.tasks(f"{NAME}_{service}") if t.state == "running"]

    def node_of(self) -> dict[str, str]:
        return {t.id: t.node for t in self.tasks()}

    def passing(self, version: str = "2") -> list:
        running = self.node_of()
        return [i for i in self.catalog.instances(self.consul_service)
                if i.status == "passing" and i.version == version and i.task_id in running]

    def whole(self, version: str = "2", avoid: str = "") -> bool:
        """REPLICAS running replicas, none on `avoid`, each passing in Consul with `version`."""
        nodes = self.node_of()
        return (len(nodes) == REPLICAS and avoid not in nodes.values()
                and len(self.passing(version)) == REPLICAS)

    def spec_versions(self) -> dict[str, int]:
        return self.swarm.spec_versions(NAME)


def local_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("DOCKER_")}


def push(source: str, name: str) -> str:
    """The local image `source` tagged `REGISTRY/fleet/<name>` and pushed to the cluster's registry (what CI
    does with a release); the name pushed."""
    target = f"{REGISTRY}/fleet/{name}"
    for args in (["tag", source, target], ["push", "-q", target]):
        subprocess.run(["docker", *args], check=True, capture_output=True, timeout=300, env=local_env())
    return target


def remove_stack(c: Cluster, name: str = NAME) -> None:
    if c.swarm.stack_services(name):
        c.docker("stack", "rm", name)
    label = f"com.docker.stack.namespace={name}"
    wait_until(lambda: not c.swarm.stack_services(name)
               and not c.swarm.client.networks.list(filters={"label": label}), 120, f"stack {name} to be gone")
    for node in NODES:  # containers stop on every node; Consul's volume lives on the manager
        wait_until(lambda: not c.on(node, "ps", "-aq", "--filter", f"label={label}").strip(), 60,
                   f"{name}'s containers on {node} to be gone")
        for volume in c.on(node, "volume", "ls", "-q", "--filter", f"label={label}").split():
            c.on(node, "volume", "rm", "-f", volume)


def bring_up() -> Cluster:
    """The cluster, up (idempotent), its nodes active, no test stack on it."""
    subprocess.run(["bash", str(ROOT / "scripts/cluster.sh"), "up"], check=True, timeout=1200, env=local_env())
    c = Cluster(read_env(ROOT / "build/cluster/cluster.env"))
    c.swarm.check()
    for node in c.swarm.nodes():  # a killed earlier run may have left a node drained, or promoted
        if node["availability"] != "active":
            c.docker("node", "update", "--availability", "active", node["hostname"])
    for node in sorted((n for n in c.swarm.nodes() if n["role"] == "manager" and n["hostname"] != NODES[0]),
                       key=lambda n: n["hostname"], reverse=True):
        # the command may time out while Raft takes the change in, and still be done: waited for below
        subprocess.run(["docker", "exec", NODES[0], "docker", "node", "demote", node["hostname"]], capture_output=True,
                       timeout=60, env=local_env())
        wait_until(lambda: all(n["role"] == "worker" or n["state"] != "ready" for n in c.swarm.nodes()
                               if n["hostname"] == node["hostname"]), 90, f"{node['hostname']} a worker")
    return c


def take_down() -> None:
    if os.environ.get("FLEET_KEEP_CLUSTER") != "1":
        subprocess.run(["bash", str(ROOT / "scripts/cluster.sh"), "down"], check=True, timeout=300, env=local_env())


def stable_spec(c: Cluster) -> tuple[str, int]:
    svc = c.swarm.service(f"{NAME}_inference")
    return svc.attrs["Spec"]["TaskTemplate"]["ContainerSpec"]["Image"].split("@")[0], svc.attrs["Version"]["Index"]


def canary_gone(c: Cluster) -> bool:
    return (c.swarm.service(f"{NAME}_inference-canary") is None
            and not any(i.role == "canary" for i in c.catalog.instances(c.consul_service)))


def rollout(c: Cluster, image: str, *args: str, timeout: float = 400) -> tuple[subprocess.CompletedProcess, dict]:
    p = c.fleet("rollout", "--canary", "--image", image, "--json", *args, timeout=timeout)
    return p, json.loads(p.stdout) if p.stdout.strip() else {}


@contextmanager
def clients(*nodes: int, seconds: float = 240):
    """A bounded load loop through each given node's gateway (node i: 127.0.0.1:3i080), already sending.
    Each gateway serves first: a node an earlier test stopped is ready in Swarm before its gateway's new
    task listens, and a client's failure there belongs to no rollout."""
    for i in nodes:
        wait_until(lambda: serves(f"http://127.0.0.1:3{i}080/predict"), 120, f"fleet-node{i}'s gateway to serve")
    with ExitStack() as stack:
        loads = [stack.enter_context(LoadLoop(f"http://127.0.0.1:3{i}080/predict", max_requests=int(seconds * 60),
                                              max_seconds=seconds)) for i in nodes]
        wait_until(lambda: all(load.total >= 10 for load in loads), 30, "the load loops to start")
        yield loads


def serves(url: str) -> bool:
    return HTTP.post(url, json={"inputs": SAMPLE}, timeout=10).status_code == 200


def failed(loads) -> list:
    return [f for load in loads for f in load.failures]
