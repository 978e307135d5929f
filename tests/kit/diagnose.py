"""What a person needs to diagnose a failed real test, added to its report by tests/real/conftest.py: for each
stack the test used (found among its fixtures, the 3-node cluster's too), the stack's tasks as `docker stack ps`
lists them, the replicas in Consul with their checks, and the gateway's lines since the test began that say why a client got
an error. Each part is best effort: a stack that cannot be read says why, and the test's own failure stays
the report's first word."""
import subprocess

from tests.kit.cluster import NAME, Cluster
from tests.kit.stacks import StackUnderTest, gateway_log

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


def describe_cluster(c: Cluster) -> str:
    parts = [f"== stack {NAME} on the 3-node cluster"]
    try:
        parts.append(c.docker("stack", "ps", NAME, "--no-trunc", "--format", FORMAT).strip()[-4000:])
    except Exception as e:
        parts.append(f"tasks: not read ({type(e).__name__}: {e})")
    return "\n".join(parts + consul_lines(c))


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
    return "\n".join(parts)


def report(values, since: float) -> str:
    return "\n\n".join(describe_cluster(s) if isinstance(s, Cluster) else describe(s, since)
                       for s in stacks_in(values))
