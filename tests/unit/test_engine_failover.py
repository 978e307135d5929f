"""Several Swarm managers' engines in DOCKER_HOST, comma-separated: fleet's engine client moves on to the next
when one does not answer, and rides out a Swarm electing a leader (fleet/adapters/swarm.py). Over real sockets
on 127.0.0.1: a port nobody listens on, and small HTTP servers answering as an engine would."""
import json
import socket
from contextlib import contextmanager

import pytest

from fleet.adapters import swarm as swarm_adapter
from fleet.adapters.swarm import EngineUnavailable, Swarm
from tests.kit.helpers import Quiet, serving


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def engine(unled_for: int = 0):
    """An engine answering /info (a Swarm manager) after `unled_for` answers of 503 "no leader"; yields its
    address (tcp://) and the paths it was asked."""
    seen = []

    class Handler(Quiet):
        def do_GET(self):
            seen.append(self.path)
            code, doc = (503, {"message": "rpc error: The swarm does not have a leader"}) if len(seen) <= unled_for \
                else (200, {"Swarm": {"LocalNodeState": "active", "ControlAvailable": True}})
            self.reply(code, json.dumps(doc).encode(), Content_Type="application/json")

    with serving(Handler) as port:
        yield f"tcp://127.0.0.1:{port}", seen


def test_a_dead_managers_engine_is_passed_over_and_the_docker_cli_follows_the_one_that_answered(monkeypatch):
    with engine() as (live, seen):
        monkeypatch.setenv("DOCKER_HOST", f"tcp://127.0.0.1:{closed_port()},{live}")
        s = Swarm()
        s.check()
        assert seen == ["/v1.41/info"]
        assert s.client.api.base_url == live.replace("tcp://", "http://")
        assert s.cli_env()["DOCKER_HOST"] == live
        s.check()  # the client stays on the live one: no second try of the dead
        assert len(seen) == 2


def test_a_swarm_electing_a_leader_is_waited_out_on_every_engine(monkeypatch):
    with engine(unled_for=3) as (first, seen_first), engine(unled_for=1) as (second, seen_second):
        monkeypatch.setenv("DOCKER_HOST", f"{first},{second}")
        Swarm().check()  # 503, 503, then a round later 503 and 200 (or 200 on the first)
        assert len(seen_first) + len(seen_second) >= 3


def test_when_no_engine_answers_it_is_exit_3_at_once(monkeypatch):
    monkeypatch.setenv("DOCKER_HOST", f"tcp://127.0.0.1:{closed_port()},tcp://127.0.0.1:{closed_port()}")
    with pytest.raises(EngineUnavailable, match="does not answer") as e:
        Swarm().check()
    assert e.value.exit_code == 3


def test_past_its_patience_a_leaderless_swarm_is_the_engines_own_answer(monkeypatch):
    monkeypatch.setattr(swarm_adapter, "PATIENCE", 1.5)
    with engine(unled_for=1000) as (only, seen), engine(unled_for=1000) as (other, _):
        monkeypatch.setenv("DOCKER_HOST", f"{only},{other}")
        s = Swarm()
        with pytest.raises(Exception, match="does not have a leader"):
            s.client.info()
        assert 2 <= len(seen) <= 4


def test_several_engines_must_be_tcp_addresses(monkeypatch):
    monkeypatch.setenv("DOCKER_HOST", "unix:///var/run/docker.sock,tcp://127.0.0.1:2376")
    with pytest.raises(EngineUnavailable, match="each must be a manager's tcp:// address"):
        Swarm()


def test_a_single_engine_is_a_plain_client(monkeypatch):
    monkeypatch.setenv("DOCKER_HOST", "tcp://127.0.0.1:2376")
    s = Swarm()
    assert "request" not in vars(s.client.api) and s.engines == ["http://127.0.0.1:2376"]
