"""The whole stack on the real Swarm with the real Consul and gateway. Runs in file order."""
import json
import subprocess

import consul
from hypothesis import HealthCheck, given, settings, strategies as st
import pytest
import torch

from fleet.adapters.prometheus import Prometheus
from fleet.cluster import SwarmCluster
from tests.process.test_hostile_input import HEADERS, INFER, header_values, raw_request
from tests.kit.helpers import HTTP, SAMPLE, LoadLoop, wait_until
from tests.kit.stacks import ROOT, converged


def stack_ps(stack) -> list[dict]:
    out = subprocess.run(["docker", "stack", "ps", stack.name, "--no-trunc", "--format", "{{json .}}"],
                         check=True, capture_output=True, text=True).stdout
    return [json.loads(line) for line in out.splitlines() if line.strip()]


def test_every_replica_is_healthy_in_docker_and_passing_in_consul_with_its_version(stack):
    running = {t.id: t for t in stack.swarm.tasks(stack.service("inference"))}
    assert len(running) == 2 and all(t.health == "healthy" for t in running.values())
    instances = stack.catalog.instances(stack.consul_service)
    assert {i.task_id for i in instances} == set(running)
    assert {(i.status, i.version, i.role) for i in instances} == {("passing", "2", "stable")}
    ps_ids = {row["ID"] for row in stack_ps(stack) if row["DesiredState"] == "Running"}
    assert set(running) <= ps_ids  # what fleet sees is what `docker stack ps` shows


def test_a_canary_instance_left_in_consul_with_no_container_is_removed_by_fleet(stack):
    """CI's landing: a canary rolled back, its containers gone, and its instance still in Consul after fleet's
    60 s wait (a replica that could not deregister as it drained stays until Consul's reaper, a minute and
    more): the next rollout would count it. No canary container runs here, so an instance named canary is
    such a leftover, and fleet's wait for the canary to be gone removes it."""
    c = stack.consul("master")
    left = f"{stack.consul_service}-fleettest-left-canary"
    cluster = SwarmCluster(stack.swarm, stack.catalog, None, stack.service("inference"),
                           stack.service("inference-canary"), stack.consul_service)
    try:
        c.agent.service.register(stack.consul_service, service_id=left, address="10.255.255.1", port=8000,
                                 tags=["canary", "v9"], meta={"role": "canary", "version": "9"})
        assert any(i.id == left for i in stack.catalog.instances(stack.consul_service))
        assert not cluster.canary_gone(), "an instance was still listed: not gone on this call"
        assert all(i.id != left and i.role == "stable" for i in stack.catalog.instances(stack.consul_service))
        assert cluster.canary_gone()
    finally:
        try:
            c.agent.service.deregister(left)
        except consul.ConsulException:  # gone already: Consul 1.8 answers 500 "Unknown service"
            pass


def test_a_registration_left_at_an_address_another_replica_now_holds_fails_its_check(stack):
    """Overlay addresses are reused, and a node's agent that comes back restores the registrations of the
    replicas that died with it: each replica's check names its task, so such a registration turns critical
    against the replica that holds the address now, instead of passing and counting it twice."""
    c = stack.consul("master")
    _, entries = c.health.service(stack.consul_service, passing=True)
    live = entries[0]["Service"]
    check = next(k for k in entries[0]["Checks"] if k["ServiceID"] == live["ID"])
    assert f"/ready?task={live['Meta']['task_id']}: 200" in check["Output"], check["Output"]
    gone = f"{stack.consul_service}-fleettest-gone"
    try:
        c.agent.service.register(stack.consul_service, service_id=gone, address=live["Address"], port=live["Port"],
                                 tags=["stable", "v1"], check=consul.Check.http(
                                     f"http://{live['Address']}:8001/ready?task=fleettest-gone", "1s", timeout="2s",
                                     deregister="1m"))

        def check_of(service_id: str) -> dict:
            """The check as the agent that runs it sees it (the catalog takes an output alone only every 5 min)."""
            return next((k for k in c.agent.checks().values() if k["ServiceID"] == service_id), {})
        # a new check starts critical with no output: wait for its first run
        failed = wait_until(lambda: (k := check_of(gone)).get("Status") == "critical" and k.get("Output") and k, 15,
                            "the left registration's check to run and fail")
        assert ": 410 " in failed["Output"] and "a registration left by a replica that is gone" in failed["Output"]
        _, now = c.health.service(stack.consul_service, passing=True)
        assert gone not in {e["Service"]["ID"] for e in now} and len(now) == len(entries)
    finally:
        c.agent.service.deregister(gone)


