"""A stack's services as `convergence.assess` judges them, read from Swarm (spec, tasks) and Consul
(instances): what `fleet deploy` waits on, and what a promotion watches."""
import time
from dataclasses import replace

from .adapters.consul import Catalog, ConsulUnavailable
from .adapters.swarm import Swarm
from .core.convergence import Verdict, assess


def observe(swarm: Swarm, catalog: Catalog | None, stack: str, since: float,
            only: set[str] | None = None, existing: set[str] | None = None) -> dict[str, Verdict]:
    """Each service's verdict on what happened since `since`. `existing`: the services that ran before
    (the others are new: see `assess`); None: all of them."""
    verdicts = {}
    for svc in swarm.services(stack):
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
        verdicts[svc.name] = assess(view, tasks, instances, time.time(),
                                    new=existing is not None and svc.name not in existing)
    return dict(sorted(verdicts.items()))
