"""`make demo`'s last step (scripts/demo.sh) on a stack of its own, then every command it prints, each run as
printed from the checkout in a shell with none of Consul's, Prometheus's or fleet's variables set: the
newcomer's first commands (issue 40)."""
import json
import os
import subprocess

from tests.kit.stacks import ROOT, own_stack

NAME = "fleettest-demo"
CONSUL_PORT, GATEWAY_PORT = 19700, 19280
RETAGGED = "fleet/inference:2-demo"


def a_fresh_shell() -> dict:
    """The environment of a shell where nothing was sourced: no CONSUL_*, no FLEET_* at all."""
    return {k: v for k, v in os.environ.items() if not k.startswith(("CONSUL_", "FLEET_"))}


def test_the_demo_deploys_and_every_command_it_prints_works_as_printed(swarm):
    ports = {"FLEET_CONSUL_PORT": CONSUL_PORT, "FLEET_GATEWAY_PORT": GATEWAY_PORT,
             "FLEET_GATEWAY_OPS_PORT": GATEWAY_PORT + 1, "FLEET_PROMETHEUS_PORT": GATEWAY_PORT + 10}
    with own_stack(swarm, NAME, CONSUL_PORT, GATEWAY_PORT):
        try:
            demo = subprocess.run(["bash", "scripts/demo.sh"], cwd=ROOT, capture_output=True, text=True, timeout=600,
                                  env={**a_fresh_shell(), "FLEET_STACK": NAME, **{k: str(v) for k, v in ports.items()}})
            assert demo.returncode == 0, demo.stderr[-3000:]
            printed = demo.stdout.split("these work as printed", 1)[1]
            commands = [line.strip() for line in printed.splitlines() if line.startswith("  ")]
            assert len(commands) == 8 and commands[-1] == f"docker stack rm {NAME}", commands
            ran = []
            for command in commands:
                p = subprocess.run(["bash", "-c", command], cwd=ROOT, env=a_fresh_shell(), capture_output=True,
                                   text=True, timeout=400)
                assert p.returncode == 0, (command, p.stdout[-2000:], p.stderr[-3000:])
                ran.append((command, p))
        finally:
            subprocess.run(["docker", "rmi", RETAGGED], capture_output=True)
    print("\nthe demo's commands, run as printed:\n" + "\n".join(f"  {c[:100]}" for c in commands))

    def output(part: str) -> subprocess.CompletedProcess:
        return next(p for command, p in ran if part in command)
    status = output("fleet status")
    assert f"stack {NAME}" in status.stdout and "fleet: using the stack's Consul CA and fleet's token" in status.stderr
    history = output("fleet history").stdout
    assert RETAGGED in history and "promoted" in history, history
    assert json.loads(output("/predict").stdout)["labels"] == ["benign"]
    assert len(json.loads(output("/v1/health/service/").stdout)) >= 1  # the replicas, read with fleet's token
    assert json.loads(output("api/v1/query").stdout)["status"] == "success"
