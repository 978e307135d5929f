"""Benchmark of one replica run locally: the same rows through /predict and through the Open Inference
Protocol's infer route, its JSON form and its binary tensor form (what Triton's clients send), at several
concurrencies, side by side in one run, with dynamic batching on (the default).

    .venv/bin/python bench/oip_bench.py [--seconds 5] [--rows 8]

Prints requests a second, p50 and p99 per API and concurrency, and each OIP form's throughput as a ratio
of /predict's. The service is pinned to CPU 1 and wrk to CPU 0 where the machine has two (as in
service_bench.py, whose helpers this uses). Every level is bounded in time and in requests; traffic goes
to 127.0.0.1 only.
"""
import argparse
import json
import os
import re
import struct
import subprocess
import tempfile

from service_bench import PINNED, ROW, ensure_wrk, start_service, to_ms

LEVELS = (1, 8, 32)
INFER = "/v2/models/quadrant-mlp/infer"


def lua_string(data: bytes) -> str:
    return '"' + "".join(f"\\{b}" for b in data) + '"'


def bodies(rows: int) -> dict[str, tuple[str, bytes, dict]]:
    """Per API: path, body and headers for `rows` copies of ROW."""
    data = [ROW] * rows
    tensor = {"name": "input", "shape": [rows, 8], "datatype": "FP32"}
    head = json.dumps({"inputs": [{**tensor, "parameters": {"binary_data_size": rows * 32}}]}).encode()
    raw = struct.pack(f"<{rows * 8}f", *[v for row in data for v in row])
    return {
        "/predict": ("/predict", json.dumps({"inputs": data}).encode(), {"Content-Type": "application/json"}),
        "oip json": (INFER, json.dumps({"inputs": [{**tensor, "data": [v for row in data for v in row]}]}).encode(),
                     {"Content-Type": "application/json"}),
        "oip binary": (INFER, head + raw, {"Content-Type": "application/octet-stream",
                                           "Inference-Header-Content-Length": str(len(head))}),
    }


def load(url: str, body: bytes, headers: dict, concurrency: int, seconds: float, max_requests: int = 200_000) -> dict:
    script = ['wrk.method = "POST"', f"wrk.body = {lua_string(body)}"]
    script += [f'wrk.headers["{k}"] = "{v}"' for k, v in headers.items()]
    script += ["local n = 0", "response = function(status, headers, body)", "  n = n + 1",
               f"  if n >= {max_requests} then wrk.thread:stop() end", "end"]
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as f:
        f.write("\n".join(script))
    out = subprocess.run(["wrk", "-t1", f"-c{concurrency}", f"-d{max(1, round(seconds))}s", "--latency", "-s", f.name,
                          url], capture_output=True, text=True, check=True).stdout
    os.unlink(f.name)
    bad = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    return {"rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),
            "p50": to_ms(re.search(r"\s50%\s+(\S+)", out).group(1)),
            "p99": to_ms(re.search(r"\s99%\s+(\S+)", out).group(1)), "errors": int(bad.group(1)) if bad else 0}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--rows", type=int, default=8)
    args = ap.parse_args()
    ensure_wrk()
    if PINNED:
        os.sched_setaffinity(0, {0})
    proc, url, _ = start_service(max_batch=32)
    try:
        print(f"one replica, {args.rows} rows a request, {args.seconds:g} s a level"
              f"{' (service on CPU 1, wrk on CPU 0)' if PINNED else ''}")
        print(f"{'api':>12} {'conc':>5} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'non-2xx':>8} {'vs /predict':>12}")
        for c in LEVELS:
            base = None
            for api, (path, body, headers) in bodies(args.rows).items():
                r = load(f"{url}{path}", body, headers, c, args.seconds)
                base = base or r["rps"]
                print(f"{api:>12} {c:>5} {r['rps']:>9.0f} {r['p50']:>8.2f} {r['p99']:>8.2f} {r['errors']:>8} "
                      f"{r['rps'] / base:>11.2f}x")
    finally:
        proc.terminate()
        proc.wait(30)


if __name__ == "__main__":
    main()
