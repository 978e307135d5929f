"""Benchmark of the controller at scale: 10, 100 and 1,000 instances of the service in Consul (synthetic
registrations with TTL checks, tagged `synthetic`, out of every gateway lookup, beside the 2 real
replicas), and at each size a real canary that fails (fleet/inference-test:flaky, 30 % 5xx) under a
bounded load loop through the gateway. Prints per size:
- `fleet status --json` wall time (median of 3; target under 2 s at 1,000);
- reaction time, fleet's first failing signal -> the canary's last response at the gateway (share 0);
- fleet's CPU seconds per second of rollout (the fleet process's user + system time over its wall time).

    .venv/bin/python bench/scale_bench.py [--sizes 10,100,1000] [--rounds 2]

Uses its own stack (fleetbench-scale, ports 39700/39280/39290) on fleet/inference:1, removed at the end
with every synthetic registration. Traffic goes to 127.0.0.1 only.
"""
import argparse
import json
import resource
import statistics
import sys
from pathlib import Path

import consul

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.kit.cli import fleet  # noqa: E402
from tests.kit.consul_restart import RestartStack  # noqa: E402
from tests.kit.helpers import LoadLoop  # noqa: E402


def register(c: consul.Consul, have: int, want: int) -> None:
    for i in range(have, want):
        sid = f"synthetic-{i}"
        c.agent.service.register("inference", service_id=sid, address="127.0.0.1", port=9, tags=["synthetic"],
                                 meta={"role": "synthetic"}, check=consul.Check.ttl("30m"))
        c.agent.check.ttl_pass(f"service:{sid}")


def deregister(c: consul.Consul) -> None:
    for sid, svc in c.agent.services().items():
        if "synthetic" in (svc.get("Tags") or []):
            c.agent.service.deregister(sid)


def children_cpu() -> float:
    u = resource.getrusage(resource.RUSAGE_CHILDREN)
    return u.ru_utime + u.ru_stime


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="10,100,1000")
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args()
    sizes = [int(x) for x in args.sizes.split(",")]
    rows = []
    with RestartStack("fleetbench-scale", 39700, 39280, image="fleet/inference:1") as rs:
        s, c = rs.stack, rs.consul
        deregister(c)
        have = 0
        try:
            for size in sizes:
                register(c, have, size)
                have = size
                instances = len(c.health.service("inference")[1])
                walls = []
                for _ in range(3):
                    p = fleet(s, "status", "--stack", s.name, "--json")
                    assert p.returncode == 0, p.stderr[-2000:]
                    walls.append(p.seconds)
                reactions, cpu = [], []
                for r in range(args.rounds):
                    before = children_cpu()
                    with LoadLoop(f"{s.gateway}/predict", max_requests=20_000, max_seconds=240) as load:
                        p = fleet(s, "rollout", "--canary", "--image", "fleet/inference-test:flaky", "--stack", s.name,
                                  "--steps", "50", "--step-duration", "60s", "--json", timeout=600)
                    cpu.append((children_cpu() - before) / p.seconds)
                    doc = json.loads(p.stdout)
                    signal = next(e["at"] for e in doc["timeline"] if e["event"] == "signal")
                    canary = [t for t, status, version in load.served if status == 500 or version == "2"]
                    reactions.append(max(canary) - signal)
                    print(f"{instances} instances, round {r + 1}: exit {p.returncode}, reaction "
                          f"{reactions[-1] * 1000:.0f} ms, fleet CPU {cpu[-1]:.2f} s/s, "
                          f"{len(load.failures)}/{load.total} client requests failed", flush=True)
                rows.append((instances, statistics.median(walls), statistics.median(reactions), max(reactions),
                             statistics.median(cpu)))
        finally:
            deregister(c)
    print("\n| instances in Consul | `fleet status` wall (median of 3) | reaction p50 | reaction max | "
          "fleet CPU s per s of rollout |\n|---|---|---|---|---|")
    for n, wall, r50, rmax, cpu in rows:
        print(f"| {n} | {wall:.2f} s | {r50 * 1000:.0f} ms | {rmax * 1000:.0f} ms | {cpu:.2f} |")
    first, last = rows[0], rows[-1]
    print(f"\n{last[0]} against {first[0]} instances: status {last[1] / first[1]:.2f}x, reaction "
          f"{last[2] / first[2]:.2f}x, CPU {last[4] / first[4]:.2f}x")


if __name__ == "__main__":
    main()
