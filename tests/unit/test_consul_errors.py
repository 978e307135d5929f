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
