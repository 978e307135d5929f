"""Consul with no single point of failure, on the real 3-node Swarm (tests/kit/cluster.py): the cluster's
nodes promoted to three managers for this module (demoted again after it), the stack deployed by fleet
with FLEET_CONSUL_SERVERS=3, so a Consul server runs on every node (a global service on the managers, each
with its own volume). Nodes are killed and drained for real; clients at the surviving nodes' gateways
(bounded loops) see what users would, counted from the first request.

fleet's Docker engine in the test cluster is node 1's (one DOCKER_HOST): this module watches Swarm through
the surviving managers' own engines (`docker exec fleet-nodeN docker ...`) and Consul through each node's
published HTTPS port, so the node killed may be node 1 too.
"""
import subprocess
import time

import consul
import pytest

from tests.kit.cluster import NAME, NODES, REPLICAS, Cluster, clients, failed, local_env, remove_stack
from tests.kit.helpers import wait_until
from tests.kit.stacks import CA, SECRETS

SERVERS = "3"


def consul_on(node: str, token: str = "master") -> consul.Consul:
    """Consul's API on one node (fleet-nodeI publishes it on 127.0.0.1:3I501), with a token of the stack's."""
    return consul.Consul(host="127.0.0.1", port=int(f"3{node[-1]}501"), scheme="https", verify=CA, connections_timeout=5,
                         token=(SECRETS / f"{token}.token").read_text().strip())


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


def servers(node: str) -> dict[str, bool]:
    """The Raft configuration as `node`'s Consul sees it: each server's node name, and whether it votes."""
    config = consul_on(node).operator.raft_config()
    return {s["Node"]: s["Voter"] for s in config["Servers"]}


def kv(node: str) -> dict[str, bytes]:
    """Everything fleet keeps in Consul (rollout history, locks, live config), read through `node`."""
    _, items = consul_on(node).kv.get("fleet/", recurse=True, consistency="consistent")
    return {i["Key"]: i["Value"] for i in items or [] if i.get("Session") is None}


def passing(node: str) -> list[dict]:
    """The replicas passing in Consul, with the node of the agent each one registered with."""
    _, entries = consul_on(node).health.service(f"{NAME}-inference", passing=True)
    return entries


def on_node(node: str, *args: str) -> str:
    return subprocess.run(["docker", "exec", node, "docker", *args], capture_output=True, text=True, check=True,
                          timeout=60, env=local_env()).stdout


def start(node: str) -> None:
    subprocess.run(["docker", "start", node], capture_output=True, env=local_env())


def managers_ready(via: str) -> bool:
    lines = on_node(via, "node", "ls", "--format", "{{.Hostname}} {{.Status}} {{.ManagerStatus}}").split("\n")
    return sum(1 for line in lines if " Ready " in f"{line} " and ("Leader" in line or "Reachable" in line)) == 3


@pytest.fixture(scope="module")
def ha(cluster_session):
    c: Cluster = cluster_session
    remove_stack(c)
    for node in NODES[1:]:
        c.docker("node", "promote", node)
    try:
        wait_until(lambda: managers_ready(NODES[0]), 60, "three managers")
        p = c.fleet("deploy", "--json", "--timeout", "8m", FLEET_CONSUL_SERVERS=SERVERS)
        assert p.returncode == 0, (p.stdout, p.stderr)
        wait_until(lambda: len(passing(NODES[0])) == REPLICAS, 120, "every replica passing")
        p = c.fleet("config", "set", "max_batch=24")  # a live config value, to find again after a kill
        assert p.returncode == 0, p.stderr
        yield c
    finally:
        for node in NODES:
            start(node)
        wait_until(lambda: managers_ready(NODES[0]), 180, "the three managers back")
        for node in NODES:
            c.docker("node", "update", "--availability", "active", node)
        remove_stack(c)
        for node in NODES[1:]:
            c.docker("node", "demote", node)


