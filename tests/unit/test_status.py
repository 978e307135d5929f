"""`fleet status` when Consul is lost between its first answer and the rollouts' read: the view says so
in `consul_error` (exit 0, as for any Consul error), never a traceback."""
import socket

import consul

from fleet import status as status_module
from fleet.adapters.consul import Catalog


class NoServices:
    """A Swarm with one ready node and no service of the stack."""
    def nodes(self):
        return [{"hostname": "node1", "role": "manager", "state": "ready", "availability": "active", "address": ""}]

    def services(self, stack):
        return []


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # closed again once the socket is: nothing listens there


def test_consul_lost_before_the_rollouts_are_read_is_a_consul_error_not_a_traceback(monkeypatch):
    monkeypatch.setattr(status_module, "check_access", lambda c: None)  # it answered, then went away
    catalog = Catalog(consul.Consul(host="127.0.0.1", port=closed_port()))
    doc = status_module.status(NoServices(), catalog, "fleet")
    assert doc["rollouts"] == [] and doc["consul_error"].startswith("Consul does not answer"), doc
    assert doc["nodes"][0]["flag"] is None


# the table a person reads (issue 40): legible at 80 columns, nothing cut -----------------------------------
def _task(name: str, tid: str, node: str, image: str, state: str = "running", consul: dict | None = None,
          flag: str | None = None) -> dict:
    return {"id": tid, "name": name, "node": node, "node_flag": flag, "image": image, "digest": None, "state": state,
            "desired_state": "running", "error": "", "health": "healthy" if state == "running" else "starting",
            "consul": consul}


def _service(name: str, image: str, tasks: list, version=None, role=None, update=None) -> dict:
    return {"name": name, "image": image, "version": version, "role": role, "update": {"state": update},
            "replicas": {"running": sum(t["state"] == "running" for t in tasks), "desired": len(tasks)}, "tasks": tasks}


IMAGE = "127.0.0.1:31500/fleet/inference:2"
CHECK = {"id": "x", "status": "passing", "version": "2", "output": "HTTP GET http://10.0.7.9:8001/ready: 200 OK " * 3}
STATUS = {"stack": "fleettest-visible", "consul_error": None, "rollouts": [], "nodes": [], "control_plane": None,
          "services": [
              _service("fleettest-visible_consul-agent", "fleet/consul:1.8.7",
                       [_task("fleettest-visible_consul-agent", f"{n}bcdefghijklmnopqrstuvwxy", f"fleet-node{n}",
                              "fleet/consul:1.8.7", flag="drained" if n == 3 else None) for n in (2, 3)]),
              _service("fleettest-visible_inference", IMAGE, [
                  _task("fleettest-visible_inference.1", "hheq0nyk7a3bwse8qhqlcc7pj", "fleet-node2", IMAGE,
                        consul=CHECK),
                  _task("fleettest-visible_inference.2", "zcjessn9g4k566b8b9inketmk", "fleet-node3",
                        "127.0.0.1:31500/fleet/inference:1", state="starting",
                        consul={**CHECK, "status": "critical", "version": "1"})], version="2", role="stable",
                  update="rollback_completed")]}
CELLS = ["fleettest-visible_consul-agent", "fleet/consul:1.8.7", "2bcdefghijkl", "3bcdefghijkl", "fleet-node2",
         "(drained)", "fleettest-visible_inference", IMAGE, "v2", "stable", "1/2 running", "update rollback_completed",
         ".1", ".2", "hheq0nyk7a3b", "zcjessn9g4k5", "starting (desired running)", "127.0.0.1:31500/fleet/inference:1",
         "healthy", "passing", "critical v1"]


def test_the_status_table_is_legible_at_80_and_120_columns_nothing_cut():
    """Every cell whole (no ellipsis, no word folded), on a Rich console of that width: a terminal's."""
    import io

    from rich.console import Console

    from fleet.cli import status_table
    for width in (80, 120):
        buffer = io.StringIO()
        Console(file=buffer, width=width).print(status_table(STATUS))
        text = buffer.getvalue()
        assert "…" not in text and max(map(len, text.splitlines())) <= width, text
        assert whole(CELLS, text) == [], text


def whole(cells: list[str], text: str) -> list[str]:
    """The cells some word of which is not in `text` whole (a cell may wrap at its spaces, never inside a word)."""
    words = set(text.split())
    return [c for c in cells if not all(w in words or w in text for w in c.split())]


def test_the_status_table_on_a_pipe_with_columns_80_is_as_legible():
    import json
    import subprocess
    import sys
    code = ("import json, sys; from fleet.cli import render; render(json.loads(sys.stdin.read()))")
    p = subprocess.run([sys.executable, "-c", code], input=json.dumps(STATUS), capture_output=True, text=True,
                       env={"COLUMNS": "80", "PATH": "/usr/bin:/bin", "TERM": "dumb"}, timeout=60)
    assert p.returncode == 0, p.stderr
    assert "…" not in p.stdout and max(map(len, p.stdout.splitlines())) <= 80, p.stdout
    assert whole(CELLS, p.stdout) == [], p.stdout


def test_history_lines_keep_every_image_and_reason_whole_at_any_width():
    from fleet.cli import history_lines
    from fleet.core.records import Revision
    records = [Revision(1, "registry.example:5000/team/fleet-inference:2024-06-01-long", "deployed",
                        "running before fleet's first rollout", ended_at=1.7e9),
               Revision(2, "fleet/inference:2-demo", "promoted", "all steps passed (50% passed: " + "x" * 300 + ")",
                        ended_at=1.7e9 + 60),
               Revision(3, "fleet/inference:3", "in_progress")]
    lines = history_lines("fleet_inference", records, 2)
    text = "\n".join(lines)
    assert lines[0] == "fleet_inference" and lines[1].split() == ["rev", "outcome", "ended", "image"]
    for h in records:
        assert h.image in text and (h.reason in text)
    row = next(line for line in lines if "2-demo" in line)
    assert row.split()[:3] == ["2", "*", "promoted"]
    assert lines[-1].split()[-1] == "fleet/inference:3" and "-" in lines[-1].split()
