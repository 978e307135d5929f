"""fleet/checkout.py: a command run from a checkout where `make demo` ran finds the stack's Consul CA, fleet's
token and the Prometheus password in build/ when nothing set them, says so, and never overrides a setting."""
from pathlib import Path

from fleet import checkout


def a_build(root: Path, consul: bool = True, prometheus: bool = True) -> Path:
    if consul:
        (root / "build/consul/secrets").mkdir(parents=True)
        (root / "build/consul/secrets/ca.pem").write_text("CA")
        (root / "build/consul/secrets/fleet.token").write_text("token")
    if prometheus:
        (root / "build/prometheus-auth").mkdir(parents=True)
        (root / "build/prometheus-auth/password").write_text("pw")
        (root / "build/prometheus-auth/ca.pem").write_text("Prometheus CA")
    return root / "build"


def test_nothing_set_takes_all_four_from_the_working_directorys_build_and_says_where(tmp_path, monkeypatch):
    monkeypatch.setattr(checkout, "CHECKOUT", tmp_path / "elsewhere")
    build = a_build(tmp_path)
    add, said = checkout.defaults({"PATH": "/bin"}, cwd=tmp_path)
    assert add == {"CONSUL_CACERT": str(build / "consul/secrets/ca.pem"),
                   "CONSUL_HTTP_TOKEN_FILE": str(build / "consul/secrets/fleet.token"),
                   "FLEET_PROMETHEUS_PASSWORD_FILE": str(build / "prometheus-auth/password"),
                   "FLEET_PROMETHEUS_CACERT": str(build / "prometheus-auth/ca.pem")}
    assert said.startswith("fleet: using the stack's Consul CA and fleet's token and the stack's Prometheus "
                           f"password and the stack's Prometheus CA from {build.resolve()}") \
        and "build/consul/fleet.env" in said
    assert "token\n" not in said and "pw" not in said.split("password")[0]  # paths, never the secrets


def test_any_consul_variable_set_even_empty_leaves_consul_alone(tmp_path, monkeypatch):
    monkeypatch.setattr(checkout, "CHECKOUT", tmp_path / "elsewhere")
    a_build(tmp_path)
    for env in ({"CONSUL_HTTP_ADDR": "http://10.0.0.1:8500"}, {"CONSUL_HTTP_TOKEN_FILE": ""}, {"CONSUL_CACERT": "x"}):
        add, said = checkout.defaults(env, cwd=tmp_path)
        assert set(add) == {"FLEET_PROMETHEUS_PASSWORD_FILE", "FLEET_PROMETHEUS_CACERT"} and "Consul" not in said, env
    add, said = checkout.defaults({"CONSUL_HTTP_ADDR": "x", "FLEET_PROMETHEUS_PASSWORD": "",
                                   "FLEET_PROMETHEUS_CACERT": ""}, cwd=tmp_path)
    assert (add, said) == ({}, "")


def test_fleets_own_checkout_is_the_fallback_and_a_half_made_build_is_not_used(tmp_path, monkeypatch):
    here, there = tmp_path / "here", tmp_path / "there"
    here.mkdir()
    a_build(here, prometheus=False)
    (here / "build/consul/secrets/fleet.token").unlink()  # no token: not a usable Consul setup
    monkeypatch.setattr(checkout, "CHECKOUT", there)
    build = a_build(there)
    add, _ = checkout.defaults({}, cwd=here)
    assert add["CONSUL_HTTP_TOKEN_FILE"] == str(build.resolve() / "consul/secrets/fleet.token")
    assert checkout.defaults({}, cwd=tmp_path / "nowhere") == checkout.defaults({}, cwd=here)
    monkeypatch.setattr(checkout, "CHECKOUT", tmp_path / "none")
    assert checkout.defaults({}, cwd=tmp_path / "nowhere") == ({}, "")
