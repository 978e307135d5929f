"""Benchmark of one replica run locally: /predict throughput and latency with and without dynamic
batching at several concurrencies, and /health and /ready latency while batched /predict saturates the
CPU at concurrency 32 and 64, on the probe server's port (what Docker, Consul and the gateway ask) and
on the service's own port, side by side.

    .venv/bin/python bench/service_bench.py [--seconds 5] [--probes 1000]

The service (and its probe server) is pinned to CPU 1 and the clients (wrk and the probes) to CPU 0
where the machine has two, so the clients do not take the server's core. Each probe opens a new
connection, as real probes do. Both configurations run in this one invocation, side by side, so their
ratio is meaningful on a noisy machine. Every load level is bounded in time and in requests. Traffic
goes to 127.0.0.1 only.
"""
import argparse
import http.client
import json
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit

import httpx

ROOT = Path(__file__).resolve().parents[1]
ROW = [11.94, 18.24, 75.71, 437.6, 0.0826, 0.0475, 0.0197, 0.0135]  # a tumour's 8 measurements (train.py)
LEVELS = (1, 8, 32, 64)
PROBE_LEVELS = (32, 64)
PINNED = (os.cpu_count() or 1) >= 2  # service on CPU 1, clients on CPU 0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_service(max_batch: int, model: Path | None = None) -> tuple[subprocess.Popen, str, str]:
    """The service (pinned to CPU 1 where there are two) with `model` (default the demo's v2); its URL
    and its probe server's URL."""
    port, admin_port = free_port(), free_port()
    env = {**os.environ, "MODEL_PATH": str(model or ROOT / "build/models/v2"), "FLEET_PORT": str(port),
           "FLEET_ADMIN_PORT": str(admin_port), "FLEET_MAX_BATCH": str(max_batch),
           "PYTHONPATH": f"{ROOT / 'services/inference'}:{ROOT}"}
    proc = subprocess.Popen([sys.executable, "-m", "fleet_inference"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            preexec_fn=(lambda: os.sched_setaffinity(0, {1})) if PINNED else None)
    url, admin = f"http://127.0.0.1:{port}", f"http://127.0.0.1:{admin_port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{admin}/ready", timeout=1).status_code == 200:
                return proc, url, admin
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    proc.kill()
    raise SystemExit("the service did not become ready within 60 s")


def pct(values: list[float], p: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(p / 100 * len(values)))] * 1000 if values else float("nan")


WRK_SCRIPT = """
wrk.method = "POST"
wrk.body = '{"inputs": [%s]}'
wrk.headers["Content-Type"] = "application/json"
local n = 0
response = function(status, headers, body)
  n = n + 1
  if n >= %d then wrk.thread:stop() end
end
"""


def to_ms(text: str) -> float:
    for unit, factor in (("us", 0.001), ("ms", 1.0), ("s", 1000.0)):
        if text.endswith(unit):
            return float(text[: -len(unit)]) * factor
    return float(text)


def load(url: str, concurrency: int, seconds: float, max_requests: int = 100_000) -> dict:
    """wrk (a C load generator, so the client steals little CPU) bounded in time and request count."""
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as f:
        f.write(WRK_SCRIPT % (json.dumps(ROW), max_requests))
    out = subprocess.run(["wrk", "-t1", f"-c{concurrency}", f"-d{seconds}s", "--latency", "-s", f.name,
                          f"{url}/predict"], capture_output=True, text=True, check=True).stdout
    os.unlink(f.name)
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    p50 = to_ms(re.search(r"\s50%\s+(\S+)", out).group(1))
    p99 = to_ms(re.search(r"\s99%\s+(\S+)", out).group(1))
    bad = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    errors = re.search(r"Socket errors: .*", out)
    return {"rps": rps, "p50": p50, "p99": p99, "errors": int(bad.group(1)) if bad else 0,
            "socket_errors": errors.group(0) if errors else ""}


