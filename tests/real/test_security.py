"""The locked control plane on the real stack: Consul with ACLs (default deny) and HTTPS only, each user
with its own least-privilege token from a Swarm secret (stacks/consul/entrypoint.sh)."""
import json
import subprocess

import consul
import httpx
import pytest

from tests.kit.cli import fleet
from tests.kit.helpers import HTTP, SAMPLE
from tests.kit.stacks import SECRETS, StackUnderTest, running_ids


def refused(fn) -> bool:
    try:
        fn()
    except consul.ACLPermissionDenied:
        return True
    return False


def test_without_a_token_or_with_a_replicas_token_nobody_registers_steers_or_rolls_out(stack):
    s = stack
    weights_before = s.consul("master").kv.get("fleet/traffic/", recurse=True)[1]
    for who in (None, "replica", "dns"):
        c = s.consul(who)
        if who != "replica":  # the replicas' own service name is theirs to register (below: no other)
            assert refused(lambda: c.agent.service.register(s.consul_service, service_id="intruder", address="10.9.9.9",
                                                             port=8000, tags=["live-stable"])), who
        assert refused(lambda: c.kv.put(f"fleet/traffic/{s.consul_service}/stable", "255")), who
        assert refused(lambda: c.kv.put(f"fleet/rollouts/{s.name}/inference/control", "promote")), who
        assert refused(lambda: c.kv.put(f"fleet/config/{s.consul_service}", '{"max_batch": 1}')), who
    replica = s.consul("replica")  # its service identity is for its stack's `<stack>-inference` only
    assert refused(lambda: replica.agent.service.register("other", service_id="other-1", port=1))
    assert replica.kv.get(f"fleet/config/{s.consul_service}")[0] is not None  # what it must read, it can
    admin = s.consul("master")
    assert "intruder" not in admin.agent.services()
    assert admin.kv.get("fleet/traffic/", recurse=True)[1] == weights_before
    r = HTTP.post(f"{s.gateway}/predict", json={"inputs": SAMPLE}, timeout=10)
    assert r.status_code == 200, r.text  # the stack serves with the tokens it was given


@pytest.mark.parametrize("env,says", [
    ({"CONSUL_HTTP_TOKEN_FILE": ""}, "has ACLs on and fleet has no token"),
    ({"CONSUL_HTTP_TOKEN": "00000000-0000-0000-0000-000000000000"}, "refused fleet's token (ACL: ACL not found)"),
    ({"CONSUL_HTTP_TOKEN_FILE": str(SECRETS / "replica.token")}, "refused fleet's token (ACL: Permission denied)"),
    ({"CONSUL_CACERT": "/etc/ssl/certs/ca-certificates.crt"}, "TLS handshake with Consul failed"),
], ids=["no token", "unknown token", "the replicas' token", "another CA"])
def test_fleet_without_its_token_or_ca_exits_3_naming_why_and_changes_nothing(stack, env, says):
    s = stack
    tasks = running_ids(s)
    for argv in (["status"], ["rollout", "--canary", "--image", "fleet/inference:1"], ["config", "set", "max_batch=4"]):
        p = fleet(s, *argv, "--stack", s.name, "--json", env=env)
        assert p.returncode == 3, (argv, p.stdout, p.stderr)
        assert says in json.loads(p.stdout)["error"], (argv, p.stdout)
    assert s.swarm.service(s.service("inference-canary")) is None and running_ids(s) == tasks
    assert s.consul("master").kv.get(f"fleet/config/{s.consul_service}")[1] is None


def test_consuls_own_variables_reach_the_stacks_consul_as_its_cli_would_and_bad_ones_exit_2(stack, tmp_path):
    """CONSUL_CAPATH (a folder of certificates, one file not one), CONSUL_HTTP_SSL=true with an address
    without a scheme, and CONSUL_HTTP_SSL_VERIFY=false beside a CA that did not sign Consul's certificate,
    as the consul CLI takes them; a flag that is no boolean, or a folder with no certificate, is exit 2."""
    s = stack
    capath = tmp_path / "cas"
    no_pem = tmp_path / "no-pem"  # a folder with files, none of them a certificate
    no_pem.mkdir()
    (no_pem / "password").write_text("not a certificate\n")
    capath.mkdir()
    (capath / "ca.pem").write_text((SECRETS / "ca.pem").read_text())
    (capath / "README").write_text("not a certificate")
    good = [{"CONSUL_CACERT": "", "CONSUL_CAPATH": str(capath)},
            {"CONSUL_HTTP_ADDR": f"127.0.0.1:{s.consul_port}", "CONSUL_HTTP_SSL": "true"},
            {"CONSUL_CACERT": "/etc/ssl/certs/ca-certificates.crt", "CONSUL_HTTP_SSL_VERIFY": "false"}]
    for env in good:
        p = fleet(s, "status", "--stack", s.name, "--json", env=env)
        assert p.returncode == 0 and json.loads(p.stdout)["consul_error"] is None, (env, p.stdout[-500:], p.stderr)
    bad = [({"CONSUL_HTTP_SSL": "yes please"}, "CONSUL_HTTP_SSL='yes please' is not a boolean"),
           ({"CONSUL_CACERT": "", "CONSUL_CAPATH": str(tmp_path / "none")}, "No such file or directory"),
           ({"CONSUL_CACERT": "", "CONSUL_CAPATH": str(no_pem)}, "holds no PEM certificate")]
    for env, says in bad:
        p = fleet(s, "status", "--stack", s.name, "--json", env=env)
        assert p.returncode == 2 and says in json.loads(p.stdout)["error"], (env, p.stdout, p.stderr)


