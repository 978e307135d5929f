"""Consul with no single point of failure, on the real 3-node Swarm (tests/kit/cluster.py): the cluster's
nodes promoted to three managers for this module (demoted again after it), the stack deployed by fleet
as shipped (fleet reads FLEET_CONSUL_SERVERS=3 from the managers), so a Consul server runs on every node (a
global service on the managers, each with its own volume). Nodes are killed and drained for real; clients
at the surviving nodes' gateways (bounded loops) see what users would, counted from the first request.

fleet is given the three managers' engines (DOCKER_HOST lists them) and follows whichever answers; these
tests watch Swarm through the surviving managers' own engines (`docker exec fleet-nodeN docker ...`) and
Consul through each node's published HTTPS port (tests/kit/consul_ha.py), so the node killed may be node 1
(Swarm's leader, and the first engine fleet asks) too. Before each kill, Raft must be able to lose a server
(`tolerant`): a server just restarted answers HTTP before it has caught up.
"""
import json
import subprocess
import sys
import time
import uuid

import pytest

from tests.kit.cluster import NAME, NODES, REPLICAS, Cluster, canary_gone, clients, failed, local_env, push
from tests.kit.consul_ha import (answers, consul_on, kill_under_load, kv, leader, node_id_of, on_node, passing, servers,
                                 start, three_managers, tolerant)
from tests.kit.helpers import wait_until
from tests.kit.stacks import ROOT


@pytest.fixture(scope="module")
def ha(cluster_session):
    c: Cluster = cluster_session
    with three_managers(c):
        # as shipped, FLEET_CONSUL_SERVERS unset: fleet reads it from the three managers (issue 44; with
        # -bootstrap-expect=1 each server elected itself: three Raft clusters)
        p = c.fleet("deploy", "--json", "--timeout", "8m", FLEET_CONSUL_SERVERS="")
        assert p.returncode == 0, (p.stdout, p.stderr)
        wait_until(lambda: len(passing(NODES[0])) == REPLICAS, 120, "every replica passing")
        wait_until(lambda: servers(NODES[0]) == {node: True for node in NODES}, 120, "three voters")
        p = c.fleet("config", "set", "max_batch=24")  # a live config value, to find again after a kill
        assert p.returncode == 0, p.stderr
        yield c


def test_three_servers_a_leader_and_each_replica_with_its_own_nodes_agent(ha):
    members = consul_on(NODES[0]).agent.members()
    alive = {m["Name"]: m["Tags"].get("role") for m in members if m["Status"] == 1}
    assert alive == {node: "consul" for node in NODES}, members  # a server (an agent) on every node
    assert servers(NODES[0]) == {node: True for node in NODES}  # three voters
    assert leader(NODES[0]) in NODES
    assert {node: leader(node) for node in NODES} == {node: leader(NODES[0]) for node in NODES}  # one Raft cluster
    plane = json.loads(ha.fleet("status", "--json").stdout)["control_plane"]  # and `fleet status` says so
    assert (sorted(s["node"] for s in plane["servers"] if s["voter"] and s["alive"]), plane["leader"],
            plane["warnings"]) == (sorted(NODES), leader(NODES[0]), []), plane
    # each registered with the agent of the node its task runs on: a replica that started before its node's
    # server joined registers through another node's, and moves once its own is in the catalog (it looks
    # again every 10 s: services/inference/fleet_inference/registration.py), as CI's landing caught
    tasks = {t.id: t.node for t in ha.tasks()}

    def at_home() -> bool:  # raises with (task, agent's node, task's node) of each one elsewhere: the report
        entries = passing(NODES[0])
        elsewhere = [(e["Service"]["Meta"]["task_id"][:12], e["Node"]["Node"], tasks.get(e["Service"]["Meta"]["task_id"]))
                     for e in entries if e["Node"]["Node"] != tasks.get(e["Service"]["Meta"]["task_id"])]
        assert not elsewhere and len(entries) == len(tasks), (elsewhere, len(entries), len(tasks))
        return True
    wait_until(at_home, 40, "every replica registered with its own node's agent")


