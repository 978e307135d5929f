"""Benchmark of one replica run locally: /predict throughput and latency with and without dynamic
batching at several concurrencies, and /health latency while /predict saturates the CPU.

    .venv/bin/python bench/service_bench.py [--seconds 5]

Both configurations run in this one invocation, side by side, so their ratio is meaningful on a
noisy machine. Every load level is bounded in time and in requests. Traffic goes to 127.0.0.1 only.
"""
import argparse
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
ROW = [0.5, -1.2, 0.3, 2.0, -0.7, 0.1, 1.5, -0.4]
LEVELS = (1, 8, 32, 64)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_service(max_batch: int) -> tuple[subprocess.Popen, str]:
    port = free_port()
    env = {**os.environ, "MODEL_PATH": str(ROOT / "build/models/v2"), "FLEET_PORT": str(port),
           "FLEET_MAX_BATCH": str(max_batch), "PYTHONPATH": str(ROOT / "services/inference")}
    proc = subprocess.Popen([sys.executable, "-m", "fleet_inference"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/ready", timeout=1).status_code == 200:
                return proc, url
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


def health_under_load(url: str, seconds: float) -> dict:
    """Probe /health every 20 ms from another thread while wrk saturates /predict at concurrency 64."""
    latencies: list[float] = []
    done = threading.Event()

    def probe():
        with httpx.Client(timeout=5) as client:
            while not done.is_set() and len(latencies) < 10_000:
                t = time.perf_counter()
                client.get(f"{url}/health")
                latencies.append(time.perf_counter() - t)
                time.sleep(0.02)

    t = threading.Thread(target=probe)
    t.start()
    try:
        pred = load(url, 64, seconds)
    finally:
        done.set()
        t.join()
    return {"predict_rps": pred["rps"], "health_p50": pct(latencies, 50), "health_p99": pct(latencies, 99),
            "probes": len(latencies)}


def ensure_wrk() -> None:
    if shutil.which("wrk") is None:
        subprocess.run(["apt-get", "update", "-qq"], check=True, capture_output=True)
        subprocess.run(["apt-get", "install", "-y", "-qq", "wrk"], check=True, capture_output=True)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=int, default=5, help="duration of each load level")
    args = ap.parse_args()
    ensure_wrk()
    results, health = {}, {}
    for name, max_batch in (("batched", 32), ("unbatched", 1)):
        proc, url = start_service(max_batch)
        try:
            load(url, 8, 1)  # warm-up
            for c in LEVELS:
                results[(name, c)] = load(url, c, args.seconds)
            health[name] = health_under_load(url, args.seconds)
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
    for name, h in health.items():
        print(f"/health under /predict saturation ({name}, concurrency 64, {h['predict_rps']:.0f} req/s): "
              f"p50 {h['health_p50']:.1f} ms, p99 {h['health_p99']:.1f} ms over {h['probes']} probes "
              f"(target p99 <= 20 ms)")


if __name__ == "__main__":
    main()
