"""GPUs on the real 3-node Swarm, without a GPU: each node advertises one fake NVIDIA-GPU (scripts/cluster.sh,
`--node-generic-resource`) and the stable's replicas reserve one each (the GPU overlay's reservation; they
still run on CPU), so Swarm's placement by GPU, a canary refused for want of one and a promotion on a full
cluster are Swarm's own. Clients go through the manager's gateway, bounded in count and time.
"""
import json
import subprocess
import sys
import uuid

import pytest

from tests.kit.cluster import NAME, Cluster, canary_gone, clients, failed, push, remove_stack, rollout, stable_spec
from tests.kit.helpers import wait_until
from tests.kit.stacks import ROOT

GPU_RESERVATION = """version: "3.8"
services:
  inference:
    deploy:
      resources:
        reservations:
          generic_resources:
            - discrete_resource_spec: {kind: NVIDIA-GPU, value: 1}
"""
FAKE_GPUS = ["GPU-fake-node1", "GPU-fake-node2", "GPU-fake-node3"]


@pytest.fixture(scope="module")
def gc(cluster_session, tmp_path_factory):
    c: Cluster = cluster_session
    remove_stack(c)
    overlay = tmp_path_factory.mktemp("stack") / "gpu-reservation.yml"
    overlay.write_text(GPU_RESERVATION)
    c.stack_files = ["-c", "docker-stack.yml", "-c", str(overlay)]
    p = c.fleet("deploy", *c.stack_files, "--json", "--timeout", "8m", FLEET_REPLICAS="3")
    assert p.returncode == 0, (p.stdout, p.stderr)
    yield c
    remove_stack(c)


def assigned(c: Cluster) -> dict[str, str]:
    """task id -> the GPU Swarm assigned it, for the stable's tasks desired running."""
    tasks = c.swarm.client.api.tasks(filters={"service": f"{NAME}_inference", "desired-state": "running"})
    return {t["ID"]: r["NamedResourceSpec"]["Value"] for t in tasks for r in t.get("GenericResources") or []
            if r.get("NamedResourceSpec", {}).get("Kind") == "NVIDIA-GPU"}


def test_1_each_replica_is_given_a_gpu_of_its_own_and_told_which(gc):
    wait_until(lambda: len(gc.passing()) == 3, 240, "3 replicas passing in Consul")
    gpus = assigned(gc)
    assert sorted(gpus.values()) == FAKE_GPUS, gpus
    task = next(t for t in gc.tasks() if t.id in gpus)
    env = json.loads(gc.on(task.node, "inspect", "--format", "{{json .Config.Env}}", task.container_id))
    assert f"DOCKER_RESOURCE_NVIDIA-GPU={gpus[task.id]}" in env, env  # what fleet_inference/devices.py reads


def test_2_a_canary_with_every_gpu_taken_is_refused_before_anything_changes(gc):
    before = stable_spec(gc)
    p, doc = rollout(gc, push("fleet/inference:2", f"inference:gpu-{uuid.uuid4().hex[:8]}"), timeout=120)
    assert p.returncode == 2, (p.stdout, p.stderr)
    assert doc["error"].startswith("the canary needs 1 NVIDIA-GPU for each of its 1 replica(s) and the cluster has "
                                   "room for 0"), doc
    assert "fleet-node1 0/1" in doc["error"] and "scale the stable down" in doc["error"], doc
    assert stable_spec(gc) == before and canary_gone(gc)


def test_3_a_promotion_on_a_full_cluster_goes_one_replica_at_a_time_with_no_failed_request(gc):
    """2 stable replicas and the canary hold the 3 GPUs: the promotion has none free, so it stops one old
    replica before starting its successor, one at a time."""
    gc.docker("service", "scale", "--detach", f"{NAME}_inference=2")  # docker-py's scale() replaces every task
    wait_until(lambda: len(assigned(gc)) == 2 and len(gc.passing()) == 2
               and sum(n.free("NVIDIA-GPU") for n in gc.swarm.capacity()) == 1, 180, "2 replicas, one GPU free")
    image = push("fleet/inference:2", f"inference:gpu-{uuid.uuid4().hex[:8]}")
    with clients(1) as loads:
        p, doc = rollout(gc, image, "--steps", "50", "--step-duration", "15s")
    assert p.returncode == 0, (p.stdout, p.stderr[-2000:])
    assert doc["outcome"] == "promoted" and stable_spec(gc)[0] == image, doc
    update = gc.swarm.service(f"{NAME}_inference").attrs["Spec"]["UpdateConfig"]
    assert update["Order"] == "stop-first" and update["Parallelism"] == 1, update
    total = sum(load.total for load in loads)
    print(f"\npromotion on a full GPU cluster (stop-first, one at a time) in {p.seconds:.1f}s; {total} client "
          f"requests, {len(failed(loads))} failed")
    assert total > 100 and failed(loads) == [], failed(loads)[:5]
    wait_until(lambda: len(assigned(gc)) == 2 and canary_gone(gc), 120, "the promoted replicas each on a GPU")
    assert len(set(assigned(gc).values())) == 2


@pytest.mark.parametrize("replicas", [3, 4])
def test_4_fleet_lint_counts_the_swarms_gpus(gc, replicas):
    """Against the 3 fake GPUs the nodes advertise: 4 replicas of one GPU each is an error, 3 a warning."""
    p = subprocess.run([sys.executable, "-m", "fleet.cli", "lint", *gc.stack_files, "--json"], cwd=ROOT, text=True,
                       capture_output=True, env=gc.fleet_env(FLEET_REPLICAS=str(replicas)), timeout=120)
    findings = json.loads(p.stdout)["findings"]
    gpu = [f for f in findings if "generic_resources" in f["key"]]
    assert len(gpu) == 1, (p.stdout, p.stderr)
    if replicas == 4:
        assert p.returncode == 2 and gpu[0]["severity"] == "error", gpu
        assert gpu[0]["message"].startswith("4 replicas reserve 1 NVIDIA-GPU each (4) but the Swarm's nodes taking "
                                            "tasks advertise 3: 1 would stay pending"), gpu
    else:
        assert p.returncode == 0 and gpu[0]["severity"] == "warning" and "none is left for a canary" in gpu[0]["message"]
    # the engine's facts for the other multi-node traps: the stack's one Consul server on 3 nodes
    (quorum,) = [f for f in findings if f["key"] == "command"]
    assert quorum["service"] == "consul" and "on a Swarm of 3 nodes cannot keep quorum" in quorum["message"], quorum
