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
     {"CONSUL_RETRY_JOIN": "consul.internal", "CONSUL_TOKEN_FILE": "{tmp}/consul.token"}),
]


@pytest.mark.parametrize("files,env", [v[1:] for v in VARIANTS], ids=[v[0] for v in VARIANTS])
def test_docker_stack_config_accepts_it_and_lint_finds_no_error(files, env, tmp_path):
    env = {k: v.replace("{tmp}", str(tmp_path)) for k, v in env.items()}
    (tmp_path / "consul.token").write_text("a-token\n")
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


def test_the_external_consul_token_is_a_swarm_secret_not_an_environment_variable(tmp_path):
    (tmp_path / "t").write_text("a-token\n")
    doc = stackfile.load([ROOT / "docker-stack.yml", ROOT / "stacks/external-consul.yml"],
                         env={**os.environ, "CONSUL_RETRY_JOIN": "consul.internal", "CONSUL_TOKEN_FILE": str(tmp_path / "t")})
    for name in ("consul", "consul-agent", "inference"):
        svc = doc["services"][name]
        assert "CONSUL_HTTP_TOKEN" not in (svc.get("environment") or {})
        assert "consul_token" in [s["source"] for s in svc["secrets"]]
    assert doc["services"]["inference"]["environment"]["CONSUL_HTTP_TOKEN_FILE"] == "/run/secrets/consul_token"
    for name in ("consul", "consul-agent"):  # every agent a client of the user's servers, with their token
        assert "-token-file=/run/secrets/consul_token" in doc["services"][name]["healthcheck"]["test"]
        assert "-server" not in doc["services"][name]["command"]
        assert "-retry-join=consul.internal" in doc["services"][name]["command"]
    # the consul service itself registers nothing: fleet must not wait for it in Consul's catalog
    assert "CONSUL_HTTP_ADDR" not in doc["services"]["consul"].get("environment", {})
    assert not [f for f in stackfile.lint(doc) if "TOKEN" in f.key]


def test_replicas_run_hardened_in_the_file():
    svc = stackfile.load([ROOT / "docker-stack.yml"])["services"]["inference"]
    assert svc["read_only"] is True and svc["cap_drop"] == ["ALL"]
    assert svc["deploy"]["resources"]["limits"]["memory"] and svc["deploy"]["resources"]["limits"]["cpus"]
    assert any(v["type"] == "tmpfs" and v["target"] == "/tmp" for v in svc["volumes"])
