"""Every stack file and variant is accepted by the docker CLI's own compose conversion, and lints clean."""
import os
import subprocess

import pytest

from fleet import stackfile
from tests.real.conftest import ROOT

VARIANTS = [
    ("base", ["docker-stack.yml"], {}),
    ("gpu", ["docker-stack.yml", "stacks/gpu.yml"], {}),
    ("external-consul", ["docker-stack.yml", "stacks/external-consul.yml"], {"CONSUL_RETRY_JOIN": "consul.internal"}),
]


@pytest.mark.parametrize("files,env", [v[1:] for v in VARIANTS], ids=[v[0] for v in VARIANTS])
def test_docker_stack_config_accepts_it_and_lint_finds_no_error(files, env):
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
