import copy

import os

import pytest

from fleet.stackfile import Severity, lint

GOOD = {
    "image": "fleet/inference:2",
    "environment": {"FLEET_DRAIN_SECONDS": "3"},
    "healthcheck": {"test": ["CMD", "true"], "interval": "2s", "timeout": "2s", "retries": 3, "start_period": "20s"},
    "stop_grace_period": "20s",
    "deploy": {"replicas": 2, "update_config": {"order": "start-first", "failure_action": "rollback", "monitor": "30s"}},
}


def doc_with(**changes):
    svc = copy.deepcopy(GOOD)
    for path, value in changes.items():
        node = svc
        keys = path.split("__")
        for k in keys[:-1]:
            node = node.setdefault(k, {})
        if value is None:
            node.pop(keys[-1], None)
        else:
            node[keys[-1]] = value
    return {"services": {"inference": svc}}


CASES = [
    ("good-stack-is-clean", {}, set()),
    ("monitor-shorter-than-health-window", {"deploy__update_config__monitor": "5s"},
     {(Severity.ERROR, "deploy.update_config.monitor")}),
    ("monitor-equal-to-window-is-too-short", {"deploy__update_config__monitor": "6s"},
     {(Severity.ERROR, "deploy.update_config.monitor")}),
    # Swarm fails an update whose task never turns healthy whatever the monitor: no need to outlast the start
    ("start-period-longer-than-monitor-is-fine", {"deploy__update_config__monitor": "10s",
                                                  "healthcheck__start_period": "60s"}, set()),
    ("no-healthcheck", {"healthcheck": None}, {(Severity.WARNING, "healthcheck")}),
    ("failure-action-pause", {"deploy__update_config__failure_action": "pause"},
     {(Severity.WARNING, "deploy.update_config.failure_action")}),
    ("failure-action-missing", {"deploy__update_config__failure_action": None},
     {(Severity.WARNING, "deploy.update_config.failure_action")}),
    ("latest-tag", {"image": "fleet/inference:latest"}, {(Severity.WARNING, "image")}),
    ("untagged", {"image": "fleet/inference"}, {(Severity.WARNING, "image")}),
    ("registry-port-is-not-a-tag", {"image": "registry.local:5000/inference"}, {(Severity.WARNING, "image")}),
    ("digest-pinned-is-fine", {"image": "fleet/inference@sha256:" + "a" * 64}, set()),
    ("grace-shorter-than-drain", {"stop_grace_period": "5s"}, {(Severity.ERROR, "stop_grace_period")}),
    ("stop-first-one-replica", {"deploy__replicas": 1, "deploy__update_config__order": "stop-first"},
     {(Severity.WARNING, "deploy.update_config.order")}),
    ("stop-first-default-one-replica", {"deploy__replicas": 1, "deploy__update_config__order": None},
     {(Severity.WARNING, "deploy.update_config.order")}),
    ("stop-first-two-replicas-is-fine", {"deploy__update_config__order": "stop-first"}, set()),
    ("bad-duration", {"healthcheck__interval": "soon"}, {(Severity.ERROR, "healthcheck")}),
]


