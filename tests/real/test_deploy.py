"""`fleet deploy`, `fleet status` and `fleet lint` as a user runs them, on the real Swarm and Consul."""
import json
import subprocess

import httpx
import pytest

from tests.kit.cli import fleet
from tests.kit.helpers import SAMPLE, wait_until
from tests.kit.stacks import StackUnderTest, converged, own_stack, running_ids

NAME = "fleettest-deploy"


@pytest.fixture(scope="module")
def dstack(swarm):
    with own_stack(swarm, NAME, 28500, 28080) as s:
        yield s


def specs(stack: StackUnderTest) -> dict:
    return stack.swarm.spec_versions(stack.name)


def restored(stack: StackUnderTest) -> bool:
    svc = stack.swarm.service(stack.service("inference"))
    image = svc.attrs["Spec"]["TaskTemplate"]["ContainerSpec"]["Image"].split("@")[0]
    return image == "fleet/inference:2" and converged(stack)


def test_deploy_waits_until_converged_and_exits_0(dstack):
    p = fleet(dstack, "deploy", "--stack", NAME, "--json", "--timeout", "5m")
    assert p.returncode == 0, p.stderr
    doc = json.loads(p.stdout)
    assert doc["ok"] and set(doc["services"]) == {f"{NAME}_{s}" for s in ("consul", "consul-agent", "gateway", "prometheus", "inference")}
    assert all(s["state"] == "converged" for s in doc["services"].values())
    assert converged(dstack)  # true right after fleet returns, not eventually
    # and a client is served from that moment: the gateway already routes to the replicas Consul passes (before,
    # fleet returned up to a DNS lookup early, and a client got "No server is available": stop 46's CI)
    with httpx.Client(timeout=10) as client:
        answers = [client.post(f"{dstack.gateway}/predict", json={"inputs": SAMPLE}) for _ in range(5)]
    assert [r.status_code for r in answers] == [200] * 5, [r.text[:200] for r in answers]
    print(f"fleet deploy converged in {p.seconds:.1f}s")


def test_unchanged_redeploy_creates_no_task(dstack):
    before = running_ids(dstack)
    p = fleet(dstack, "deploy", "--stack", NAME, "--json")
    assert p.returncode == 0, p.stderr
    assert running_ids(dstack) == before
    assert p.seconds < 30, p.seconds
    print(f"unchanged redeploy returned in {p.seconds:.1f}s")


def test_status_json_agrees_with_docker_stack_ps_and_consul(dstack):
    p = fleet(dstack, "status", "--stack", NAME, "--json")
    assert p.returncode == 0, p.stderr
    doc = json.loads(p.stdout)
    ps = subprocess.run(["docker", "stack", "ps", NAME, "--no-trunc", "--filter", "desired-state=running",
                         "--format", "{{.ID}}"], capture_output=True, text=True, check=True).stdout.split()
    shown = {t["id"] for s in doc["services"] for t in s["tasks"] if t["desired_state"] == "running"}
    assert shown == set(ps)
    # the control plane as Consul's own CLI says it, run in the server's container with the management token
    raft = subprocess.run(["docker", "exec", next(c.id for c in dstack.swarm.client.containers.list(
        filters={"label": f"com.docker.swarm.service.name={NAME}_consul"})), "sh", "-c",
        "CONSUL_HTTP_TOKEN_FILE=/run/secrets/consul_master_token CONSUL_HTTP_ADDR=https://127.0.0.1:8501 "
        "CONSUL_CACERT=/run/secrets/consul_ca consul operator raft list-peers"], capture_output=True, text=True)
    (peer,) = raft.stdout.splitlines()[1:]  # Node ID Address State Voter RaftProtocol
    node, _, address, state, voter = peer.split()[:5]
    plane = doc["control_plane"]
    assert plane["warnings"] == [] and plane["leader"] == node and state == "leader", (plane, raft.stdout)
    assert [(s["node"], s["address"], s["voter"], s["alive"]) for s in plane["servers"]] == \
        [(node, address, voter == "true", True)], (plane, raft.stdout)
    inference = next(s for s in doc["services"] if s["name"] == f"{NAME}_inference")
    assert inference["version"] == "2" and inference["role"] == "stable"
    assert inference["replicas"] == {"running": 2, "desired": 2}
    consul = {i.task_id: i for i in dstack.catalog.instances(dstack.consul_service)}
    for t in inference["tasks"]:
        assert t["health"] == "healthy"
        assert t["consul"]["status"] == consul[t["id"]].status == "passing"
        assert t["consul"]["version"] == "2"


