"""`fleet deploy`: the stack file is the desired state. Lint it, plan what changes in each service
(fleet/core/changes.py), refuse what would undo a promotion, then apply: `docker stack deploy` for everything
but the containers of services with a canary rollout policy, wait until every service has converged
(running, healthy, passing in Consul with the expected version) or say exactly why not, then run those
container changes through fleet's canary. On failure the services this deploy changed go back to their
previous spec, and new ones are removed."""
import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

from docker.errors import DockerException

from . import connect, controller, stackfile
from .adapters.consul import PATIENCE, Catalog, ConsulUnavailable, client as consul_client, raft
from .adapters.gateway import OPS_PORT, unrouted
from .adapters.store import Store
from .adapters.swarm import EngineUnavailable, Swarm
from .core.tasks import Service
from .connect import engine, reach
from .core import changes, policy
from .core.changes import DeployPlan, How
from .core.convergence import State, Verdict
from .core.raft import control_plane
from .core.records import Revision, build_of
from .core.rollout import Phase, Rollout
from .errors import BadInput, OperationFailed, Unreachable
from .watch import observe


@dataclass
class DeployResult:
    stack: str
    seconds: float
    verdicts: dict[str, Verdict]
    warnings: list[str]
    plan: DeployPlan = field(default_factory=DeployPlan)
    rollouts: list = field(default_factory=list)  # controller.Result of each canary this deploy ran


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


def swarm_facts(swarm: Swarm | None = None) -> dict:
    """What `fleet lint` weighs a stack file against (stackfile.lint's keyword arguments): the nodes that take
    tasks (ready and active), the managers, and the generic resources (GPUs) the task-taking nodes advertise,
    kind -> how many. All None when no engine answers: lint works offline."""
    try:
        swarm = swarm or Swarm()
        taking = [node for node in swarm.capacity() if node.takes_tasks]
        resources: dict[str, int] = {}
        for node in taking:
            for kind, n in node.advertised.items():
                resources[kind] = resources.get(kind, 0) + n
        return {"nodes": len(taking), "managers": sum(n["role"] == "manager" for n in swarm.nodes()),
                "resources": resources}
    except (EngineUnavailable, DockerException, OSError):
        return {"nodes": None, "managers": None, "resources": None}


def deploy(files: list[Path], stack: str, images: dict[str, str], timeout: float, consul_addr: str | None,
           on_progress: Callable[[dict[str, Verdict]], None] = lambda v: None,
           swarm: Swarm | None = None, poll: float = 1.0, replace_promoted: bool = False,
           on_rollout: Callable[[Rollout], None] = lambda r: None, dry_run: bool = False,
           on_plan: Callable[[DeployPlan], None] | None = None) -> DeployResult:
    """Plan, then apply: everything but the canaries through `docker stack deploy` (the governed services'
    containers held as they run), wait for convergence, then each governed service's container change
    through fleet's canary. Any failure puts the whole stack back as it was (exit 1)."""
    s = _read(files, stack, images, consul_addr, swarm, replace_promoted)
    _refuse_reverts(s)
    if dry_run:
        return DeployResult(stack, 0.0, {}, [str(f) for f in s.findings], s.plan)
    stores = _lock(s)
    try:
        # Read and plan again under the locks: a rollout that ended between the first read and the locks
        # (a promotion) is in this plan, so the deploy refuses to undo it or plans with it, never reverts it.
        s = _read(files, stack, images, consul_addr, s.swarm, replace_promoted)
        s.stores = stores
        _refuse_reverts(s)
        if on_plan and s.plan.changed:
            on_plan(s.plan)
        canaries = [_prepare_canary(s, c.service) for c in s.plan.canaries]
        started = time.time() - 1.0  # the engine's clock is this machine's; a second of slack
        # a governed service whose only change is its containers' is left out (its canary carries it); one
        # with other changes too gets them, its containers held as they run
        held = {c.service for c in s.plan.canaries if all(k in changes.CONTAINER_KEYS for k in c.top_keys())}
        rendered = {**s.doc, "services": {name: changes.pin_container(svc, s.live[name].spec)
                                          if s.plan.of(name).how is How.CANARY else _rebuilt(s, name, svc)
                                          for name, svc in s.doc["services"].items() if name not in held}}
        if rendered["services"]:
            with tempfile.TemporaryDirectory() as tmp:
                path = Path(tmp) / "stack.yml"
                path.write_text(stackfile.dump(rendered))
                try:
                    s.swarm.stack_deploy([str(path)], stack)
                except RuntimeError as e:
                    raise OperationFailed(f"docker stack deploy failed: {e}") from None
        verdicts = _converge(s, started, timeout, poll, on_progress)
        rollouts = []
        for target, image, plan, container in canaries:
            try:
                rollouts.append(controller.run_canary(target, image, plan, on_rollout, container, cause="fleet deploy"))
            except OperationFailed as e:
                # reverted: the whole stack goes back; superseded: someone else deployed meanwhile, theirs stays
                if e.result is None or e.result.phase is not Phase.SUPERSEDED:
                    restore(s.swarm, stack, s.before)
                raise
        for c in s.plan.services:  # what the file no longer has goes last, once everything else worked
            if c.how is How.REMOVE:
                s.swarm.remove(f"{stack}_{c.service}")
        _record(s, stores, started)
        return DeployResult(stack, time.time() - started - 1.0, verdicts, [str(f) for f in s.findings], s.plan,
                            rollouts)
    finally:
        for store in stores.values():
            store.release()


