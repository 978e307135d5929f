"""The stack file: loading it as `docker stack deploy` will see it, and linting it. Linting is pure.

Loading goes through `docker stack config` (the docker CLI's own compose conversion: variables,
merges and defaults exactly as deploy applies them); lint then reads the resulting document.
"""
import os
import re
import subprocess
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

import yaml

from .core import durations, placement, policy
from .errors import BadInput


SECRET_NAME = re.compile(r"TOKEN|PASSWORD|SECRET|PRIVATE_KEY", re.IGNORECASE)


class Severity(str, Enum):
    ERROR = "error"
    WARNING = "warning"


@dataclass(frozen=True)
class Finding:
    severity: Severity
    service: str
    key: str
    message: str

    def __str__(self) -> str:
        return f"{self.severity.value}: {self.service}: {self.key}: {self.message}"


def load(files: list[Path], env: dict | None = None, managers: int | None = None) -> dict:
    """The merged, interpolated stack document, read with `env` (this process's environment by default) and,
    when the Swarm's `managers` are known, FLEET_CONSUL_SERVERS from them where unset (`servers_env`): as
    `fleet deploy` deploys it. BadInput when a file is missing or invalid."""
    env = servers_env(dict(os.environ if env is None else env), managers)
    for f in files:
        if not f.is_file():
            raise BadInput(f"stack file {f} not found: pass an existing compose file with -c")
    cmd = ["docker", "stack", "config"] + [a for f in files for a in ("-c", str(f))]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        raise BadInput(f"{', '.join(map(str, files))} is not a valid stack file: {proc.stderr.strip()}")
    try:
        doc = yaml.safe_load(proc.stdout)
    except yaml.YAMLError as e:
        raise BadInput(f"docker stack config printed YAML fleet cannot read: {e}") from None
    if not isinstance(doc, dict) or not doc.get("services"):
        raise BadInput(f"{', '.join(map(str, files))} defines no services")
    return doc


def dump(doc: dict) -> str:
    """A loaded document as a stack file that `docker stack deploy` reads back to the same document: its
    variables are already filled in, so every `$` left is a literal one (written `$$`). Pure."""
    def escape(value):
        if isinstance(value, str):
            return value.replace("$", "$$")
        if isinstance(value, dict):
            return {k: escape(v) for k, v in value.items()}
        if isinstance(value, list):
            return [escape(v) for v in value]
        return value
    return yaml.safe_dump(escape(doc), sort_keys=False)


def _seconds(value, default: float) -> float:
    return default if value is None else durations.parse(value)


def reserved_resources(deploy: dict) -> dict[str, int]:
    """kind -> how many one replica reserves, from a compose service's `deploy` (discrete_resource_spec)."""
    wanted: dict[str, int] = {}
    for r in ((deploy.get("resources") or {}).get("reservations") or {}).get("generic_resources") or []:
        spec = (r or {}).get("discrete_resource_spec") or {}
        if spec.get("kind"):
            wanted[spec["kind"]] = wanted.get(spec["kind"], 0) + int(spec.get("value", 1))
    return wanted


def nodes_matching(constraints: list[str] | None, nodes: int | None, managers: int | None) -> int | None:
    """How many of the Swarm's nodes placement constraints leave a task, when the facts tell: 1 for a pin to
    one node (node.hostname, node.id or a node label), the managers for `node.role == manager`, the others for
    `node.role == worker`; None when unknown. Pure."""
    said = [c for c in map(placement.parse, constraints or []) if c and c[1] == "=="]
    if any(name in ("node.hostname", "node.id") or name.startswith("node.labels.") for name, _, _ in said):
        return 1
    if ("node.role", "==", "manager") in said:
        return managers
    if ("node.role", "==", "worker") in said:
        return None if nodes is None or managers is None else max(0, nodes - managers)
    return nodes