def test_a_drained_node_keeps_its_server_where_its_data_is_and_quorum_holds(ha):
    victim = NODES[2]
    others = [n for n in NODES if n != victim]
    wait_until(lambda: tolerant(others[0]), 180, "every server up and caught up")
    node_id = wait_until(lambda: node_id_of(victim), 60, f"{victim}'s node ID")
    volumes = on_node(victim, "volume", "ls", "-q", "--filter", f"label=com.docker.stack.namespace={NAME}")
    assert volumes.strip(), "the server's volume on its node"
    ha.docker("node", "update", "--availability", "drain", victim)
    try:
        wait_until(lambda: not answers(victim), 60, f"{victim}'s server stopped by the drain")
        # quorum: a leader, and a write that commits, with one server of three away
        # (the survivors may name the drained server leader for a few seconds more: asked until one commits)
        wait_until(lambda: leader(others[0]) in others, 30, "a leader without the drained node")
        wait_until(lambda: consul_on(others[0]).kv.put("fleet/test/drain-probe", "1"), 30, "a write to commit")
        assert consul_on(others[1]).kv.get("fleet/test/drain-probe", consistency="consistent")[1]["Value"] == b"1"
        # the global service never starts a second server elsewhere, on an empty volume
        for node in others:
            consul_tasks = on_node(node, "ps", "-q", "--filter", f"label=com.docker.swarm.service.name={NAME}_consul")
            assert len(consul_tasks.split()) == 1, (node, consul_tasks)
    finally:
        ha.docker("node", "update", "--availability", "active", victim)
    wait_until(lambda: answers(victim) and servers(others[0]).get(victim) is True, 180, f"{victim}'s server back")
    # the same server, its data kept (asked again until its agent takes the token: it may have just started)
    assert wait_until(lambda: node_id_of(victim), 60, f"{victim}'s node ID") == node_id
    consul_on(others[0]).kv.delete("fleet/test/drain-probe")


def test_the_raft_leaders_node_killed_mid_rollout_ends_it_safely_and_history_is_true(ha):
    """The Raft leader's node killed while a canary runs; once a new leader is elected, a promotion is asked
    through a surviving server. The rollout ends promoted (on evidence gathered after the kill) or rolled back
    (its canary was on the node killed), with no request failing 5 s or more after the kill, no canary left,
    and `fleet history` saying what happened."""
    killed_mid_rollout(ha, lambda: leader(NODES[1]))


def test_fleets_first_engines_node_killed_mid_rollout_ends_it_safely(ha):
    """The same with node 1 killed, whatever Raft's leader: Swarm's leader, and the engine fleet was talking
    to. fleet goes on through the other managers' engines (a "no leader" 503 waited out while Swarm elects)."""
    killed_mid_rollout(ha, lambda: NODES[0])


def killed_mid_rollout(ha, choose) -> None:
    """A rollout started, `choose()`'s node killed under load once Raft can lose a server, a promotion asked
    once Consul has a leader again, and the end judged."""
    wait_until(lambda: len(passing(NODES[1])) == REPLICAS and answers(NODES[0]) and answers(NODES[2]), 180,
               "the stack whole, every server up")
    wait_until(lambda: all(servers(NODES[1]).get(n) for n in NODES), 120, "three voters")
    image = push("fleet/inference:2", f"inference:ha-{uuid.uuid4().hex[:8]}")
    running = ha.fleet_background("rollout", "--canary", "--image", image, "--json", "--steps", "50",
                                  "--step-duration", "30s")
    victim, promote, out, err = None, None, "", ""
    try:
        wait_until(lambda: json.loads(ha.fleet("status", "--json").stdout)["rollouts"], 240,
                   "the rollout to be under way", while_running=running)
        wait_until(lambda: tolerant(NODES[1]), 180, "every server caught up")
        victim, leader_then = choose(), leader(NODES[1])
        others = [n for n in NODES if n != victim]
        with clients(*(int(n[-1]) for n in others), seconds=300) as loads:
            killed = time.time()
            subprocess.run(["docker", "kill", victim], check=True, capture_output=True, env=local_env())
            wait_until(lambda: leader(others[0]) in others, 60, "a new leader", while_running=running)
            if running.poll() is None:  # refused if the rollout rolled back meanwhile: judged below
                promote = ha.fleet_background("promote", "--json")
            out, err = running.communicate(timeout=400)
            ended = time.time()
    finally:
        for p in filter(None, (running, promote)):
            if p.poll() is None:
                p.kill()
        if not out:  # what the rollout said before it was stopped, for the assertion below
            out, err = running.communicate()
        asked = promote.communicate() if promote else ("", "")
        if victim:
            start(victim)
    assert out.strip(), (running.returncode, err[-3000:], asked)
    doc = json.loads(out)
    assert "outcome" in doc, (doc, err[-3000:])
    late = [t - killed for load in loads for t, status, _ in load.served if status != 200 and t > killed + 5]
    print(f"\n{victim} killed mid-rollout (Raft's leader was {leader_then}): {doc['outcome']} {ended - killed:.1f}s "
          f"after the kill ({doc.get('reason', '')[:160]}); {sum(load.total for load in loads)} requests, {len(failed(loads))} "
          f"failed, {len(late)} sent 5 s or more after the kill")
    assert running.returncode in (0, 1) and doc["outcome"] in ("promoted", "rolled_back"), (doc, err[-3000:], asked)
    assert late == [], late[:5]
    wait_until(lambda: canary_gone(ha), 120, "no canary left")
    last = json.loads(ha.fleet("history", "--json").stdout)["revisions"][-1]  # read through a live server
    assert last["outcome"] == doc["outcome"] and last["image"].split("@")[0] == image, last
    assert ha.swarm.describe(f"{NAME}_inference").image_name == (image if doc["outcome"] == "promoted" else
                                                                 last["previous_image"].split("@")[0]), last


