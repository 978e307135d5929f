"""One replica of the real image, run as a plain container on 127.0.0.1: phases, health, validation."""
import os
import signal


from tests.kit.helpers import HTTP, SAMPLE, seconds, wait_until

HEALTHCHECK = ["CMD", "python3", "-I", "-S", "/app/fleet_inference/healthcheck.py"]


def get(url: str) -> tuple[int, dict]:
    r = HTTP.get(url, timeout=5)
    return r.status_code, r.json()


def test_loading_is_not_ready_and_the_container_is_starting(run_replica):
    replica = run_replica("fleet/inference-test:slow", environment={"FLEET_TEST_LOAD_SECONDS": "10"})
    status, body = wait_until(lambda: get(f"{replica.url}/ready"), 30, "/ready to answer")
    assert status == 503 and body["phase"] in ("loading", "warming"), body
    assert body["reason"]
    assert replica.health() == "starting"
    assert get(f"{replica.url}/health")[0] == 200  # alive while loading
    r = HTTP.post(f"{replica.url}/predict", json={"inputs": SAMPLE}, timeout=5)
    assert r.status_code == 503 and r.json()["phase"] in ("loading", "warming")
    wait_until(lambda: get(f"{replica.url}/ready")[0] == 200, 60, "the replica to become ready")
    wait_until(lambda: replica.health() == "healthy", 30, "the container to turn healthy")


def test_corrupt_artifact_fails_never_ready_and_turns_unhealthy(run_replica):
    replica = run_replica("fleet/inference-test:corrupt", healthcheck={
        "test": HEALTHCHECK, "interval": seconds(1), "timeout": seconds(2), "retries": 2, "start_period": seconds(2)})
    status, body = wait_until(lambda: (lambda s, b: (s, b) if b["phase"] == "failed" else None)(
        *get(f"{replica.url}/ready")), 30, "phase failed")
    assert status == 503 and "corrupt" in body["reason"] and "sha256" in body["reason"]
    assert get(f"{replica.url}/health")[0] == 500
    wait_until(lambda: replica.health() == "unhealthy", 30, "the container to turn unhealthy")
    assert get(f"{replica.url}/ready")[1]["phase"] == "failed"  # never ready


BAD_BODIES = [
    ("wrong shape", b'{"inputs": [[1, 2, 3]]}', 422),
    ("non-finite", b'{"inputs": [[NaN, 0, 0, 0, 0, 0, 0, 0]]}', 422),
    ("infinite", b'{"inputs": [[Infinity, 0, 0, 0, 0, 0, 0, 0]]}', 422),
    ("wrong type", b'{"inputs": [["a", 0, 0, 0, 0, 0, 0, 0]]}', 422),
    ("not a list", b'{"inputs": "abc"}', 422),
    ("too many rows", b'{"inputs": [' + b",".join([b"[0,0,0,0,0,0,0,0]"] * 65) + b"]}", 413),
    ("oversized body", b'{"inputs": [[0,0,0,0,0,0,0,0]], "pad": "' + b"x" * 300_000 + b'"}', 413),
    ("malformed JSON", b'{"inputs": [[0,0', 400),
    ("empty body", b"", 400),
    ("deep nesting", b'{"inputs": ' + b"[" * 50_000 + b"]" * 50_000 + b"}", 400),
    ("integer beyond a float", b'{"inputs": [[1' + b"0" * 400 + b', 0, 0, 0, 0, 0, 0, 0]]}', 422),
    ("finite but overflowing the model", b'{"inputs": [[1e300, -1e300, 1e300, 0, 0, 0, 0, 0]]}', 422),
]


def test_every_bad_input_gets_its_4xx_and_the_replica_stays_ready(run_replica):
    replica = run_replica("fleet/inference:2")
    wait_until(lambda: get(f"{replica.url}/ready")[0] == 200, 60, "ready")
    for name, body, status in BAD_BODIES:
        r = HTTP.post(f"{replica.url}/predict", content=body, headers={"content-type": "application/json"}, timeout=10)
        assert r.status_code == status, (name, r.status_code, r.text)
        assert r.json()["error"], name
    assert get(f"{replica.url}/ready")[0] == 200
    assert HTTP.post(f"{replica.url}/predict", json={"inputs": SAMPLE}, timeout=5).status_code == 200
    fleets = HTTP.post(f"{replica.url}/predict", json={"inputs": SAMPLE}, headers={"X-Fleet-Origin": "synthetic"})
    assert fleets.status_code == 200
    metrics = HTTP.get(f"{replica.url}/metrics", timeout=5).text
    unprocessable = sum(status == 422 for _, _, status in BAD_BODIES)
    assert f'fleet_requests_total{{route="/predict",status="422"}} {unprocessable:.1f}' in metrics
    # fleet's own requests are timed apart from users' (the canary's latency is compared like with like)
    assert 'fleet_request_seconds_count{origin="synthetic",route="/predict"} 1.0' in metrics
    # and a client's errors are timed nowhere: a flood of fast 4xx moved a role's median latency
    assert 'fleet_request_seconds_count{origin="organic",route="/predict"} 1.0' in metrics
    assert 'status="500"' not in metrics
    info = HTTP.get(f"{replica.url}/info", timeout=5).json()
    assert info["version"] == "2" and info["device"] == "cpu" and len(info["sha256"]) == 64