def test_docker_context_chooses_the_engine_as_for_the_docker_cli(stack, tmp_path):
    """DOCKER_CONTEXT (kept under DOCKER_CONFIG, as `docker context create` writes it) is the engine fleet and
    the docker CLI commands it runs talk to: this engine's socket answers, a dead endpoint is exit 3, an
    unknown context exit 2 naming `docker context ls`; DOCKER_HOST wins over it, as for the CLI."""
    s = stack
    for name, host in (("fleettest-here", "unix:///var/run/docker.sock"), ("fleettest-dead", "tcp://127.0.0.1:9")):
        subprocess.run(["docker", "--config", str(tmp_path), "context", "create", name, "--docker", f"host={host}"],
                       check=True, capture_output=True)
    env = {"DOCKER_CONFIG": str(tmp_path), "DOCKER_HOST": ""}
    cases = [("fleettest-here", 0, f"stack {s.name}"), ("fleettest-dead", 3, "the Docker engine of docker context fleettest-dead at 127.0.0.1:9 does not answer"),
             ("fleettest-nope", 2, "no such docker context; `docker context ls` lists them")]
    for context, code, says in cases:
        p = fleet(s, "status", "--stack", s.name, env={**env, "DOCKER_CONTEXT": context})
        assert p.returncode == code and says in p.stdout + p.stderr, (context, p.stdout[-300:], p.stderr[-600:])
    p = fleet(s, "diff", "--stack", s.name, env={**env, "DOCKER_CONTEXT": "fleettest-dead",
                                                  "DOCKER_HOST": "unix:///var/run/docker.sock"})
    assert p.returncode in (0, 4), p.stderr[-600:]  # DOCKER_HOST wins


def test_consul_answers_only_https_with_the_stacks_ca_and_no_plain_http_is_published(stack: StackUnderTest):
    s = stack
    ports = s.swarm.service(s.service("consul")).attrs["Endpoint"]["Ports"]
    assert [p["TargetPort"] for p in ports] == [8501]
    try:  # plain HTTP on the published port: Go's TLS server answers 400 "an HTTP request to an HTTPS server"
        plain = HTTP.get(f"http://127.0.0.1:{s.consul_port}/v1/status/leader", timeout=5)
        assert plain.status_code == 400 and "HTTPS" in plain.text, plain.text
    except (httpx.RemoteProtocolError, httpx.ReadError):
        pass  # or it hangs up on it; a timeout or a refused connection would say nothing and fails here
    assert httpx.get(f"{s.consul_url}/v1/status/leader", verify=str(SECRETS / "ca.pem"), timeout=5).status_code == 200
    with pytest.raises(httpx.ConnectError):  # any other CA: the handshake fails
        HTTP.get(f"{s.consul_url}/v1/status/leader", timeout=5)


def test_consul_tls_server_name_is_the_name_the_certificate_is_checked_against(stack):
    s = stack
    ok = fleet(s, "status", "--stack", s.name, "--json", env={"CONSUL_TLS_SERVER_NAME": "server.dc1.consul"})
    assert ok.returncode == 0, ok.stderr
    wrong = fleet(s, "status", "--stack", s.name, "--json", env={"CONSUL_TLS_SERVER_NAME": "consul.example.org"})
    assert wrong.returncode == 3 and "TLS handshake" in json.loads(wrong.stdout)["error"], wrong.stdout


