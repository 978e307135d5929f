"""The whole stack on the real Swarm with the real Consul and gateway. Runs in file order."""
import json
import subprocess
from pathlib import Path

import httpx
import torch

from tests.helpers import SAMPLE, LoadLoop, wait_until
from tests.real.conftest import converged

ROOT = Path(__file__).resolve().parents[2]


def stack_ps(stack) -> list[dict]:
    out = subprocess.run(["docker", "stack", "ps", stack.name, "--no-trunc", "--format", "{{json .}}"],
                         check=True, capture_output=True, text=True).stdout
    return [json.loads(line) for line in out.splitlines() if line.strip()]


def test_every_replica_is_healthy_in_docker_and_passing_in_consul_with_its_version(stack):
    running = {t.id: t for t in stack.swarm.tasks(stack.service("inference"))}
    assert len(running) == 2 and all(t.health == "healthy" for t in running.values())
    instances = stack.catalog.instances("inference")
    assert {i.task_id for i in instances} == set(running)
    assert {(i.status, i.version, i.role) for i in instances} == {("passing", "2", "stable")}
    ps_ids = {row["ID"] for row in stack_ps(stack) if row["DesiredState"] == "Running"}
    assert set(running) <= ps_ids  # what fleet sees is what `docker stack ps` shows


def test_prediction_through_the_gateway_equals_the_model(stack):
    model = torch.jit.load(str(ROOT / "build/models/v2/model.pt"))
    with torch.inference_mode():
        expected = model(torch.tensor(SAMPLE))
    r = httpx.post(f"{stack.gateway}/predict", json={"inputs": SAMPLE}, timeout=10)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["version"] == "2"
    assert body["classes"] == expected.argmax(dim=1).tolist()
    assert torch.allclose(torch.tensor(body["probabilities"]), expected, atol=1e-5)


def test_scale_down_and_forced_update_fail_no_request(stack):
    svc = stack.service("inference")
    with LoadLoop(f"{stack.gateway}/predict", max_requests=20000, max_seconds=240) as load:
        wait_until(lambda: load.total >= 20, 30, "the load loop to get going")
        before = {i.task_id for i in stack.catalog.instances("inference")}
        subprocess.run(["docker", "service", "scale", "--detach", f"{svc}=1"], check=True, capture_output=True)
        remaining = wait_until(lambda: (lambda ids: ids if len(ids) == 1 else None)(
            {i.task_id for i in stack.catalog.instances("inference")}), 60, "the stopped replica to leave Consul")
        assert remaining < before
        subprocess.run(["docker", "service", "update", "--detach", "--force", svc], check=True, capture_output=True)
        wait_until(lambda: (lambda ids: ids if ids and not ids & remaining and converged(stack, replicas=1) else None)(
            {i.task_id for i in stack.catalog.instances("inference")}), 120, "the forced update to converge")
        served = load.total
        wait_until(lambda: load.total >= served + 20, 30, "more requests after the update")
    assert load.failures == [], f"{len(load.failures)} of {load.total} failed: {load.failures[:5]}"
    assert load.statuses[200] == load.total >= 50
    subprocess.run(["docker", "service", "scale", "--detach", f"{svc}=2"], check=True, capture_output=True)
    wait_until(lambda: converged(stack), 120, "two replicas again")


def test_swarm_rolls_back_an_update_that_never_turns_healthy(stack):
    svc = stack.service("inference")
    subprocess.run(["docker", "service", "update", "--detach", "--image", "fleet/inference-test:corrupt", svc],
                   check=True, capture_output=True)

    def rolled_back():
        attrs = stack.swarm.service(svc).attrs
        state = attrs.get("UpdateStatus", {}).get("State")
        return state == "rollback_completed" and attrs

    attrs = wait_until(rolled_back, 180, "Swarm to roll the update back")
    assert attrs["Spec"]["TaskTemplate"]["ContainerSpec"]["Image"].split("@")[0] == "fleet/inference:2"
    wait_until(lambda: converged(stack), 120, "the previous version to serve again")
    assert {t.image for t in stack.swarm.tasks(svc)} == {"fleet/inference:2"}
