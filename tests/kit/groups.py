"""The groups `make test` runs its real tests in (pytest-xdist: tests/conftest.py's scheduler): a
group runs whole in one worker, and a worker takes the next group as its last ends. The 3-node cluster's tests
are one group (one cluster a run, up for the first of them); the tests on the session's `stack` another (one
stack a run); every other module of real tests has a stack of its own (its own name and ports) and is a
group. Unit and process tests belong to none: they are spread one by one over whichever workers are free.
Pure: the scheduler, which collects nothing, reads the group from a test's ID alone."""

CLUSTER = frozenset({"test_cluster", "test_cluster_cold", "test_cluster_gpu", "test_cluster_rollout", "test_consul_ha"})
SESSION_STACK = frozenset({"test_stack", "test_security", "test_live_config"})

# the order groups start in, longest first: first estimates of each group's seconds (run 3 of stop 46 measured,
# one worker: cluster 1,729, control_plane 378, rollout 357, rollout_visible 245, canary_evidence 172, ...)
SECONDS = {"cluster": 1500, "test_control_plane": 500, "test_rollout": 450, "stack": 400, "test_model_package": 350,
           "test_deploy_canary": 300, "test_rollout_visible": 250, "test_canary_evidence": 250, "test_deploy": 240,
           "test_external_consul": 200, "test_shared_consul": 120, "test_replica": 60, "test_stackfiles": 30}


def group(nodeid: str) -> str | None:
    """The group of the test with this ID, None for a unit or process test."""
    path = nodeid.split("::", 1)[0]
    if "/real/" not in path:
        return None
    module = path.rsplit("/", 1)[-1].removesuffix(".py")
    if module in CLUSTER:
        return "cluster"
    if module in SESSION_STACK:
        return "stack"
    return module


def rank(nodeid: str) -> int:
    """Sort key: real tests first, the longest group first; the others last, in their order."""
    g = group(nodeid)
    return 0 if g is None else -SECONDS.get(g, 100)