def _refuse_reverts(s: "_Situation") -> None:
    if s.plan.refused:
        raise BadInput("the deploy would undo a promotion; nothing was deployed:\n" + "\n".join(
            f"{s.stack}_{c.service}: {c.note}" for c in s.plan.refused), result=s.plan)


@dataclass
class _Situation:
    """What a deploy starts from: the file, the running services, Consul, and the plan."""
    swarm: Swarm
    stack: str
    doc: dict
    findings: list
    live: dict  # short name -> the running service (the stack's, without canaries)
    want: dict[str, dict]  # short name -> the file's service in `changes.desired` shape
    before: dict[str, Service]  # service name -> the service as this deploy found it (restore puts it back)
    consul: object | None
    catalog: Catalog | None
    plan: DeployPlan
    stores: dict = field(default_factory=dict)  # short name -> its rollout lock, held during the deploy


def _read(files: list[Path], stack: str, images: dict[str, str], consul_addr: str | None, swarm: Swarm | None,
          replace_promoted: bool) -> _Situation:
    """Everything checked and read before anything changes (exit 2 or 3 from here)."""
    swarm = engine(swarm)
    facts = swarm_facts(swarm)
    doc = stackfile.load(files, managers=facts["managers"])
    unknown = sorted(set(images) - set(doc["services"]))
    if unknown:
        raise BadInput(f"--image names {unknown}, not in the stack file (services: {sorted(doc['services'])})")
    for name, image in images.items():
        doc["services"][name] = {**doc["services"][name], "image": image}
    findings = stackfile.lint(doc, routing_mesh=routing_mesh_available(), **facts)
    errors = [f for f in findings if f.severity is stackfile.Severity.ERROR]
    if errors:
        raise BadInput("the stack file has errors; nothing was deployed:\n" + "\n".join(map(str, errors)))
    found = swarm.services(stack)
    services = [svc for svc in found if "fleet.canary-of" not in svc.labels]  # a rollout's canary is not the file's
    live_modes = {svc.name: "global" if svc.is_global else "replicated" for svc in services}
    changed = mode_changes(doc, stack, live_modes)
    if changed:
        raise BadInput("Swarm cannot change a service's mode (replicated or global), and docker stack deploy would "
                       "stop halfway; nothing was deployed:\n" + "\n".join(changed))
    # Consul: --consul or CONSUL_HTTP_ADDR, else the stack's own (found on its node once it runs)
    addr = consul_addr or swarm.consul_url(stack)
    own_consul = "consul" in doc["services"]
    c = consul_client(addr) if addr or not own_consul else None
    catalog = Catalog(c) if c is not None else None
    before = {svc.name: svc for svc in found}
    if before and catalog is None:
        raise Unreachable(f"stack {stack!r} runs no Consul task to find (its consul service has no running task); "
                          "set CONSUL_HTTP_ADDR or --consul; nothing was deployed")
    if catalog is not None and (before or not own_consul):
        reach(c, "nothing was deployed")
    live = {svc.name.removeprefix(f"{stack}_"): svc for svc in services}
    have = {name: changes.live(svc.spec) for name, svc in live.items()}
    want, history = {}, {}
    for name, svc in doc["services"].items():
        digest = None
        running, image = have.get(name), str(svc.get("image", ""))
        if running and running["digest"] and running["image"] == image.split("@")[0]:
            digest = swarm.pinned(image).partition("@")[2] or None  # a rebuilt tag is a change
        elif running and (built := swarm.engine_image(image)):
            # an image only on this engine, by its ID: a promotion's (its tag had moved, or was rebuilt) is
            # the file's tag while that names it; a tag rebuilt under the running replicas is a new build
            if running["image"] == built:
                have[name] = {**running, "image": image}
            elif running["image"] == image and (ran := swarm.running_build(live[name])) not in (None, built):
                have[name], digest = {**running, "digest": ran}, built
        want[name] = changes.desired(svc, digest)
    for name, svc in live.items():
        if c is not None and svc.registers:
            try:
                history[name] = Store(c, stack, name).history()
            except ConsulUnavailable as e:
                raise Unreachable(f"{e}; nothing was deployed") from None
    for name, svc in sorted(doc["services"].items()):  # a private image the nodes could not pull: said now
        image = str(svc.get("image", ""))
        if image and (name not in have or have[name]["image"] != image.split("@")[0]):
            problem = swarm.login_problem(image)
            if problem:
                raise BadInput(f"{stack}_{name}: {problem}; nothing was deployed")
    plan = changes.plan(want, have, history, replace_promoted)
    return _Situation(swarm, stack, doc, findings, live, want, before, c, catalog, plan)


