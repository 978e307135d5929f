"""What a person needs to diagnose a failed real test, added to its report by tests/real/conftest.py: for each
stack the test used (found among its fixtures, the 3-node cluster's too), the stack's tasks as `docker stack ps`
lists them, the replicas in Consul with their checks, the gateway's lines since the test began that say why a
client got an error, and what each gateway sees now (GATEWAY_PROBE: the Consul agents its dnsmasq forwards to,
the replicas each of them and dnsmasq answer by DNS, HAProxy's servers that are up); on the cluster also its
Consul servers' warnings and errors since the test began and the Raft configuration each node's server sees.
Each part is best effort: a stack that cannot be read says why, and the test's own failure stays the report's
first word."""
import subprocess

from tests.kit.cluster import NAME, NODES, Cluster, local_env
from tests.kit.consul_ha import api
from tests.kit.stacks import StackUnderTest, gateway_log, service_errors

# Run in a gateway container (python3 -c; its standard library only): where "No server is available" comes from.
GATEWAY_PROBE = r"""
import importlib.machinery, os, re, urllib.request
agents = importlib.machinery.SourceFileLoader("agents", "/usr/local/bin/fleet-agents").load_module()
name = os.environ["FLEET_SERVICE"] + ".service.consul"
run = os.environ.get("FLEET_GATEWAY_RUN", "/tmp/fleet-gateway")
try:
    servers = re.findall(r"server=/[^/]*/([0-9.]+)", open(run + "/dns-servers").read())
except OSError as e:
    servers = []
    print("dns-servers:", e)
for server in servers:
    print(f"agent {server}: {name} ->", agents.query_a(server, name) or "nothing")
agents.PORT = 5353
print(f"dnsmasq: {name} ->", agents.query_a("127.0.0.1", name) or "nothing")
try:
    text = urllib.request.urlopen("http://127.0.0.1:8404/metrics", timeout=3).read().decode()
    up = [l for l in text.splitlines() if l.startswith("haproxy_server_status{") and 'state="UP"' in l]
    names = [re.search(r'proxy="([^"]+)",server="([^"]+)"', l) for l in up if l.endswith(" 1")]
    print("haproxy up:", [f"{m.group(1)}/{m.group(2)}" for m in names if m] or "none")
except OSError as e:
    print("haproxy metrics:", e)
"""

FORMAT = "{{.Name}}\t{{.Image}}\t{{.Node}}\t{{.DesiredState}}\t{{.CurrentState}}\t{{.Error}}"


def stacks_in(values) -> list[StackUnderTest | Cluster]:
    """The stacks among a test's fixture values: a stack, a thing holding one (.stack), the cluster, or a tuple
    of them."""
    found = []
    for v in values:
        if isinstance(v, (tuple, list)):
            found += stacks_in(v)
        elif isinstance(v, StackUnderTest):
            found.append(v)
        elif isinstance(getattr(v, "stack", None), StackUnderTest):
            found.append(v.stack)
        elif isinstance(v, Cluster):
            found.append(v)
    return list({id(s): s for s in found}.values())


def consul_lines(s: StackUnderTest | Cluster) -> list[str]:
    """The stack's replicas in Consul with their checks; a line saying why when Consul cannot be read (the
    failure may be Consul's)."""
    try:
        return [f"consul: {i.role} {i.version} {i.task_id[:12]} {i.status} {i.output.strip()[:160]}"
                for i in s.catalog.instances(s.consul_service)]
    except Exception as e:
        return [f"consul: not read ({type(e).__name__}: {e})"]


def probe_gateways(service: str, docker: list[str], env: dict | None = None) -> list[str]:
    """GATEWAY_PROBE's lines from each running gateway task of `service`, through the docker CLI `docker` (the
    host's, or a cluster node's own)."""
    def run(*args: str) -> str:
        p = subprocess.run([*docker, *args], capture_output=True, text=True, timeout=30, env=env)
        return (p.stdout + p.stderr).strip()

    lines = []
    for container in run("ps", "-q", "-f", f"label=com.docker.swarm.service.name={service}").split():
        lines += [f"gateway {container[:12]}: {line}" for line in run("exec", container, "python3", "-c",
                                                                        GATEWAY_PROBE).splitlines()]
    return lines


def describe_cluster(c: Cluster, since: float) -> str:
    parts = [f"== stack {NAME} on the 3-node cluster"]
    try:
        parts.append(c.docker("stack", "ps", NAME, "--no-trunc", "--format", FORMAT).strip()[-4000:])
    except Exception as e:
        parts.append(f"tasks: not read ({type(e).__name__}: {e})")
    parts += consul_lines(c)
    manager = c.fleet_env(DOCKER_HOST=c.env["DOCKER_HOST"])  # the docker CLI on the cluster's first manager
    try:
        parts += [f"gateway: {line}" for line in service_errors(f"{NAME}_gateway", since, env=manager)[-40:]]
    except Exception as e:
        parts.append(f"gateway: log not read ({type(e).__name__}: {e})")
    try:  # a server that does not rejoin, an election that does not end: Consul's servers say why
        parts += [f"consul server: {line}" for line in service_errors(
            f"{NAME}_consul", since, env=manager,
            marks=("[WARN]", "[ERROR]"))[-40:]]
    except Exception as e:
        parts.append(f"consul server: log not read ({type(e).__name__}: {e})")
    for node in NODES:
        try:
            config = api(node, "/v1/operator/raft/configuration")["Servers"]
            parts.append(f"{node} raft: " + ", ".join(f"{s['Node']}{' leader' if s['Leader'] else ''}"
                                                       f"{'' if s['Voter'] else ' non-voter'}" for s in config))
        except Exception as e:
            parts.append(f"{node} raft: not read ({type(e).__name__}: {str(e)[:200]})")
    for node in NODES:
        try:
            parts += [f"{node} {line}" for line in probe_gateways(f"{NAME}_gateway", ["docker", "exec", node, "docker"],
                                                                   env=local_env())]
        except Exception as e:
            parts.append(f"{node}: gateways not probed ({type(e).__name__}: {e})")
    return "\n".join(parts)


def describe(stack: StackUnderTest, since: float) -> str:
    parts = [f"== stack {stack.name}"]
    ps = subprocess.run(["docker", "stack", "ps", stack.name, "--no-trunc", "--format", FORMAT],
                        capture_output=True, text=True, timeout=60)
    parts.append((ps.stdout or ps.stderr).strip()[-4000:])
    parts += consul_lines(stack)
    try:
        parts += [f"gateway: {line}" for line in gateway_log(stack, since)[-40:]]
    except Exception as e:
        parts.append(f"gateway: log not read ({type(e).__name__}: {e})")
    try:
        parts += probe_gateways(stack.service("gateway"), ["docker"])
    except Exception as e:
        parts.append(f"gateways not probed ({type(e).__name__}: {e})")
    return "\n".join(parts)


def report(values, since: float) -> str:
    return "\n\n".join(describe_cluster(s, since) if isinstance(s, Cluster) else describe(s, since)
                       for s in stacks_in(values))
