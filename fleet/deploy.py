"""`fleet deploy`: lint, deploy through `docker stack deploy`, then watch until every service has
converged (running, healthy, passing in Consul with the expected version) or say exactly why not.
On failure the services this deploy changed go back to their previous spec, and new ones are removed."""
import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import yaml
from docker.errors import DockerException

from . import stackfile
from .adapters.consul import Catalog, ConsulUnavailable, check_access, client as consul_client
from .adapters.swarm import EngineUnavailable, Swarm
from .convergence import State, Verdict, assess
from .errors import BadInput, OperationFailed, Unreachable


@dataclass
class DeployResult:
    stack: str
    seconds: float
    verdicts: dict[str, Verdict]
    warnings: list[str]


def parse_images(pairs: list[str]) -> dict[str, str]:
    images = {}
    for pair in pairs:
        service, sep, image = pair.partition("=")
        if not sep or not service or not image:
            raise BadInput(f"--image {pair!r}: write SERVICE=IMAGE, e.g. --image inference=fleet/inference:2")
        images[service] = image
    return images


def routing_mesh_available() -> bool:
    """Swarm's ingress mesh needs IPVS; on a remote engine (DOCKER_HOST) fleet cannot tell, so assume yes."""
    return bool(os.environ.get("DOCKER_HOST")) or Path("/proc/net/ip_vs").exists()


def mode_changes(doc: dict, stack: str, live: dict[str, str]) -> list[str]:
    """Services whose mode in the file differs from the running one's (`live`: name → mode). Pure."""
    found = []
    for short, svc in sorted(doc["services"].items()):
        want = (svc.get("deploy") or {}).get("mode", "replicated")
        have = live.get(f"{stack}_{short}")
        if have and have != want:
            found.append(f"{stack}_{short} runs {have} but the file says {want}: remove it first "
                         f"(`docker service rm {stack}_{short}`), then deploy again")
    return found


def task_nodes(swarm: Swarm | None = None) -> int | None:
    """The Swarm's nodes that take tasks (ready and active); None when no engine answers (lint works offline)."""
    try:
        swarm = swarm or Swarm()
        return swarm.task_nodes()
    except (EngineUnavailable, DockerException, OSError):
        return None