def consul_servers(command) -> int | None:
    """The server count a Consul agent's command expects (`agent -server -bootstrap-expect=N`); None for a
    command that starts no Consul server. Pure."""
    args = command.split() if isinstance(command, str) else [str(a) for a in command or []]
    if "agent" not in args or "-server" not in args:
        return None
    for i, arg in enumerate(args):
        value = arg.split("=", 1)[1] if arg.startswith("-bootstrap-expect=") else \
            args[i + 1] if arg == "-bootstrap-expect" and i + 1 < len(args) else None
        if value is not None:
            return int(value) if value.isascii() and value.isdigit() else None
    return 1 if "-bootstrap" in args else None


SERVERS_VAR = "FLEET_CONSUL_SERVERS"  # docker-stack.yml's servers' -bootstrap-expect


def servers_env(environ: dict[str, str], managers: int | None) -> dict[str, str]:
    """The environment `fleet deploy` and `fleet lint` read a stack file with: FLEET_CONSUL_SERVERS, when the
    user left it unset, is the Swarm's managers (fleet's stack runs a Consul server on each, so each expects
    them all and no group of them can elect a leader alone); lint then judges the count. Pure."""
    if environ.get(SERVERS_VAR) or managers is None:
        return dict(environ)
    return {**environ, SERVERS_VAR: str(managers)}


@dataclass(frozen=True)
class Facts:
    """What lint weighs a service against besides the file: the Swarm's, when known (None: not known)."""
    routing_mesh: bool = True  # the engine can route ingress-mode ports (it needs IPVS in the kernel)
    nodes: int | None = None  # the Swarm's nodes that take tasks (ready, active)
    resources: dict[str, int] | None = None  # the generic resources (GPUs) those nodes advertise, kind -> how many
    managers: int | None = None  # the Swarm's manager nodes


Said = tuple[Severity, str, str]  # severity, key, message


def lint(doc: dict, routing_mesh: bool = True, nodes: int | None = None,
         resources: dict[str, int] | None = None, managers: int | None = None) -> list[Finding]:
    """Findings for a stack document, errors first. Pure: reads only `doc` and the facts given (Facts)."""
    facts = Facts(routing_mesh, nodes, resources, managers)
    found = [Finding(sev, name, key, msg)
             for name, svc in sorted((doc.get("services") or {}).items())
             for check in CHECKS for sev, key, msg in check(svc, facts)]
    found += _networks(doc, facts)
    return sorted(found, key=lambda f: (f.severity != Severity.ERROR, f.service, f.key))


def _networks(doc: dict, facts: Facts) -> list[Finding]:
    """On a Swarm of several nodes, an overlay network of the stack that is not encrypted: replicas, the
    gateway, Prometheus and Consul's agents talk across the hosts' network in the clear (Consul's own RPC
    has TLS; the rest does not). Pure."""
    if not facts.nodes or facts.nodes < 2:
        return []
    return [Finding(Severity.WARNING, "(networks)", f"networks.{name}.driver_opts.encrypted",
                    f"the overlay network {name!r} is not encrypted, and this Swarm has {facts.nodes} nodes: traffic "
                    "between its tasks crosses the hosts' network in the clear; deploy with "
                    "`-c stacks/encrypted-network.yml` (IPsec, where the hosts' kernels have it)")
            for name, net in sorted((doc.get("networks") or {}).items())
            if not (net or {}).get("external") and (net or {}).get("driver", "overlay") == "overlay"
            and "encrypted" not in ((net or {}).get("driver_opts") or {})]


def _replicas(svc: dict) -> int | None:
    deploy = svc.get("deploy") or {}
    return deploy.get("replicas", 1) if deploy.get("mode", "replicated") == "replicated" else None


def _host_ports(svc: dict) -> bool:
    return any(isinstance(p, dict) and p.get("mode") == "host" for p in svc.get("ports") or [])