@pytest.mark.parametrize("changes,expected", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_lint_truth_table(changes, expected):
    assert {(f.severity, f.key) for f in lint(doc_with(**changes))} == expected


def test_ingress_port_is_an_error_only_without_routing_mesh():
    doc = doc_with(ports=[{"target": 8000, "published": 8080, "mode": "ingress"}])
    assert {(f.severity, f.key) for f in lint(doc, routing_mesh=False)} == {(Severity.ERROR, "ports")}
    assert lint(doc, routing_mesh=True) == []


def test_host_port_single_replica_stop_first_is_not_flagged():
    doc = doc_with(deploy__replicas=1, deploy__update_config__order="stop-first",
                   ports=[{"target": 8080, "published": 8080, "mode": "host"}])
    assert lint(doc) == []


def test_messages_name_the_fix():
    (f,) = lint(doc_with(deploy__update_config__monitor="5s"))
    assert "set monitor above 6s" in f.message and f.service == "inference"


@pytest.mark.parametrize("var", ["CONSUL_HTTP_TOKEN", "DB_PASSWORD", "API_SECRET", "TLS_PRIVATE_KEY"])
def test_a_credential_in_a_plain_environment_variable_is_a_warning_naming_the_file_variant(var):
    (f,) = lint(doc_with(environment={"FLEET_DRAIN_SECONDS": "3", var: "s3cr3t"}))
    assert f.severity is Severity.WARNING and f.key == f"environment.{var}" and f"{var}_FILE" in f.message


def test_a_credential_passed_as_a_file_or_left_empty_is_fine():
    assert lint(doc_with(environment={"FLEET_DRAIN_SECONDS": "3", "CONSUL_HTTP_TOKEN_FILE": "/run/secrets/t",
                                      "CONSUL_HTTP_TOKEN": ""})) == []


HOST_PORT = [{"target": 8080, "published": 8080, "mode": "host"}]


@pytest.mark.parametrize("replicas,nodes,flagged", [(3, 2, True), (2, 2, False), (3, None, False), (1, 1, False)])
def test_host_port_with_more_replicas_than_nodes_is_an_error(replicas, nodes, flagged):
    doc = doc_with(deploy__replicas=replicas, ports=HOST_PORT)
    found = {(f.severity, f.key) for f in lint(doc, nodes=nodes)}
    assert ((Severity.ERROR, "deploy.replicas") in found) is flagged
    if flagged:
        (f,) = [f for f in lint(doc, nodes=nodes) if f.key == "deploy.replicas"]
        assert "1 would stay pending" in f.message and "mode: global" in f.message


def test_a_global_service_with_a_host_port_is_fine_on_any_number_of_nodes():
    doc = doc_with(deploy__mode="global", deploy__replicas=None, ports=HOST_PORT)
    assert lint(doc, nodes=5) == []


def test_max_replicas_per_node_beyond_the_nodes_is_an_error():
    doc = doc_with(deploy__replicas=4, deploy__placement={"max_replicas_per_node": 1})
    assert {(f.severity, f.key) for f in lint(doc, nodes=3)} == {(Severity.ERROR, "deploy.placement.max_replicas_per_node")}
    assert lint(doc, nodes=4) == []


@pytest.mark.parametrize("volume,placement,flagged", [
    ({"type": "volume", "source": "data", "target": "/data"}, None, True),
    ("data:/data", None, True),
    ({"type": "volume", "source": "data", "target": "/data"}, {"constraints": ["node.role == manager"]}, False),
    ({"type": "bind", "source": "/var/run/docker.sock", "target": "/var/run/docker.sock"}, None, False),
    ({"type": "tmpfs", "target": "/tmp"}, None, False),
])
def test_a_named_volume_without_a_placement_constraint_is_a_warning(volume, placement, flagged):
    doc = doc_with(volumes=[volume], deploy__placement=placement)
    assert ({(f.severity, f.key) for f in lint(doc)} == {(Severity.WARNING, "volumes")}) is flagged


def test_a_mode_change_is_named_with_its_fix():
    from fleet.deploy import mode_changes
    doc = {"services": {"gateway": {"deploy": {"mode": "global"}}, "inference": {"deploy": {"replicas": 2}},
                        "new": {}}}
    live = {"s_gateway": "replicated", "s_inference": "replicated"}
    (msg,) = mode_changes(doc, "s", live)
    assert "s_gateway runs replicated but the file says global" in msg and "docker service rm s_gateway" in msg
    assert mode_changes(doc, "s", {"s_gateway": "global"}) == []


GPU_RESERVATION = {"reservations": {"generic_resources": [{"discrete_resource_spec": {"kind": "NVIDIA-GPU", "value": 1}}]}}


@pytest.mark.parametrize("replicas,gpus,expected", [
    (3, {"NVIDIA-GPU": 2}, {(Severity.ERROR, "deploy.resources.reservations.generic_resources")}),
    (3, {}, {(Severity.ERROR, "deploy.resources.reservations.generic_resources")}),  # a Swarm without GPUs
    (2, {"NVIDIA-GPU": 2}, {(Severity.WARNING, "deploy.resources.reservations.generic_resources")}),  # none for a canary
    (2, {"NVIDIA-GPU": 3}, set()),
])
def test_replicas_reserving_more_gpus_than_the_swarm_advertises_are_an_error(replicas, gpus, expected):
    doc = doc_with(deploy__replicas=replicas, deploy__resources=GPU_RESERVATION)
    found = lint(doc, resources=gpus)
    assert {(f.severity, f.key) for f in found} == expected
    if expected and min(expected)[0] is Severity.ERROR:
        assert f"{replicas} replicas reserve 1 NVIDIA-GPU each ({replicas}) but the Swarm's nodes taking tasks " \
               f"advertise {gpus.get('NVIDIA-GPU', 0)}" in found[0].message
    assert not any("generic_resources" in f.key for f in lint(doc))  # resources unknown: nothing said of them


@pytest.mark.parametrize("constraints,nodes,managers,flagged", [
    (["node.role == manager"], 3, 1, False),  # one manager: the role is a pin to it
    (["node.role == manager"], 3, 3, True),  # three managers: Swarm may move it to an empty volume
    (["node.role == manager"], None, None, False),  # the Swarm unknown (offline): nothing said
    (["node.role == manager", "node.hostname == node1"], 3, 3, False),
    (["node.labels.consul == 1"], 3, 3, False),
    (["node.role==worker"], 3, 1, True),
    (["node.platform.os == linux"], 3, 1, True),
    (["node.platform.os == linux"], 1, 1, False),
])
def test_a_named_volume_pinned_only_by_what_several_nodes_match_is_a_warning(constraints, nodes, managers, flagged):
    doc = doc_with(volumes=["data:/data"], deploy__placement={"constraints": constraints})
    found = [f for f in lint(doc, nodes=nodes, managers=managers) if f.key == "deploy.placement.constraints"]
    assert bool(found) is flagged, found
    if flagged:
        assert found[0].severity is Severity.WARNING and "'data' is pinned only by" in found[0].message
        assert "node.hostname == <node>" in found[0].message


def test_a_global_services_volume_stays_with_each_node_whatever_its_constraints():
    doc = doc_with(volumes=["data:/data"], deploy__mode="global", deploy__replicas=None,
                   deploy__placement={"constraints": ["node.role == manager"]})
    assert not [f for f in lint(doc, nodes=3, managers=3) if f.key in ("volumes", "deploy.placement.constraints")]
    doc = doc_with(volumes=["data:/data"], deploy__mode="global", deploy__replicas=None)
    assert not [f for f in lint(doc, nodes=3, managers=1) if f.key in ("volumes", "deploy.placement.constraints")]


@pytest.mark.parametrize("command,nodes,flagged", [
    (["agent", "-server", "-bootstrap-expect=1", "-data-dir=/consul/data"], 3, True),
    (["agent", "-server", "-bootstrap-expect=2"], 3, True),  # 2 servers: losing one loses quorum
    (["agent", "-server", "-bootstrap-expect=3"], 3, False),
    ("agent -server -bootstrap-expect 5", 5, False),
    (["agent", "-server", "-bootstrap-expect=1"], 1, False),  # one node: nothing to spread over
    (["agent", "-server", "-bootstrap-expect=1"], None, False),  # the Swarm unknown
    (["agent", "-retry-join=consul"], 3, False),  # a client agent
])
def test_consul_servers_that_cannot_keep_quorum_when_a_node_is_lost_are_a_warning(command, nodes, flagged):
    doc = doc_with(command=command)
    found = [f for f in lint(doc, nodes=nodes) if f.key == "command"]
    assert bool(found) is flagged, found
    if flagged:
        assert found[0].severity is Severity.WARNING and "cannot keep quorum when one is lost" in found[0].message


def test_the_shipped_stack_warns_of_its_single_consul_server_only_on_several_nodes():
    from pathlib import Path

    from fleet.stackfile import load
    doc = load([Path(__file__).resolve().parents[2] / "docker-stack.yml"])
    assert not [f for f in lint(doc, nodes=1, managers=1) if f.key == "command"]
    (single,) = [f for f in lint(doc, nodes=3, managers=1) if f.key == "command"]
    assert single.service == "consul" and single.message.startswith("1 Consul server(s) (-bootstrap-expect=1) on a "
                                                                     "Swarm of 3 nodes")
    assert "FLEET_CONSUL_SERVERS=3" in single.message
    # three servers, one on each of 3 managers (a global service): no quorum, volume or placement warning
    three = load([Path(__file__).resolve().parents[2] / "docker-stack.yml"], env={**os.environ, "FLEET_CONSUL_SERVERS": "3"})
    assert not [f for f in lint(three, nodes=3, managers=3) if f.service.startswith("consul")]


def test_only_a_consul_agents_server_flag_counts():
    doc = doc_with(command=["my-app", "-server", "-bootstrap-expect=1"])  # not `consul agent -server`
    assert not [f for f in lint(doc, nodes=3) if f.key == "command"]


def test_an_unencrypted_overlay_is_a_warning_on_several_nodes_only():
    from pathlib import Path

    from fleet.stackfile import load
    root = Path(__file__).resolve().parents[2]
    doc = load([root / "docker-stack.yml"])
    assert not [f for f in lint(doc, nodes=1, managers=1) if f.service == "(networks)"]
    (found,) = [f for f in lint(doc, nodes=3, managers=3) if f.service == "(networks)"]
    assert found.severity is Severity.WARNING and "stacks/encrypted-network.yml" in found.message
    encrypted = load([root / "docker-stack.yml", root / "stacks/encrypted-network.yml"])
    assert encrypted["networks"]["default"]["driver_opts"] == {"encrypted": "true"}
    assert not [f for f in lint(encrypted, nodes=3, managers=3) if f.service == "(networks)"]


def test_fleet_reads_the_consul_servers_from_the_managers_unless_the_user_set_them():
    from fleet.stackfile import servers_env
    assert servers_env({"PATH": "/bin"}, 3) == {"PATH": "/bin", "FLEET_CONSUL_SERVERS": "3"}
    assert servers_env({"FLEET_CONSUL_SERVERS": "1"}, 3) == {"FLEET_CONSUL_SERVERS": "1"}  # the user's, judged by lint
    assert servers_env({"FLEET_CONSUL_SERVERS": ""}, 5)["FLEET_CONSUL_SERVERS"] == "5"  # empty is unset, as compose reads it
    assert servers_env({}, None) == {}  # no engine: the file's default


@pytest.mark.parametrize("managers,given,key,says", [
    (1, None, None, None),
    (3, None, None, None),  # fleet deploy's own reading: three servers, each expecting three
    (5, None, None, None),
    (2, None, "deploy.mode", "2 Consul servers would run: an even count"),
    (4, None, "deploy.mode", "docker node promote <node>"),
    (3, "1", "command", "groups of 1 may each elect a leader of their own"),  # issue 44: three Raft clusters
    (5, "2", "command", "-bootstrap-expect=5"),
    (1, "3", "command", "no leader is ever elected"),
    (5, "3", None, None),  # a majority of five: no two groups of three
])
def test_consul_servers_that_could_split_or_never_elect_are_an_error(managers, given, key, says):
    """The shipped stack as fleet deploy reads it on a Swarm of `managers` (a server on each), with
    FLEET_CONSUL_SERVERS as the user `given` it."""
    from pathlib import Path

    from fleet.stackfile import load, servers_env
    env = {k: v for k, v in os.environ.items() if k != "FLEET_CONSUL_SERVERS"}
    env |= {"FLEET_CONSUL_SERVERS": given} if given else {}
    doc = load([Path(__file__).resolve().parents[2] / "docker-stack.yml"], servers_env(env, managers))
    errors = [f for f in lint(doc, nodes=managers, managers=managers) if f.severity is Severity.ERROR]
    assert [(f.service, f.key) for f in errors] == ([("consul", key)] if key else []), errors
    assert not key or says in errors[0].message
