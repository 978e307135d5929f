"""`fleet status`: one view merging Swarm's services and tasks, Docker health and Consul's checks, and
the live view of rollouts in progress (`--watch`), and one rollout followed to its end (`--wait`)."""
import time

from .adapters.consul import Catalog, ConsulUnavailable, check_access, raft
from .adapters.store import stack_rollouts
from .adapters.swarm import Swarm
from .core import view
from .core.raft import control_plane

LIVE_STATES = {"new", "pending", "assigned", "accepted", "preparing", "ready", "starting", "running"}


def status(swarm: Swarm, catalog: Catalog, stack: str) -> dict:
    """The documented JSON shape (README, "fleet status --json")."""
    services, consul_error = [], None
    nodes = [{**n, "flag": node_flag(n)} for n in sorted(swarm.nodes(), key=lambda n: n["hostname"])]
    flags = {n["hostname"]: n["flag"] for n in nodes}
    instances_by_name: dict[str, list] = {}
    try:
        check_access(catalog.consul)  # where ACLs are on, a read without a good token is silently empty
    except ConsulUnavailable as e:
        consul_error = str(e)
    for svc in sorted(swarm.services(stack), key=lambda s: s.name):
        view = swarm.view(svc)
        labels = svc.labels
        instances = []
        if view.consul_name and not consul_error:
            if view.consul_name not in instances_by_name:
                try:
                    instances_by_name[view.consul_name] = catalog.instances(view.consul_name)
                except ConsulUnavailable as e:
                    consul_error, instances_by_name[view.consul_name] = str(e), []
            instances = instances_by_name[view.consul_name]
        by_task = {i.task_id: i for i in instances}
        tasks = [t for t in swarm.tasks(svc.name, desired_state=None)
                 if t.desired_state == "running" or t.state in LIVE_STATES]
        tasks.sort(key=lambda t: (t.slot or 0, -(t.created_at or 0)))
        services.append({
            "name": svc.name,
            "image": view.image,
            "version": view.version,
            "role": labels.get("fleet.role", "stable" if view.consul_name else None),
            "replicas": {"running": sum(t.state == "running" for t in tasks if t.desired_state == "running"),
                         "desired": view.replicas},
            "update": {"state": view.update_state, "message": view.update_message},
            "tasks": [{
                "id": t.id, "name": f"{svc.name}.{t.slot}" if t.slot else svc.name, "node": t.node,
                "node_flag": flags.get(t.node), "image": t.image, "digest": t.digest, "state": t.state,
                "desired_state": t.desired_state,
                "error": t.error, "health": t.health,
                "consul": ({"id": by_task[t.id].id, "status": by_task[t.id].status, "version": by_task[t.id].version,
                            "output": by_task[t.id].output} if t.id in by_task else None),
            } for t in tasks],
        })
    found = []
    if not consul_error:
        try:
            found = rollouts(catalog, stack)
        except ConsulUnavailable as e:  # Consul lost since the catalog answered: said, never a traceback
            consul_error = str(e)
    plane = None
    if not consul_error:
        try:
            plane = control_plane(*raft(catalog.consul))
        except ConsulUnavailable as e:  # an older stack's policy, or an operator's Consul: said, the rest stands
            plane = {"error": f"cannot read Consul's Raft configuration: {e}"}
    return {"stack": stack, "services": services, "nodes": nodes, "consul_error": consul_error, "rollouts": found,
            "control_plane": plane}


def node_flag(node: dict) -> str | None:
    """What is wrong with a node for the tasks on it: "down" (its engine stopped answering the managers),
    "drained" (Swarm moves its tasks away), "paused" (no new tasks), or None."""
    if node["state"] != "ready":
        return node["state"]  # down, unknown, disconnected
    return {"drain": "drained", "pause": "paused"}.get(node["availability"])


def rollouts(catalog: Catalog, stack: str) -> list[dict]:
    """Rollouts in progress, from Consul KV; `orphaned` when no fleet process holds the lock (the
    controller died): `fleet rollout --resume` finishes or reverts them."""
    _, found = stack_rollouts(catalog.consul, stack)
    return [{"service": svc, "revision": e.state.revision, "image": e.state.image, "phase": e.state.phase.value,
             "share": e.state.rollout.share, "paused": e.state.rollout.paused,
             "reason": e.state.rollout.reason, "orphaned": not e.held}
            for svc, e in sorted(found.items()) if e.state]


def watch_rollouts(catalog: Catalog, stack: str, stopped, wait: str = "2s"):
    """The stack's rollouts as live views (fleet/core/view.py), each time their state in Consul changes (a
    blocking query on the stack's rollout keys), or every `wait` when nothing does. A rollout that ended
    since is shown once more, from its history record, with its outcome."""
    index, running = None, {}
    while not stopped.is_set():
        index, found = stack_rollouts(catalog.consul, stack, index=index, wait=wait)
        now, views = {}, []
        for svc, e in sorted(found.items()):
            if e.state:
                now[svc] = e.state.revision
                views.append(view.rollout_view(svc, e.state, orphaned=not e.held))
            elif svc in running:
                views.append(view.ended_view(svc, e.history.get(running[svc])))
        running = now
        yield views


def follow_rollout(catalog: Catalog, stack: str, service: str, deadline: float, wait: str = "2s"):
    """The service's rollout in progress, or else the next one to start, as live views each time its state
    in Consul changes, until it ends: the last view is its ended view (`"ended": True`, its outcome as
    `phase`), read from its history record, so a rollout that began and ended between two reads is not
    missed. Returns without an ended view when the monotonic `deadline` passes first."""
    index, before = None, None
    while time.monotonic() < deadline:
        index, found = stack_rollouts(catalog.consul, stack, index=index, wait=wait)
        entry = found.get(service)
        history = entry.history if entry else {}
        if before is None:  # what had ended when we began; a rollout in progress then is not among them
            before = {n for n, h in history.items() if h.outcome in view.ENDED}
        done = view.ended_since(history, before)
        if done is not None:
            yield view.ended_view(service, done)
            return
        if entry and entry.state:
            yield view.rollout_view(service, entry.state, orphaned=not entry.held)
