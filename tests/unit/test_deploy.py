"""A failed deploy puts the stack back (fleet/deploy.py's `restore`), over a fake Swarm that applies each
write to its services: what the test checks is the stack left behind, not the calls made."""
from dataclasses import replace

from fleet.core.tasks import Service
from fleet.deploy import restore


class FakeSwarm:
    """A stack's services by name; `put_spec` gives one that spec (a new version, as Swarm would), and
    `rollback` gives it its PreviousSpec: what the test checks is the specs left behind."""

    def __init__(self, services: list[Service], previous: dict[str, dict] | None = None):
        self.by_name, self.previous, self.writes = {s.name: s for s in services}, previous or {}, []

    def services(self, stack):
        return list(self.by_name.values())

    def remove(self, name):
        self.writes.append(("remove", name))
        del self.by_name[name]

    def stack_remove(self, stack):
        self.by_name.clear()

    def put_spec(self, name, spec):
        self.writes.append(("put_spec", name))
        svc = self.by_name[name]
        self.by_name[name] = replace(svc, version=svc.version + 1, spec=spec, image=spec["image"])

    def rollback(self, name):
        self.writes.append(("rollback", name))
        svc = self.by_name[name]
        self.by_name[name] = replace(svc, version=svc.version + 1, spec=self.previous[name],
                                     update_state="rollback_completed")


def service(name: str, version: int, image: str = "fleet/inference:2", update_state: str | None = None,
            labels: dict | None = None) -> Service:
    return Service(id=name, name=name, version=version, labels=labels or {}, image=image, env=(), replicas=2,
                   update_state=update_state, spec={"image": image, "labels": labels or {}})


def test_a_changed_service_gets_the_spec_it_had_a_new_one_goes_and_a_rewritten_one_stays():
    found = {"s_gateway": service("s_gateway", 5), "s_inference": service("s_inference", 7, "fleet/inference:1")}
    # docker stack deploy wrote every service again (new versions), changed one, and added one
    swarm = FakeSwarm([service("s_gateway", 6), service("s_inference", 8, "fleet/inference:3", "updating"),
                       service("s_extra", 1)])
    restore(swarm, "s", found)
    assert {n: s.spec for n, s in swarm.by_name.items()} == {n: s.spec for n, s in found.items()}
    assert swarm.writes == [("put_spec", "s_inference"), ("remove", "s_extra")], "the gateway is left alone"


def test_the_spec_found_goes_back_not_swarms_previous_one():
    """Swarm's PreviousSpec is one update back: after a promotion (v1 -> v3) and a deploy that failed
    halfway, `docker service rollback` would give back v1, not the promoted v3 the deploy found."""
    found = {"s_inference": service("s_inference", 9, "fleet/inference:3")}
    swarm = FakeSwarm([service("s_inference", 10, "fleet/inference:4", "updating")],
                      previous={"s_inference": {"image": "fleet/inference:1", "labels": {}}})
    restore(swarm, "s", found)
    assert swarm.by_name["s_inference"].spec == found["s_inference"].spec


def test_a_service_swarm_already_rolled_back_to_the_spec_found_is_left_alone():
    found = {"s_inference": service("s_inference", 7, "fleet/inference:1")}
    swarm = FakeSwarm([service("s_inference", 9, "fleet/inference:1", "rollback_started")])
    restore(swarm, "s", found)
    assert swarm.writes == [] and swarm.by_name["s_inference"].update_state == "rollback_started"


def test_a_rollouts_canary_is_never_removed_by_a_restore():
    found = {"s_inference": service("s_inference", 7)}
    canary = service("s_inference-canary", 1, labels={"fleet.canary-of": "s_inference"})
    swarm = FakeSwarm([service("s_inference", 7), canary])
    restore(swarm, "s", found)
    assert set(swarm.by_name) == {"s_inference", "s_inference-canary"} and swarm.writes == []


def test_a_stack_that_did_not_exist_before_is_removed_whole():
    swarm = FakeSwarm([service("s_gateway", 1), service("s_inference", 1)])
    restore(swarm, "s", {})
    assert swarm.by_name == {}


class FakeStore:
    def __init__(self, history=()):
        self.revisions = list(history)

    def history(self):
        return list(self.revisions)

    def record(self, revision):
        self.revisions.append(revision)


