"""The probe server (fleet_inference/admin.py) and its feed (fleet_inference/probes.py): answers from the
last snapshot, 503 `unresponsive` once the replica stops reporting, started again when it dies."""
import asyncio
import json
import socket

import httpx

from fleet_inference.admin import STALE_S, Snapshot, answer
from fleet_inference.probes import ProbeServer
from tests.kit.helpers import wait_until

READY = {"/health": [200, {"phase": "ready", "reason": "r", "version": "2"}],
         "/ready": [429, {"phase": "degraded", "reason": "queue", "version": "2"}]}


def test_answers_come_from_the_last_snapshot():
    s = Snapshot()
    s.update(json.dumps(READY).encode())
    status, body = s.answer("/ready", s.at + 1)
    assert status == 429 and json.loads(body)["phase"] == "degraded"
    assert s.answer("/health", s.at)[0] == 200
    assert s.answer("/predict", s.at)[0] == 404


def test_a_probe_naming_another_task_is_gone_whatever_the_replica_says():
    s = Snapshot()
    s.update(json.dumps({**READY, "/ready": [200, {"phase": "ready"}]}).encode())
    assert answer(s, "/ready?task=old", "new", s.at)[0] == 410
    assert json.loads(answer(s, "/ready?task=old", "new", s.at)[1])["error"].startswith("this address serves task new")
    assert answer(s, "/ready?task=new", "new", s.at)[0] == 200
    assert answer(s, "/ready", "new", s.at)[0] == 200  # Docker's own healthcheck names no task
    assert answer(s, "/ready?task=old", "", s.at)[0] == 200  # a replica that does not know its task cannot tell


def test_no_snapshot_yet_is_not_ready():
    assert Snapshot().answer("/health", 0.0)[0] == 503


def test_a_replica_that_stopped_reporting_is_unresponsive_on_both_probes():
    s = Snapshot()
    s.update(json.dumps(READY).encode())
    for path in ("/health", "/ready"):
        status, body = s.answer(path, s.at + STALE_S + 0.1)
        assert status == 503 and json.loads(body)["phase"] == "unresponsive"


def test_a_torn_line_keeps_the_last_good_snapshot():
    s = Snapshot()
    s.update(json.dumps(READY).encode())
    try:
        s.update(b'{"/ready": [200')
    except ValueError:
        pass
    assert s.answer("/ready", s.at)[0] == 429


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_the_probe_server_answers_follows_changes_and_is_started_again_when_killed():
    port = free_port()
    state = {"status": 200}

    def answers():
        return {"/health": [200, {"phase": "ready"}], "/ready": [state["status"], {"phase": "x"}]}

    def ready_status():
        try:
            return httpx.get(f"http://127.0.0.1:{port}/ready", timeout=1).status_code
        except httpx.HTTPError:
            return None

    async def main():
        probes = ProbeServer(port, answers, task="t1")
        probes.start()
        try:
            await asyncio.to_thread(wait_until, lambda: ready_status() == 200, 15, "the probe server to answer")
            assert httpx.get(f"http://127.0.0.1:{port}/ready?task=t0", timeout=1).status_code == 410
            state["status"] = 503
            probes.changed()
            await asyncio.to_thread(wait_until, lambda: ready_status() == 503, 5, "the change to reach it")
            first = probes.proc
            first.kill()
            state["status"] = 200
            await asyncio.to_thread(wait_until, lambda: probes.starts == 2 and ready_status() == 200, 15,
                                    "a new probe server")
            assert probes.proc is not first
        finally:
            await probes.stop()
        return probes.proc

    proc = asyncio.run(main())
    assert proc.poll() is not None  # the probe server exits with its replica's pipe
