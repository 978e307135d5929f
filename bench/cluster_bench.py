"""Benchmark of the 3-node test cluster (scripts/cluster.sh): bring-up time, image distribution time
(push to the registry, then each node's pulls), and `fleet deploy` against `docker stack deploy
--detach=false` on the same stack and cluster, side by side in one run, as a ratio.

    .venv/bin/python bench/cluster_bench.py [--rounds 1] [--keep]

It starts from no cluster (`scripts/cluster.sh down`), so the registry and the nodes start empty, and
removes the cluster at the end unless --keep. Both deploys run from the host against the manager over
TLS, with every image already on every node (pulled in the distribution step), so they compare waiting,
not pulling. `docker stack deploy --detach=false` waits for each service's update monitor window; fleet
waits until the tasks run, are healthy, and the replicas pass in Consul with their version.
"""
import argparse
import os
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
STACK = "fleetclusterbench"
NODES = ("fleet-node1", "fleet-node2", "fleet-node3")
REGISTRY = "127.0.0.1:31500"
IMAGES = ("fleet/inference:2", "fleet/gateway:1", "fleet/consul:1.8.7", "fleet/prometheus:2.42")
PUSHED = ("fleet/inference:1",) + IMAGES  # what `scripts/cluster.sh push` pushes
LOCAL = {k: v for k, v in os.environ.items() if not k.startswith("DOCKER_")}


def run(cmd: list[str], env: dict | None = None, timeout: float = 1200) -> float:
    started = time.monotonic()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env or LOCAL, cwd=ROOT, timeout=timeout)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed: {(proc.stderr or proc.stdout)[-2000:]}")
    return time.monotonic() - started


def cluster_env() -> dict:
    found = {}
    for line in (ROOT / "build/cluster/cluster.env").read_text().splitlines():
        if line.startswith("export "):
            found.update(pair.split("=", 1) for pair in line[len("export "):].split())
    return {**LOCAL, **found, "CONSUL_CACERT": str(ROOT / "build/consul/secrets/ca.pem"),
            "CONSUL_HTTP_TOKEN_FILE": str(ROOT / "build/consul/secrets/fleet.token"), "FLEET_REPLICAS": "3"}


def pull_everywhere(image: str) -> dict[str, float]:
    with ThreadPoolExecutor(len(NODES)) as pool:
        seconds = pool.map(lambda n: run(["docker", "exec", n, "docker", "pull", "-q", f"{REGISTRY}/{image}"]), NODES)
    return dict(zip(NODES, seconds))


def layers(image: str) -> dict[str, int]:
    """The image's layers in the registry: digest → compressed size (its manifest, by the registry's API)."""
    repo, tag = image.rsplit(":", 1)
    r = httpx.get(f"http://{REGISTRY}/v2/{repo}/manifests/{tag}", timeout=10,
                  headers={"Accept": "application/vnd.docker.distribution.manifest.v2+json"})
    r.raise_for_status()
    return {layer["digest"]: layer["size"] for layer in r.json()["layers"]}


def remove_stack(env: dict) -> None:
    """The stack, its network and its Consul volume (on the manager): each deploy starts from nothing."""
    label = f"label=com.docker.stack.namespace={STACK}"
    subprocess.run(["docker", "stack", "rm", STACK], capture_output=True, env=env)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        left = subprocess.run(["docker", "network", "ls", "-q", "--filter", label], capture_output=True, text=True,
                              env=env).stdout.split()
        volumes = subprocess.run(["docker", "exec", "fleet-node1", "docker", "volume", "ls", "-q", "--filter", label],
                                 capture_output=True, text=True, env=LOCAL).stdout.split()
        for volume in volumes:  # refused while a container of the stack still stops
            subprocess.run(["docker", "exec", "fleet-node1", "docker", "volume", "rm", volume], capture_output=True,
                           env=LOCAL)
        if not left and not volumes:
            return
        time.sleep(1)
    raise SystemExit(f"stack {STACK} was not removed within 120 s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--keep", action="store_true", help="leave the cluster up at the end")
    args = parser.parse_args()

    run(["bash", "scripts/cluster.sh", "down"])
    bring_up = run(["bash", "scripts/cluster.sh", "nodes"])  # the node image is built once, before: not counted
    push = run(["bash", "scripts/cluster.sh", "push"])
    per_image = [layers(i) for i in PUSHED]
    referenced = sum(sum(ls.values()) for ls in per_image) / 2**20  # each image's layers, counted per image
    stored = sum({d: n for ls in per_image for d, n in ls.items()}.values()) / 2**20  # each layer once
    pulls = {image: pull_everywhere(image) for image in IMAGES}
    slowest = sum(max(p.values()) for p in pulls.values())

    env = cluster_env()
    ours, theirs = [], []
    for _ in range(args.rounds):
        remove_stack(env)
        theirs.append(run(["docker", "stack", "deploy", "--detach=false", "-c", "docker-stack.yml", STACK], env=env))
        remove_stack(env)
        ours.append(run([sys.executable, "-m", "fleet.cli", "deploy", "--stack", STACK, "--timeout", "10m"], env=env))
    remove_stack(env)
    if not args.keep:
        run(["bash", "scripts/cluster.sh", "down"])

    print(f"cluster bring-up ({len(NODES)} nodes, registry, Swarm formed; node image already built): {bring_up:6.1f} s")
    print(f"image distribution: push of {len(PUSHED)} images to the registry: {push:6.1f} s; their layers "
          f"(compressed) add up to {referenced:.0f} MiB, of which the registry stores {stored:.0f} MiB: "
          f"shared layers (torch in both inference images) once")
    for image, seconds in pulls.items():
        print(f"  pull {image:<24} on {len(NODES)} nodes at once: "
              + ", ".join(f"{n} {s:5.1f} s" for n, s in seconds.items()))
    print(f"  push + pulls (slowest node per image): {push + slowest:6.1f} s")
    print(f"deploy on the cluster, {args.rounds} round(s), medians:")
    print(f"  docker stack deploy --detach=false: {statistics.median(theirs):6.1f} s  {[round(t, 1) for t in theirs]}")
    print(f"  fleet deploy:                       {statistics.median(ours):6.1f} s  {[round(t, 1) for t in ours]}")
    print(f"  ratio fleet / docker: {statistics.median(ours) / statistics.median(theirs):.2f}")


if __name__ == "__main__":
    main()
