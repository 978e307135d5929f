"""fleet's replica beside a peer model server from PyPI, Seldon's MLServer, serving the same model (the digits
CNN that tests/kit/digits.py packages, NCHW [N, 1, 8, 8]) on the same CPU with the same batching, side by side
in one run: the same Open Inference Protocol JSON request to each server, at several concurrencies, each
level run on every server in turn.

    .venv/bin/python bench/peer_bench.py [--seconds 5] [--rows 8] [--workers 0,1]

MLServer runs a small custom runtime (bench/mlserver_runtime.py: TorchScript, one torch thread, the same
two outputs) with its adaptive batching set to fleet's defaults: at most 32 rows a batch (32 / rows
requests) and 2 ms of waiting. --workers lists MLServer's parallel_workers, one MLServer for each (0:
inference in its main process; 1, its default: in one worker process). MLServer lives in a virtual
environment of its own, build/mlserver-venv, made on first use (pip: the pins in PEER; a few minutes).

Before any load, every server's answers to the same rows are checked to agree with fleet's (the same
model). Prints requests a second, p50 and p99 per server and concurrency, and fleet's throughput and p99
as ratios of each server's. Every server pinned to CPU 1, wrk to CPU 0 where there are two; every level
bounded in time and requests; traffic to 127.0.0.1 only.
"""
import argparse
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from oip_bench import LEVELS, bodies, load, model
from service_bench import PINNED, ROOT, ensure_wrk, free_port, start_service

VENV = ROOT / "build/mlserver-venv"
# torch: the replica's own pin (TESTBED.md); uvloop 0.22 dropped the implicit event loop that MLServer
# 1.7.1's worker processes ask for (parallel_workers >= 1 then fails to start)
PEER = ("mlserver==1.7.1", "torch==2.13.0", "uvloop<0.22")
MAX_BATCH_ROWS, MAX_WAIT_S = 32, 0.002  # the replica's defaults (fleet_inference/config.py)


def ensure_mlserver() -> Path:
    exe = VENV / "bin/mlserver"
    if not exe.exists():
        print(f"installing {', '.join(PEER)} into {VENV.relative_to(ROOT)} (once)", flush=True)
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
        subprocess.run([str(VENV / "bin/pip"), "install", "-q", *PEER], check=True)
    return exe


def start_mlserver(exe: Path, package: Path, rows: int, workers: int, workdir: Path) -> tuple[subprocess.Popen, str]:
    """MLServer serving `package` as digits-cnn, pinned to CPU 1; its URL once the model is ready."""
    home = workdir / "mlserver"
    home.mkdir(parents=True)
    shutil.copy(ROOT / "bench/mlserver_runtime.py", home)
    port = free_port()
    (home / "settings.json").write_text(json.dumps({
        "http_port": port, "grpc_port": free_port(), "metrics_port": free_port(), "parallel_workers": workers,
        "debug": False}))
    (home / "model-settings.json").write_text(json.dumps({
        "name": "digits-cnn", "implementation": "mlserver_runtime.TorchScriptPackage",
        "max_batch_size": max(1, MAX_BATCH_ROWS // rows), "max_batch_time": MAX_WAIT_S,
        "parameters": {"uri": str(package)}}))
    proc = subprocess.Popen([str(exe), "start", str(home)], cwd=home, stdout=subprocess.DEVNULL, start_new_session=True,
                            stderr=open(workdir / "mlserver.log", "w"),
                            preexec_fn=(lambda: os.sched_setaffinity(0, {1})) if PINNED else None)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            if httpx.get(f"{url}/v2/models/digits-cnn/ready", timeout=1).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    stop(proc)
    raise SystemExit(f"MLServer was not ready within 120 s; its log: {workdir / 'mlserver.log'}\n"
                     + (workdir / "mlserver.log").read_text()[-2000:])


def stop(proc: subprocess.Popen) -> None:
    """MLServer and its worker processes (its own process group)."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(proc.pid, sig)
            proc.wait(15)
            return
        except ProcessLookupError:
            return
        except subprocess.TimeoutExpired:
            continue


def outputs(url: str, path: str, body: bytes) -> dict:
    r = httpx.post(f"{url}{path}", content=body, headers={"Content-Type": "application/json"}, timeout=10)
    r.raise_for_status()
    return {o["name"]: o["data"] for o in r.json()["outputs"]}


def same_answers(fleet: dict, peer: dict, name: str) -> None:
    worst = max(abs(a - b) for a, b in zip(fleet["probabilities"], peer["probabilities"], strict=True))
    if fleet["label"] != peer["label"] or worst > 1e-5:
        raise SystemExit(f"fleet and {name} disagree on the same rows (max |difference| {worst:g}, labels "
                         f"{fleet['label']} against {peer['label']}): not the same model")
    print(f"fleet and {name}: the same answers on {len(fleet['label'])} rows (max |difference| {worst:.1e})")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--rows", type=int, default=8)
    ap.add_argument("--workers", default="0,1", help="MLServer's parallel_workers, one server for each")
    args = ap.parse_args()
    workers = [int(w) for w in args.workers.split(",")]
    ensure_wrk()
    exe = ensure_mlserver()
    if PINNED:
        os.sched_setaffinity(0, {0})
    with tempfile.TemporaryDirectory() as tmp, contextlib.ExitStack() as running:
        workdir = Path(tmp)
        package, infer, rows, shape = model("digits", args.rows, workdir)
        path, body, headers = bodies(infer, rows, shape)["oip json"]
        fleet, fleet_url, _ = start_service(max_batch=MAX_BATCH_ROWS, model=package)
        running.callback(lambda: (fleet.terminate(), fleet.wait(30)))
        servers = {"fleet": fleet_url}
        for w in workers:
            peer, servers[f"mlserver/{w}"] = start_mlserver(exe, package, args.rows, w, workdir / f"w{w}")
            running.callback(stop, peer)
        for name, url in servers.items():
            if name != "fleet":
                same_answers(outputs(fleet_url, path, body), outputs(url, path, body), name)
        print(f"digits CNN, {args.rows} rows a request (OIP JSON), {args.seconds:g} s a level, batches of at most "
              f"{MAX_BATCH_ROWS} rows, {MAX_WAIT_S * 1000:g} ms wait; mlserver/W: parallel_workers W"
              f"{'; every server on CPU 1, wrk on CPU 0' if PINNED else ''}")
        print(f"{'server':>11} {'conc':>5} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'non-2xx':>8} "
              f"{'fleet/this req/s':>17} {'p99':>7}")
        for c in LEVELS:
            results = {name: load(f"{url}{path}", body, headers, c, args.seconds) for name, url in servers.items()}
            f = results["fleet"]
            for name, r in results.items():
                print(f"{name:>11} {c:>5} {r['rps']:>9.0f} {r['p50']:>8.2f} {r['p99']:>8.2f} {r['errors']:>8} "
                      f"{f['rps'] / r['rps']:>16.2f}x {f['p99'] / r['p99']:>6.2f}x")


if __name__ == "__main__":
    main()
