"""Benchmark: each node of the 3-node test cluster (scripts/cluster.sh) killed in turn under load, against
three Consul servers (three managers, FLEET_CONSUL_SERVERS=3) and against one server (one manager, two
workers with client agents: the layout before three servers, and still the default on one manager).

Printed per node: client requests through the other nodes' gateways (at least 30 s of them after the
kill) and how many failed (and how many of those were sent 5 s or more after the kill), whether the node
held Raft's leader, seconds from the kill to a leader on another node (0 when it stayed elsewhere), and to
a whole catalog (every replica passing on the other nodes, read through another node's Consul: the killed
node's replicas gone from it and started elsewhere); "-" when that did not happen within the wait. With one server, killing its node leaves no leader at all: the gateways keep their
last servers (HAProxy's 5-minute hold) and nothing can register or roll out until the node is back.

    make cluster && .venv/bin/python bench/consul_ha_bench.py [--wait 120] [--servers 1|3|both]

Uses the test cluster's stack name (fleetcluster), removed at the end.
"""
import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from tests.kit import cluster  # noqa: E402
from tests.kit.consul_ha import answers, kill_under_load, passing, three_managers, tolerant  # noqa: E402
from tests.kit.helpers import wait_until  # noqa: E402


def seconds(value: float | None) -> str:
    return f"{value:.1f}" if value is not None else "-"


def extra(victim: str) -> str:
    """Passing registrations beyond the replicas, as another node's Consul sees them now."""
    try:
        return str(len(passing(next(n for n in cluster.NODES if n != victim))) - cluster.REPLICAS)
    except Exception:
        return "?"


def round_of(c: cluster.Cluster, servers: str, wait: float) -> None:
    """Each node killed in turn with `servers` Consul servers, one line each."""
    p = c.fleet("deploy", "--json", "--timeout", "8m", FLEET_CONSUL_SERVERS=servers)
    assert p.returncode == 0, (p.stdout, p.stderr)
    for victim in cluster.NODES:
        wait_until(lambda: all(answers(n) for n in cluster.NODES), 240, "Consul answering on every node")
        # at least every replica passing (a restarted agent may bring back registrations of its node's dead
        # replicas, counted apart in the last column)
        wait_until(lambda: len(passing(cluster.NODES[0])) >= cluster.REPLICAS, 240, "every replica passing")
        if servers != "1":  # the last node killed back as a voter, caught up: Raft can lose one server again
            wait_until(lambda: tolerant(cluster.NODES[0]), 240, "every server caught up")
        k = kill_under_load(victim, wait)
        print(f"{servers:>7} {victim + ('*' if k.was_leader else ''):<13} {k.requests:>8} {k.failed:>6} {k.late:>9} "
              f"{k.leader or '-':<12} {seconds(k.elected):>9} {k.held if k.held is not None else '?':>4} "
              f"{seconds(k.whole):>15} {k.last if k.last is not None else '?':>4} {extra(victim):>6}", flush=True)
        if k.tasks:
            print(f"        {victim}: the catalog not whole within {wait:.0f} s; the service's tasks then:\n"
                  + "\n".join(f"          {line}" for line in k.tasks.splitlines()), file=sys.stderr, flush=True)
        wait_until(lambda: all(n["state"] == "ready" for n in c.swarm.nodes()), 240, f"{victim} back")
    cluster.remove_stack(c)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--wait", type=float, default=120, help="seconds to wait for a leader and a whole catalog")
    p.add_argument("--servers", choices=["1", "3", "both"], default="both", help="which rounds to run")
    args = p.parse_args()
    c = cluster.bring_up()
    print(f"{'servers':>7} {'killed':<13} {'requests':>8} {'failed':>6} {'late (5s+)':>9} {'leader after':<12} "
          f"{'leader s':>9} {'held':>4} {'catalog whole s':>15} {'last':>4} {'extra':>6}\n"
          "  (* the Raft leader's node; leader s 0: it stayed elsewhere; held: replicas on the killed node, which Swarm"
          " must start elsewhere;\n   last: replicas passing on the other nodes when the watch ended; extra: passing"
          " registrations beyond the replicas, once the kill's figures are in)")
    try:
        cluster.remove_stack(c)
        if args.servers in ("1", "both"):
            round_of(c, "1", args.wait)
        if args.servers in ("3", "both"):
            with three_managers(c):
                round_of(c, "3", args.wait)
    finally:
        cluster.remove_stack(c)
        cluster.take_down()


if __name__ == "__main__":
    main()
