"""The external-Consul variant (stacks/external-consul.yml) against three real Consul servers the test runs
apart from the stack, as an operator would: three Swarm services of their own on an attachable overlay
network of their own, with their own CA, gossip key and ACLs (default deny), whose policies and tokens the test makes as an
operator does (README, "Your own Consul servers"): one for the agents, one default (read only), one for the
replicas, one for fleet. The stack's agent joins them; its replicas register through it; a rollout runs; and
no request without a token can write anything.
"""
import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import consul
import httpx
import pytest

from tests.kit.helpers import wait_until
from tests.kit.stacks import ROOT, StackUnderTest, canary_gone, converged, remove_stack

NAME = "fleettest-ext"
NETWORK, CIDR = "fleettest-ext-net", "10.252.0.0/24"
SERVERS = [f"fleettest-ext-consul-{i}" for i in (1, 2, 3)]  # services (one task each), by name on NETWORK
SERVICE = f"{NAME}-inference"
IMAGE = "fleet/consul:1.8.7"
POLICIES = {  # the rules an operator gives fleet's users of their Consul
    "agent": 'node_prefix "" { policy = "write" } agent_prefix "" { policy = "read" } '
             'service_prefix "" { policy = "read" }',
    "dns": 'node_prefix "" { policy = "read" } service_prefix "" { policy = "read" }',
    "replica": f'key_prefix "fleet/traffic/{SERVICE}/" {{ policy = "read" }} key "fleet/config/{SERVICE}" '
               '{ policy = "read" }',
    "fleet": f'key_prefix "fleet/" {{ policy = "write" }} session_prefix "" {{ policy = "write" }} '
             'node "fleet-locks" { policy = "write" } '
             f'service "{SERVICE}" {{ policy = "write" }} service_prefix "" {{ policy = "read" }} '
             'node_prefix "" { policy = "read" } operator = "read"',
}


@dataclass
class ExternalStack(StackUnderTest):
    """The stack, with the operator's credentials instead of the stack's own."""
    secrets: Path = Path()

    def consul(self, who: str | None = "fleet", ca: str = "") -> consul.Consul:
        token = (self.secrets / f"{who}.token").read_text().strip() if who else None
        return consul.Consul(host="127.0.0.1", port=self.consul_port, scheme="https", verify=str(self.secrets / "ca.pem"),
                             token=token, connections_timeout=5)

    def env(self) -> dict:
        return {**super().env(), "CONSUL_CACERT": str(self.secrets / "ca.pem"),
                "CONSUL_HTTP_TOKEN_FILE": str(self.secrets / "fleet.token"), "FLEET_CONSUL_SECRETS": str(self.secrets),
                "CONSUL_NETWORK": NETWORK, "CONSUL_NETWORK_CIDR": CIDR, "CONSUL_RETRY_JOIN": " ".join(SERVERS),
                "FLEET_REPLICAS": "2"}


