"""Live configuration on the real stack: `fleet config set` reaches every replica through Consul KV and
changes its batching without a restart; a bad value changes nothing."""
import json
from concurrent.futures import ThreadPoolExecutor

import httpx

from fleet.adapters.prometheus import Prometheus
from tests.kit.cli import fleet
from tests.kit.helpers import HTTP, SAMPLE, wait_until
from tests.kit.stacks import StackUnderTest, running_ids

ROWS3 = {"inputs": SAMPLE[:1] * 3}
REQUESTS = 30


def replica_configs(s: StackUnderTest) -> dict[str, dict]:
    """Each replica's effective config from its /info, by task, asked through the gateway's stable route."""
    seen = {}
    for _ in range(12):
        info = HTTP.get(f"{s.ops}/info", headers={"X-Fleet-Route": "stable"}, timeout=5).json()
        seen[info["task_id"]] = info["config"]
    return seen


def counts(s: StackUnderTest) -> tuple[float, float, float]:
    """(predictions answered, batches run, batches of at most 2 rows) over the stack's replicas, as Prometheus
    scraped them (one scrape of a replica holds all three, so batches are whole once the answers are)."""
    p = Prometheus(s.prometheus)
    sel = f'service="{s.service("inference")}"'
    try:
        return tuple((r[0].value if r else 0.0) for r in (
            p.query(f'sum(fleet_requests_total{{{sel},route="/predict",status="200"}})'),
            p.query(f"sum(fleet_batch_size_count{{{sel}}})"),
            p.query(f'sum(fleet_batch_size_bucket{{{sel},le="2.0"}})')))
    finally:
        p.close()


def send_3_row_requests(s: StackUnderTest) -> None:
    with httpx.Client(timeout=10) as c, ThreadPoolExecutor(8) as pool:
        codes = list(pool.map(lambda _: c.post(f"{s.gateway}/predict", json=ROWS3).status_code, range(REQUESTS)))
    assert codes == [200] * REQUESTS


def run_and_count(s: StackUnderTest) -> tuple[float, float]:
    """Send the 3-row requests; the batches they ran, and how many of those held at most 2 rows."""
    answered0, total0, small0 = counts(s)
    send_3_row_requests(s)
    _, total, small = wait_until(lambda: (c := counts(s))[0] - answered0 >= REQUESTS and c, 30,
                                 "Prometheus to scrape the answers and their batches")
    return total - total0, small - small0


def test_batch_size_changes_live_without_a_restart_and_a_bad_value_changes_nothing(stack):
    s = stack
    tasks = running_ids(s)
    kv = s.consul().kv
    try:
        p = fleet(s, "config", "set", "max_batch=2", "--stack", s.name, "--json")
        assert p.returncode == 0, p.stderr
        assert json.loads(p.stdout)["config"] == {"max_batch": 2}
        wait_until(lambda: len(c := replica_configs(s)) == 2 and all(v["max_batch"] == 2 for v in c.values()), 30,
                   "both replicas to apply max_batch=2")
        ran, small = run_and_count(s)
        assert ran >= 2 * REQUESTS and small == ran, (ran, small)  # each 3-row request split, no batch over 2

        bad = fleet(s, "config", "set", "max_batch=0", "max_wait_ms=1", "--stack", s.name, "--json")
        assert bad.returncode == 2 and "between 1 and 1024" in json.loads(bad.stdout)["error"], bad.stdout
        assert json.loads(kv.get(f"fleet/config/{s.consul_service}")[1]["Value"]) == {"max_batch": 2}

        got = fleet(s, "config", "get", "--stack", s.name, "--json")
        assert json.loads(got.stdout)["config"] == {"max_batch": 2}

        p = fleet(s, "config", "unset", "max_batch", "--stack", s.name, "--json")
        assert p.returncode == 0, p.stderr
        wait_until(lambda: all(v["max_batch"] == 32 for v in replica_configs(s).values()), 30,
                   "both replicas back to the environment's max_batch")
        ran, small = run_and_count(s)
        assert ran < 2 * REQUESTS and small < ran, (ran, small)  # 3-row batches again
        assert running_ids(s) == tasks, "no task may restart for a configuration change"
    finally:
        kv.delete(f"fleet/config/{s.consul_service}")


def test_a_bad_value_written_by_hand_is_ignored_by_the_replicas(stack):
    s = stack
    kv = s.consul("master").kv
    try:
        kv.put(f"fleet/config/{s.consul_service}", json.dumps({"max_batch": "lots", "max_wait_ms": 7}))
        wait_until(lambda: all(v["max_wait_ms"] == 7 for v in replica_configs(s).values()), 30,
                   "the replicas to apply the valid knob")
        assert all(v["max_batch"] == 32 for v in replica_configs(s).values())
    finally:
        kv.delete(f"fleet/config/{s.consul_service}")
