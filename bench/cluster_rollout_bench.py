"""Benchmark of `fleet rollout --canary` on the 3-node test cluster (scripts/cluster.sh), fleet on the host
over TLS, canaries on workers, bounded load through two nodes' gateways:
- reaction to a crashing canary: from its container's death (the worker engine's own `die` event) to
  fleet's cut (share 0), p50/p99 over rounds;
- reaction to a 5xx canary: from its first 5xx (the worker's container log, timestamped by its engine)
  to fleet's cut, and to the last client response the canary served, p50/p99 over rounds;
- client requests failed and client-visible 5xx in all of it (the gateway retries a canary's 5xx on
  the stable, so both should be 0).

    make cluster && .venv/bin/python bench/cluster_rollout_bench.py [--rounds 5]

Uses its own stack (fleetbench, stable fleet/inference:1 from the registry on the workers) and removes it after.
"""
import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import threading
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from tests.kit import cluster  # noqa: E402
from tests.kit.helpers import LoadLoop  # noqa: E402

STACK = "fleetbench"
WORKERS = ("fleet-node2", "fleet-node3")
OVERRIDE = 'version: "3.8"\nservices:\n  inference:\n    deploy:\n      placement:\n        constraints: [node.role == worker]\n'


def fleet(c, *args: str, timeout: float = 600) -> dict:
    p = subprocess.run([sys.executable, "-m", "fleet.cli", *args, "--stack", STACK, "--json"], capture_output=True,
                       text=True, env=c.fleet_env(FLEET_REPLICAS="2"), cwd=ROOT, timeout=timeout)
    doc = json.loads(p.stdout) if p.stdout.strip() else {"error": p.stderr[-2000:]}
    doc["exit"] = p.returncode
    return doc


def stamp(text: str) -> float:
    """Docker's RFC 3339 timestamp (nanoseconds) as epoch seconds."""
    head, _, frac = text.rstrip("Z").partition(".")
    return datetime.fromisoformat(head + "+00:00").timestamp() + float("0." + (frac or "0")[:6])


class CanaryWatch:
    """On the workers' own engines, while a rollout runs: the canary containers' deaths and their log lines."""

    def __init__(self):
        self.deaths: list[float] = []
        self.errors: list[float] = []  # log lines of 5xx answers (the service logs an incident per 500)
        self._stop = threading.Event()
        self._procs: list[subprocess.Popen] = []
        self._threads = [threading.Thread(target=self._follow, args=(node,), daemon=True) for node in WORKERS]

    def __enter__(self):
        for node in WORKERS:
            p = subprocess.Popen(["docker", "exec", node, "docker", "events", "--filter", "event=die", "--filter",
                                  f"label=com.docker.swarm.service.name={STACK}_inference-canary",
                                  "--format", "{{.TimeNano}}"], stdout=subprocess.PIPE, text=True,
                                 env=cluster.local_env())
            self._procs.append(p)
        for t in self._threads:
            t.start()
        return self

    def _follow(self, node: str) -> None:
        seen = set()
        while not self._stop.wait(0.2):
            ids = subprocess.run(["docker", "exec", node, "docker", "ps", "-q", "--filter",
                                  f"label=com.docker.swarm.service.name={STACK}_inference-canary"],
                                 capture_output=True, text=True, env=cluster.local_env()).stdout.split()
            for cid in set(ids) - seen:
                seen.add(cid)
                threading.Thread(target=self._logs, args=(node, cid), daemon=True).start()

    def _logs(self, node: str, cid: str) -> None:
        p = subprocess.Popen(["docker", "exec", node, "docker", "logs", "-f", "-t", cid], stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True, env=cluster.local_env())
        self._procs.append(p)
        for line in p.stdout:
            if "incident" in line:
                self.errors.append(stamp(line.split(" ", 1)[0]))

    def __exit__(self, *exc):
        self._stop.set()
        for p in self._procs:
            p.terminate()
        for p in self._procs[:len(WORKERS)]:
            out, _ = p.communicate(timeout=10)
            self.deaths.extend(int(x) / 1e9 for x in out.split())