def _lock(s: _Situation) -> dict[str, Store]:
    """The rollout lock of every running service fleet can roll out, held for the whole deploy: a deploy
    never runs beside a rollout (exit 2, naming the holder), and its own canaries run under it. Taken
    before the plan the deploy applies is made (`deploy` reads and plans again once it holds them)."""
    stores: dict[str, Store] = {}
    try:
        for name, svc in sorted(s.live.items()):
            if s.consul is None or not svc.registers:
                continue
            store = Store(s.consul, s.stack, name, PATIENCE)
            holder = store.acquire("deploy")
            if holder is not None:
                raise BadInput(f"a rollout of {s.stack}_{name} is running: {controller.holder_text(holder)}; wait for "
                               "it to end or `fleet abort` it, then deploy again; nothing was deployed")
            stores[name] = store
            if store.load():
                raise BadInput(f"an unfinished rollout of {s.stack}_{name} is recorded in Consul: finish it with "
                               "`fleet rollout --resume` or revert it with `fleet abort`; nothing was deployed")
    except BaseException:
        for store in stores.values():
            store.release()
        raise
    return stores


def _prepare_canary(s: _Situation, name: str):
    """A governed service's canary, checked before anything changes: its target, image, plan, settings."""
    want = s.want[name]
    chosen, _ = policy.parse(want["labels"])
    if name not in s.stores:
        raise BadInput(f"{s.stack}_{name} has a canary rollout policy, but its replicas do not register in Consul "
                       "(no CONSUL_HTTP_ADDR), so fleet cannot judge a canary: register them, or set "
                       f"{policy.PREFIX}strategy: rolling; nothing was deployed")
    target = connect.target(s.swarm, s.stack, name, Catalog(s.consul, PATIENCE), s.stores[name])
    container = changes.settings(want)
    image = str(s.doc["services"][name]["image"])
    return target, image, controller.prepare(target, image, chosen.plan, container), container


def _rebuilt(s: _Situation, name: str, svc: dict) -> dict:
    """The file's service with its engine tag as its build's ID where Swarm must run that ID: a tag rebuilt
    under the service (the same tag again changes nothing in its spec, and Swarm would start no task), or a
    service that runs by the ID its tag still names (the tag again would restart every task for nothing).
    `docker stack deploy` pins a registry's digest by itself."""
    image = str(svc.get("image", ""))
    built = s.swarm.engine_image(image)
    live = s.live.get(name)
    if built and ("digest" in s.plan.of(name).keys() and s.want[name]["digest"] == built
                  or live is not None and live.image == built):
        return {**svc, "image": built}
    return svc