def test_streamed_oversized_bodies_odd_content_types_and_errors_leak_nothing(run_replica):
    replica = run_replica("fleet/inference-test:flaky")
    wait_until(lambda: get(f"{replica.url}/ready")[0] == 200, 60, "ready")
    chunks = (b'{"inputs": [' + b"[0,0,0,0,0,0,0,0]," * 1000 for _ in range(100))  # chunked, ~1.7 MB, no length
    r = HTTP.post(f"{replica.url}/predict", content=chunks, headers={"content-type": "application/json"}, timeout=10)
    assert r.status_code == 413 and "over the limit" in r.json()["error"], r.text
    r = HTTP.post(f"{replica.url}/predict", content=b"inputs=1", headers={"content-type": "text/plain"}, timeout=5)
    assert r.status_code == 415 and "application/json" in r.json()["error"]
    failed = [r for r in (HTTP.post(f"{replica.url}/predict", json={"inputs": SAMPLE}, timeout=5) for _ in range(40))
              if r.status_code == 500]
    assert failed, "the flaky image fails 30 % of its predictions after its first 20"
    for r in failed:  # an incident id, never the exception's repr or a traceback
        error = r.json()["error"]
        assert "incident" in error and "RuntimeError" not in error and "Traceback" not in error, error
    assert "injected failure" in replica.container.logs().decode()  # the details are in the log
    assert get(f"{replica.url}/ready")[0] == 200


def test_sigterm_drains_first_then_exits(run_replica):
    replica = run_replica("fleet/inference:2", stop_signal="SIGTERM")
    wait_until(lambda: get(f"{replica.url}/ready")[0] == 200, 60, "ready")
    replica.container.kill(signal=signal.SIGTERM)
    status, body = wait_until(lambda: (lambda s, b: (s, b) if b["phase"] == "draining" else None)(
        *get(f"{replica.url}/ready")), 5, "phase draining")
    assert status == 503
    # still serving in-flight work while Consul and the gateway notice
    assert HTTP.post(f"{replica.url}/predict", json={"inputs": SAMPLE}, timeout=5).status_code == 200
    result = replica.container.wait(timeout=30)
    assert result["StatusCode"] == 0


def test_the_probe_server_answers_apart_and_turns_a_stuck_replica_unresponsive(run_replica):
    """The healthcheck asks the probe server (port 8001), a process of its own. When the replica's own
    Python stops (SIGSTOP), its snapshots stop: both probes answer 503 `unresponsive` and Docker marks the
    container unhealthy; once it runs again it is healthy again."""
    replica = run_replica("fleet/inference:2", ports={"8000/tcp": ("127.0.0.1", None), "8001/tcp": ("127.0.0.1", None)},
                          healthcheck={"test": HEALTHCHECK, "interval": seconds(1), "timeout": seconds(5), "retries": 2,
                                       "start_period": seconds(1)})
    admin_port = wait_until(lambda: (replica.container.reload() or replica.container.ports.get("8001/tcp") or [{}])[0]
                            .get("HostPort"), 30, "the probe port")
    admin = f"http://127.0.0.1:{admin_port}"
    wait_until(lambda: replica.health() == "healthy", 60, "the container to turn healthy")
    status, body = get(f"{admin}/ready")
    assert status == 200 and body["phase"] == "ready" and body["version"] == "2", body
    assert get(f"{admin}/health")[0] == 200
    main_pid = replica.container.attrs["State"]["Pid"]  # the replica's own Python, the container's PID 1
    os.kill(main_pid, signal.SIGSTOP)
    try:
        status, body = wait_until(lambda: (lambda st, b: (st, b) if b["phase"] == "unresponsive" else None)(
            *get(f"{admin}/ready")), 15, "the probe server to call the replica unresponsive")
        assert status == 503 and get(f"{admin}/health")[0] == 503
        wait_until(lambda: replica.health() == "unhealthy", 30, "Docker to mark the container unhealthy")
    finally:
        os.kill(main_pid, signal.SIGCONT)
    wait_until(lambda: get(f"{admin}/ready")[0] == 200, 15, "the probes to answer ready again")
    wait_until(lambda: replica.health() == "healthy", 30, "the container to turn healthy again")