def at(doc: dict, event: str) -> float:
    return next(e["at"] for e in doc["timeline"] if e["event"] == event)


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, round(q * (len(values) - 1)))] if values else float("nan")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    c = cluster.bring_up()
    crash, flaky, stable = (cluster.push(f"fleet/{name}", f"bench-{name}")
                            for name in ("inference-test:crash", "inference-test:flaky", "inference:1"))
    with tempfile.NamedTemporaryFile("w", suffix=".yml") as override:
        override.write(OVERRIDE)
        override.flush()
        cluster.remove_stack(c, STACK)
        deployed = fleet(c, "deploy", "-c", "docker-stack.yml", "-c", override.name, "--image", f"inference={stable}",
                         "--timeout", "8m")
        assert deployed["exit"] == 0, deployed
    crash_reaction, err_to_cut, err_to_last, failed, visible_5xx = [], [], [], 0, 0
    try:
        for i in range(args.rounds):
            with LoadLoop("http://127.0.0.1:31080/predict", max_requests=20_000, max_seconds=300) as a, \
                    LoadLoop("http://127.0.0.1:32080/predict", max_requests=20_000, max_seconds=300) as b, \
                    CanaryWatch() as watch:
                doc = fleet(c, "rollout", "--canary", "--image", crash, "--progress-deadline", "3m")
            crash_reaction.append(at(doc, "cut") - min(watch.deaths))
            failed += len(a.failures) + len(b.failures)
            visible_5xx += a.statuses[500] + b.statuses[500]
            print(f"crash {i + 1}: exit {doc['exit']}, cut {crash_reaction[-1] * 1000:.0f} ms after the worker saw it die; "
                  f"{len(a.failures) + len(b.failures)}/{a.total + b.total} client requests failed", flush=True)
            with LoadLoop("http://127.0.0.1:31080/predict", max_requests=20_000, max_seconds=300) as a, \
                    LoadLoop("http://127.0.0.1:32080/predict", max_requests=20_000, max_seconds=300) as b, \
                    CanaryWatch() as watch:
                doc = fleet(c, "rollout", "--canary", "--image", flaky, "--steps", "50", "--step-duration", "60s")
            first_error = min(watch.errors)
            last_canary = max(t for load in (a, b) for t, _, version in load.served if version == "2")
            err_to_cut.append(at(doc, "cut") - first_error)
            err_to_last.append(last_canary - first_error)
            failed += len(a.failures) + len(b.failures)
            visible_5xx += a.statuses[500] + b.statuses[500]
            print(f"5xx {i + 1}: exit {doc['exit']}, cut {err_to_cut[-1] * 1000:.0f} ms and last client answer from "
                  f"the canary {err_to_last[-1] * 1000:.0f} ms after its first 5xx; {len(watch.errors)} canary 5xx, "
                  f"{a.statuses[500] + b.statuses[500]} seen by clients; {len(a.failures) + len(b.failures)}/"
                  f"{a.total + b.total} failed", flush=True)
    finally:
        cluster.remove_stack(c, STACK)
    n = args.rounds
    print("\n| figure (3-node cluster, canary on a worker) | p50 | p99 |\n|---|---|---|")
    print(f"| crash: worker's die event -> share 0 (n={n}) | {pct(crash_reaction, .5) * 1000:.0f} ms | "
          f"{pct(crash_reaction, .99) * 1000:.0f} ms |")
    print(f"| 5xx: canary's first 5xx -> share 0 (n={n}) | {pct(err_to_cut, .5) * 1000:.0f} ms | "
          f"{pct(err_to_cut, .99) * 1000:.0f} ms |")
    print(f"| 5xx: canary's first 5xx -> its last client answer (n={n}) | {pct(err_to_last, .5) * 1000:.0f} ms | "
          f"{pct(err_to_last, .99) * 1000:.0f} ms |")
    print(f"\nclient requests failed in all rounds: {failed}; 5xx seen by clients: {visible_5xx}")
    print(f"first 5xx -> share 0, p99 against the 1 s target: {pct(err_to_cut, .99):.2f}x; median of the per-round "
          f"ratio cut/last-answer: {statistics.median(x / max(y, 1e-3) for x, y in zip(err_to_cut, err_to_last)):.2f}")


if __name__ == "__main__":
    main()