def docker(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(["docker", *args], capture_output=True, text=True, check=check, timeout=120)


def sweep() -> None:
    for name in SERVERS:
        docker("service", "rm", name, check=False)
    wait_until(lambda: not docker("ps", "-aq", "--filter", "label=fleet.test.external=1").stdout.strip(), 60,
               "the servers' containers gone")
    wait_until(lambda: docker("network", "rm", NETWORK, check=False).returncode == 0
               or "not found" in docker("network", "inspect", NETWORK, check=False).stderr, 60, f"{NETWORK} removed")


def start_servers(secrets: Path, master: str) -> None:
    """Three Consul servers, each a Swarm service of one task on their own attachable overlay network (a
    standalone container attached to an overlay network can leave its attachment behind when its start fails,
    and the network then cannot be removed): HTTPS only, ACLs default deny, gossip encrypted with the
    operator's key."""
    config = {"acl": {"enabled": True, "default_policy": "deny", "down_policy": "extend-cache",
                      "tokens": {"master": master, "agent": master}},
              "ports": {"http": -1, "https": 8501}, "verify_incoming": False, "verify_incoming_https": False,
              "ca_file": "/secrets/ca.pem", "cert_file": "/secrets/server.pem", "key_file": "/secrets/server-key.pem"}
    (secrets.parent / "server.json").write_text(json.dumps(config))
    docker("network", "create", "--driver", "overlay", "--attachable", "--subnet", CIDR, "--label", "fleet.test=1",
           NETWORK)
    joins = [f"-retry-join={name}" for name in SERVERS]
    for name in SERVERS:
        docker("service", "create", "--detach", "--name", name, "--hostname", name, "--label", "fleet.test=1",
               "--container-label", "fleet.test.external=1", "--network", NETWORK, "--endpoint-mode", "dnsrr",
               "--entrypoint", "consul", "--user", "0:0",  # the credentials are root's files, 0600
               "--mount", f"type=bind,source={secrets},target=/secrets,readonly",
               "--mount", f"type=bind,source={secrets.parent / 'server.json'},target=/server.json,readonly", IMAGE,
               "agent", "-server", "-bootstrap-expect=3", f"-node={name}", "-data-dir=/tmp/consul", "-client=0.0.0.0",
               f'-bind={{{{ GetPrivateInterfaces | include "network" "{CIDR}" | attr "address" }}}}', *joins,
               "-retry-interval=2s", f"-encrypt={(secrets / 'gossip.key').read_text().strip()}",
               "-config-file=/server.json", "-log-level=warn")


def operator(master: str, *args: str) -> subprocess.CompletedProcess:
    """The consul CLI on the first server, with the management token (the operator's)."""
    container = docker("ps", "-q", "--filter", f"label=com.docker.swarm.service.name={SERVERS[0]}").stdout.split()
    if not container:
        return subprocess.CompletedProcess([], 1, "", f"no container of {SERVERS[0]} yet")
    return docker("exec", "-e", "CONSUL_HTTP_ADDR=https://127.0.0.1:8501", "-e", "CONSUL_CACERT=/secrets/ca.pem",
                  "-e", f"CONSUL_HTTP_TOKEN={master}", container[0], "consul", *args, check=False)


def make_tokens(secrets: Path, master: str) -> None:
    """fleet's four policies and tokens in the operator's Consul, each token's secret ID from its file."""
    wait_until(lambda: operator(master, "acl", "policy", "list").returncode == 0, 120,
               "the servers to elect a leader, ACLs up")
    for who, rules in POLICIES.items():
        p = operator(master, "acl", "policy", "create", "-name", f"fleet-{who}", "-rules", rules)
        assert p.returncode == 0, p.stderr
        extra = ["-service-identity", SERVICE] if who == "replica" else []
        p = operator(master, "acl", "token", "create", "-secret", (secrets / f"{who}.token").read_text().strip(),
                     "-description", f"fleet: {who}", "-policy-name", f"fleet-{who}", *extra)
        assert p.returncode == 0, p.stderr


@pytest.fixture(scope="module")
def ext(swarm, tmp_path_factory):
    secrets = tmp_path_factory.mktemp("operator") / "secrets"
    # the operator's own credentials: another CA, gossip key and tokens than the stack's (the same script)
    subprocess.run(["bash", str(ROOT / "scripts/consul-secrets.sh")], check=True, capture_output=True,
                   env={**os.environ, "FLEET_CONSUL_SECRETS": str(secrets)})
    master = (secrets / "master.token").read_text().strip()
    s = ExternalStack(NAME, swarm, 26500, 26080, secrets=secrets)
    remove_stack(swarm, NAME)
    sweep()
    try:
        start_servers(secrets, master)
        make_tokens(secrets, master)
        p = subprocess.run(["docker", "stack", "deploy", "--resolve-image", "never", "-c", str(ROOT / "docker-stack.yml"),
                            "-c", str(ROOT / "stacks/external-consul.yml"), NAME], capture_output=True, text=True,
                           env=s.env())
        assert p.returncode == 0, p.stderr
        wait_until(lambda: converged(s), 240, f"stack {NAME} to converge, registered in the operator's Consul")
        yield s
    finally:
        remove_stack(swarm, NAME)
        sweep()


def test_the_stacks_agent_joins_the_operators_servers_and_each_replica_registers_through_its_nodes_agent(ext, swarm):
    admin = ext.consul("master")
    members = {m["Name"]: m for m in admin.agent.members() if m["Status"] == 1}
    node = swarm.client.info()["Name"]  # the Swarm node's hostname: its agent's name
    assert {name: members[name]["Tags"]["role"] for name in SERVERS} == {name: "consul" for name in SERVERS}
    assert members[node]["Tags"]["role"] == "node", members  # a client agent, not a server
    assert members[node]["Addr"].startswith("10.252.0."), members[node]  # reachable from the servers
    agent = httpx.get(f"https://127.0.0.1:{ext.consul_port}/v1/agent/self", verify=str(ext.secrets / "ca.pem"),
                      headers={"X-Consul-Token": admin.token}, timeout=10).raise_for_status().json()  # (py-consul's
    assert agent["Stats"]["serf_lan"]["encrypted"] == "true"  # agent.self sends no token): the operator's gossip key
    leader = admin.status.leader()
    assert leader.rsplit(":", 1)[0] in {members[name]["Addr"] for name in SERVERS}
    _, entries = admin.health.service(SERVICE, passing=True)
    assert len(entries) == 2 and {e["Node"]["Node"] for e in entries} == {node}, entries  # through its node's agent
    # `fleet status` shows the operator's control plane as its servers hold it: three voters, one leader
    p = subprocess.run([sys.executable, "-m", "fleet.cli", "status", "--stack", NAME, "--json"], cwd=ROOT, env=ext.env(),
                       capture_output=True, text=True, timeout=60)
    plane = json.loads(p.stdout)["control_plane"]
    assert sorted((s["node"], s["voter"], s["alive"]) for s in plane["servers"]) == [(n, True, True) for n in SERVERS]
    assert plane["voters"] == 3 and plane["warnings"] == [], plane
    assert plane["leader"] == next(name for name in SERVERS if members[name]["Addr"] == leader.rsplit(":", 1)[0])


WRITES = [  # (path, body): what a request without a token might try to write
    ("/v1/kv/fleet/anonymous", "x"),
    ("/v1/kv/fleet/traffic/" + SERVICE + "/canary", "100"),
    ("/v1/agent/service/register", json.dumps({"Name": "intruder", "Port": 1})),
    ("/v1/catalog/register", json.dumps({"Node": "intruder", "Address": "10.0.0.1"})),
    ("/v1/session/create", "{}"),
    ("/v1/acl/token", json.dumps({"Description": "intruder"})),
    ("/v1/event/fire/intruder", ""),
]


def test_no_request_without_a_token_can_write_anything_and_the_replicas_token_writes_no_key(ext):
    url = f"https://127.0.0.1:{ext.consul_port}"
    ca = str(ext.secrets / "ca.pem")
    refused = {path: httpx.put(url + path, content=body, verify=ca, timeout=10).status_code for path, body in WRITES}
    assert set(refused.values()) == {403}, refused
    replica = (ext.secrets / "replica.token").read_text().strip()
    for path, body in WRITES[:2]:
        status = httpx.put(url + path, content=body, verify=ca, timeout=10, headers={"X-Consul-Token": replica})
        assert status.status_code == 403, (path, status.text)
    # what a request without a token gets is the default token: read only (the gateway's DNS needs no more)
    services = httpx.get(url + "/v1/catalog/services", verify=ca, timeout=10)
    assert services.status_code == 200 and SERVICE in services.json()
    assert ext.consul("master").kv.get("fleet/anonymous")[1] is None


def test_a_rollout_runs_against_the_operators_consul(ext):
    p = subprocess.run([sys.executable, "-m", "fleet.cli", "rollout", "--canary", "--image", "fleet/inference:1",
                        "--stack", NAME, "--json", "--steps", "50", "--step-duration", "10s", "--golden-tolerance", "1",
                        "--max-latency-ratio", "4"], cwd=ROOT, env=ext.env(), capture_output=True, text=True,
                       timeout=600)
    doc = json.loads(p.stdout)
    assert p.returncode == 0 and doc["outcome"] == "promoted", (doc, p.stderr[-3000:])
    wait_until(lambda: canary_gone(ext), 120, "no canary left")
    wait_until(lambda: converged(ext, version="1"), 240, "the stable on the new version, registered")
    _, items = ext.consul("master").kv.get(f"fleet/rollouts/{NAME}/inference/history/", recurse=True)
    assert json.loads(items[-1]["Value"])["outcome"] == "promoted"
