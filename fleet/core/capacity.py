"""Generic resources (GPUs): what a service's replica reserves, what the nodes have free, and so what a
canary or a promotion can do. Pure: values in, values out.

Swarm places a replica that reserves generic resources (`generic_resources` in the stack file, e.g. one
`NVIDIA-GPU`) only on a node with that many free, and otherwise leaves it pending ("no suitable node").
A canary then never starts, and a promotion that starts new tasks before stopping old ones
(`start-first`) needs a free GPU per replica it starts at once: on a full cluster it stalls. So fleet
checks before it creates a canary, and orders a promotion by what is free.
"""
from dataclasses import dataclass, field


@dataclass(frozen=True)
class NodeCapacity:
    """One node's generic resources: advertised by its engine, and held by the tasks placed on it."""
    node: str
    takes_tasks: bool  # ready and active (not down, paused or drained)
    advertised: dict[str, int] = field(default_factory=dict)  # kind -> how many
    held: dict[str, int] = field(default_factory=dict)  # kind -> how many its tasks hold

    def free(self, kind: str) -> int:
        return max(0, self.advertised.get(kind, 0) - self.held.get(kind, 0)) if self.takes_tasks else 0


def reservations(task_template: dict) -> dict[str, int]:
    """kind -> how many one replica of a service reserves, from its spec's TaskTemplate."""
    wanted: dict[str, int] = {}
    for r in ((task_template.get("Resources") or {}).get("Reservations") or {}).get("GenericResources") or []:
        spec = r.get("DiscreteResourceSpec") or r.get("NamedResourceSpec") or {}
        if spec.get("Kind"):
            count = int(spec.get("Value", 1)) if "DiscreteResourceSpec" in r else 1
            wanted[spec["Kind"]] = wanted.get(spec["Kind"], 0) + count
    return wanted


def count(resources: list[dict] | None) -> dict[str, int]:
    """kind -> how many, from an engine's list of generic resources (a node's, or a task's assigned ones)."""
    total: dict[str, int] = {}
    for r in resources or []:
        if "NamedResourceSpec" in r:
            kind, n = r["NamedResourceSpec"].get("Kind"), 1
        else:
            kind, n = (r.get("DiscreteResourceSpec") or {}).get("Kind"), int(r["DiscreteResourceSpec"].get("Value", 0))
        if kind:
            total[kind] = total.get(kind, 0) + n
    return total


def replicas_that_fit(per_replica: dict[str, int], nodes: list[NodeCapacity]) -> int | None:
    """How many more replicas reserving `per_replica` the nodes can place now; None when it reserves nothing."""
    if not per_replica:
        return None
    return sum(min(n.free(kind) // need for kind, need in per_replica.items()) for n in nodes)


def describe(per_replica: dict[str, int], nodes: list[NodeCapacity]) -> str:
    """e.g. 'NVIDIA-GPU free: fleet-node1 0/1, fleet-node2 0/1 (not taking tasks)'."""
    parts = []
    for kind in per_replica:
        each = ", ".join(f"{n.node} {n.free(kind)}/{n.advertised.get(kind, 0)}"
                         + ("" if n.takes_tasks else " (not taking tasks)") for n in nodes)
        parts.append(f"{kind} free: {each or 'no nodes'}")
    return "; ".join(parts)


def canary_shortfall(per_replica: dict[str, int], replicas: int, nodes: list[NodeCapacity]) -> str | None:
    """Why `replicas` canary replicas cannot be placed now (None when they can), naming the resource."""
    fit = replicas_that_fit(per_replica, nodes)
    if fit is None or fit >= replicas:
        return None
    wants = ", ".join(f"{need} {kind}" for kind, need in per_replica.items())
    return (f"the canary needs {wants} for each of its {replicas} replica(s) and the cluster has room for {fit} "
            f"({describe(per_replica, nodes)}): free one (scale the stable down by one, or stop what holds it), "
            "or add a node that advertises it")


def promotion_batch(per_replica: dict[str, int], replicas: int, nodes: list[NodeCapacity]) -> int | None:
    """How many new replicas a start-first promotion may start at once: every replica when the resources
    allow (or it reserves none: None), else as many as are free; 0 when none is: then stop-first, one by one."""
    fit = replicas_that_fit(per_replica, nodes)
    return None if fit is None else min(max(1, replicas), fit)
