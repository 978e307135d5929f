"""The Swarm adapter's pure parts: image references, the docker CLI's environment, node flags."""
import pytest

from fleet.adapters.swarm import Swarm, health_of, names_registry
from fleet.status import node_flag


@pytest.mark.parametrize("image,named", [
    ("fleet/inference:2", False), ("inference", False), ("127.0.0.1:31500/fleet/inference:2", True),
    ("registry.example/fleet/inference:2", True), ("localhost/fleet/inference", True), ("fleet.io", False),
])
def test_names_registry_reads_references_as_docker_does(image, named):
    assert names_registry(image) is named


class FakeApi:
    base_url = "http+docker://localhost"
    trust_env = True


class FakeClient:
    api = FakeApi()


def test_docker_cli_follows_docker_py_not_the_clis_current_context(monkeypatch):
    """Unset, DOCKER_CONTEXT is not the CLI's current context (config.json's): fleet and its CLI commands take
    the local socket; `default` is the same; DOCKER_CONTEXT set is followed by both (fleet: engine_client)."""
    monkeypatch.delenv("DOCKER_HOST", raising=False)
    for unset in (None, "default"):
        if unset is None:
            monkeypatch.delenv("DOCKER_CONTEXT", raising=False)
        else:
            monkeypatch.setenv("DOCKER_CONTEXT", unset)
        env = Swarm(FakeClient()).cli_env()
        assert env["DOCKER_HOST"] == "unix:///var/run/docker.sock" and "DOCKER_CONTEXT" not in env
    monkeypatch.setenv("DOCKER_CONTEXT", "remote-prod")
    env = Swarm(FakeClient()).cli_env()
    assert env["DOCKER_CONTEXT"] == "remote-prod" and "DOCKER_HOST" not in env
    monkeypatch.setenv("DOCKER_HOST", "tcp://10.0.0.5:2376")  # DOCKER_HOST wins, as for the CLI
    env = Swarm(FakeClient()).cli_env()
    assert env["DOCKER_HOST"] == "tcp://10.0.0.5:2376" and "DOCKER_CONTEXT" not in env


def test_docker_cli_gets_the_remote_engine_and_its_tls(monkeypatch):
    monkeypatch.setenv("DOCKER_HOST", "tcp://10.0.0.5:2376")
    monkeypatch.setenv("DOCKER_TLS_VERIFY", "1")
    monkeypatch.setenv("DOCKER_CERT_PATH", "/certs")
    env = Swarm(FakeClient()).cli_env()
    assert (env["DOCKER_HOST"], env["DOCKER_TLS_VERIFY"], env["DOCKER_CERT_PATH"]) == ("tcp://10.0.0.5:2376", "1", "/certs")


def test_requests_ca_bundle_does_not_replace_the_engines_ca():
    assert Swarm(FakeClient()).client.api.trust_env is False


def test_local_tags_are_not_looked_up_in_a_registry():
    assert Swarm(FakeClient()).pinned("fleet/inference:2") == "fleet/inference:2"  # no call made: FakeClient has none
    assert Swarm(FakeClient()).pinned("r:5000/x@sha256:abc") == "r:5000/x@sha256:abc"


@pytest.mark.parametrize("state,availability,flag", [
    ("ready", "active", None), ("down", "active", "down"), ("ready", "drain", "drained"), ("ready", "pause", "paused"),
    ("down", "drain", "down"),
])
def test_node_flags(state, availability, flag):
    assert node_flag({"state": state, "availability": availability}) == flag


FAILED_CHECK = {"ExitCode": 1, "Output": "no answer from http://127.0.0.1:8001/ready: [Errno 111] refused\n"}
PASSED_CHECK = {"ExitCode": 0, "Output": '{"phase":"ready"}'}


@pytest.mark.parametrize("state,expected", [
    ({"Running": True, "Health": {"Status": "starting", "Log": []}}, ("starting", "")),
    ({"Running": True, "Health": {"Status": "unhealthy", "Log": [FAILED_CHECK]}},
     ("unhealthy", FAILED_CHECK["Output"].strip())),
    # Swarm killed it for its failed checks: still unhealthy, with what they said
    ({"Running": False, "Health": {"Status": "unhealthy", "Log": [PASSED_CHECK, FAILED_CHECK]}},
     ("unhealthy", FAILED_CHECK["Output"].strip())),
    # a process that exited before its first check (a crash at start): Docker's reset, not a health verdict
    ({"Running": False, "Health": {"Status": "unhealthy", "Log": []}}, ("stopped", "")),
    ({"Running": False, "Health": {"Status": "unhealthy", "Log": [PASSED_CHECK]}}, ("stopped", '{"phase":"ready"}')),
    ({"Running": True}, (None, "")),
])
def test_a_container_that_exited_is_stopped_not_unhealthy(state, expected):
    assert health_of(state) == expected


