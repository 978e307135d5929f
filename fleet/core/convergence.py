"""Has a service converged, is it still on its way, or has it failed, and why? A pure judgement.

`assess` reads one service's observed state (its spec summary, its tasks, its Consul instances) and
the clock value it is given; it never calls Docker, Consul or the clock itself.
"""
from dataclasses import dataclass, field
from enum import Enum

from .tasks import Instance, Task

MISSING_IMAGE = ("no such image", "pull access denied", "manifest unknown", "not found: manifest",
                 "repository does not exist", "invalid reference format")
FAILED_STATES = {"failed", "rejected"}
UNHEALTHY_NEW = 3  # tasks of a service being created that turned unhealthy: then it is a fault


class State(str, Enum):
    CONVERGED = "converged"
    PROGRESSING = "progressing"
    FAILED = "failed"


@dataclass(frozen=True)
class ServiceView:
    name: str
    image: str
    replicas: int  # for a global service: its nodes (ready and active)
    has_healthcheck: bool
    consul_name: str | None = None  # set when the service's replicas register in Consul
    version: str | None = None  # the version Consul should report (the image's fleet.model-version label)
    update_state: str | None = None  # Swarm's UpdateStatus of an update started by this deploy, else None
    update_message: str = ""
    update_started_at: float | None = None
    digest: str | None = None  # the spec's digest when the image is pinned: tasks must run exactly it


@dataclass(frozen=True)
class Verdict:
    state: State
    reason: str
    running: int = 0
    desired: int = 0
    passing: int | None = None
    details: list[str] = field(default_factory=list)


def _ready(t: Task, svc: ServiceView) -> bool:
    # health None: a container on another node, which Swarm reports running only once a check passed
    return (t.state == "running" and t.desired_state == "running" and t.image == svc.image
            and (svc.digest is None or t.digest == svc.digest)
            and (not svc.has_healthcheck or t.health in ("healthy", None)))


def assess(svc: ServiceView, tasks: list[Task], instances: list[Instance] | None, now: float,
           pending_grace: float = 20.0, crash_threshold: int = 2, new: bool = False) -> Verdict:
    """Judge one service from the tasks created since the deploy began (and its Consul instances).
    `new`: the deploy creates the service, so Swarm has no earlier spec to roll back to and restarts a
    task that turned unhealthy; on a cold start (images pulling, models loading on every node at once) a
    health check can time out once, so that counts as a fault only from UNHEALTHY_NEW tasks on."""
    desired = svc.replicas
    ready = [t for t in tasks if _ready(t, svc)]
    n = len(ready)
    rolled_back = svc.update_state in ("rollback_started", "rollback_completed", "rollback_paused", "paused")
    for t in tasks:
        text = f"{t.error} {t.message}".lower()
        if any(m in text for m in MISSING_IMAGE):
            return Verdict(State.FAILED, f"image {t.image} cannot be found: {t.error or t.message}. Build or push "
                                         f"it, or fix the tag", n, desired)
    # Swarm kills an unhealthy task ("... unhealthy container"); a container that crashed also ends
    # with health "unhealthy", but that is a crash, told apart by its error. A replica that Swarm is
    # stopping drains (readiness 503, then its probes go) and turns unhealthy by design: not a fault.
    unhealthy = [t for t in tasks if "unhealthy" in t.error.lower()
                 or (t.health == "unhealthy" and t.state in ("starting", "running") and t.desired_state == "running")]
    if unhealthy and (not new or len(unhealthy) >= UNHEALTHY_NEW):
        t = unhealthy[-1]
        return Verdict(State.FAILED, f"replica {t.id[:12]} turned unhealthy"
                                     f"{f' ({len(unhealthy)} tasks in all)' if new else ''}; last health check said: "
                                     f"{t.health_output or t.error or '(no output)'}", n, desired)
    crashed = [t for t in tasks if t.state in FAILED_STATES and t.exit_code not in (None, 0) and t not in unhealthy]
    if len(crashed) >= crash_threshold or (crashed and rolled_back):
        t = crashed[-1]
        return Verdict(State.FAILED, f"tasks crash-loop: {len(crashed)} exited, last with exit code {t.exit_code} "
                                     f"({t.error or t.message})", n, desired, details=[t.container_id])
    if rolled_back:
        what = "paused the update" if svc.update_state == "paused" else "rolled the update back"
        return Verdict(State.FAILED, f"Swarm {what} ({svc.update_state}): {svc.update_message}", n, desired)
    stuck = [t for t in tasks if t.state == "pending" and t.desired_state == "running" and t.created_at is not None
             and now - t.created_at > pending_grace]
    if stuck:
        t = stuck[0]
        return Verdict(State.FAILED, f"tasks stay pending for {now - t.created_at:.0f}s: Swarm says "
                                     f"\"{t.error or t.message}\". Free resources, relax the constraints or "
                                     f"reservations, or add a node that meets them", n, desired)
    if svc.update_state == "updating":
        return Verdict(State.PROGRESSING, f"{n}/{desired} tasks ready; Swarm's update is still in progress "
                                          f"(its monitor window can still roll it back): {svc.update_message}",
                       n, desired)
    if n < desired and unhealthy:
        t = unhealthy[-1]
        return Verdict(State.PROGRESSING, f"{n}/{desired} tasks ready; replica {t.id[:12]} turned unhealthy and Swarm "
                                          f"starts another ({len(unhealthy)} of {UNHEALTHY_NEW} allowed on a first "
                                          f"start): {t.health_output or t.error or '(no output)'}", n, desired)
    if n < desired:
        return Verdict(State.PROGRESSING, f"{n}/{desired} tasks running{' and healthy' if svc.has_healthcheck else ''}"
                                          f" ({waiting_on([t for t in tasks if t.desired_state == 'running'])})",
                       n, desired)
    if svc.consul_name is None:
        return Verdict(State.CONVERGED, f"{n}/{desired} tasks running", n, desired)
    ids = {t.id for t in ready}
    mine = [i for i in instances or [] if i.task_id in ids]
    passing = [i for i in mine if i.status == "passing" and (svc.version is None or i.version == svc.version)]
    if len(passing) == desired:
        return Verdict(State.CONVERGED, f"{n}/{desired} tasks healthy, {desired} passing in Consul", n, desired, desired)
    waiting = [f"{i.id}: {i.status}{' v' + i.version if i.version else ''} ({i.output[:120]})" for i in mine
               if i not in passing]
    return Verdict(State.PROGRESSING, f"{n}/{desired} tasks healthy; Consul: {len(passing)}/{desired} passing"
                                      f"{' with version ' + svc.version if svc.version else ''}"
                                      f"{'; ' + '; '.join(waiting) if waiting else ''}", n, desired, len(passing))


WAITING = {"preparing": "pulling the image", "starting": "starting", "assigned": "assigned",
           "accepted": "accepted", "pending": "waiting for a node", "new": "new"}


def waiting_on(tasks: list[Task]) -> str:
    """What tasks that are not ready yet wait on, per node: 'pulling the image on node2, node3; loading
    (health starting) on node1'. Pure."""
    by: dict[str, list[str]] = {}
    for t in tasks:
        if t.state == "running" and t.health == "starting":
            what = "starting up (health check not passed yet: a model loading)"
        elif t.state == "running":
            what = f"running ({t.health})" if t.health else "running"
        else:
            what = WAITING.get(t.state, t.state)
        by.setdefault(what, [])
        if t.node and t.node not in by[what]:
            by[what].append(t.node)
    return "; ".join(f"{what} on {', '.join(nodes)}" if nodes else what for what, nodes in by.items()) \
        or "none scheduled yet"
