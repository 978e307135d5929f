"""fleet/adapters/registry.py reads a private image's labels with the login Docker would use: a local
registry (plain HTTP on 127.0.0.1, as Docker allows) that wants Basic, or Bearer from its token service;
logins from config.json's `auths`, a `credHelpers` helper (the docker-credential-* protocol, a script
here) and none; a wrong or missing login is LoginFailed naming `docker login`."""
import base64
import json
import os
import stat
import subprocess
import sys
from http.server import BaseHTTPRequestHandler

import pytest

from fleet.adapters import registry
from fleet.adapters.registry import LoginFailed, Registry, docker_login
from tests.kit.helpers import serving

USER, PASSWORD = "ci", "s3cret"
CONFIG = {"architecture": "amd64", "os": "linux", "config": {"Labels": {"fleet.model-version": "7"}}}
MANIFEST = {"schemaVersion": 2, "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
            "config": {"digest": "sha256:" + "c" * 64, "size": 1}, "layers": []}


def private_registry(scheme: str):
    """A registry whose every /v2/ read wants `scheme` (Basic, or Bearer from its /token with the login)."""
    class Handler(BaseHTTPRequestHandler):
        seen: list[str] = []

        def log_message(self, *args):
            pass

        def answer(self, status, doc=None, headers=()):
            body = json.dumps(doc or {}).encode()
            self.send_response(status)
            for k, v in headers:
                self.send_header(k, v)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self):
            basic = "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
            got = self.headers.get("Authorization", "")
            Handler.seen.append(f"{self.path.split('?')[0]} {got.split(' ')[0]}")
            if self.path.startswith("/token"):
                if got != basic:
                    return self.answer(401)
                return self.answer(200, {"token": "tok-" + USER})
            wanted = basic if scheme == "basic" else "Bearer tok-" + USER
            if got != wanted:
                challenge = 'Basic realm="reg"' if scheme == "basic" else \
                    f'Bearer realm="http://127.0.0.1:{self.server.server_port}/token",service="reg"'
                return self.answer(401, {"errors": [{"code": "UNAUTHORIZED"}]}, [("WWW-Authenticate", challenge)])
            if "/manifests/" in self.path:
                return self.answer(200, MANIFEST)
            return self.answer(200, CONFIG)
    return Handler


def login_of(login):
    return lambda _registry: login


@pytest.mark.parametrize("scheme", ["basic", "bearer"])
def test_a_private_images_labels_are_read_with_the_login_and_refused_without_it(scheme):
    handler = private_registry(scheme)
    with serving(handler) as port:
        image = f"127.0.0.1:{port}/team/model:7"
        assert Registry(login=login_of({"username": USER, "password": PASSWORD})).labels(image) == \
            CONFIG["config"]["Labels"]
        with pytest.raises(LoginFailed, match=rf"127.0.0.1:{port} wants a login to read team/model \(401\) and fleet "
                                              rf"has none: run `docker login 127.0.0.1:{port}`"):
            Registry(login=login_of(None)).labels(image)
        with pytest.raises(LoginFailed, match=rf"refused the login of ci for team/model \(401\): run `docker login "
                                              rf"127.0.0.1:{port}` again"):
            Registry(login=login_of({"username": USER, "password": "wrong"})).labels(image)
    assert not any(PASSWORD in line for line in handler.seen)


def test_dockers_own_logins_are_found_in_config_json_and_through_a_credential_helper(tmp_path, monkeypatch):
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path))
    auth = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
    helper = tmp_path / "docker-credential-fleettest"  # the protocol: `get`, the server on stdin, JSON out
    helper.write_text(f"#!{sys.executable}\nimport json, sys\nserver = sys.stdin.read().strip()\n"
                      "if sys.argv[1] != 'get' or server != 'helped.example:5000':\n"
                      "    print('credentials not found in native keychain'); sys.exit(1)\n"
                      "print(json.dumps({'ServerURL': server, 'Username': 'bot', 'Secret': 'from-helper'}))\n")
    helper.chmod(helper.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    (tmp_path / "config.json").write_text(json.dumps({"auths": {"plain.example:5000": {"auth": auth}},
                                                      "credHelpers": {"helped.example:5000": "fleettest"}}))
    plain = docker_login("plain.example:5000")
    assert (plain["username"], plain["password"]) == (USER, PASSWORD)
    found = docker_login("helped.example:5000")
    assert (found["username"], found["password"]) == ("bot", "from-helper")
    assert docker_login("nobody.example:5000") is None
    (tmp_path / "config.json").write_text(json.dumps({"credHelpers": {"broken.example": "missing-helper"}}))
    with pytest.raises(LoginFailed, match="cannot read the login for broken.example"):
        docker_login("broken.example")


def test_a_registrys_ca_comes_from_certs_d_as_for_the_engine(tmp_path):
    """A CA made here (openssl, as scripts/consul-secrets.sh makes the stack's) in certs.d/<registry>/ca.crt
    is among the certificates the registry's answer is checked against; a registry without a folder gets
    the system's."""
    registry.tls_for.cache_clear()
    assert registry.tls_for("plain.example:5000", tmp_path) is True
    folder = tmp_path / "ca.example:5000"
    folder.mkdir()
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                    "-keyout", str(tmp_path / "ca.key"), "-out", str(folder / "ca.crt"), "-days", "1",
                    "-subj", "/CN=fleet test CA"], check=True, capture_output=True)
    context = registry.tls_for("ca.example:5000", tmp_path)
    assert any(("commonName", "fleet test CA") in sum(c["subject"], ()) for c in context.get_ca_certs())