def _image(svc: dict, facts: Facts) -> list[Said]:
    image = str(svc.get("image", ""))
    ref = image.split("@")[0].rsplit("/", 1)[-1]
    if not image:
        return [(Severity.ERROR, "image", "no image: name the image and a tag")]
    if "@" not in image and (":" not in ref or ref.endswith(":latest")):
        return [(Severity.WARNING, "image", f"{image!r} floats ('latest' or untagged): pin a version tag "
                                            "so a rollback returns to the same bits")]
    return []


def _health_and_updates(svc: dict, facts: Facts) -> list[Said]:
    said = []
    update = (svc.get("deploy") or {}).get("update_config") or {}
    hc = svc.get("healthcheck")
    if not hc or hc.get("disable"):
        said.append((Severity.WARNING, "healthcheck", "no healthcheck: Swarm cannot tell a started task from a "
                                                      "working one, so updates are not gated on readiness"))
    if update.get("failure_action", "pause") != "rollback":
        said.append((Severity.WARNING, "deploy.update_config.failure_action",
                     f"is {update.get('failure_action', 'pause')!r}: set 'rollback' so Swarm reverts a failed update"))
    if hc and not hc.get("disable"):
        # A task that never turns healthy fails the update however short the monitor (Swarm counts a
        # task that fails before it runs: seen on Docker 28); the monitor is what watches a task that
        # passed its checks, and it must outlast the checks' failing in a row to see that one fail.
        try:
            window = _seconds(hc.get("interval"), 30) * int(hc.get("retries", 3))
            _seconds(hc.get("start_period"), 0)  # not in the window, but a bad one is still an error
            monitor = _seconds(update.get("monitor"), 5)
        except ValueError as e:
            said.append((Severity.ERROR, "healthcheck", str(e)))
        else:
            if monitor <= window:
                said.append((Severity.ERROR, "deploy.update_config.monitor",
                             f"{monitor:g}s is not longer than interval x retries ({window:g}s): a replica that "
                             f"passes its first check and then fails would turn unhealthy only after Swarm stopped "
                             f"watching, and the update would never roll back; set monitor above {window:g}s"))
    return said


def _drain(svc: dict, facts: Facts) -> list[Said]:
    env = svc.get("environment") or {}
    if svc.get("stop_grace_period") is None and not env.get("FLEET_DRAIN_SECONDS"):
        return []
    need = float(env.get("FLEET_DRAIN_SECONDS", 0) or 0) + float(env.get("FLEET_DRAIN_TIMEOUT", 10) or 0)
    try:
        grace = _seconds(svc.get("stop_grace_period"), 10)
    except ValueError as e:
        return [(Severity.ERROR, "stop_grace_period", str(e))]
    if "FLEET_DRAIN_SECONDS" in env and grace < need:
        return [(Severity.ERROR, "stop_grace_period",
                 f"{grace:g}s is shorter than the drain needs (FLEET_DRAIN_SECONDS + FLEET_DRAIN_TIMEOUT = "
                 f"{need:g}s): Swarm would kill replicas mid-request; raise it above {need:g}s")]
    return []


