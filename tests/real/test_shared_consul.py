"""Two stacks on one Consul, each rolling out at once, on the real Swarm, Consul, gateways and images.

Stack B's replicas and gateway join stack A's network and use A's Consul (as a team sharing a Consul
does), with a replica token of B's own made in A's Consul (a service identity for B's name and read of
B's keys). Everything fleet writes and every name the replicas register is scoped by stack, so each
rollout ends as it would alone: A's canary (model v1, given a share) never answers B's clients, and B's
failing canary (5xx) never touches A's.
"""
import json
import shutil
import subprocess
import sys
import textwrap
import time

import pytest

from tests.kit.helpers import LoadLoop, wait_until
from tests.kit.stacks import ROOT, SECRETS, StackUnderTest, converged, gateway_log, remove_stack

A, B = "fleettest-sa", "fleettest-sb"


def shared_file(tmp) -> str:
    path = tmp / "shared-consul.yml"
    path.write_text(textwrap.dedent(f"""\
        version: "3.8"
        services:
          gateway:
            environment:
              CONSUL_DNS_HOST: {A}_consul
            networks: [default, shared]
          inference:
            environment:
              CONSUL_HTTP_ADDR: https://{A}_consul:8501
              CONSUL_TLS_SERVER_NAME: consul
            networks: [default, shared]
        networks:
          shared:
            external: true
            name: {A}_default
        """))
    return str(path)


def b_secrets(a: StackUnderTest, tmp) -> str:
    """A copy of the stack's credentials with a replica token for B, made in A's Consul: B's name only."""
    admin = a.consul("master")
    name = f"{B}-inference"
    rules = {"key_prefix": {f"fleet/traffic/{name}/": {"policy": "read"}}, "key": {f"fleet/config/{name}": {"policy": "read"}}}
    policies = {p["Name"]: p for p in admin.acl.policy.list()}
    policy = policies.get(f"{B}-replica") or admin.acl.policy.create(f"{B}-replica", rules=rules)
    token = admin.acl.token.create(description=f"replicas of {B}", policies_id=[policy["ID"]],
                                   service_identities=[{"ServiceName": name}])
    directory = tmp / "secrets"
    shutil.copytree(SECRETS, directory)
    (directory / "replica.token").write_text(token["SecretID"])
    return str(directory)


@pytest.fixture(scope="module")
def stacks(swarm, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("shared")
    a = StackUnderTest(A, swarm, 19600, 19180)
    b = StackUnderTest(B, swarm, 19600, 19480)  # B's fleet and tests speak to A's Consul
    for s in (b, a):
        remove_stack(swarm, s.name)
    env = {"FLEET_REPLICAS": "1"}
    subprocess.run(["docker", "stack", "deploy", "--resolve-image", "never", "-c", str(ROOT / "docker-stack.yml"), A],
                   check=True, capture_output=True, env={**a.env(), **env})
    wait_until(lambda: converged(a, replicas=1), 240, f"stack {A} to converge")
    b_env = {**b.env(), **env, "FLEET_CONSUL_PORT": "19400", "FLEET_CONSUL_SECRETS": b_secrets(a, tmp)}
    subprocess.run(["docker", "stack", "deploy", "--resolve-image", "never", "-c", str(ROOT / "docker-stack.yml"),
                    "-c", shared_file(tmp), B], check=True, capture_output=True, env=b_env)
    wait_until(lambda: converged(b, replicas=1), 240, f"stack {B} to converge, registered in {A}'s Consul")
    yield a, b
    for s in (b, a):
        remove_stack(swarm, s.name)


def rollout(s: StackUnderTest, image: str, *args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "fleet.cli", "rollout", "--canary", "--image", image, "--stack",
                             s.name, "--json", *args], cwd=ROOT, env=s.env(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def test_two_stacks_on_one_consul_roll_out_at_once_and_each_ends_as_alone(stacks):
    a, b = stacks
    kv = a.consul("master").kv
    assert {i.name for i in a.catalog.instances(b.consul_service)} == {b.consul_service}
    assert not {i.task_id for i in a.catalog.instances(a.consul_service)} & \
        {i.task_id for i in a.catalog.instances(b.consul_service)}
    began = time.time()
    with LoadLoop(f"{a.gateway}/predict", max_requests=40_000, max_seconds=400) as a_clients, \
            LoadLoop(f"{b.gateway}/predict", max_requests=40_000, max_seconds=400) as b_clients:
        # the test is about isolation, not speed: two stacks' replicas share this machine's cores, so A's
        # latency limit is wide (its own tests judge latency)
        first = rollout(a, "fleet/inference:1", "--steps", "50", "--step-duration", "30s", "--golden-tolerance", "1",
                        "--max-latency-ratio", "4")
        second = rollout(b, "fleet/inference-test:flaky", "--steps", "50", "--step-duration", "60s")
        try:
            a_out, a_err = first.communicate(timeout=400)
            b_out, b_err = second.communicate(timeout=400)
        finally:
            first.kill()
            second.kill()
    a_doc, b_doc = json.loads(a_out), json.loads(b_out)
    a_v1 = sum(v == "1" for _, _, v in a_clients.served)
    b_v1 = sum(v == "1" for _, _, v in b_clients.served)
    print(f"\n{A}: {a_doc['outcome']} ({a_clients.total} requests, {a_v1} from its canary v1, "
          f"{len(a_clients.failures)} failed); {B}: {b_doc['outcome']} ({b_clients.total} requests, {b_v1} from v1, "
          f"{len(b_clients.failures)} failed): {b_doc['reason'][:120]}")
    assert a_doc["outcome"] == "promoted", (a_doc, a_err[-2000:])
    assert b_doc["outcome"] == "rolled_back" and "error rate" in b_doc["reason"], (b_doc, b_err[-2000:])
    assert a_v1 > 0, "A's canary took its share of A's clients"
    assert b_v1 == 0, "A's canary never answered B's clients"
    assert a_clients.failures == [] and b_clients.failures == [], (
        a_clients.failures[:2], b_clients.failures[:2], gateway_log(a, began), gateway_log(b, began))
    # each stack's keys, under its own names; nothing left of either rollout's traffic
    assert not (kv.get("fleet/traffic/", recurse=True)[1] or [])
    history = {s.name: [json.loads(i["Value"])["outcome"] for i in
                        kv.get(f"fleet/rollouts/{s.name}/inference/history/", recurse=True)[1]] for s in (a, b)}
    assert history[A][-1] == "promoted" and history[B][-1] == "rolled_back", history
    assert {i.version for i in a.catalog.instances(a.consul_service)} == {"1"}
    assert {i.version for i in a.catalog.instances(b.consul_service)} == {"2"}