def test_prediction_through_the_gateway_equals_the_model(stack):
    model = torch.jit.load(str(ROOT / "build/models/v2/model.pt"))
    with torch.inference_mode():
        expected = model(torch.tensor(SAMPLE))
    r = HTTP.post(f"{stack.gateway}/predict", json={"inputs": SAMPLE}, timeout=10)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["version"] == "2"
    assert body["classes"] == expected.argmax(dim=1).tolist()
    assert torch.allclose(torch.tensor(body["probabilities"]), expected, atol=1e-5)


def test_a_standard_open_inference_protocol_client_works_through_the_gateway(stack):
    """tritonclient (Triton's own HTTP client for the KServe v2 protocol, from PyPI), unchanged, against the
    public port: server and model health, model metadata, typed inference equal to the model's, the
    protocol's errors; and the replicas count its requests as predictions, where fleet's judgement reads."""
    import numpy as np
    import tritonclient.http as oip
    from tritonclient.utils import InferenceServerException

    model = torch.jit.load(str(ROOT / "build/models/v2/model.pt"))
    with torch.inference_mode():
        expected = model(torch.tensor(SAMPLE))
    before = predictions(stack, "/v2/infer")
    client = oip.InferenceServerClient(stack.gateway.removeprefix("http://"), network_timeout=10)
    try:
        assert client.is_server_live() and client.is_server_ready()
        assert client.is_model_ready("breast-cancer-mlp") and not client.is_model_ready("resnet")
        meta = client.get_model_metadata("breast-cancer-mlp")
        assert meta["versions"] == ["2"] and meta["inputs"] == [{"name": "input", "datatype": "FP32", "shape": [-1, 8]}]
        tensor = oip.InferInput("input", [len(SAMPLE), 8], "FP32")
        tensor.set_data_from_numpy(np.array(SAMPLE, dtype=np.float32))
        for _ in range(5):
            result = client.infer("breast-cancer-mlp", [tensor], request_id="r-7",
                                  outputs=[oip.InferRequestedOutput("probabilities"), oip.InferRequestedOutput("label")])
            assert result.get_response()["id"] == "r-7" and result.get_response()["model_version"] == "2"
            assert result.as_numpy("label").tolist() == expected.argmax(dim=1).tolist()
            assert np.allclose(result.as_numpy("probabilities"), expected.numpy(), atol=1e-5)
        wrong = oip.InferInput("input", [1, 4], "FP32")
        wrong.set_data_from_numpy(np.zeros((1, 4), dtype=np.float32))
        with pytest.raises(InferenceServerException, match=r"the model takes \[N, 8\]"):
            client.infer("breast-cancer-mlp", [wrong])
        with pytest.raises(InferenceServerException, match="serves version '2'"):
            client.infer("breast-cancer-mlp", [tensor], model_version="1")
    finally:
        client.close()
    wait_until(lambda: predictions(stack, "/v2/infer") >= before + 5, 30, "Prometheus to scrape the inferences")


def predictions(stack, route: str) -> float:
    p = Prometheus(stack.prometheus)
    try:
        return sum(x.value for x in p.query(f'fleet_request_seconds_count{{job="inference",service="{stack.service("inference")}",'
                                            f'route="{route}"}}'))
    finally:
        p.close()


def test_the_public_port_serves_the_public_api_only_and_fleets_port_the_rest(stack):
    for path in ("/metrics", "/golden", "/info"):
        for headers in ({}, {"X-Fleet-Route": "stable"}):
            r = HTTP.get(f"{stack.gateway}{path}", headers=headers, timeout=5)
            assert r.status_code == 404 and "POST /predict" in r.json()["error"], (path, headers, r.text)
        assert HTTP.get(f"{stack.ops}{path}", headers={"X-Fleet-Route": "stable"}, timeout=5).status_code == 200, path
    assert HTTP.get(f"{stack.gateway}/predict", timeout=5).status_code == 405
    assert HTTP.get(f"{stack.gateway}/ready", timeout=5).status_code == 200
    big = HTTP.post(f"{stack.gateway}/predict", content=b"x" * 300_000, timeout=10,
                     headers={"content-type": "application/json"})
    assert big.status_code == 413 and "limit" in big.json()["error"]
    # fleet's headers are dropped on the public port: no role can be picked (there is no canary: a
    # route to it would fail) and fleet's synthetic origin cannot be claimed from outside
    before = origins(stack)
    for _ in range(10):
        r = HTTP.post(f"{stack.gateway}/predict", json={"inputs": SAMPLE}, timeout=10,
                       headers={"X-Fleet-Origin": "synthetic", "X-Fleet-Route": "canary"})
        assert r.status_code == 200, r.text
    after = wait_until(lambda: (o := origins(stack))["organic"] >= before["organic"] + 10 and o, 30,
                       "Prometheus to scrape the requests")
    assert after["synthetic"] == before["synthetic"]