def deploy(files: list[Path], stack: str, images: dict[str, str], timeout: float, consul_addr: str | None,
           on_progress: Callable[[dict[str, Verdict]], None] = lambda v: None,
           swarm: Swarm | None = None, poll: float = 1.0) -> DeployResult:
    try:
        swarm = swarm or Swarm()
        swarm.check()
    except EngineUnavailable as e:
        raise Unreachable(str(e)) from None
    doc = stackfile.load(files)
    unknown = sorted(set(images) - set(doc["services"]))
    if unknown:
        raise BadInput(f"--image names {unknown}, not in the stack file (services: {sorted(doc['services'])})")
    findings = stackfile.lint(doc, routing_mesh=routing_mesh_available(), nodes=task_nodes(swarm))
    errors = [f for f in findings if f.severity is stackfile.Severity.ERROR]
    if errors:
        raise BadInput("the stack file has errors; nothing was deployed:\n" + "\n".join(map(str, errors)))
    live_modes = {s.name: "global" if "Global" in s.attrs["Spec"]["Mode"] else "replicated"
                  for s in swarm.stack_services(stack)}
    changed = mode_changes(doc, stack, live_modes)
    if changed:
        raise BadInput("Swarm cannot change a service's mode (replicated or global), and docker stack deploy would "
                       "stop halfway; nothing was deployed:\n" + "\n".join(changed))
    # Consul: --consul or CONSUL_HTTP_ADDR, else the stack's own (found on its node once it runs)
    addr = consul_addr or swarm.consul_url(stack)
    own_consul = "consul" in doc["services"]
    catalog = Catalog(consul_client(addr)) if addr or not own_consul else None
    before = swarm.spec_versions(stack)
    if before and catalog is None:
        raise Unreachable(f"stack {stack!r} runs no Consul task to find (its consul service has no running task); "
                          "set CONSUL_HTTP_ADDR or --consul; nothing was deployed")
    if catalog is not None and (before or not own_consul):
        try:
            check_access(catalog.consul)
        except ConsulUnavailable as e:
            raise Unreachable(f"{e}; nothing was deployed") from None

    started = time.time() - 1.0  # the engine's clock is this machine's; a second of slack
    with tempfile.TemporaryDirectory() as tmp:
        args = [str(f) for f in files]
        if images:
            overlay = Path(tmp) / "images.yml"
            overlay.write_text(yaml.safe_dump({"version": doc.get("version", "3.8"),
                                               "services": {s: {"image": i} for s, i in images.items()}}))
            args.append(str(overlay))
        try:
            swarm.stack_deploy(args, stack)
        except RuntimeError as e:
            raise OperationFailed(f"docker stack deploy failed: {e}") from None

    deadline = time.monotonic() + timeout
    verdicts: dict[str, Verdict] = {}
    while True:
        if catalog is None and (addr := swarm.consul_url(stack)):
            catalog = Catalog(consul_client(addr))
        verdicts = observe(swarm, catalog, stack, started)
        on_progress(verdicts)
        failed = {n: v for n, v in verdicts.items() if v.state is State.FAILED}
        if failed:
            restore(swarm, stack, before)
            raise OperationFailed(diagnosis(swarm, failed))
        if verdicts and all(v.state is State.CONVERGED for v in verdicts.values()):
            return DeployResult(stack, time.time() - started - 1.0, verdicts,
                                [str(f) for f in findings])
        if time.monotonic() > deadline:
            restore(swarm, stack, before)
            missing = "; ".join(f"{n}: {v.reason}" for n, v in verdicts.items() if v.state is not State.CONVERGED)
            raise OperationFailed(f"not converged within {timeout:g}s; still missing: {missing}")
        time.sleep(poll)


def observe(swarm: Swarm, catalog: Catalog | None, stack: str, since: float,
            only: set[str] | None = None) -> dict[str, Verdict]:
    verdicts = {}
    for svc in swarm.stack_services(stack):
        if only is not None and svc.name not in only:
            continue
        view = swarm.view(svc)
        if (view.update_started_at or 0) < since:  # an earlier update's outcome is not this deploy's
            view = replace(view, update_state=None, update_message="")
        tasks = [t for t in swarm.tasks(svc.name, desired_state=None)
                 if t.desired_state == "running" or (t.created_at or 0) >= since]
        instances = None
        if view.consul_name:
            if catalog is None:  # the stack's own Consul has no running task yet
                instances = []
            else:
                try:
                    instances = catalog.instances(view.consul_name)
                except ConsulUnavailable:
                    instances = []  # the stack's own Consul may still be starting; the deadline bounds this
        verdicts[svc.name] = assess(view, tasks, instances, time.time())
    return dict(sorted(verdicts.items()))


def diagnosis(swarm: Swarm, failed: dict[str, Verdict]) -> str:
    lines = []
    for name, v in failed.items():
        lines.append(f"{name}: {v.reason}")
        for container_id in v.details:
            logs = swarm.logs(container_id)
            if logs:
                lines.append("  last log lines:\n" + "\n".join("    " + line for line in logs.splitlines()))
    return "\n".join(lines)


def restore(swarm: Swarm, stack: str, before: dict[str, int]) -> None:
    """Put back what this deploy changed: changed services roll back to their previous spec (unless
    Swarm already did), services it created are removed; a stack that did not exist is removed whole."""
    if not before:
        swarm.stack_remove(stack)
        return
    for svc in swarm.stack_services(stack):
        if svc.name not in before:
            swarm.remove(svc.name)
        elif svc.attrs["Version"]["Index"] != before[svc.name]:
            state = (svc.attrs.get("UpdateStatus") or {}).get("State", "")
            if not state.startswith("rollback"):
                swarm.rollback(svc.name)