def test_three_servers_a_leader_and_each_replica_with_its_own_nodes_agent(ha):
    members = consul_on(NODES[0]).agent.members()
    alive = {m["Name"]: m["Tags"].get("role") for m in members if m["Status"] == 1}
    assert alive == {node: "consul" for node in NODES}, members  # a server (an agent) on every node
    assert servers(NODES[0]) == {node: True for node in NODES}  # three voters
    assert leader(NODES[0]) in NODES
    tasks = {t.id: t.node for t in ha.tasks()}
    for entry in passing(NODES[0]):  # registered with the agent of the node its task runs on
        assert entry["Node"]["Node"] == tasks[entry["Service"]["Meta"]["task_id"]], entry


def test_the_raft_leaders_node_killed_under_load(ha):
    """No request sent 5 s or more after the kill fails; a new leader within 15 s; KV unchanged; the node back:
    its server a voter again."""
    wait_until(lambda: len(passing(NODES[0])) == REPLICAS and leader(NODES[0]), 120, "the stack whole, a leader")
    victim = leader(NODES[0])
    others = [n for n in NODES if n != victim]
    before = kv(others[0])
    assert any(k.startswith(f"fleet/config/{NAME}") for k in before) and any("/history/" in k for k in before), before
    try:
        with clients(*(int(n[-1]) for n in others), seconds=200) as loads:
            killed = time.time()
            subprocess.run(["docker", "kill", victim], check=True, capture_output=True, env=local_env())
            new = wait_until(lambda: (leader(others[0]) or victim) != victim and leader(others[0]), 60,
                             "a new leader")
            elected = time.time() - killed
            wait_until(lambda: len(passing(others[0])) == REPLICAS, 180, "every replica passing again")
            whole = time.time() - killed
            mark = sum(load.total for load in loads)
            wait_until(lambda: sum(load.total for load in loads) >= mark + 40, 60, "requests after the catalog is whole")
        after = kv(others[0])
    finally:
        start(victim)
    late = [t - killed for load in loads for t, status, _ in load.served if status != 200 and t > killed + 5]
    print(f"\nRaft leader's node {victim} killed: new leader {new} after {elected:.1f}s, every replica passing "
          f"after {whole:.1f}s; {sum(load.total for load in loads)} requests at {others}, {len(failed(loads))} "
          f"failed, {len(late)} sent 5 s or more after the kill")
    assert late == [], late[:5]
    assert elected < 15
    assert after == before
    # the node back: its server rejoins Raft as a voter, and its gateway serves again
    wait_until(lambda: answers(victim) and servers(others[0]).get(victim) is True
               and victim in {m["Name"] for m in consul_on(others[0]).agent.members() if m["Status"] == 1},
               240, f"{victim}'s Consul server to rejoin")
    with clients(int(victim[-1]), seconds=20):
        pass


def test_a_drained_node_keeps_its_server_where_its_data_is_and_quorum_holds(ha):
    victim = NODES[2]
    others = [n for n in NODES if n != victim]
    wait_until(lambda: answers(victim) and leader(victim), 120, f"{victim}'s server up")
    node_id = consul_on(victim).agent.self()["Config"]["NodeID"]
    volumes = on_node(victim, "volume", "ls", "-q", "--filter", f"label=com.docker.stack.namespace={NAME}")
    assert volumes.strip(), "the server's volume on its node"
    ha.docker("node", "update", "--availability", "drain", victim)
    try:
        wait_until(lambda: not answers(victim), 60, f"{victim}'s server stopped by the drain")
        # quorum: a leader, and a write that commits, with one server of three away
        wait_until(lambda: leader(others[0]), 30, "a leader without the drained node")
        consul_on(others[0]).kv.put("fleet/test/drain-probe", "1")
        assert consul_on(others[1]).kv.get("fleet/test/drain-probe", consistency="consistent")[1]["Value"] == b"1"
        # the global service never starts a second server elsewhere, on an empty volume
        for node in others:
            consul_tasks = on_node(node, "ps", "-q", "--filter", f"label=com.docker.swarm.service.name={NAME}_consul")
            assert len(consul_tasks.split()) == 1, (node, consul_tasks)
    finally:
        ha.docker("node", "update", "--availability", "active", victim)
    wait_until(lambda: answers(victim) and servers(others[0]).get(victim) is True, 180, f"{victim}'s server back")
    assert consul_on(victim).agent.self()["Config"]["NodeID"] == node_id  # the same server, its data kept
    consul_on(others[0]).kv.delete("fleet/test/drain-probe")
