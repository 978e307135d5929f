"""The stack file is the truth (issue 20): `fleet deploy` runs a governed service's container change as
fleet's canary, never silently undoes a promotion, respects a running rollout, and `fleet diff` shows
what it would do. Real engine, real Consul, real images, bounded load through the gateway."""
import json
import subprocess
import sys
import time

import docker
import pytest

from fleet.adapters.store import Store
from tests.kit.cli import fleet
from tests.kit.helpers import LoadLoop, wait_until
from tests.kit.stacks import ROOT, StackUnderTest, canary_gone, converged, gateway_log, own_stack

NAME = "fleettest-dc"
V1, V2 = "fleet/inference:1", "fleet/inference:2"  # golden accuracy 0.79 and 0.905
AGAIN = "fleet/inference-test:again"  # v2's image under another tag: a new release of an equal model
CANARY = {"FLEET_ROLLOUT_STRATEGY": "canary", "FLEET_ROLLOUT_STEPS": "50", "FLEET_ROLLOUT_STEP_DURATION": "5s"}


@pytest.fixture(scope="module")
def dc(swarm):
    with own_stack(swarm, NAME, 27500, 27080) as s:
        docker.from_env().images.get(V2).tag(AGAIN)
        p = deploy(s, V1)
        assert p.returncode == 0, p.stderr
        yield s
    docker.from_env().images.remove(AGAIN, noprune=True)


def deploy(s: StackUnderTest, image: str, *args: str, replicas: int = 2, timeout: float = 400):
    return fleet(s, "deploy", "--stack", NAME, "--json", *args, timeout=timeout,
                 env={**CANARY, "FLEET_IMAGE": image, "FLEET_REPLICAS": str(replicas)})


def background(s: StackUnderTest, *args: str, image: str = V2, files: tuple[str, ...] = ()) -> subprocess.Popen:
    env = {**s.env(), **CANARY, "FLEET_IMAGE": image}
    return subprocess.Popen([sys.executable, "-m", "fleet.cli", *args, *files, "--stack", NAME, "--json"], cwd=ROOT,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def stable(s: StackUnderTest) -> tuple[str, int]:
    svc = s.swarm.service(s.service("inference"))
    return svc.attrs["Spec"]["TaskTemplate"]["ContainerSpec"]["Image"].split("@")[0], svc.attrs["Version"]["Index"]


def history(s: StackUnderTest) -> list[dict]:
    return [h.to_dict() for h in Store(s.consul(), NAME, "inference").history()]


def phase(s: StackUnderTest) -> str | None:
    state = Store(s.consul(), NAME, "inference").load()
    return state.phase.value if state else None


def finished(p: subprocess.Popen, timeout: float = 400) -> tuple[int, dict, str]:
    out, err = p.communicate(timeout=timeout)
    return p.returncode, json.loads(out) if out.strip() else {}, err


def test_better_image_in_the_file_runs_a_canary_and_promotes(dc):
    began = time.time()
    with LoadLoop(f"{dc.gateway}/predict", max_requests=20_000, max_seconds=300) as load:
        p = background(dc, "deploy", image=V2)
        seen = wait_until(lambda: [r for r in json.loads(fleet(dc, "status", "--stack", NAME, "--json").stdout)
                                   ["rollouts"]], 120, "fleet status to show the deploy's canary", while_running=p)
        ps = wait_until(lambda: f"{NAME}_inference-canary" in subprocess.run(
            ["docker", "stack", "ps", NAME, "--format", "{{.Name}}"], capture_output=True, text=True).stdout,
            60, "docker stack ps to show the canary service", while_running=p)
        code, doc, err = finished(p)
    assert code == 0, err
    assert seen[0]["image"] == V2
    assert ps  # the canary, as `docker stack ps` shows it
    assert [r["outcome"] for r in doc["rollouts"]] == ["promoted"]
    assert next(c for c in doc["plan"] if c["service"] == "inference")["how"] == "canary"
    assert stable(dc)[0] == V2 and canary_gone(dc) and converged(dc)
    last = history(dc)[-1]
    assert (last["image"], last["outcome"], last["cause"]) == (V2, "promoted", "fleet deploy")
    failed_at = [round(t - began, 2) for t, status, _ in load.served if status != 200]
    timeline = [(round(e["at"] - began, 2), e["event"]) for r in doc["rollouts"] for e in r["timeline"]]
    assert load.total > 20 and load.failures == [], (load.failures[:2], f"failed at {failed_at} s", timeline,
                                                     gateway_log(dc, began))
    print(f"deploy's canary of {V2} promoted in {doc['seconds']:.1f}s; {load.total} client requests, 0 failed")


def test_replica_change_with_the_old_image_is_refused_and_with_the_promoted_one_applied(dc):
    before, records = stable(dc), history(dc)
    p = deploy(dc, V1, replicas=3)
    assert p.returncode == 2, p.stderr
    error = json.loads(p.stdout)["error"]
    assert V1 in error and V2 in error and f"revision {records[-1]['revision']}" in error, error
    assert "--replace-promoted" in error
    assert stable(dc) == before and history(dc) == records  # nothing changed, and history is true
    p = deploy(dc, V2, replicas=3)  # the file brought to the promoted image: only the replica count changes
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout)["rollouts"] == []
    assert stable(dc)[0] == V2 and len(dc.swarm.tasks(dc.service("inference"))) == 3 and history(dc) == records
    assert deploy(dc, V2).returncode == 0