def test_the_raft_leaders_node_killed_under_load(ha):
    """No request sent 5 s or more after the kill fails; a new leader within 15 s; KV unchanged; the node back:
    its server a voter again."""
    wait_until(lambda: len(passing(NODES[0])) == REPLICAS and leader(NODES[0]), 120, "the stack whole, a leader")
    wait_until(lambda: tolerant(NODES[0]), 180, "three voters, caught up")
    victim = leader(NODES[0])
    others = [n for n in NODES if n != victim]
    before = kv(others[0])
    assert any(k.startswith(f"fleet/config/{NAME}") for k in before) and any("/history/" in k for k in before), before
    kill = kill_under_load(victim, wait=60)
    after = kv(others[0])
    print(f"\nRaft leader's node {victim} killed: {kill}")
    assert kill.late == 0, kill
    assert kill.leader in others and kill.elected < 15, kill
    assert after == before
    # the node back: its server rejoins Raft as a voter, every replica passes again, and its gateway serves
    wait_until(lambda: answers(victim) and servers(others[0]).get(victim) is True
               and victim in {m["Name"] for m in consul_on(others[0]).agent.members() if m["Status"] == 1},
               240, f"{victim}'s Consul server to rejoin")
    wait_until(lambda: len(passing(victim)) == REPLICAS, 240, "every replica passing again")
    with clients(int(victim[-1]), seconds=20):
        pass



def test_servers_that_may_each_bootstrap_alone_are_refused_nothing_deployed(ha):
    """Issue 44: on three managers, FLEET_CONSUL_SERVERS=1 (the file's own default, which `docker stack deploy`
    by hand reads) lets each server elect itself: three Raft clusters behind one name. fleet deploy and lint
    refuse it, exit 2, naming the fix, and nothing changes. (Deployed by hand the split is real but which
    servers end up alone is a race, so no test waits for it: fleet/core/raft.py's warnings are unit-tested on
    its shapes, and real servers' answers are judged here, by test_external_consul.py and test_deploy.py.)"""
    spec = ha.swarm.describe(f"{NAME}_consul").spec
    p = ha.fleet("deploy", FLEET_CONSUL_SERVERS="1")
    assert p.returncode == 2 and "groups of 1 may each elect a leader of their own" in p.stderr, p.stderr
    assert "-bootstrap-expect=3" in p.stderr and "nothing was deployed" in p.stderr, p.stderr
    lint = subprocess.run([sys.executable, "-m", "fleet.cli", "lint"], capture_output=True, text=True, cwd=ROOT,
                          timeout=120, env=ha.fleet_env(FLEET_CONSUL_SERVERS="1"))
    assert lint.returncode == 2 and "groups of 1 may each elect a leader of their own" in lint.stderr, lint.stderr
    assert ha.swarm.describe(f"{NAME}_consul").spec == spec
