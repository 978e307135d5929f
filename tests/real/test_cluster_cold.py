"""A cold first deploy on the 3-node cluster (issue 20): no node has any of the stack's images, so the
replicas pull 1.4 GB from the registry and load while the gateway waits on them; `fleet deploy` shows
what it waits for and converges, three times in a row."""
import pytest

from tests.kit.cluster import NAME, NODES, REPLICAS, Cluster, remove_stack

ROUNDS = 3


@pytest.fixture(scope="module")
def cold(cluster_session):
    remove_stack(cluster_session)
    yield cluster_session
    remove_stack(cluster_session)


def forget_images(c: Cluster) -> None:
    """Every node as right after `make cluster`: none holds an image of the stack."""
    for node in NODES:
        c.on(node, "image", "prune", "-af")
        left = c.on(node, "images", "--format", "{{.Repository}}:{{.Tag}}").split()
        assert not [i for i in left if "/fleet/" in i], (node, left)


def test_cold_first_deploy_converges_three_times_in_a_row(cold):
    seconds = []
    for round_ in range(1, ROUNDS + 1):
        remove_stack(cold)
        forget_images(cold)
        p = cold.fleet("deploy", "--timeout", "10m", timeout=700)
        assert p.returncode == 0, (round_, p.stderr[-3000:])
        assert "pulling the image on fleet-node" in p.stderr, p.stderr[-3000:]  # it said what it waited for
        assert len(cold.passing("2")) == REPLICAS
        seconds.append(p.seconds)
    print(f"\ncold first deploys on {len(NODES)} nodes converged in " + ", ".join(f"{s:.0f}s" for s in seconds)
          + f" ({NAME})")
