"""A failed deploy puts the stack back (fleet/deploy.py's `restore`), over a fake Swarm that applies each
write to its services: what the test checks is the stack left behind, not the calls made."""
from dataclasses import replace

from fleet.core.tasks import Service
from fleet.deploy import restore


class FakeSwarm:
    """A stack's services by name; `rollback` returns one to the spec version it had before its update."""

    def __init__(self, services: list[Service], previous: dict[str, int]):
        self.by_name, self.previous, self.rollbacks = {s.name: s for s in services}, previous, []

    def services(self, stack):
        return list(self.by_name.values())

    def remove(self, name):
        del self.by_name[name]

    def stack_remove(self, stack):
        self.by_name.clear()

    def rollback(self, name):
        self.rollbacks.append(name)
        self.by_name[name] = replace(self.by_name[name], version=self.previous[name], update_state="rollback_completed")


def service(name: str, version: int, update_state: str | None = None) -> Service:
    return Service(id=name, name=name, version=version, labels={}, image="fleet/inference:2", env=(), replicas=2,
                   update_state=update_state)


def test_a_changed_service_goes_back_a_new_one_goes_and_an_untouched_one_stays():
    swarm = FakeSwarm([service("s_gateway", 5), service("s_inference", 8, "updating"), service("s_extra", 1)],
                      previous={"s_inference": 7})
    restore(swarm, "s", {"s_gateway": 5, "s_inference": 7})
    assert {n: s.version for n, s in swarm.by_name.items()} == {"s_gateway": 5, "s_inference": 7}


def test_a_service_swarm_already_rolls_back_is_not_rolled_back_twice():
    swarm = FakeSwarm([service("s_inference", 9, "rollback_started")], previous={"s_inference": 7})
    restore(swarm, "s", {"s_inference": 7})
    assert swarm.rollbacks == [] and swarm.by_name["s_inference"].update_state == "rollback_started"


def test_a_stack_that_did_not_exist_before_is_removed_whole():
    swarm = FakeSwarm([service("s_gateway", 1), service("s_inference", 1)], previous={})
    restore(swarm, "s", {})
    assert swarm.by_name == {}
