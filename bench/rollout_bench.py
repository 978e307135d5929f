"""Benchmark of `fleet rollout --canary` under a bounded load loop through the gateway:
- reaction time: from the first failing signal (fleet's receipt of the event that failed the canary, and
  the client's first 5xx from the canary) to the canary's share 0 at the gateway (the last response the
  canary served), over repeated 5xx canaries whose evidence comes through Prometheus;
- canary responses to clients before its golden gate passed and its first step began (should be 0);
- failed client requests during rollbacks (crash-looping canary) and promotions (good canary);
- the time a promotion adds beyond the configured step durations, and the part of it after the last
  step (from fleet's decision to promote to the stable converged on the new image and the canary gone).

    .venv/bin/python bench/rollout_bench.py [--reaction-rounds 8] [--promote-rounds 2]

Uses its own stack (fleetbench-rollout, ports 39500/39080/39090) on fleet/inference:1 and removes it after.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from fleet.adapters.swarm import Swarm  # noqa: E402
from tests.kit.helpers import LoadLoop  # noqa: E402
from tests.kit.stacks import remove_stack as sweep  # noqa: E402

STACK = "fleetbench-rollout"
ENV = {**os.environ, "FLEET_CONSUL_PORT": "39500", "FLEET_GATEWAY_PORT": "39080", "FLEET_GATEWAY_OPS_PORT": "39081", "FLEET_PROMETHEUS_PORT": "39090",
       "CONSUL_HTTP_ADDR": "https://127.0.0.1:39500",
       "CONSUL_CACERT": str(ROOT / "build/consul/secrets/ca.pem"),
       "CONSUL_HTTP_TOKEN_FILE": str(ROOT / "build/consul/secrets/fleet.token"), "FLEET_IMAGE": "fleet/inference:1"}
GATEWAY = "http://127.0.0.1:39080/predict"
STEPS, STEP_SECONDS = (25, 50), 10


def fleet(*args: str) -> dict:
    p = subprocess.run([sys.executable, "-m", "fleet.cli", *args, "--stack", STACK, "--json"], capture_output=True,
                       text=True, env=ENV, cwd=ROOT, timeout=900)
    doc = json.loads(p.stdout) if p.stdout.strip() else {"error": p.stderr}
    doc["exit"] = p.returncode
    return doc


def remove_stack() -> None:
    """The stack and everything it made, swept by its namespace label (tests/kit/stacks.py): a deploy right
    after finds no old network being removed."""
    sweep(Swarm(), STACK)


def at(doc: dict, event: str) -> float:
    return next(e["at"] for e in doc["timeline"] if e["event"] == event)


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, round(q * (len(values) - 1)))]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--reaction-rounds", type=int, default=8)
    ap.add_argument("--promote-rounds", type=int, default=2)
    args = ap.parse_args()
    remove_stack()
    assert fleet("deploy")["exit"] == 0, "deploy failed"
    reactions, fivexx_failed, rollback_failed, promote_failed, overheads, after_last = [], [], [], [], [], []
    from_client, before_gate = [], []
    try:
        for i in range(args.reaction_rounds):
            with LoadLoop(GATEWAY, max_requests=20_000, max_seconds=180) as load:
                doc = fleet("rollout", "--canary", "--image", "fleet/inference-test:flaky", "--steps", "50",
                            "--step-duration", "60s")
            signal = at(doc, "signal")
            canary = [t for t, status, version in load.served if status == 500 or version == "2"]
            reactions.append(max(canary) - signal)
            from_client.append(load.statuses[500])  # the gateway retries the canary's 5xx on the stable
            before_gate.append(sum(t < at(doc, "share") for t in canary))
            fivexx_failed.append(len(load.failures))
            print(f"5xx canary {i + 1}: {doc['exit']=} reaction {reactions[-1] * 1000:.0f} ms after fleet's signal, "
                  f"{from_client[-1]} 5xx seen by the client; {before_gate[-1]} canary responses "
                  f"before its first step; {len(load.failures)}/{load.total} client requests failed", flush=True)
        with LoadLoop(GATEWAY, max_requests=20_000, max_seconds=180) as load:
            doc = fleet("rollout", "--canary", "--image", "fleet/inference-test:crash")
        rollback_failed.append(len(load.failures))
        print(f"crash canary: {doc['exit']=} {len(load.failures)}/{load.total} failed", flush=True)
        for i in range(args.promote_rounds):
            with LoadLoop(GATEWAY, max_requests=30_000, max_seconds=400) as load:
                doc = fleet("rollout", "--canary", "--image", "fleet/inference:2", "--steps",
                            ",".join(map(str, STEPS)), "--step-duration", f"{STEP_SECONDS}s")
            overheads.append(doc["seconds"] - len(STEPS) * STEP_SECONDS)
            after_last.append(at(doc, "finish") - at(doc, "promote"))
            promote_failed.append(len(load.failures))
            print(f"promotion {i + 1}: {doc['exit']=} {doc['seconds']:.1f} s, {after_last[-1]:.1f} s after the last "
                  f"step; {len(load.failures)}/{load.total} failed", flush=True)
            back = fleet("rollback")
            assert back["exit"] == 0, back
    finally:
        remove_stack()
    print("\n| figure | value |\n|---|---|")
    print(f"| reaction, first failing signal -> canary share 0 at the gateway, p50 | {pct(reactions, .5) * 1000:.0f} ms |")
    print(f"| reaction p99 (n={len(reactions)}) | {pct(reactions, .99) * 1000:.0f} ms |")
    print(f"| the canary's 5xx seen by clients, all rounds (the gateway retries them on the stable; "
          f"bench/cluster_rollout_bench.py times the reaction from the canary's own first 5xx) | {sum(from_client)} |")
    print(f"| canary responses to clients before its golden gate passed and its first step, total | "
          f"{sum(before_gate)} |")
    print(f"| client requests failed, 5xx canary (before the decision), median | {statistics.median(fivexx_failed)} |")
    print(f"| client requests failed, crash-looping canary rollback | {sum(rollback_failed)} |")
    print(f"| client requests failed, promotions | {sum(promote_failed)} |")
    print(f"| promotion time beyond {len(STEPS)} x {STEP_SECONDS} s of steps, median | "
          f"{statistics.median(overheads):.1f} s |")
    print(f"| promotion after the last step (decision -> stable converged, canary gone), median "
          f"(n={len(after_last)}; target <= 15 s for 2 replicas) | {statistics.median(after_last):.1f} s |")


if __name__ == "__main__":
    main()
