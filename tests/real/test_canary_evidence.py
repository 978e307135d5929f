"""The canary's evidence on the real Swarm, Consul, gateway and Prometheus: the golden gate against the
stable (through the gateway's role routes), no share before it, synthetic load when there is no
traffic, and the windowed judgement from Prometheus (latency at p50/p99, a regression that starts late).
Clients go through the gateway at 127.0.0.1, bounded in count and time."""
import json
import subprocess
import sys

import pytest

from tests.kit.cli import deploy_stable, fleet
from tests.kit.helpers import HTTP, LoadLoop, wait_until
from tests.kit.stacks import ROOT, StackUnderTest, canary_gone, own_stack, stable_image

NAME = "fleettest-ev"
V1, V2 = "fleet/inference:1", "fleet/inference:2"  # golden accuracy 0.79 and 0.905


@pytest.fixture(scope="module")
def ev(swarm):
    with own_stack(swarm, NAME, 19900, 19380) as s:
        yield s


def rollout(s: StackUnderTest, image: str, *args: str, timeout: float = 400):
    p = fleet(s, "rollout", "--canary", "--image", image, "--stack", NAME, "--json", *args, timeout=timeout)
    return p, json.loads(p.stdout) if p.stdout.strip() else {}


def phase(s: StackUnderTest) -> str | None:
    _, item = s.consul().kv.get(f"fleet/rollouts/{NAME}/inference/state")
    return json.loads(item["Value"])["rollout"]["phase"] if item and item.get("Value") else None


def routed_version(s: StackUnderTest, role: str) -> str | None:
    r = HTTP.get(f"{s.ops}/info", headers={"X-Fleet-Route": role}, timeout=5)
    return str(r.json()["version"]) if r.status_code == 200 else None


def test_good_canary_promoted_on_synthetic_evidence_with_no_organic_traffic(ev):
    deploy_stable(ev, V1)
    env = ev.env()
    running = subprocess.Popen([sys.executable, "-m", "fleet.cli", "rollout", "--canary", "--image", V2, "--stack", NAME,
                                "--json", "--steps", "20,50", "--step-duration", "10s"],
                               cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_until(lambda: phase(ev) == "stepping", 180, "the canary to pass its gate and step", while_running=running)
        # a user tries each role by hand through the gateway: the header picks the role, whatever its share
        assert {routed_version(ev, "canary") for _ in range(10)} == {"2"}
        assert {routed_version(ev, "stable") for _ in range(10)} == {"1"}
        out, err = running.communicate(timeout=300)
    finally:
        running.kill()
    assert running.returncode == 0, err
    doc = json.loads(out)
    assert doc["outcome"] == "promoted", doc
    gate = next(e["detail"] for e in doc["timeline"] if "golden gate passed" in e["detail"])
    assert "canary accuracy 0.9" in gate and "stable 0.7" in gate, gate
    steps = [e["detail"] for e in doc["timeline"] if e["event"] == "phase" and "% passed" in e["detail"]]
    assert steps and all("synthetic)" in d for d in steps), steps  # every step judged on synthetic evidence
    print(f"\nno organic traffic: {steps[-1]}")
    assert stable_image(ev) == V2 and canary_gone(ev)


def test_worse_model_rolled_back_on_golden_gate_before_any_share(ev):
    deploy_stable(ev, V2)
    with LoadLoop(f"{ev.gateway}/predict", max_requests=20_000, max_seconds=240) as load:
        p, doc = rollout(ev, V1, "--steps", "20,50", "--step-duration", "10s")
    assert p.returncode == 1, p.stderr
    assert doc["outcome"] == "rolled_back" and "golden gate failed" in doc["reason"], doc
    assert "canary accuracy 0.7" in doc["reason"] and "stable 0.9" in doc["reason"], doc["reason"]
    assert not [e for e in doc["timeline"] if e["event"] == "share"], "the canary must never get a share"
    served_by_canary = [t for t, _, version in load.served if version == "1"]
    print(f"\nworse canary: {len(served_by_canary)} of {load.total} client responses came from it")
    assert load.total > 10 and served_by_canary == []
    assert load.failures == [], load.failures[:5]
    assert stable_image(ev) == V2 and canary_gone(ev)


@pytest.mark.parametrize("image,steps,judged", [
    ("fleet/inference-test:laggy", "50", "latency"),  # 80 ms slower from its first request
    ("fleet/inference-test:late", "20,50", "error rate"),  # 30 % errors from 25 s after its first request
])
def test_regressing_canary_rolled_back_on_its_window(ev, image, steps, judged):
    deploy_stable(ev, V2)
    with LoadLoop(f"{ev.gateway}/predict", max_requests=30_000, max_seconds=300) as load:
        p, doc = rollout(ev, image, "--steps", steps, "--step-duration", "15s")
    assert p.returncode == 1, p.stderr
    assert doc["outcome"] == "rolled_back" and judged in doc["reason"], doc
    shares = [e["detail"] for e in doc["timeline"] if e["event"] == "share"]
    print(f"\n{image}: {doc['reason']} (after shares {shares}; {len(load.failures)} of {load.total} client "
          "requests failed)")
    if image.endswith("late"):
        assert len(shares) == 2, "the late regression starts after the first step and is caught in the second"
    assert stable_image(ev) == V2 and canary_gone(ev)
