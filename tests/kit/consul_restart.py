"""Restarting the stack's Consul under a bounded load loop through the gateway, measured from the
client's side: shared by tests/real/test_control_plane.py and bench/consul_restart_bench.py."""
import subprocess
import time
from dataclasses import dataclass


from fleet.adapters.consul import Catalog
from fleet.adapters.swarm import Swarm, _epoch
from tests.kit.helpers import HTTP, SAMPLE, LoadLoop, wait_until
from tests.kit.stacks import StackUnderTest, converged, deploy, remove_stack

PROBE_KEY = "fleet/test/restart-probe"


@dataclass
class Restart:
    requests: int
    failed: int
    failures: list
    catalog_whole: float  # seconds from the restart until the new Consul lists every replica passing
    kv_back: float  # seconds from the restart until the new Consul answers the probe key
    new_running: float  # seconds from the restart until Swarm had the new Consul container running

    @property
    def consul_recovery(self) -> float:
        """Consul's own part: from its new container running to the whole catalog (Swarm's delay apart)."""
        return self.catalog_whole - self.new_running


class RestartStack:
    def __init__(self, name: str, consul_port: int, gateway_port: int, image: str = "fleet/inference:2"):
        self.stack = StackUnderTest(name, Swarm(), consul_port, gateway_port)
        self.image = image

    def __enter__(self) -> "RestartStack":
        s = self.stack
        remove_stack(s.swarm, s.name)
        deploy(s, {"FLEET_IMAGE": self.image})
        version = s.swarm.image_label(self.image, "fleet.model-version")
        wait_until(lambda: converged(s, version=version), 180, f"stack {s.name} to converge")
        wait_until(lambda: HTTP.post(f"{s.gateway}/predict", json={"inputs": SAMPLE}, timeout=5).status_code == 200,
                   60, "the gateway to answer /predict")
        return self

    def __exit__(self, *exc) -> None:
        remove_stack(self.stack.swarm, self.stack.name)

    @property
    def consul(self):
        return self.stack.consul("master")

    def consul_container(self) -> str | None:
        running = self.stack.swarm.client.containers.list(
            filters={"label": f"com.docker.swarm.service.name={self.stack.service('consul')}"})
        return running[0].id if running else None

    def restart_under_load(self, how: str, seconds_after: float = 8.0) -> Restart:
        """`how`: "update" (docker service update --force) or "kill" (the container killed; Swarm
        starts a new one). Load runs from before the restart until `seconds_after` past recovery."""
        s, c = self.stack, self.consul
        c.kv.put(PROBE_KEY, str(time.time()))
        replicas = len(Catalog(c).instances(s.consul_service))
        old = self.consul_container()
        with LoadLoop(f"{s.gateway}/predict", max_requests=30_000, max_seconds=150) as load:
            time.sleep(2)
            t0, wall0 = time.monotonic(), time.time()
            if how == "update":
                subprocess.run(["docker", "service", "update", "--detach", "--force", s.service("consul")],
                               check=True, capture_output=True)
            else:
                s.swarm.client.containers.get(old).kill()
            catalog_whole = kv_back = None

            def back():
                nonlocal catalog_whole, kv_back
                new = self.consul_container()
                if new is None or new == old:
                    return False
                if kv_back is None and c.kv.get(PROBE_KEY)[1]:
                    kv_back = time.monotonic() - t0
                passing = [i for i in Catalog(c).instances(s.consul_service) if i.status == "passing"]
                if catalog_whole is None and len(passing) == replicas:
                    catalog_whole = time.monotonic() - t0
                return catalog_whole is not None and kv_back is not None

            wait_until(back, 120, "the new Consul to answer with the whole catalog and the probe key", interval=0.2)
            time.sleep(seconds_after)  # the client keeps going: failures after recovery count too
        started = _epoch(s.swarm.client.containers.get(self.consul_container()).attrs["State"]["StartedAt"])
        return Restart(load.total, load.total - load.statuses[200], load.failures[:5], catalog_whole, kv_back,
                       new_running=started - wall0)