def test_worse_image_fails_at_the_golden_gate_and_answers_no_client(dc):
    before, records = stable(dc), history(dc)
    with LoadLoop(f"{dc.gateway}/predict", max_requests=20_000, max_seconds=300) as load:
        p = deploy(dc, V1, "--replace-promoted")
    assert p.returncode == 1, p.stderr
    doc = json.loads(p.stdout)
    assert doc["outcome"] == "rolled_back" and "golden gate failed" in doc["reason"], doc
    assert stable(dc) == before and canary_gone(dc)  # the stable's spec version is unchanged
    assert [v for _, _, v in load.served if v == "1"] == []  # the worse model answered no client
    assert load.total > 10 and load.failures == [], load.failures[:5]
    last = history(dc)[-1]
    assert len(history(dc)) == len(records) + 1 and (last["image"], last["outcome"]) == (V1, "rolled_back")


def test_diff_says_what_a_deploy_would_do_and_changes_nothing(dc, tmp_path):
    before, records = dc.swarm.spec_versions(NAME), history(dc)
    bad = tmp_path / "bad-policy.yml"
    bad.write_text('version: "3.8"\nservices:\n  inference:\n    deploy:\n      labels:\n'
                   '        fleet.rollout.steps: "50,10"\n        fleet.rollout.speed: fast\n')

    def diff(image: str, *args: str, replicas: int = 2):
        p = fleet(dc, "diff", "--stack", NAME, "--json", *args,
                  env={**CANARY, "FLEET_IMAGE": image, "FLEET_REPLICAS": str(replicas)})
        return p.returncode, {c["service"]: c for c in json.loads(p.stdout).get("plan", [])}, p

    code, plan, _ = diff(V2)
    assert code == 0 and {c["how"] for c in plan.values()} == {"unchanged"}
    code, plan, _ = diff(V2, replicas=3)
    assert code == 4 and plan["inference"]["how"] == "update"
    assert plan["inference"]["changes"] == [{"key": "replicas", "old": 2, "new": 3}]
    code, plan, _ = diff("fleet/inference-test:laggy")
    assert code == 4 and plan["inference"]["how"] == "canary"
    assert {"key": "image", "old": V2, "new": "fleet/inference-test:laggy"} in plan["inference"]["changes"]
    code, plan, _ = diff(V1)
    assert code == 2 and plan["inference"]["how"] == "refuse"
    code, _, p = diff(V2, "-c", str(ROOT / "docker-stack.yml"), "-c", str(bad))
    error = json.loads(p.stdout)["error"]
    assert code == 2 and "fleet.rollout.steps" in error and "fleet.rollout.speed" in error, error
    assert dc.swarm.spec_versions(NAME) == before and history(dc) == records


def test_deploy_during_a_rollout_is_refused_and_the_rollout_ends_as_it_would(dc):
    rollout = background(dc, "rollout", "--canary", "--image", AGAIN, "--steps", "50", "--step-duration", "5s")
    wait_until(lambda: phase(dc) in ("verifying", "stepping"), 120, "the rollout to run", while_running=rollout)
    p = deploy(dc, V2, replicas=3)
    code, doc, err = finished(rollout)
    assert p.returncode == 2, p.stderr
    error = json.loads(p.stdout)["error"]
    assert f"pid {rollout.pid}" in error and f"rollout --canary --image {AGAIN}" in error, error
    assert code == 0 and doc["outcome"] == "promoted", (doc, err)  # its canary was never pruned
    assert stable(dc)[0] == AGAIN and len(dc.swarm.tasks(dc.service("inference"))) == 2


def test_hand_deploy_during_the_promotion_is_not_recorded_promoted(dc, tmp_path):
    slow = tmp_path / "slow.yml"  # v2's model, 5 s slower to load: a promotion long enough to step into
    slow.write_text('version: "3.8"\nservices:\n  inference:\n    image: fleet/inference-test:slow\n'
                    '    environment:\n      FLEET_TEST_LOAD_SECONDS: "5"\n')
    p = background(dc, "deploy", files=("-c", str(ROOT / "docker-stack.yml"), "-c", str(slow)))
    wait_until(lambda: phase(dc) == "promoting", 240, "the deploy's canary to promote", interval=0.2,
               while_running=p)
    by_hand = subprocess.run(["docker", "stack", "deploy", "--resolve-image", "never", "-c",
                              str(ROOT / "docker-stack.yml"), NAME], capture_output=True, text=True,
                             env={**dc.env(), **CANARY, "FLEET_IMAGE": V2}, cwd=ROOT)
    assert by_hand.returncode == 0, by_hand.stderr
    code, doc, err = finished(p)
    assert code == 1, err
    # the docker CLI keeps a running image whose file entry it deployed before (com.docker.stack.image),
    # so the hand deploy may change only the environment: either way the spec is not the canary's
    assert doc["outcome"] == "superseded" and "FLEET_TEST_LOAD_SECONDS" in doc["reason"], doc
    last = history(dc)[-1]
    assert (last["image"], last["outcome"]) == ("fleet/inference-test:slow", "superseded")
    wait_until(lambda: converged(dc, version="2"), 180, "the hand deploy to converge")
    env = dc.swarm.service(dc.service("inference")).attrs["Spec"]["TaskTemplate"]["ContainerSpec"]["Env"]
    assert not [e for e in env if e.startswith("FLEET_TEST_LOAD_SECONDS=")]  # theirs stays: fleet did not revert it