BAD = [
    ("missing file", ["deploy", "-c", "nope.yml"], {}, 2, "not found"),
    ("invalid YAML", ["deploy", "-c", "tests/data/invalid.yml"], {}, 2, "not a valid stack file"),
    ("unknown service in --image", ["deploy", "--image", "nosuch=fleet/inference:1"], {}, 2, "nosuch"),
    ("malformed --image", ["deploy", "--image", "fleet/inference:1"], {}, 2, "SERVICE=IMAGE"),
    ("bad --timeout", ["deploy", "--timeout", "soon"], {}, 2, "not a duration"),
    ("lint error", ["deploy", "-c", "docker-stack.yml", "-c", "tests/data/short-monitor.yml"], {}, 2, "monitor"),
    # issue 44: servers that expect more than the Swarm's managers can run never elect a leader
    ("Consul servers that never elect", ["deploy"], {"FLEET_CONSUL_SERVERS": "3"}, 2, "no leader is ever elected"),
    ("mode change", ["deploy", "-c", "docker-stack.yml", "-c", "tests/data/gateway-replicated.yml"], {}, 2,
     "docker service rm fleettest-deploy_gateway"),
    ("unreachable Docker", ["deploy"], {"DOCKER_HOST": "tcp://127.0.0.1:1"}, 3, "Docker engine"),
    ("unreachable Consul", ["deploy"], {"CONSUL_HTTP_ADDR": "http://127.0.0.1:1"}, 3, "Consul"),
    ("status of unreachable Docker", ["status"], {"DOCKER_HOST": "tcp://127.0.0.1:1"}, 3, "Docker engine"),
]


@pytest.mark.parametrize("args,env,code,message", [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_bad_input_exits_with_its_code_and_changes_nothing(dstack, args, env, code, message):
    before = specs(dstack)
    p = fleet(dstack, *args, "--stack", NAME, env=env, timeout=60)
    assert p.returncode == code, (p.stdout, p.stderr)
    assert message in p.stderr
    assert specs(dstack) == before


def failing_deploy(dstack, image: str, timeout: str):
    if not dstack.swarm.service(dstack.service("inference")):  # run alone (-k): deploy the good version first
        assert fleet(dstack, "deploy", "--stack", NAME).returncode == 0
    p = fleet(dstack, "deploy", "--stack", NAME, "--image", f"inference={image}", "--timeout", timeout)
    assert p.returncode == 1, (p.stdout, p.stderr)
    wait_until(lambda: restored(dstack), 180, "the previous version to be restored")
    return p


def test_missing_image_exits_1_naming_the_image_and_restores(dstack):
    p = failing_deploy(dstack, "fleet/inference:does-not-exist", "2m")
    assert "fleet/inference:does-not-exist" in p.stderr and "cannot be found" in p.stderr
    assert p.seconds < 120
    print(f"missing image diagnosed in {p.seconds:.1f}s")


def test_crash_loop_exits_1_naming_the_exit_code_and_logs(dstack):
    p = failing_deploy(dstack, "fleet/inference-test:crash", "2m")
    assert "exit code 3" in p.stderr, p.stderr
    assert "cannot start" in p.stderr  # the last log lines
    print(f"crash loop diagnosed in {p.seconds:.1f}s")


def test_model_slower_than_start_period_exits_1_naming_the_health_output(dstack):
    p = failing_deploy(dstack, "fleet/inference-test:slow", "3m")
    assert "unhealthy" in p.stderr and '"phase":"loading"' in p.stderr, p.stderr
    print(f"slow model diagnosed in {p.seconds:.1f}s")


def test_update_to_another_version_waits_for_swarm_and_consul_then_back(dstack):
    p = fleet(dstack, "deploy", "--stack", NAME, "--image", "inference=fleet/inference:1", "--json")
    assert p.returncode == 0, p.stderr
    svc = dstack.swarm.service(dstack.service("inference"))
    assert svc.attrs["UpdateStatus"]["State"] == "completed"  # fleet waited out Swarm's monitor window
    instances = dstack.catalog.instances(dstack.consul_service)
    assert {(i.version, i.status) for i in instances} == {("1", "passing")} and len(instances) == 2
    print(f"update to v1 converged in {p.seconds:.1f}s")
    p = fleet(dstack, "deploy", "--stack", NAME, "--json")  # after earlier rollbacks too, the file's version
    assert p.returncode == 0, p.stderr
    assert {i.version for i in dstack.catalog.instances(dstack.consul_service)} == {"2"}