def _placement(svc: dict, facts: Facts) -> list[Said]:
    """Replicas the Swarm cannot place: GPUs short, host-mode ports or max_replicas_per_node over its nodes."""
    said = []
    deploy, replicas, nodes = svc.get("deploy") or {}, _replicas(svc), facts.nodes
    per_node = (deploy.get("placement") or {}).get("max_replicas_per_node")
    if replicas and facts.resources is not None:
        for kind, each in reserved_resources(deploy).items():
            need, have = replicas * each, facts.resources.get(kind, 0)
            if need > have:
                said.append((Severity.ERROR, "deploy.resources.reservations.generic_resources",
                             f"{replicas} replicas reserve {each} {kind} each ({need}) but the Swarm's nodes taking "
                             f"tasks advertise {have}: {need - have} would stay pending ('no suitable node'); lower "
                             "replicas or advertise more (node-generic-resources in the nodes' daemon.json)"))
            elif need + each > have:
                said.append((Severity.WARNING, "deploy.resources.reservations.generic_resources",
                             f"{replicas} replicas take {need} of the Swarm's {have} {kind}: none is left for a "
                             "canary, so `fleet rollout` would be refused and a promotion goes stop-first, one "
                             "replica at a time"))
    if _host_ports(svc) and replicas and nodes is not None and replicas > nodes:
        said.append((Severity.ERROR, "deploy.replicas",
                     f"{replicas} replicas publish a host-mode port but the Swarm has {nodes} node(s) taking tasks: "
                     f"one task per node can hold the port, so {replicas - nodes} would stay pending; lower replicas, "
                     "add nodes, or use mode: global (one per node)"))
    elif per_node and replicas and nodes is not None and replicas > per_node * nodes:
        said.append((Severity.ERROR, "deploy.placement.max_replicas_per_node",
                     f"{replicas} replicas at most {per_node} a node on {nodes} node(s): "
                     f"{replicas - per_node * nodes} would stay pending; lower replicas or raise max_replicas_per_node"))
    return said


