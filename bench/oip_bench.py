"""Benchmark of one replica run locally: the same rows through /predict and through the Open Inference
Protocol's infer route, its JSON form and its binary tensor form (what Triton's clients send), at several
concurrencies, side by side in one run, with dynamic batching on (the default) and, with --unbatched,
off (max_batch 1) too.

    .venv/bin/python bench/oip_bench.py [--seconds 5] [--rows 8] [--model tabular|digits] [--unbatched]

--model digits serves an image classifier over NCHW tensors ([N, 1, 8, 8]: the small CNN over
scikit-learn's digits that tests/kit/digits.py packages) instead of the demo's 8-number MLP.
Prints requests a second, p50 and p99 per API and concurrency, and each OIP form's throughput as a ratio
of /predict's (and batched against unbatched). The service is pinned to CPU 1 and wrk to CPU 0 where the machine has two (as in
service_bench.py, whose helpers this uses). Every level is bounded in time and in requests; traffic goes
to 127.0.0.1 only.
"""
import argparse
import json
import os
import re
import struct
import subprocess
import sys
import tempfile
from pathlib import Path

from service_bench import PINNED, ROOT, ROW, ensure_wrk, start_service, to_ms

LEVELS = (1, 8, 32)


def lua_string(data: bytes) -> str:
    return '"' + "".join(f"\\{b}" for b in data) + '"'


def bodies(infer: str, rows: list, shape: list[int]) -> dict[str, tuple[str, bytes, dict]]:
    """Per API: path, body and headers for `rows` (each nested to `shape`)."""
    flat = [v for row in rows for v in flatten(row)]
    tensor = {"name": "input", "shape": [len(rows), *shape], "datatype": "FP32"}
    head = json.dumps({"inputs": [{**tensor, "parameters": {"binary_data_size": len(flat) * 4}}]}).encode()
    raw = struct.pack(f"<{len(flat)}f", *flat)
    return {
        "/predict": ("/predict", json.dumps({"inputs": rows}).encode(), {"Content-Type": "application/json"}),
        "oip json": (infer, json.dumps({"inputs": [{**tensor, "data": flat}]}).encode(),
                     {"Content-Type": "application/json"}),
        "oip binary": (infer, head + raw, {"Content-Type": "application/octet-stream",
                                           "Inference-Header-Content-Length": str(len(head))}),
    }


def flatten(v) -> list:
    return [x for item in v for x in flatten(item)] if isinstance(v, list) else [v]


def model(kind: str, rows: int, workdir: Path) -> tuple[Path | None, str, list, list[int]]:
    """The model's package (None: the demo's v2), its infer route, `rows` rows and one row's shape."""
    if kind == "digits":
        sys.path.insert(0, str(ROOT))
        from fleet.package import read_package
        from tests.kit.digits import write_package
        package = write_package(workdir / "digits", "2")
        # as `fleet build` puts it in the image: with the weights' sha256 filled in
        (package / "manifest.json").write_text(json.dumps(read_package(package).manifest))
        golden = json.loads((package / "golden.json").read_text())["inputs"]
        return package, "/v2/models/digits-cnn/infer", golden[:rows], [1, 8, 8]
    return None, "/v2/models/breast-cancer-mlp/infer", [ROW] * rows, [8]


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


HEADER = (f"{'max_batch':>9} {'api':>12} {'conc':>5} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'non-2xx':>8} "
          f"{'vs /predict':>12} {'vs batched':>11}")


def levels(url: str, infer: str, rows: list, shape: list[int], max_batch: int, seconds: float, batched: dict) -> None:
    """Every concurrency level on every API against `url`, a line each; `batched` keeps the batched figures
    (the first run's) that the unbatched ones are compared with."""
    for c in LEVELS:
        base = None
        for api, (path, body, headers) in bodies(infer, rows, shape).items():
            r = load(f"{url}{path}", body, headers, c, seconds)
            base = base or r["rps"]
            batched.setdefault((api, c), r["rps"])
            print(f"{max_batch:>9} {api:>12} {c:>5} {r['rps']:>9.0f} {r['p50']:>8.2f} {r['p99']:>8.2f} "
                  f"{r['errors']:>8} {r['rps'] / base:>11.2f}x {r['rps'] / batched[(api, c)]:>10.2f}x")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--rows", type=int, default=8)
    ap.add_argument("--model", choices=("tabular", "digits"), default="tabular")
    ap.add_argument("--unbatched", action="store_true", help="also run with max_batch 1, side by side")
    args = ap.parse_args()
    ensure_wrk()
    if PINNED:
        os.sched_setaffinity(0, {0})
    with tempfile.TemporaryDirectory() as workdir:
        package, infer, rows, shape = model(args.model, args.rows, Path(workdir))
        print(f"one replica of {args.model} (row shape {shape}), {args.rows} rows a request, {args.seconds:g} s a "
              f"level{' (service on CPU 1, wrk on CPU 0)' if PINNED else ''}")
        print(HEADER)
        batched: dict = {}
        for max_batch in (32, 1) if args.unbatched else (32,):
            proc, url, _ = start_service(max_batch=max_batch, model=package)
            try:
                levels(url, infer, rows, shape, max_batch, args.seconds, batched)
            finally:
                proc.terminate()
                proc.wait(30)


if __name__ == "__main__":
    main()
