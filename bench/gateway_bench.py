"""Benchmark of the image model through the gateway, as clients reach it: the digits CNN (NCHW
[N, 1, 8, 8], the package tests/kit/digits.py writes) built with `fleet build`, deployed with `fleet deploy`
(2 replicas behind the stack's HAProxy), the same rows on /predict and on the Open Inference Protocol's
JSON and binary forms at several concurrencies, with the replicas' dynamic batching on (max_batch 32)
and then off (`fleet config set max_batch=1`, applied live), side by side in one run.

    .venv/bin/python bench/gateway_bench.py [--seconds 5] [--rows 8]

Prints requests a second, p50 and p99 per API, concurrency and batching, each OIP form's throughput as a
ratio of /predict's and unbatched against batched. Uses its own stack (fleetbench-gw, ports 38700/38280)
and image, removed before and after. wrk runs on this machine against 127.0.0.1; every level is bounded in
time and in requests.
"""
import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import docker
import httpx

from deploy_bench import ROOT, remove_stack
from oip_bench import HEADER, levels, model
from service_bench import ensure_wrk

STACK, IMAGE = "fleetbench-gw", "fleet/digits-bench:2"
PORTS = {"FLEET_CONSUL_PORT": "38700", "FLEET_GATEWAY_PORT": "38280", "FLEET_GATEWAY_OPS_PORT": "38281",
         "FLEET_PROMETHEUS_PORT": "38290"}
ENV = {**os.environ, **PORTS, "FLEET_IMAGE": IMAGE, "FLEET_REPLICAS": "2",
       "CONSUL_HTTP_ADDR": f"https://127.0.0.1:{PORTS['FLEET_CONSUL_PORT']}",
       "CONSUL_CACERT": str(ROOT / "build/consul/secrets/ca.pem"),
       "CONSUL_HTTP_TOKEN_FILE": str(ROOT / "build/consul/secrets/fleet.token")}
GATEWAY = f"http://127.0.0.1:{PORTS['FLEET_GATEWAY_PORT']}"  # the public port: the load goes there
OPS = f"http://127.0.0.1:{PORTS['FLEET_GATEWAY_OPS_PORT']}"  # fleet's port, with /info: whose config applies


def fleet(*args: str, timeout: float = 600) -> str:
    p = subprocess.run([sys.executable, "-m", "fleet.cli", *args], capture_output=True, text=True, env=ENV, cwd=ROOT,
                       timeout=timeout)
    if p.returncode != 0:
        raise SystemExit(f"fleet {' '.join(args)} failed ({p.returncode}): {p.stderr[-2000:]}")
    return p.stdout


def batching_is(max_batch: int, deadline_s: float = 60) -> None:
    """Wait until every answer through the gateway comes from a replica applying max_batch."""
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        seen = [httpx.get(f"{OPS}/info", timeout=5).json()["config"]["max_batch"] for _ in range(10)]
        if set(seen) == {max_batch}:
            return
        time.sleep(0.5)
    raise SystemExit(f"the replicas did not apply max_batch={max_batch} within {deadline_s:g} s")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--rows", type=int, default=8)
    args = ap.parse_args()
    ensure_wrk()
    client = docker.from_env()
    remove_stack(client, STACK)
    with tempfile.TemporaryDirectory() as workdir:
        package, infer, rows, shape = model("digits", args.rows, Path(workdir))
        try:
            fleet("build", str(package), "--tag", IMAGE, "--json")
            fleet("deploy", "--stack", STACK, "--timeout", "5m")
            print(f"2 replicas of the digits CNN (row shape {shape}) behind the gateway, {args.rows} rows a request, "
                  f"{args.seconds:g} s a level")
            print(HEADER)
            batched: dict = {}
            for max_batch in (32, 1):
                fleet("config", "set", "--stack", STACK, f"max_batch={max_batch}")
                batching_is(max_batch)
                levels(GATEWAY, infer, rows, shape, max_batch, args.seconds, batched)
        finally:
            remove_stack(client, STACK)
            for image in client.images.list(name=IMAGE.split(":")[0]):
                client.images.remove(image.id, force=True)


if __name__ == "__main__":
    main()