def _converge(s: _Situation, started: float, timeout: float, poll: float,
              on_progress: Callable[[dict[str, Verdict]], None]) -> dict[str, Verdict]:
    deadline = time.monotonic() + timeout
    while True:
        if s.catalog is None and (addr := s.swarm.consul_url(s.stack)):
            s.catalog = Catalog(consul_client(addr))
        verdicts = observe(s.swarm, s.catalog, s.stack, started, existing=set(s.before))
        if verdicts and all(v.state is State.CONVERGED for v in verdicts.values()):
            verdicts = _routed(s, verdicts)
        on_progress(verdicts)
        failed = {n: v for n, v in verdicts.items() if v.state is State.FAILED}
        if failed:
            restore(s.swarm, s.stack, s.before)
            raise OperationFailed(diagnosis(s.swarm, failed))
        if verdicts and all(v.state is State.CONVERGED for v in verdicts.values()):
            return verdicts
        if time.monotonic() > deadline:
            restore(s.swarm, s.stack, s.before)
            missing = "; ".join(f"{n}: {v.reason}" for n, v in verdicts.items() if v.state is not State.CONVERGED)
            raise OperationFailed(f"not converged within {timeout:g}s; still missing: {missing}{_plane(s)}")
        time.sleep(poll)


def _plane(s: _Situation) -> str:
    """What is wrong with Consul's control plane, as a failed deploy's last words: servers that split, or stale
    data naming an earlier deploy's addresses, keep replicas from passing, and nothing else would say so."""
    try:
        warnings = control_plane(*raft(s.catalog.consul))["warnings"] if s.catalog else []
    except ConsulUnavailable as e:
        warnings = [f"its Raft configuration cannot be read: {e}"]
    return f"; Consul's control plane: {'; '.join(warnings)}" if warnings else ""


def _routed(s: _Situation, verdicts: dict[str, Verdict]) -> dict[str, Verdict]:
    """The verdicts, with the stack's gateway still progressing while any of its tasks (one a node) routes no
    request to the replicas that Consul already passes: a client right after `fleet deploy` returns is
    served, not told "No server is available" while the gateway's next DNS lookup is due."""
    name = f"{s.stack}_gateway"
    gateway = verdicts.get(name)
    if gateway is None or not any(v.passing for v in verdicts.values()):
        return verdicts  # no gateway in this stack, or nothing for it to route to
    why = [w for url in s.swarm.published_urls(name, OPS_PORT) if (w := unrouted(url))]
    if not why:
        return verdicts
    return {**verdicts, name: replace(gateway, state=State.PROGRESSING,
                                      reason=f"{gateway.reason}; not routing to the replicas yet: {'; '.join(why)}")}


def _record(s: _Situation, stores: dict[str, Store], started: float) -> None:
    """A revision in fleet's history for each service whose image Swarm's rolling update changed: its name, or
    the digest its tag names (a rebuilt tag is a new build, and `fleet rollback --to` must find the old one)."""
    for c in s.plan.services:
        if c.how is How.ROLLING and {"image", "digest"} & set(c.keys()) and c.service in stores:
            store = stores[c.service]
            history = store.history()
            image = str(s.doc["services"][c.service]["image"])
            running = s.swarm.describe(f"{s.stack}_{c.service}")  # as Swarm pinned it: what rollback --to puts back
            pinned = running.image if running else None  # by digest, or by the build an engine's tag names
            if pinned and not build_of(pinned):
                pinned = s.swarm.running_build(running) or s.swarm.engine_image(pinned) or pinned
            store.record(Revision((history[-1].revision + 1) if history else 1, image, "deployed",
                                  "fleet deploy (Swarm's rolling update)", cause="fleet deploy", started_at=started,
                                  ended_at=time.time(), pinned=pinned))


def diagnosis(swarm: Swarm, failed: dict[str, Verdict]) -> str:
    lines = []
    for name, v in failed.items():
        lines.append(f"{name}: {v.reason}")
        for container_id in v.details:
            logs = swarm.logs(container_id)
            if logs:
                lines.append("  last log lines:\n" + "\n".join("    " + line for line in logs.splitlines()))
    return "\n".join(lines)


def restore(swarm: Swarm, stack: str, found: dict[str, Service]) -> None:
    """Put back what this deploy changed, to the spec it found: a service whose spec is no longer that one
    gets it back (not Swarm's one-step PreviousSpec, which may be an older promotion's; nothing when Swarm's
    own rollback already put it back), one it created is removed (never a rollout's canary), and one whose
    spec is as found is left alone, though `docker stack deploy` wrote it again. A stack that did not exist
    is removed whole."""
    if not found:
        swarm.stack_remove(stack)
        return
    for svc in swarm.services(stack):
        if svc.name not in found:
            if "fleet.canary-of" not in svc.labels:
                swarm.remove(svc.name)
        elif svc.spec != found[svc.name].spec:
            swarm.put_spec(svc.name, found[svc.name].spec)