def _state(svc: dict, facts: Facts) -> list[Said]:
    """State that must stay with its node: named volumes, and Consul servers that must keep quorum."""
    said = []
    placed = ((svc.get("deploy") or {}).get("placement") or {}).get("constraints")
    # a global service's task belongs to its node: each node's volume stays with that node's task
    for mount in (svc.get("volumes") or []) if (svc.get("deploy") or {}).get("mode") != "global" else []:
        kind, source = (mount.get("type", "volume"), mount.get("source")) if isinstance(mount, dict) \
            else ("volume", str(mount).split(":")[0] if ":" in str(mount) else None)
        if kind == "volume" and source and not source.startswith(("/", ".")) and not placed:
            said.append((Severity.WARNING, "volumes",
                         f"named volume {source!r} without a placement constraint: a volume lives on the node that "
                         "made it, so a task moved to another node starts with an empty one; pin the service "
                         "(placement.constraints, e.g. node.role == manager or a node label)"))
        elif kind == "volume" and source and not source.startswith(("/", ".")):
            matching = nodes_matching(placed, facts.nodes, facts.managers)
            if matching is not None and matching > 1:
                said.append((Severity.WARNING, "deploy.placement.constraints",
                             f"named volume {source!r} is pinned only by {' and '.join(placed)}, which {matching} "
                             "nodes of this Swarm match: Swarm may reschedule the task to another of them, where the "
                             "volume is empty (for the stack's Consul: fleet's rollouts, history and live config); "
                             "pin it to one node (node.hostname == <node>, or a node label set on that node only)"))
    servers, nodes = consul_servers(svc.get("command")), facts.nodes
    if servers is not None and nodes is not None and nodes > 1 and servers - (servers // 2 + 1) < 1:
        said.append((Severity.WARNING, "command",
                     f"{servers} Consul server(s) (-bootstrap-expect={servers}) on a Swarm of {nodes} nodes cannot "
                     "keep quorum when one is lost: the node it runs on is the control plane's single point of "
                     "failure (rollouts stop, replicas cannot register); run 3 servers, each on a node of its own "
                     "(fleet's stack: FLEET_CONSUL_SERVERS=3 on a Swarm of 3 managers)"))
    return said


def _update_order(svc: dict, facts: Facts) -> list[Said]:
    # A host-mode port cannot be held by two tasks on one node, so start-first is not an option there.
    update = (svc.get("deploy") or {}).get("update_config") or {}
    if update.get("order", "stop-first") == "stop-first" and _replicas(svc) == 1 and not _host_ports(svc):
        return [(Severity.WARNING, "deploy.update_config.order",
                 "stop-first with one replica stops the only task before its successor runs (downtime): "
                 "use order: start-first or more replicas")]
    return []


def _secrets_and_ports(svc: dict, facts: Facts) -> list[Said]:
    said = []
    for var, value in sorted((svc.get("environment") or {}).items()):
        if value and SECRET_NAME.search(var) and not var.endswith("_FILE"):
            said.append((Severity.WARNING, f"environment.{var}",
                         "a credential in a plain environment variable (`docker inspect` shows it to anyone with "
                         f"the engine): pass it as a Swarm secret and set {var}_FILE=/run/secrets/<name>"))
    for port in svc.get("ports") or []:
        if isinstance(port, dict) and port.get("mode", "ingress") == "ingress" and not facts.routing_mesh:
            said.append((Severity.ERROR, "ports", f"port {port.get('published')} is in ingress mode but this engine "
                                                  "has no routing mesh (no IPVS): publish it with mode: host"))
    return said


def _rollout_policy(svc: dict, facts: Facts) -> list[Said]:
    rollout, errors = policy.parse((svc.get("deploy") or {}).get("labels"))
    said = [(Severity.ERROR, f"deploy.labels.{label}", why) for label, why in errors]
    if rollout and not errors and rollout.strategy == policy.Strategy.CANARY:
        if "CONSUL_HTTP_ADDR" not in (svc.get("environment") or {}):
            said.append((Severity.ERROR, f"deploy.labels.{policy.PREFIX}strategy",
                         "canary, but the replicas do not register in Consul (no CONSUL_HTTP_ADDR), so fleet could "
                         "not judge a canary: register them, or set it to rolling"))
        if _replicas(svc) is None:
            said.append((Severity.ERROR, f"deploy.labels.{policy.PREFIX}strategy",
                         "canary on a global service: a canary runs beside a replicated service; use mode: "
                         "replicated or strategy rolling"))
    return said


def _servers_running(svc: dict, facts: Facts) -> int | None:
    """How many tasks of a service run: one on each node its placement matches (global), else its replicas."""
    deploy = svc.get("deploy") or {}
    if deploy.get("mode") == "global":
        return nodes_matching((deploy.get("placement") or {}).get("constraints"), facts.nodes, facts.managers)
    return _replicas(svc)


def _quorum(svc: dict, facts: Facts) -> list[Said]:
    """Consul servers that can split, or never elect: each group of -bootstrap-expect servers may elect a
    leader of its own, so the servers that run must be fewer than twice that (a majority), no fewer than it,
    and odd (an even count keeps quorum through no more losses, and may split in halves on a partition)."""
    expect = consul_servers(svc.get("command"))
    running = _servers_running(svc, facts)
    if expect is None or not running:
        return []
    fix = ("fleet's stack runs one on each manager, and `fleet deploy` sets FLEET_CONSUL_SERVERS to the managers "
           "when it is unset")
    if running > 1 and running % 2 == 0:
        return [(Severity.ERROR, "deploy.mode", f"{running} Consul servers would run: an even count loses quorum as "
                 f"soon as {running - 1} would, and a partition can leave two halves with no leader; run 1, 3 or 5 "
                 "(on fleet's stack: `docker node promote <node>` or `docker node demote <node>` until the managers "
                 "are 1, 3 or 5)")]
    if running >= 2 * expect:
        return [(Severity.ERROR, "command", f"{running} Consul servers would run, each expecting only {expect} "
                 f"(-bootstrap-expect={expect}): groups of {expect} may each elect a leader of their own (a split "
                 "brain: two rollout locks, two histories); make every server expect them all, "
                 f"-bootstrap-expect={running} ({fix})")]
    if expect > running:
        return [(Severity.ERROR, "command", f"the Consul servers expect {expect} (-bootstrap-expect={expect}) but "
                 f"only {running} can run here: no leader is ever elected; expect {running} ({fix})")]
    return []


# each service's checks, in the order their findings are listed (within a severity, service and key)
CHECKS = (_image, _health_and_updates, _drain, _placement, _state, _quorum, _update_order, _secrets_and_ports,
          _rollout_policy)