def probes_under_load(url: str, admin: str, concurrency: int, probes: int) -> dict:
    """Probe /health and /ready on both ports (a new connection each, every 5 ms) while wrk saturates
    /predict; wrk runs until every probe series has `probes` answers (at most 120 s)."""
    targets = {(port, path): f"{base}{path}" for port, base in (("probe server", admin), ("service", url))
               for path in ("/health", "/ready")}
    latencies = {key: [] for key in targets}
    done = threading.Event()

    def probe(key):
        # http.client, a new connection per probe as Docker's, Consul's and HAProxy's checks open: the
        # client's own cost stays small (an httpx.get builds a TLS context each time, tens of ms).
        parsed = urlsplit(targets[key])
        while not done.is_set() and len(latencies[key]) < probes:
            t = time.perf_counter()
            conn = http.client.HTTPConnection(parsed.hostname, parsed.port, timeout=5)
            try:
                conn.request("GET", parsed.path)
                conn.getresponse().read()
                latencies[key].append(time.perf_counter() - t)
            except OSError:
                latencies[key].append(5.0)
            finally:
                conn.close()
            time.sleep(0.005)

    threads = [threading.Thread(target=probe, args=(key,)) for key in targets]
    for t in threads:
        t.start()
    rps, rounds = [], 0
    try:
        while any(len(v) < probes for v in latencies.values()) and rounds < 24:
            rps.append(load(url, concurrency, 5)["rps"])
            rounds += 1
    finally:
        done.set()
        for t in threads:
            t.join()
    return {"predict_rps": statistics.mean(rps), **{key: (pct(v, 50), pct(v, 99), len(v))
                                                    for key, v in latencies.items()}}


def ensure_wrk() -> None:
    if shutil.which("wrk") is None:
        subprocess.run(["apt-get", "update", "-qq"], check=True, capture_output=True)
        subprocess.run(["apt-get", "install", "-y", "-qq", "wrk"], check=True, capture_output=True)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=int, default=5, help="duration of each load level")
    ap.add_argument("--probes", type=int, default=1000, help="probes of each path on each port per level")
    args = ap.parse_args()
    ensure_wrk()
    if PINNED:
        os.sched_setaffinity(0, {0})  # this process, wrk and the probes: off the service's core
    results, health = {}, {}
    for name, max_batch in (("batched", 32), ("unbatched", 1)):
        proc, url, admin = start_service(max_batch)
        try:
            load(url, 8, 1)  # warm-up
            for c in LEVELS:
                results[(name, c)] = load(url, c, args.seconds)
            if name == "batched":
                for c in PROBE_LEVELS:
                    health[c] = probes_under_load(url, admin, c, args.probes)
        finally:
            proc.terminate()
            proc.wait(timeout=30)
    print(f"{'mode':<10} {'conc':>4} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'errors':>6}")
    for (name, c), r in results.items():
        print(f"{name:<10} {c:>4} {r['rps']:>8.0f} {r['p50']:>8.1f} {r['p99']:>8.1f} {r['errors']:>6}")
    print()
    for c in LEVELS:
        ratio = results[("batched", c)]["rps"] / results[("unbatched", c)]["rps"]
        print(f"batched/unbatched throughput at concurrency {c}: {ratio:.2f}x")
    print()
    print(f"\nprobes while batched /predict saturates the service ({'pinned: service CPU 1, clients CPU 0' if PINNED else 'not pinned: one CPU'}); "
          "target p99 <= 20 ms on the probe server\n")
    print("| concurrency (req/s) | port | /health p50 / p99 ms (probes) | /ready p50 / p99 ms (probes) |\n|---|---|---|---|")
    for c, h in health.items():
        for port in ("probe server", "service"):
            (h50, h99, hn), (r50, r99, rn) = h[(port, "/health")], h[(port, "/ready")]
            print(f"| {c} ({h['predict_rps']:.0f}) | {port} | {h50:.1f} / {h99:.1f} ({hn}) | {r50:.1f} / {r99:.1f} ({rn}) |")
    for c, h in health.items():
        print(f"/ready p99, service port over probe server, concurrency {c}: "
              f"{h[('service', '/ready')][1] / h[('probe server', '/ready')][1]:.1f}x")


if __name__ == "__main__":
    main()
