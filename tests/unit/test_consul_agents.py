"""Several Consul agents, one cluster: fleet's client moves on to the next agent when one does not answer
(fleet/adapters/consul.py), and the gateway's list of agents puts its own node's first
(stacks/gateway/agents.py). Over real sockets on 127.0.0.1: a port nobody listens on, a small HTTP server
and a small DNS server."""
import importlib.util
import json
import socket
import struct
import threading
from contextlib import contextmanager
from pathlib import Path

import pytest

from fleet.adapters.consul import ConsulUnavailable, call, client
from fleet.core.control import ControlRequest
from tests.kit.helpers import Quiet, serving

ROOT = Path(__file__).resolve().parents[2]


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # closed when the block ends: connections are refused


@contextmanager
def agent():
    """An HTTP server that answers Consul's KV read of any key with one value; yields its URL and a count."""
    seen = []

    class Handler(Quiet):
        def do_GET(self):
            seen.append(self.path)
            self.reply(200, json.dumps([{"Key": "k", "Value": "dg==", "ModifyIndex": 7}]).encode(), X_Consul_Index="7")

    with serving(Handler) as port:
        yield f"http://127.0.0.1:{port}", seen


def test_a_call_the_first_agent_refuses_is_answered_by_the_next_and_the_client_stays_there():
    with agent() as (url, seen):
        c = client(f"http://127.0.0.1:{closed_port()},{url}", token="t")
        assert c.kv.get("k")[1]["Value"] == b"v"
        assert c.http.base_uri == url and len(seen) == 1
        assert c.kv.get("k")[1]["Value"] == b"v"  # no second try of the dead one
        assert len(seen) == 2


def test_when_no_agent_answers_the_error_is_consul_unavailable():
    c = client(f"http://127.0.0.1:{closed_port()},http://127.0.0.1:{closed_port()}", token="t")
    with pytest.raises(ConsulUnavailable, match="Consul does not answer"):
        call(c.kv.get, "k")


def test_one_address_is_a_plain_client():
    c = client("https://127.0.0.1:8501", token="t")
    assert c.http.base_uri == "https://127.0.0.1:8501" and "get" not in vars(c.http)


