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