def test_a_rebuilt_tag_rolled_out_by_swarm_is_a_revision_with_the_digest_it_runs():
    """A rebuilt tag changes the digest only: still a new build in the history, pinned to what now runs, so
    that `fleet rollback --to` finds the build before it."""
    from types import SimpleNamespace

    from fleet.core.changes import DeployPlan, How, KeyChange, ServiceChange
    from fleet.core.records import Revision
    from fleet.deploy import _record
    old, new = "reg.example/fleet/inference:next@sha256:aaa", "reg.example/fleet/inference:next@sha256:bbb"
    swarm = FakeSwarm([service("s_inference", 9, new)])
    swarm.describe = lambda name: swarm.by_name.get(name)
    change = ServiceChange("inference", How.ROLLING, (KeyChange("digest", "sha256:aaa", "sha256:bbb"),))
    store = FakeStore([Revision(1, "reg.example/fleet/inference:next", "deployed", pinned=old)])
    s = SimpleNamespace(swarm=swarm, stack="s", plan=DeployPlan((change,)),
                        doc={"services": {"inference": {"image": "reg.example/fleet/inference:next"}}})
    _record(s, {"inference": store}, started=1.0)
    assert [(r.revision, r.pinned) for r in store.revisions] == [(1, old), (2, new)]


def test_a_gateway_that_routes_to_no_replica_yet_keeps_the_deploy_waiting():
    """Swarm and Consul converged, but the gateway's next DNS lookup is not due yet: the gateway's verdict
    stays progressing, naming what its ops port answered, until it routes (a local HTTP server plays it)."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
    from types import SimpleNamespace

    from fleet.core.convergence import State, Verdict
    from fleet.deploy import _routed
    answers = [503, 200]

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            code = answers.pop(0) if self.path == "/ready" else 404
            body = b"No server is available to handle this request." if code == 503 else b"ready"
            self.send_response(code)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}"
        asked = []
        swarm = SimpleNamespace(published_urls=lambda name, port: asked.append((name, port)) or [url])
        s = SimpleNamespace(swarm=swarm, stack="s")
        verdicts = {"s_gateway": Verdict(State.CONVERGED, "1/1 tasks running", 1, 1),
                    "s_inference": Verdict(State.CONVERGED, "2/2 tasks healthy, 2 passing in Consul", 2, 2, 2)}
        first = _routed(s, verdicts)
        assert first["s_gateway"].state is State.PROGRESSING and "answered 503: No server is available" in \
            first["s_gateway"].reason and first["s_inference"] == verdicts["s_inference"]
        assert _routed(s, verdicts) == verdicts and asked == [("s_gateway", 8081)] * 2
        # nothing passing to route to, or no gateway in the stack: not asked at all
        idle = {**verdicts, "s_inference": Verdict(State.CONVERGED, "0/0 tasks", 0, 0, 0)}
        assert _routed(s, idle) == idle and _routed(s, {"s_inference": verdicts["s_inference"]}) and len(asked) == 2
    finally:
        server.shutdown()


def test_a_deploy_that_times_out_says_what_is_wrong_with_consuls_control_plane(monkeypatch):
    """Servers that each elected themselves keep replicas from passing; the deploy's last words say so."""
    from types import SimpleNamespace

    import fleet.deploy as deploy
    from fleet.adapters.consul import ConsulUnavailable
    split = ({"Servers": [{"Node": "n2", "Address": "10.0.2.4:8300", "Leader": True, "Voter": True}]},
             [{"Name": n, "Addr": a, "Status": 1, "Tags": {"role": "consul", "port": "8300"}}
              for n, a in (("n1", "10.0.2.3"), ("n2", "10.0.2.4"))])
    s = SimpleNamespace(catalog=SimpleNamespace(consul=object()))
    monkeypatch.setattr(deploy, "raft", lambda c: split)
    assert deploy._plane(s).startswith("; Consul's control plane: server n1 (10.0.2.3:8300) is alive but not in "
                                       "this Raft cluster")
    monkeypatch.setattr(deploy, "raft", lambda c: ({"Servers": split[0]["Servers"]}, split[1][1:]))
    assert deploy._plane(s) == ""  # one server, its own leader: nothing to add

    def refused(c):
        raise ConsulUnavailable("Consul refused fleet's token")
    monkeypatch.setattr(deploy, "raft", refused)
    assert "its Raft configuration cannot be read: Consul refused" in deploy._plane(s)
    assert deploy._plane(SimpleNamespace(catalog=None)) == ""
