"""Every stack file and variant is accepted by the docker CLI's own compose conversion, and lints clean."""
import os
import subprocess

import pytest

from fleet import stackfile
from tests.kit.stacks import ROOT

VARIANTS = [
    ("base", ["docker-stack.yml"], {}),
    ("gpu", ["docker-stack.yml", "stacks/gpu.yml"], {}),
    ("external-consul", ["docker-stack.yml", "stacks/external-consul.yml"],
     {"CONSUL_RETRY_JOIN": "consul-1 consul-2", "CONSUL_NETWORK": "consul-servers",
      "CONSUL_NETWORK_CIDR": "10.251.0.0/24", "FLEET_CONSUL_SECRETS": "{tmp}"}),
]
EXTERNAL = dict(VARIANTS[2][2])


@pytest.mark.parametrize("files,env", [v[1:] for v in VARIANTS], ids=[v[0] for v in VARIANTS])
def test_docker_stack_config_accepts_it_and_lint_finds_no_error(files, env, tmp_path):
    env = {k: v.replace("{tmp}", str(tmp_path)) for k, v in env.items()}
    credentials(tmp_path)
    args = [a for f in files for a in ("-c", str(ROOT / f))]
    proc = subprocess.run(["docker", "stack", "config", *args], capture_output=True, text=True,
                          env={**os.environ, **env})
    assert proc.returncode == 0, proc.stderr
    doc = stackfile.load([ROOT / f for f in files], env={**os.environ, **env})
    assert not [f for f in stackfile.lint(doc, routing_mesh=False) if f.severity is stackfile.Severity.ERROR]


def test_gpu_overlay_reserves_a_gpu_and_selects_cuda():
    doc = stackfile.load([ROOT / "docker-stack.yml", ROOT / "stacks/gpu.yml"])
    inference = doc["services"]["inference"]
    assert inference["environment"]["FLEET_DEVICE"] == "cuda"
    spec = inference["deploy"]["resources"]["reservations"]["generic_resources"][0]["discrete_resource_spec"]
    assert spec == {"kind": "NVIDIA-GPU", "value": 1}


def credentials(directory):
    """A directory of an operator's Consul credentials, as stacks/external-consul.yml names them."""
    for name in ("ca.pem", "server.pem", "server-key.pem", "gossip.key", "agent.token", "dns.token", "replica.token"):
        (directory / name).write_text(f"{name}\n")


def test_the_external_variant_makes_every_agent_a_client_of_the_operators_servers_with_their_tokens(tmp_path):
    credentials(tmp_path)
    env = {**os.environ, **EXTERNAL, "FLEET_CONSUL_SECRETS": str(tmp_path)}
    doc = stackfile.load([ROOT / "docker-stack.yml", ROOT / "stacks/external-consul.yml"], env=env)
    for name in ("consul", "consul-agent"):  # a client agent joined to the operator's servers, on their network
        svc = doc["services"][name]
        assert svc["environment"]["FLEET_CONSUL_EXTERNAL"] == "1"
        assert svc["environment"]["FLEET_CONSUL_JOIN"] == "consul-1 consul-2"
        assert "-server" not in svc["command"] and not any("bootstrap" in a for a in svc["command"])
        assert any('"10.251.0.0/24"' in a for a in svc["command"] if a.startswith("-bind="))
        assert set(svc["networks"]) == {"default", "consul-servers"}
    for name in ("gateway", "inference"):  # each reaches its own node's agent at its address on that network
        assert set(doc["services"][name]["networks"]) == {"default", "consul-servers"}
    assert doc["networks"]["consul-servers"] == {"external": True, "name": "consul-servers"}
    # three tokens, each a Swarm secret from the operator's directory, none an environment variable
    secrets = doc["secrets"]
    for secret, file in (("consul_agent_token", "agent.token"), ("consul_dns_token", "dns.token"),
                         ("consul_replica_token", "replica.token"), ("consul_gossip_key", "gossip.key"),
                         ("consul_ca", "ca.pem")):
        assert secrets[secret]["file"] == str(tmp_path / file), secret
    # the management and fleet tokens are the operator's own: the stack is handed only the read-only one there
    assert secrets["consul_master_token"]["file"] == secrets["consul_fleet_token"]["file"] == str(tmp_path / "dns.token")
    inference = doc["services"]["inference"]
    assert inference["environment"]["CONSUL_HTTP_TOKEN_FILE"] == "/run/secrets/consul_replica_token"
    assert not any("TOKEN" in k and "FILE" not in k for svc in doc["services"].values()
                   for k in (svc.get("environment") or {}))
    assert "CONSUL_HTTP_ADDR" not in doc["services"]["consul"].get("environment", {})  # it registers nothing


def test_the_external_variant_says_what_is_missing(tmp_path):
    for missing in EXTERNAL:
        env = {k: v for k, v in {**os.environ, **EXTERNAL, "FLEET_CONSUL_SECRETS": str(tmp_path)}.items()
               if k != missing}
        proc = subprocess.run(["docker", "stack", "config", "-c", str(ROOT / "docker-stack.yml"), "-c",
                               str(ROOT / "stacks/external-consul.yml")], capture_output=True, text=True, env=env)
        assert proc.returncode != 0 and f"set {missing}" in proc.stderr, (missing, proc.stderr)


def test_replicas_run_hardened_in_the_file():
    svc = stackfile.load([ROOT / "docker-stack.yml"])["services"]["inference"]
    assert svc["read_only"] is True and svc["cap_drop"] == ["ALL"]
    assert svc["deploy"]["resources"]["limits"]["memory"] and svc["deploy"]["resources"]["limits"]["cpus"]
    assert any(v["type"] == "tmpfs" and v["target"] == "/tmp" for v in svc["volumes"])