def gateway_agents():
    spec = importlib.util.spec_from_file_location("gateway_agents", ROOT / "stacks/gateway/agents.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@contextmanager
def dns(records: dict[str, list[str]]):
    """A UDP DNS server on 127.0.0.1 answering A questions from `records` (names without the final dot)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(0.2)
    stopped = threading.Event()

    def serve():
        while not stopped.is_set():
            try:
                query, peer = sock.recvfrom(512)
            except OSError:
                continue
            ident = query[:2]
            at, labels = 12, []
            while query[at]:
                labels.append(query[at + 1:at + 1 + query[at]].decode())
                at += query[at] + 1
            question = query[12:at + 5]
            answers = records.get(".".join(labels), [])
            reply = ident + struct.pack(">HHHHH", 0x8180, 1, len(answers), 0, 0) + question
            for a in answers:
                reply += struct.pack(">HHHIH", 0xC00C, 1, 1, 0, 4) + socket.inet_aton(a)
            sock.sendto(reply, peer)

    threading.Thread(target=serve, daemon=True).start()
    try:
        yield sock.getsockname()[1]
    finally:
        stopped.set()
        sock.close()


def test_the_gateway_finds_its_own_nodes_agent_in_consuls_dns():
    agents = gateway_agents()
    with dns({"node2.node.consul": ["10.0.0.7"], "twice.node.consul": ["10.0.0.8", "10.0.0.9"]}) as port:
        agents.PORT = port
        assert agents.query_a("127.0.0.1", "node2.node.consul") == ["10.0.0.7"]
        assert agents.query_a("127.0.0.1", "twice.node.consul") == ["10.0.0.8", "10.0.0.9"]
        assert agents.query_a("127.0.0.1", "nobody.node.consul") == []
    agents.PORT = closed_port()
    assert agents.query_a("127.0.0.1", "node2.node.consul", timeout=0.2) == []  # no answer: not known


def test_the_gateways_list_puts_its_own_agent_first_and_one_that_refuses_last():
    agents = gateway_agents()
    with socket.socket() as listening:
        listening.bind(("127.0.0.1", 0))
        listening.listen()
        agents.PORT = listening.getsockname()[1]
        assert agents.order(["10.0.0.5", "127.0.0.1"], "127.0.0.1") == ["127.0.0.1", "10.0.0.5"]
        assert agents.order(["127.0.0.1"], None) == ["127.0.0.1"]
    agents.PORT = closed_port()
    assert agents.order(["127.0.0.2", "127.0.0.1"], "127.0.0.1") == ["127.0.0.2", "127.0.0.1"]  # own refuses


def test_threads_that_find_one_agent_dead_never_send_each_other_back_to_it():
    """A call that fails on a dead agent after another thread already moved the client on leaves the client
    where that thread put it, and is retried there; no call tries an agent twice."""
    import requests
    from fleet.adapters.consul import failover

    class Http:
        base_uri = "a"

        def __init__(self):
            self.tried = []

        def get(self, path):
            self.tried.append(self.base_uri)
            if self.base_uri == "a":
                self.base_uri = "c"  # meanwhile another thread, failing on "a" too, moved the client to "c"
                raise requests.ConnectionError("a is dead")
            if self.base_uri == "c":
                raise requests.ConnectionError("c is dead too")
            return self.base_uri

        put = delete = post = get

    http = Http()
    failover(http, ["a", "b", "c"])
    assert http.get("k") == "b"
    assert http.tried == ["a", "c", "b"] and http.base_uri == "b"  # "a" never again, "b" last and kept
    http.tried.clear()
    assert http.get("k") == "b" and http.tried == ["b"]


@contextmanager
def electing(for_calls: int):
    """An agent whose servers have no leader for its first `for_calls` calls (Consul's 500 "No cluster leader"),
    then a KV that takes writes and answers reads; yields its URL and the methods it saw."""
    seen = []

    class Handler(Quiet):
        def answer(self):
            seen.append(self.command)
            length = int(self.headers.get("Content-Length") or 0)
            self.rfile.read(length)
            code, body = (500, b"No cluster leader") if len(seen) <= for_calls else (
                200, json.dumps([{"Key": "k", "Value": "dg==", "ModifyIndex": 7}]).encode()
                if self.command == "GET" else b"true")
            self.reply(code, body, X_Consul_Index="7")
        do_GET = do_PUT = answer

    with serving(Handler) as port:
        yield f"http://127.0.0.1:{port}", seen


def test_a_store_with_patience_waits_out_an_election_for_reads_and_writes():
    from fleet.adapters.store import Store
    with electing(for_calls=2) as (url, seen):
        store = Store(client(url, token="t"), "s", "svc", patience=10)
        assert store.holder() is None  # a read: two 500s, then the answer
        assert seen == ["GET", "GET", "GET"]
    with electing(for_calls=2) as (url, seen):
        Store(client(url, token="t"), "s", "svc", patience=10).request(ControlRequest("promote", 1, "x"))
        assert seen == ["PUT", "PUT", "PUT"]  # a write too


def test_without_patience_or_past_it_an_election_is_consul_unavailable():
    from fleet.adapters.store import Store
    with electing(for_calls=1000) as (url, seen):
        with pytest.raises(ConsulUnavailable, match="No cluster leader"):
            Store(client(url, token="t"), "s", "svc").holder()
        assert len(seen) == 1
        with pytest.raises(ConsulUnavailable):
            Store(client(url, token="t"), "s", "svc", patience=1.0).holder()
        assert 2 < len(seen) < 20  # tried again, within its patience
        before = len(seen)
        with pytest.raises(ConsulUnavailable):  # the control key is an evidence source's query: it never waits
            Store(client(url, token="t"), "s", "svc", patience=10).control(wait="1s")
        assert len(seen) == before + 1


def test_a_token_refused_mid_way_is_waited_out_then_named():
    """A server just restarted refuses every token until it has a leader: within its patience a catalog asks
    again, and past it names the refusal."""
    from fleet.adapters.consul import Catalog
    seen, refusals = [], [2]

    class Handler(Quiet):
        def do_GET(self):
            seen.append(self.path)
            if refusals[0] > 0:
                refusals[0] -= 1
                self.reply(403, b"ACL not found")
            else:
                self.reply(200, b"[]", X_Consul_Index="7")

    with serving(Handler) as port:
        assert Catalog(client(f"http://127.0.0.1:{port}", token="t"), patience=10).instances("svc") == []
        assert len(seen) == 3
        refusals[0] = 10**6  # refused from now on
        with pytest.raises(ConsulUnavailable, match="refused fleet's token"):
            Catalog(client(f"http://127.0.0.1:{port}", token="t"), patience=1.0).instances("svc")


HANDLER_LATER = """
import signal, sys
print("started", flush=True)
sys.stdin.readline()
signal.signal(signal.SIGHUP, lambda *_: print("hup", flush=True))
print("handler", flush=True)
while True:
    signal.pause()
"""


def test_the_agents_list_reaches_dnsmasq_only_once_it_can_take_the_signal(tmp_path):
    """fleet-agents sends dnsmasq SIGHUP when the list changes; one sent before dnsmasq installed its handler
    killed it (the default action) and left the gateway without DNS. A process that installs its handler only when
    told to stands in for a slow dnsmasq: it lives, the change waits, then arrives with one SIGHUP."""
    import subprocess
    import sys
    agents = gateway_agents()
    servers = tmp_path / "dns-servers"
    servers.write_text("server=/consul/10.9.9.9#8600\n")  # what dnsmasq started with: the list then changes
    assert agents.listed(str(servers)) == ["10.9.9.9"]
    slow = subprocess.Popen([sys.executable, "-c", HANDLER_LATER], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            text=True)
    follower = None
    try:
        assert slow.stdout.readline() == "started\n"
        assert not agents.catches_hangup(slow.pid)
        follower = subprocess.Popen([sys.executable, str(ROOT / "stacks/gateway/agents.py"), str(servers),
                                     str(slow.pid)], env={"CONSUL_DNS_HOST": "localhost", "PATH": "/usr/bin:/bin"},
                                    stderr=subprocess.PIPE, text=True)
        with pytest.raises(subprocess.TimeoutExpired):  # two of the follower's rounds: not signalled, not killed
            slow.wait(timeout=2.5)
        assert agents.listed(str(servers)) == ["10.9.9.9"]
        slow.stdin.write("\n")
        slow.stdin.flush()
        assert slow.stdout.readline() == "handler\n"
        assert agents.catches_hangup(slow.pid)
        assert slow.stdout.readline() == "hup\n"  # blocks until the change arrives (the test's timeout bounds it)
        assert agents.listed(str(servers)) == ["127.0.0.1"]
        assert slow.poll() is None
    finally:
        for p in (follower, slow):
            if p is not None:
                p.kill()
                p.wait()
