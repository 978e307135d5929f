"""Consul's refusals named as such: an ACL refusal and a TLS failure are exit 3 with the fix."""
import consul
import pytest
import requests

from fleet.adapters.consul import ConsulUnavailable, call


def raising(e):
    def fn():
        raise e
    return fn


def test_an_acl_refusal_names_the_token_and_its_policy():
    with pytest.raises(ConsulUnavailable, match="refused fleet's token .ACL: ACL not found.*CONSUL_HTTP_TOKEN_FILE") as e:
        call(raising(consul.ACLPermissionDenied("ACL not found")))
    assert e.value.exit_code == 3


def test_a_tls_failure_names_the_ca():
    with pytest.raises(ConsulUnavailable, match="TLS handshake with Consul failed.*CONSUL_CACERT"):
        call(raising(requests.exceptions.SSLError("certificate verify failed")))


def test_an_acl_refusal_is_left_to_a_caller_that_judges_consuls_refusals_itself():
    with pytest.raises(consul.ACLPermissionDenied):
        call(raising(consul.ACLPermissionDenied("denied")), unanswered=(requests.RequestException,))


def test_consuls_cli_variables_set_the_scheme_the_check_and_the_login(monkeypatch, tmp_path):
    import pytest

    from fleet.adapters import consul as adapter
    from fleet.errors import BadInput
    for name in ("CONSUL_HTTP_ADDR", "CONSUL_CACERT", "CONSUL_CAPATH", "CONSUL_HTTP_SSL", "CONSUL_HTTP_SSL_VERIFY",
                 "CONSUL_HTTP_AUTH", "CONSUL_HTTP_TOKEN", "CONSUL_HTTP_TOKEN_FILE"):
        monkeypatch.delenv(name, raising=False)
    assert adapter.client("10.0.0.1:8501").http.base_uri == "http://10.0.0.1:8501"
    monkeypatch.setenv("CONSUL_HTTP_SSL", "true")
    assert adapter.client("10.0.0.1:8501").http.base_uri == "https://10.0.0.1:8501"
    assert adapter.client("http://10.0.0.1:8501").http.base_uri == "https://10.0.0.1:8501"  # as Consul's CLI
    monkeypatch.setenv("CONSUL_HTTP_SSL", "0")
    assert adapter.client("10.0.0.1:8500").http.base_uri == "http://10.0.0.1:8500"
    monkeypatch.setenv("CONSUL_HTTP_SSL", "sure")
    with pytest.raises(BadInput, match="CONSUL_HTTP_SSL='sure' is not a boolean: set it to true or false"):
        adapter.client("10.0.0.1:8501")
    monkeypatch.delenv("CONSUL_HTTP_SSL")
    monkeypatch.setenv("CONSUL_HTTP_AUTH", "ops:s3cret:with-colon")
    assert adapter.client("10.0.0.1:8500").http.session.auth == ("ops", "s3cret:with-colon")
    (tmp_path / "a.pem").write_text("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n")
    (tmp_path / "b.crt").write_text("-----BEGIN CERTIFICATE-----\nBBBB\n-----END CERTIFICATE-----\n")
    (tmp_path / "notes.txt").write_text("no certificate here")
    bundle = adapter.verify_of({"CONSUL_CAPATH": str(tmp_path)})
    assert "AAAA" in open(bundle).read() and "BBBB" in open(bundle).read() and "no certificate" not in open(bundle).read()
    assert adapter.verify_of({"CONSUL_CAPATH": str(tmp_path), "CONSUL_CACERT": "/ca.pem"}) == "/ca.pem"
    assert adapter.verify_of({"CONSUL_CACERT": "/ca.pem", "CONSUL_HTTP_SSL_VERIFY": "false"}) is False
    assert adapter.verify_of({}) is True
