"""Consul's servers and agents on the 3-node test cluster (tests/kit/cluster.py), read through each node's
published HTTPS port (fleet-nodeI: 127.0.0.1:3I501) and Swarm through each node's own engine: shared by
tests/real/test_consul_ha.py and bench/consul_ha_bench.py. The cluster's nodes are promoted to three
managers for them (`three_managers`), so a server runs on every node."""
import subprocess
import time
from contextlib import contextmanager
from dataclasses import dataclass

import consul
import httpx

from tests.kit.cluster import NAME, NODES, REPLICAS, Cluster, clients, failed, local_env, remove_stack
from tests.kit.helpers import wait_until
from tests.kit.stacks import CA, SECRETS


def consul_on(node: str, token: str = "master") -> consul.Consul:
    """Consul's API on one node (fleet-nodeI publishes it on 127.0.0.1:3I501), with a token of the stack's."""
    return consul.Consul(host="127.0.0.1", port=int(f"3{node[-1]}501"), scheme="https", verify=CA,
                         connections_timeout=5, token=(SECRETS / f"{token}.token").read_text().strip())


def answers(node: str) -> bool:
    try:
        consul_on(node).status.leader()
        return True
    except Exception:
        return False


def leader(node: str) -> str | None:
    """The node name of the Raft leader, as `node`'s Consul sees it (None: none, or no answer)."""
    try:
        c = consul_on(node)
        address = c.status.leader().rsplit(":", 1)[0]
        return next((m["Name"] for m in c.agent.members() if m["Addr"] == address), None) if address else None
    except Exception:
        return None


def api(node: str, path: str):
    """GET Consul's `path` on `node` with the management token (some of py-consul's calls send no token)."""
    return httpx.get(f"https://127.0.0.1:3{node[-1]}501{path}", verify=CA, timeout=5, headers={
        "X-Consul-Token": (SECRETS / "master.token").read_text().strip()}).raise_for_status().json()


def node_id_of(node: str) -> str:
    return api(node, "/v1/agent/self")["Config"]["NodeID"]


def servers(node: str) -> dict[str, bool]:
    """The Raft configuration as `node`'s Consul sees it: each server's node name, and whether it votes."""
    config = api(node, "/v1/operator/raft/configuration")
    return {s["Node"]: s["Voter"] for s in config["Servers"]}


def tolerant(node: str) -> bool:
    """Raft as `node`'s Consul sees it can lose one server and keep quorum: autopilot finds every server
    healthy (alive, voting, caught up with the leader's log), and its failure tolerance is 1 or more. A server
    that answers HTTP again after a restart may still be catching up: a kill then would leave no quorum."""
    health = api(node, "/v1/operator/autopilot/health")
    return bool(health["Healthy"] and health["FailureTolerance"] >= 1 and len(health["Servers"]) == len(NODES))


def kv(node: str) -> dict[str, bytes]:
    """Everything fleet keeps in Consul (rollout history, locks, live config), read through `node` (waiting
    out an election)."""
    def read():
        _, items = consul_on(node).kv.get("fleet/", recurse=True, consistency="consistent")
        return {i["Key"]: i["Value"] for i in items or [] if i.get("Session") is None}
    return wait_until(read, 60, f"fleet's KV through {node}")


def passing(node: str) -> list[dict]:
    """The replicas passing in Consul, with the node of the agent each one registered with."""
    _, entries = consul_on(node).health.service(f"{NAME}-inference", passing=True)
    return entries


def on_node(node: str, *args: str) -> str:
    return subprocess.run(["docker", "exec", node, "docker", *args], capture_output=True, text=True, check=True,
                          timeout=60, env=local_env()).stdout


def start(node: str) -> None:
    subprocess.run(["docker", "start", node], capture_output=True, env=local_env())


def managers(via: str) -> dict[str, str]:
    """Each node's manager status as `via`'s engine sees it (Leader, Reachable, Unreachable; '' for a worker),
    with its own state when it is not Ready."""
    lines = on_node(via, "node", "ls", "--format", "{{.Hostname}} {{.Status}} {{.ManagerStatus}}").split("\n")
    found = {}
    for line in filter(None, lines):
        host, state, *status = line.split()
        found[host] = (status[0] if status else "") if state == "Ready" else state
    return found


def managers_ready(via: str, count: int = 3) -> bool:
    return sum(status in ("Leader", "Reachable") for status in managers(via).values()) == count


