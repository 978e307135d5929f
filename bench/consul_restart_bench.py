"""Benchmark: the stack's Consul restarted under load through the gateway.

Prints, for `docker service update --force` of the consul service and for its container killed: the
failed requests a client at the gateway saw, the seconds until Consul's catalog was whole again (every
replica passing, answered by the new Consul container) and until fleet's KV answered again (a record
written before the restart read back), and when Swarm had the new Consul container running. Uses its own stack (ports 19600/19180), removed at the end.

    .venv/bin/python bench/consul_restart_bench.py [--rounds 1]
"""
import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.kit.consul_restart import RestartStack  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rounds", type=int, default=1)
    args = p.parse_args()
    with RestartStack("fleetbench-consul", 19600, 19180) as s:
        print(f"{'how':<8} {'requests':>8} {'failed':>6} {'new container s':>16} {'catalog whole s':>16} "
              f"{'KV answers s':>13}")
        for _ in range(args.rounds):
            for how in ("update", "kill"):
                m = s.restart_under_load(how)
                print(f"{how:<8} {m.requests:>8} {m.failed:>6} {m.new_running:>16.1f} {m.catalog_whole:>16.1f} "
                      f"{m.kv_back:>13.1f}")


if __name__ == "__main__":
    main()