def origins(stack) -> dict[str, float]:
    """/predict requests the stack's replicas timed, by origin, as Prometheus scraped them."""
    p = Prometheus(stack.prometheus)
    try:
        samples = p.query(f'sum by (origin) (fleet_request_seconds_count{{job="inference",'
                          f'service="{stack.service("inference")}",route="/predict"}})')
    finally:
        p.close()
    return {"organic": 0.0, "synthetic": 0.0, **{x.labels["origin"]: x.value for x in samples}}


def test_replicas_run_hardened_and_still_serve(stack):
    containers = stack.swarm.client.containers.list(
        filters={"label": f"com.docker.swarm.service.name={stack.service('inference')}"})
    assert len(containers) == 2
    for c in containers:
        host = c.attrs["HostConfig"]
        assert host["ReadonlyRootfs"] is True and host["Memory"] == 2 << 30 and host["NanoCpus"] == 2 * 10 ** 9, host
        assert [cap.upper().removeprefix("CAP_") for cap in host.get("CapDrop") or []] == ["ALL"], host.get("CapDrop")
        wrote = c.exec_run(["python3", "-c", "open('/app/x', 'w')"])
        assert wrote.exit_code != 0 and b"Read-only file system" in wrote.output
        assert c.exec_run(["python3", "-c", "open('/tmp/x', 'w').write('ok')"]).exit_code == 0  # the tmpfs
        probe = c.exec_run(["python3", "-I", "-S", "/app/fleet_inference/healthcheck.py"])
        assert probe.exit_code == 0 and b'"phase":"ready"' in probe.output, probe.output
    assert HTTP.post(f"{stack.gateway}/predict", json={"inputs": SAMPLE}, timeout=10).status_code == 200


def test_scale_down_and_forced_update_fail_no_request(stack):
    svc = stack.service("inference")
    with LoadLoop(f"{stack.gateway}/predict", max_requests=20000, max_seconds=240) as load:
        wait_until(lambda: load.total >= 20, 30, "the load loop to get going")
        before = {i.task_id for i in stack.catalog.instances(stack.consul_service)}
        subprocess.run(["docker", "service", "scale", "--detach", f"{svc}=1"], check=True, capture_output=True)
        remaining = wait_until(lambda: (lambda ids: ids if len(ids) == 1 else None)(
            {i.task_id for i in stack.catalog.instances(stack.consul_service)}), 60, "the stopped replica to leave Consul")
        assert remaining < before
        subprocess.run(["docker", "service", "update", "--detach", "--force", svc], check=True, capture_output=True)
        wait_until(lambda: (lambda ids: ids if ids and not ids & remaining and converged(stack, replicas=1) else None)(
            {i.task_id for i in stack.catalog.instances(stack.consul_service)}), 120, "the forced update to converge")
        served = load.total
        wait_until(lambda: load.total >= served + 20, 30, "more requests after the update")
    assert load.failures == [], f"{len(load.failures)} of {load.total} failed: {load.failures[:5]}"
    assert load.statuses[200] == load.total >= 50
    subprocess.run(["docker", "service", "scale", "--detach", f"{svc}=2"], check=True, capture_output=True)
    wait_until(lambda: converged(stack), 120, "two replicas again")


def test_swarm_rolls_back_an_update_that_never_turns_healthy(stack):
    svc = stack.service("inference")
    subprocess.run(["docker", "service", "update", "--detach", "--image", "fleet/inference-test:corrupt", svc],
                   check=True, capture_output=True)

    def rolled_back():
        attrs = stack.swarm.service(svc).attrs
        state = attrs.get("UpdateStatus", {}).get("State")
        return state == "rollback_completed" and attrs

    attrs = wait_until(rolled_back, 180, "Swarm to roll the update back")
    assert attrs["Spec"]["TaskTemplate"]["ContainerSpec"]["Image"].split("@")[0] == "fleet/inference:2"
    wait_until(lambda: converged(stack), 120, "the previous version to serve again")
    assert {t.image for t in stack.swarm.tasks(svc)} == {"fleet/inference:2"}


GATEWAY_FUZZ = settings(max_examples=60, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))


@GATEWAY_FUZZ
@given(name=st.sampled_from(HEADERS), value=header_values, path=st.sampled_from(["/predict", INFER]))
def test_arbitrary_header_bytes_through_the_gateway_get_a_4xx_or_an_answer_never_a_5xx(stack, name, value, path):
    """Any client's header bytes, through HAProxy to the replicas: what the gateway refuses itself (400) or
    what a replica answers (4xx, or 200 for a header it may ignore), never a 5xx, which counts against a
    canary. The byte 0xb2 in the binary extension's length made every replica answer 500."""
    body = json.dumps({"inputs": [[1.0] * 8]}).encode()
    head = (f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n").encode() + name + b": " + value
    status, got = raw_request(stack.gateway, head, body)
    assert status is not None and (status == 200 or 400 <= status < 500), got[:300]