def test_the_consul_name_without_fleet_service_name_is_the_replicas_default_whatever_the_service():
    """A stack whose service is not called `inference` and sets no FLEET_SERVICE_NAME: its replicas register
    as `inference` (fleet_inference/config.py), and the rollout's target looks there, as `fleet status` does."""
    from types import SimpleNamespace

    from fleet.connect import target
    spec = {"TaskTemplate": {"ContainerSpec": {"Env": ["CONSUL_HTTP_ADDR=consul:8500"]}}, "Labels": {}}
    swarm = SimpleNamespace(describe=lambda name: SimpleNamespace(spec=spec))
    t = target(swarm, "shop", "model", catalog=None, store=None)
    assert t.consul_name == "inference"
    named = {**spec, "TaskTemplate": {"ContainerSpec": {"Env": ["FLEET_SERVICE_NAME={{.Service.Name}}-x"]}}}
    swarm.describe = lambda name: SimpleNamespace(spec=named)
    t = target(swarm, "shop", "model", catalog=None, store=None)
    assert t.consul_name == "shop_model-x"


def test_a_service_is_read_into_a_value_once_in_the_adapter():
    from types import SimpleNamespace

    from fleet.adapters.swarm import service_of
    spec = {"Labels": {"fleet.role": "stable"}, "Mode": {"Replicated": {"Replicas": 3}},
            "TaskTemplate": {"ContainerSpec": {"Image": "fleet/inference:2@sha256:" + "a" * 64,
                                               "Env": ["CONSUL_HTTP_ADDR=https://consul:8501", "FLEET_ROLE=stable"]}},
            "UpdateConfig": {"Order": "start-first"}}
    svc = service_of(SimpleNamespace(id="s1", name="fleet_inference", attrs={
        "Spec": spec, "Version": {"Index": 42},
        "UpdateStatus": {"State": "rollback_completed", "Message": "rolled back", "StartedAt": "2026-12-04T15:00:00Z"}}))
    assert (svc.id, svc.name, svc.version, svc.replicas, svc.is_global) == ("s1", "fleet_inference", 42, 3, False)
    assert svc.image_name == "fleet/inference:2" and svc.registers and svc.labels == {"fleet.role": "stable"}
    assert (svc.update_state, svc.update_message, svc.update_config) == ("rollback_completed", "rolled back",
                                                                          {"Order": "start-first"})
    assert svc.update_started_at == 1796396400.0
    glob = service_of(SimpleNamespace(id="g", name="fleet_gateway", attrs={
        "Spec": {"Mode": {"Global": {}}, "TaskTemplate": {"ContainerSpec": {"Image": "fleet/gateway:1"}}},
        "Version": {"Index": 7}}))
    assert glob.is_global and glob.replicas is None and not glob.registers and glob.update_state is None


# the manager's clock --------------------------------------------------------------------------------
class SkewedEngine:
    """An engine whose clock is `skew` seconds off this machine's: its SystemTime and its Swarm
    timestamps are on that clock, as a remote manager's are."""

    def __init__(self, skew: float, zone: str = "Z"):
        self.api, self.skew, self.zone, self.infos = FakeApi(), skew, zone, 0

    def stamp(self, at: float) -> str:
        from datetime import datetime, timedelta, timezone
        if self.zone == "Z":
            return datetime.fromtimestamp(at, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f") + "123Z"
        tz = timezone(timedelta(hours=1))
        return datetime.fromtimestamp(at, tz).strftime("%Y-%m-%dT%H:%M:%S.%f") + "123+01:00"

    def info(self):
        import time
        self.infos += 1
        return {"SystemTime": self.stamp(time.time() + self.skew)}


@pytest.mark.parametrize("skew", [-30.0, -1.5, 0.0, 45.0])
@pytest.mark.parametrize("zone", ["Z", "+01:00"])
def test_swarm_timestamps_are_read_on_this_machines_clock_whatever_the_managers(skew, zone):
    """A promotion Swarm rolled back on a manager 1.5 s behind fleet's clock was recorded as 'superseded':
    the rollback's start (the manager's clock) read as earlier than the promotion's (fleet's)."""
    import time
    engine = SkewedEngine(skew, zone)
    swarm = Swarm(engine)
    promotion_started = time.time()  # fleet's clock
    rollback_started = engine.stamp(promotion_started + 0.2 + skew)  # 0.2 s later, the manager's clock
    assert swarm.local_time(rollback_started) >= promotion_started
    assert abs(swarm.local_time(rollback_started) - (promotion_started + 0.2)) < 0.1
    swarm.local_time(rollback_started)
    assert engine.infos == 1, "measured once a minute, not at each timestamp"


def test_a_swarm_service_view_carries_the_update_start_on_fleets_clock():
    import time

    from fleet.adapters.swarm import service_of
    engine = SkewedEngine(-30.0)
    swarm = Swarm(engine)
    started = time.time()

    class Svc:
        id, name = "x", "fleet_inference"
        attrs = {"Spec": {"TaskTemplate": {"ContainerSpec": {"Image": "fleet/inference:2"}}, "Mode": {}},
                 "Version": {"Index": 9}, "UpdateStatus": {"State": "rollback_started",
                                                           "StartedAt": engine.stamp(started - 30.0 + 1.0)}}
    assert service_of(Svc, swarm.local_time).update_started_at >= started
    assert service_of(Svc).update_started_at < started  # the manager's own clock: 29 s behind fleet's
