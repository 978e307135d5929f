"""GPU capacity (fleet/core/capacity.py): a replica's reservation, free resources per node, a canary refused up
front naming the resource, and a promotion ordered by what is free (fleet/core/promotion.py)."""
from fleet.core.capacity import (NodeCapacity, canary_shortfall, count, promotion_batch, replicas_that_fit,
                            reservations)
from fleet.core.promotion import promotion_flags

GPU = "NVIDIA-GPU"
TEMPLATE = {"ContainerSpec": {"Image": "x"}, "Resources": {"Reservations": {"GenericResources": [
    {"DiscreteResourceSpec": {"Kind": GPU, "Value": 1}}]}}}
START_FIRST = {"Parallelism": 1, "Order": "start-first", "FailureAction": "rollback", "Monitor": 30_000_000_000}


def node(name, advertised, held=0, takes_tasks=True):
    return NodeCapacity(name, takes_tasks, {GPU: advertised}, {GPU: held} if held else {})


def test_a_replicas_reservation_is_read_from_its_spec():
    assert reservations(TEMPLATE) == {GPU: 1}
    assert reservations({"ContainerSpec": {}}) == {}
    assert reservations({"Resources": {"Reservations": {"NanoCPUs": 1}}}) == {}


def test_a_nodes_and_a_tasks_generic_resources_are_counted_by_kind():
    advertised = [{"NamedResourceSpec": {"Kind": GPU, "Value": "GPU-a"}},
                  {"NamedResourceSpec": {"Kind": GPU, "Value": "GPU-b"}},
                  {"DiscreteResourceSpec": {"Kind": "SSD", "Value": 3}}]
    assert count(advertised) == {GPU: 2, "SSD": 3}
    assert count(None) == {}


def test_free_resources_count_only_nodes_that_take_tasks():
    nodes = [node("n1", 2, held=1), node("n2", 1, held=1), node("n3", 4, takes_tasks=False)]
    assert replicas_that_fit({GPU: 1}, nodes) == 1
    assert replicas_that_fit({GPU: 2}, [node("n1", 3)]) == 1  # a replica's GPUs are on one node
    assert replicas_that_fit({}, nodes) is None


def test_a_canary_with_no_free_gpu_is_refused_naming_the_resource_and_each_node():
    full = [node("fleet-node1", 1, held=1), node("fleet-node2", 1, held=1), node("fleet-node3", 1, takes_tasks=False)]
    why = canary_shortfall({GPU: 1}, 1, full)
    assert why.startswith("the canary needs 1 NVIDIA-GPU for each of its 1 replica(s) and the cluster has room for 0")
    assert "fleet-node1 0/1, fleet-node2 0/1, fleet-node3 0/1 (not taking tasks)" in why
    assert "scale the stable down by one" in why
    assert canary_shortfall({GPU: 1}, 1, [node("n1", 2, held=1)]) is None
    assert canary_shortfall({}, 1, full) is None  # reserves nothing: nothing to check


def test_a_promotion_starts_as_many_at_once_as_gpus_are_free_and_goes_stop_first_with_none():
    assert promotion_batch({GPU: 1}, 3, [node("n1", 4, held=1)]) == 3
    assert promotion_batch({GPU: 1}, 3, [node("n1", 2, held=1), node("n2", 1)]) == 2
    assert promotion_batch({GPU: 1}, 2, [node("n1", 1, held=1), node("n2", 1, held=1)]) == 0
    assert promotion_batch({}, 2, []) is None
    assert promotion_flags(START_FIRST, 3, batch=None)[:2] == ["--update-parallelism", "3"]
    assert promotion_flags(START_FIRST, 3, batch=2)[:2] == ["--update-parallelism", "2"]
    assert promotion_flags(START_FIRST, 3, batch=0)[:4] == ["--update-order", "stop-first", "--update-parallelism", "1"]
    assert promotion_flags({**START_FIRST, "Order": "stop-first"}, 3, batch=0) == []  # the stack's own pace
