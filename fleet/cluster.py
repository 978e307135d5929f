"""The rollout's `Cluster` (fleet/executor.py) on the real Swarm and Consul: the stack's stable
service, its canary service, and the traffic weights and maintenance mode that steer the gateway."""
import hashlib
import json

import consul

from .core import capacity, changes
from .adapters.consul import Catalog
from .adapters.store import Store
from .adapters.swarm import Swarm
from .core.promotion import promotion_flags
from .core.tasks import Service


class SwarmCluster:
    def __init__(self, swarm: Swarm, catalog: Catalog, store: Store, stable_name: str, canary_name: str,
                 consul_name: str):
        self.swarm, self.catalog, self.store = swarm, catalog, store
        self.stable_name, self.canary_name, self.consul_name = stable_name, canary_name, consul_name

    def _stable(self) -> Service:
        svc = self.swarm.describe(self.stable_name)
        if svc is None:
            raise RuntimeError(f"the stable service {self.stable_name} is gone (removed by hand or by "
                               "`docker stack deploy --prune`?)")
        return svc

    def stable_image(self) -> str:
        return self._stable().image_name

    def stable_runs(self, image: str, container: dict | None) -> bool:
        live = changes.live(self._stable().spec)
        return changes.runs(live, self._named(image, live), container)

    def stable_differs(self, image: str, container: dict | None) -> str:
        """How the stable's spec differs from `image` with these settings ('' when it does not)."""
        live = changes.live(self._stable().spec)
        return "; ".join(map(str, changes.mismatch(live, self._named(image, live), container)))

    def _named(self, image: str, live: dict) -> str:
        """`image` as the stable's spec would name it. An image only on this engine is its build (the ID a
        tag names now), named as the spec names it where that is the same image (its ID, or the same tag) and
        the spec runs that build (Swarm.running_build: what its containers run, where all were started from
        it; else what its tag names). So a promotion that ships a judged ID under its tag runs it, and a tag
        rebuilt under a running stable, whose containers run the earlier build, is a change."""
        build = self.swarm.engine_image(image)
        if build is None:
            return image
        runs = self.swarm.running_build(self._stable()) or self.swarm.engine_image(live["image"])
        return live["image"] if (image.startswith("sha256:") or image == live["image"]) and runs == build else build

    def stable_replicas(self) -> int:
        return self._stable().replicas

    def stable_spec_key(self) -> str:
        return hashlib.sha256(json.dumps(self._stable().spec, sort_keys=True).encode()).hexdigest()[:16]

    def stable_rolled_back_since(self, since: float) -> bool:
        stable = self._stable()
        return (stable.update_state or "").startswith("rollback") and (stable.update_started_at or 0) >= since

    def create_canary(self, image: str, replicas: int, container: dict | None = None) -> str:
        return self.swarm.create_canary(self._stable(), self.canary_name, image, replicas, container)

    def resolve(self, image: str) -> str:
        pinned = self.swarm.pinned(image)
        return pinned if "@" in pinned else self.swarm.engine_image(image) or pinned

    def canary_image(self) -> str:
        """The canary's image as Swarm pinned it (with its digest)."""
        return self.swarm.describe(self.canary_name).image

    def set_weights(self, stable: int | None, canary: int | None) -> None:
        self.store.set_weights(self.consul_name, {"stable": stable, "canary": canary})  # fenced by the lock

    def take_canary_out(self, reason: str) -> None:
        """The cut in KV, which each canary replica follows on its own node's agent; and at once, through the
        agent fleet speaks to, for the instances that agent holds."""
        self.store.cut(self.consul_name, "canary", f"fleet: {reason}"[:200])
        for i in self.catalog.instances(self.consul_name):
            if i.role == "canary":
                try:
                    self.catalog.maintenance(i.id, f"fleet: {reason}"[:200])
                except consul.ConsulException:  # held by another agent: the replica follows the cut itself
                    pass

    def remove_canary(self) -> None:
        self.swarm.remove(self.canary_name)

    def canary_gone(self) -> bool:
        """No canary container left, and no canary instance in Consul. A replica leaves Consul as it drains;
        one that could not (Consul did not answer it, or it was killed at its grace period) stays listed
        until Consul's own reaper (DeregisterCriticalServiceAfter, a minute and more), so once its
        container is gone fleet removes it, where the agent fleet speaks to holds it."""
        if self.swarm.containers_left(self.canary_name):
            return False
        left = [i for i in self.catalog.instances(self.consul_name) if i.role == "canary"]
        for i in left:
            try:
                self.catalog.deregister(i.id)
            except consul.ConsulException:  # held by another node's agent: its reaper removes it
                pass
        return not left

    def update_stable(self, image: str, container: dict | None = None) -> None:
        stable = self._stable()
        flags = changes.update_flags(changes.live(stable.spec), container) if container else []
        replicas = stable.replicas if stable.replicas is not None else 1
        per_replica = capacity.reservations(stable.task_template)
        batch = capacity.promotion_batch(per_replica, replicas, self.swarm.capacity()) if per_replica else None
        self.swarm.update_image(self.stable_name, image, promotion_flags(stable.update_config, replicas, batch) + flags)

    def canary_shortfall(self, replicas: int) -> str | None:
        """Why `replicas` canary replicas (reserving what a stable one does) cannot be placed now, or None."""
        per_replica = capacity.reservations(self._stable().task_template)
        return capacity.canary_shortfall(per_replica, replicas, self.swarm.capacity()) if per_replica else None

    def revert_stable(self) -> None:
        if not (self._stable().update_state or "").startswith("rollback"):
            self.swarm.rollback(self.stable_name)