@contextmanager
def three_managers(c: Cluster):
    """Nodes 2 and 3 promoted to managers for the block, one at a time (a second promotion while the first
    joins Raft can leave it unable to), and fleet given the three managers' engines (DOCKER_HOST, each node's
    127.0.0.1:3I376), so it follows whichever answers; after it, every node started and active again, the
    test stack removed, and the two demoted, one at a time."""
    remove_stack(c)
    try:
        for node in NODES[1:]:
            wait_until(lambda: change_role(node, "promote"), 120, f"{node} a reachable manager")
        c.engines = ",".join(f"tcp://127.0.0.1:3{node[-1]}376" for node in NODES)
        yield c
    finally:
        c.engines = ""
        for node in NODES:
            start(node)
        wait_until(lambda: managers_ready(NODES[0], 3) or managers_ready(NODES[0], 2)
                   or managers_ready(NODES[0], 1), 240, "the managers back")
        for node in NODES:
            c.docker("node", "update", "--availability", "active", node)
        remove_stack(c)
        demote(c)


def demote(c: Cluster) -> None:
    """Nodes 2 and 3 workers again, one at a time (no-op for one that is)."""
    for node in reversed(NODES[1:]):
        wait_until(lambda: change_role(node, "demote"), 120, f"{node} a worker")


def change_role(node: str, how: str) -> bool:
    """`docker node promote|demote` of `node` until it is a reachable manager, or a worker: the command can time
    out while Raft takes in the previous change, and still be done a little later."""
    def done() -> bool:
        status = managers(NODES[0]).get(node)
        return status in ("Leader", "Reachable") if how == "promote" else status == ""
    if not done():
        subprocess.run(["docker", "exec", NODES[0], "docker", "node", how, node], capture_output=True, timeout=60,
                       env=local_env())
    return done()


@dataclass
class Kill:
    node: str
    requests: int
    failed: int
    late: int  # failed requests sent 5 s or more after the kill
    was_leader: bool  # the node killed held Raft's leader
    leader: str | None  # the Raft leader after the kill (None: none within the wait)
    elected: float | None  # seconds from the kill to a leader on another node (0 when the leader was elsewhere)
    whole: float | None  # seconds from the kill until every replica passes in Consul again on the other nodes
    # (Consul saw the killed node's go, Swarm started them elsewhere, and each warmed up)
    held: int | None  # replicas passing on the killed node's agent before the kill (None: not known)
    last: int | None  # replicas passing on the other nodes when the watch ended (None: no answer)
    tasks: str = ""  # when the catalog was not whole within the wait: the service's tasks then, as Swarm saw them


def kill_under_load(victim: str, wait: float = 150, at_least: float = 30) -> Kill:
    """`victim` killed (its container: the node's engine and every task on it) under load through the other
    nodes' gateways for `at_least` s after the kill and until a leader on another node and a whole catalog
    (watched through another node's Consul), each at most `wait` s; the node started again."""
    others = [n for n in NODES if n != victim]
    elected = whole = new = last = None
    was_leader = leader(others[0]) == victim
    before = _nodes(others[0])
    held = None if before is None else before.count(victim)
    try:
        with clients(*(int(n[-1]) for n in others), seconds=wait + 120) as loads:
            killed = time.time()
            subprocess.run(["docker", "kill", victim], check=True, capture_output=True, env=local_env())
            deadline = killed + wait
            while time.time() < deadline and (elected is None or whole is None or time.time() < killed + at_least):
                now = leader(others[0])
                if elected is None and now and now != victim:
                    elected, new = time.time() - killed, now
                now_on = _nodes(others[0])
                last = None if now_on is None else len(now_on) - now_on.count(victim)
                if whole is None and last == REPLICAS:
                    whole = time.time() - killed
                time.sleep(0.25)
            tasks = "" if whole is not None else _tasks(others)
            mark = sum(load.total for load in loads)
            wait_until(lambda: sum(load.total for load in loads) >= mark + 40, 60, "requests after")
    finally:
        start(victim)
    late = [t for load in loads for t, status, _ in load.served if status != 200 and t > killed + 5]
    return Kill(victim, sum(load.total for load in loads), len(failed(loads)), len(late), was_leader, new,
                elected if was_leader or elected is None else 0.0, whole, held, last, tasks)


def _nodes(node: str) -> list[str] | None:
    """The node of the agent each passing replica registered with, as `node`'s Consul sees it (None: no answer)."""
    try:
        return [entry["Node"]["Node"] for entry in passing(node)]
    except Exception:
        return None


def _tasks(nodes: list[str]) -> str:
    """The inference service's tasks as the first of `nodes` with a manager's engine that answers sees them."""
    for node in nodes:
        try:
            return on_node(node, "service", "ps", f"{NAME}_inference", "--format",
                           "{{.Node}} {{.DesiredState}} {{.CurrentState}} {{.Error}}")
        except Exception:
            continue
    return "(no manager answered)"