# the evidence: the stack's Prometheus (issue 39) ---------------------------------------------------------
def test_prometheus_answers_nobody_without_fleets_password_and_takes_no_forged_evidence(stack):
    """Prometheus was published with its remote-write receiver on and no login: anyone who reached the
    port could read the canary's evidence and write series that the judgement (`service=` only) counted.
    And it serves HTTPS only, with a certificate of the stack's own CA: the password never crosses in clear."""
    import time

    from fleet.adapters import remote_write
    from fleet.adapters.prometheus import Prometheus, ProviderError, credentials, role_window
    from tests.kit.stacks import PROMETHEUS_CA
    s = stack
    ca = str(PROMETHEUS_CA)
    plain = httpx.get(f"http://127.0.0.1:{s.prometheus_port}/-/ready", timeout=10)  # no password: plain HTTP
    assert plain.status_code == 400 and "HTTPS" in plain.text, (plain.status_code, plain.text[:200])
    with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):  # not a certificate others vouch for
        httpx.get(f"{s.prometheus}/-/ready", timeout=10)
    assert httpx.get(f"{s.prometheus}/-/ready", auth=credentials(), verify=ca, timeout=10).status_code == 200
    with pytest.MonkeyPatch.context() as env:  # fleet without the CA says what to set
        env.delenv("FLEET_PROMETHEUS_CACERT")
        with pytest.raises(ProviderError, match="FLEET_PROMETHEUS_CACERT"):
            Prometheus(s.prometheus).scalar("up")
    stable = s.service("inference")
    def forge(value: float, at: float) -> bytes:  # the stable's errors and requests, as a counter would say
        return remote_write.encode([("fleet_requests_total", {"service": stable, "route": "/predict",
                                                              "status": "500"}, value),
                                    ("fleet_request_seconds_count", {"service": stable, "route": "/predict",
                                                                     "origin": "organic"}, value)], at)
    now = time.time()
    forged = forge(1e6, now)
    for auth in (None, httpx.BasicAuth("fleet", "guess"), httpx.BasicAuth("admin", "admin")):
        for method, path, kw in (("GET", "/api/v1/query", {"params": {"query": "up"}}),
                                 ("GET", "/api/v1/series", {"params": {"match[]": "up"}}),
                                 ("GET", "/-/ready", {}), ("GET", "/graph", {}),
                                 ("POST", "/api/v1/write", {"content": forged, "headers": remote_write.HEADERS})):
            r = httpx.request(method, f"{s.prometheus}{path}", auth=auth, timeout=10, verify=ca, **kw)
            assert r.status_code == 401, (auth, method, path, r.status_code, r.text[:200])
    assert credentials() is not None
    p = Prometheus(s.prometheus)
    try:
        assert role_window(p, stable, "stable", 30, 1, 5.0) is not None, "fleet reads the evidence with its password"
        # series written with the password, as fleet writes its own: a counter that jumps by a million
        for body in (forge(0.0, now - 2), forged):
            r = httpx.post(f"{s.prometheus}/api/v1/write", content=body, headers=remote_write.HEADERS,
                           auth=credentials(), timeout=10, verify=ca)
            assert r.status_code == 204, r.text
        jumped = p.scalar(f'sum(increase(fleet_requests_total{{service="{stable}",status="500"}}[30s]))')
        assert jumped and jumped >= 1e5, f"the forged counter is in Prometheus ({jumped}) but must not be evidence"
        after = role_window(p, stable, "stable", 30, 1, 5.0)
        assert after.errors < 1e5 and after.requests < 1e5, after
    finally:
        p.close()


def test_no_token_key_or_password_is_on_any_command_line_of_the_stack(stack):
    """Every process's command line is world-readable on its host (`ps`): the Consul entrypoint passed the
    gossip key (-encrypt=...) to every agent for its whole life, a server's agent_master token to
    `consul members` every 2 s while a server was missing, and each token's secret to `consul acl token
    create -secret=...` at start."""
    from tests.kit.stacks import PROMETHEUS_PASSWORD
    secrets = {f.name: f.read_text().strip() for f in SECRETS.iterdir() if f.suffix in (".token", ".key")}
    secrets["prometheus password"] = PROMETHEUS_PASSWORD.read_text().strip()
    assert len(secrets) >= 7 and all(len(v) >= 16 for v in secrets.values()), secrets.keys()
    lines = []
    for c in stack.swarm.client.containers.list(filters={"label": f"com.docker.stack.namespace={stack.name}"}):
        top = c.top()
        cmd = top["Titles"].index("CMD")
        lines += [f"{c.name}: {p[cmd]}" for p in top["Processes"]]
    assert any("consul agent" in line for line in lines) and any("prometheus" in line for line in lines), lines
    leaks = {name: [line[:120] for line in lines if value in line] for name, value in secrets.items()}
    assert not any(leaks.values()), {name: found for name, found in leaks.items() if found}
