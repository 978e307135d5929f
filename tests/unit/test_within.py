"""Every HTTP call of fleet's has a total deadline (fleet/adapters/within.py): a registry, Prometheus or its
remote-write receiver that answers one byte at a time is cut off at the deadline, and said to have failed
(httpx's own timeouts are per read, which a byte every 0.3 s never reaches)."""
import time

import httpx
import pytest

from fleet.adapters import registry
from fleet.adapters.endpoints import fixed
from fleet.adapters.prometheus import Prometheus, ProviderError
from fleet.adapters.remote_write import Pusher
from fleet.adapters.within import request_within
from tests.kit.helpers import serving, trickle

Trickle = trickle(0.3, 200)  # headers at once, then a byte every 0.3 s for at most 60 s


def test_a_trickled_answer_is_cut_off_at_the_deadline():
    with serving(Trickle) as port:
        started = time.monotonic()
        with pytest.raises(httpx.TimeoutException, match="within 1s"):
            request_within("GET", f"http://127.0.0.1:{port}/", 1.0)
        assert time.monotonic() - started < 2.0


def test_an_answer_within_the_deadline_is_read_whole():
    with serving(trickle(0.01, 5)) as port:
        r = request_within("POST", f"http://127.0.0.1:{port}/", 5.0, content=b"{}")
    assert r.status_code == 200 and r.text == "yyyyy"


def test_a_prometheus_that_trickles_is_missing_evidence_within_its_deadline():
    with serving(Trickle) as port:
        started = time.monotonic()
        with pytest.raises(ProviderError, match="did not answer"):
            Prometheus(f"http://127.0.0.1:{port}", timeout=1.0).query("up")
        assert time.monotonic() - started < 2.0


def test_a_registry_that_trickles_is_an_error_within_its_deadline(monkeypatch):
    monkeypatch.setattr(registry, "TIMEOUT", 1.0)
    with serving(Trickle) as port:
        started = time.monotonic()
        with pytest.raises(registry.RegistryError, match="did not answer"):
            registry.Registry().labels(f"127.0.0.1:{port}/fleet/inference:2")
        assert time.monotonic() - started < 3.0  # HTTPS refused at once, then plain HTTP cut off at 1 s


def test_a_remote_write_receiver_that_trickles_is_a_reported_failure_within_its_deadline():
    with serving(Trickle) as port:
        pusher = Pusher(fixed(f"http://127.0.0.1:{port}"), timeout=1.0)
        started = time.monotonic()
        pusher.push([("fleet_rollout_weight", {"role": "canary"}, 10.0)])
        pusher.close(wait=5.0)
        assert time.monotonic() - started < 2.5
    assert pusher.pushed == 0 and len(pusher.failures) == 1 and "within 1s" in pusher.failures[0], pusher.failures


def test_the_stacks_prometheus_ca_is_its_certificates_pin_and_a_missing_one_is_said(monkeypatch, caplog):
    """FLEET_PROMETHEUS_CACERT: the chain is checked against that CA alone, not the host name (fleet reaches
    Prometheus at whichever node's address Swarm gives); unset, the system's CAs; unreadable, said."""
    import ssl

    import certifi

    from fleet.adapters import prometheus
    monkeypatch.delenv("FLEET_PROMETHEUS_CACERT", raising=False)
    assert prometheus.tls() is True
    monkeypatch.setenv("FLEET_PROMETHEUS_CACERT", certifi.where())
    context = prometheus.tls()
    assert isinstance(context, ssl.SSLContext) and context.verify_mode is ssl.CERT_REQUIRED
    assert not context.check_hostname and prometheus.tls() is context  # made once a process
    monkeypatch.setenv("FLEET_PROMETHEUS_CACERT", "/nonexistent/ca.pem")
    assert prometheus.tls() is True and "build/prometheus-auth/ca.pem" in caplog.text
