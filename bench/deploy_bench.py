"""Benchmark of `fleet deploy` against `docker stack deploy --detach=false` on the same stack, side by
side in one run, and of the time from a task's failure event to fleet's diagnosis on screen.

    .venv/bin/python bench/deploy_bench.py [--rounds 2]

Uses its own stack (fleetbench, ports 38500/38080) and removes it before and after.
"""
import argparse
import os
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import docker

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from fleet.adapters.swarm import Swarm  # noqa: E402
from tests.kit.stacks import remove_stack as sweep  # noqa: E402

STACK = "fleetbench"
ENV = {**os.environ, "FLEET_ROLLOUT_STRATEGY": "rolling", "FLEET_CONSUL_PORT": "38500", "FLEET_GATEWAY_PORT": "38080", "FLEET_GATEWAY_OPS_PORT": "38081", "FLEET_PROMETHEUS_PORT": "38090",
       "CONSUL_HTTP_ADDR": "https://127.0.0.1:38500",
       "CONSUL_CACERT": str(ROOT / "build/consul/secrets/ca.pem"),
       "CONSUL_HTTP_TOKEN_FILE": str(ROOT / "build/consul/secrets/fleet.token")}
FLEET = [sys.executable, "-m", "fleet.cli"]


def remove_stack(client: docker.DockerClient, stack: str = STACK) -> None:
    """The stack and everything it made, swept by its namespace label (tests/kit/stacks.py)."""
    sweep(Swarm(client), stack)


def timed(cmd: list[str]) -> float:
    started = time.monotonic()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=ENV, cwd=ROOT, timeout=600)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed: {proc.stderr[-2000:]}")
    return time.monotonic() - started


def failure_to_diagnosis(client: docker.DockerClient) -> tuple[float, float]:
    """Deploy a crash-looping image over the converged stack; return (first die event -> fleet's
    'failed' line, deploy start -> 'failed' line)."""
    first_die: list[float] = []
    since = int(time.time())
    stop = threading.Event()

    def watch():
        for ev in client.events(decode=True, since=since, filters={"type": "container", "event": "die",
                                                                    "label": f"com.docker.stack.namespace={STACK}"}):
            if ev.get("Actor", {}).get("Attributes", {}).get("exitCode", "0") != "0":
                first_die.append(time.time())
                return
            if stop.is_set():
                return

    threading.Thread(target=watch, daemon=True).start()
    started = time.time()
    proc = subprocess.Popen(FLEET + ["deploy", "--stack", STACK, "--image", "inference=fleet/inference-test:crash",
                                     "--timeout", "2m"], stderr=subprocess.PIPE, stdout=subprocess.DEVNULL,
                            text=True, env=ENV, cwd=ROOT)
    shown = None
    for line in proc.stderr:
        if ": failed:" in line and shown is None:
            shown = time.time()
    proc.wait(timeout=300)
    stop.set()
    if shown is None or not first_die:
        raise SystemExit("no failure event or no diagnosis seen")
    return shown - first_die[0], shown - started


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args()
    client = docker.from_env()
    docker_times, fleet_times, reactions = [], [], []
    for _ in range(args.rounds):
        remove_stack(client)
        docker_times.append(timed(["docker", "stack", "deploy", "--detach=false", "--resolve-image", "never",
                                   "-c", "docker-stack.yml", STACK]))
        remove_stack(client)
        fleet_times.append(timed(FLEET + ["deploy", "--stack", STACK]))
        reactions.append(failure_to_diagnosis(client))
        remove_stack(client)
    d, f = statistics.median(docker_times), statistics.median(fleet_times)
    print(f"fresh deploy of the stack, {args.rounds} round(s), median wall time:")
    print(f"  docker stack deploy --detach=false   {d:6.1f} s   (waits for tasks running/healthy only)")
    print(f"  fleet deploy                         {f:6.1f} s   (also Consul passing with the right version)")
    print(f"  ratio fleet / docker                 {f / d:6.2f}x  (target <= 1.2x)")
    print("crash-looping image over a converged stack:")
    for i, (after_event, total) in enumerate(reactions, 1):
        print(f"  round {i}: first task 'die' event -> fleet's diagnosis on screen {after_event:5.1f} s "
              f"(deploy start -> diagnosis {total:5.1f} s)")


if __name__ == "__main__":
    main()
