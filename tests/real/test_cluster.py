"""fleet deploy and status on the real 3-node Swarm (tests/kit/cluster.py), from the host over TLS;
load loops through the nodes' gateways on 127.0.0.1, bounded in count and time."""
import json
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
import torch

from tests.kit.cluster import NAME, NODES, REGISTRY, REPLICAS, Cluster, local_env, push, remove_stack
from tests.kit.digits import write_package
from tests.kit.helpers import HTTP, SAMPLE, LoadLoop, wait_until
from tests.kit.stacks import ROOT


@pytest.fixture(scope="module")
def cluster(cluster_session):
    remove_stack(cluster_session)
    yield cluster_session
    remove_stack(cluster_session)


def expected_answer() -> dict:
    model = torch.jit.load(str(ROOT / "build/models/v2/model.pt"))
    with torch.inference_mode():
        out = model(torch.tensor(SAMPLE))
    return {"classes": out.argmax(dim=1).tolist(), "probabilities": out}


def test_deploy_from_the_host_over_tls_converges_on_several_nodes(cluster):
    p = cluster.fleet("deploy", "--json", "--timeout", "8m")
    assert p.returncode == 0, (p.stdout, p.stderr)
    doc = json.loads(p.stdout)
    assert all(s["state"] == "converged" for s in doc["services"].values())
    nodes = set(cluster.node_of().values())
    assert len(nodes) >= 2, nodes  # spread: the replicas do not share one node
    assert len(cluster.passing("2")) == REPLICAS  # every replica passes in Consul with its version
    gateways = {t.node for t in cluster.tasks("gateway")}
    assert gateways == set(NODES)  # global: one gateway a node
    # one Consul server (on the one manager) and a client agent on each worker; each replica registered
    # with the agent of its own node, which runs its check
    members = {m["Name"]: m["Tags"].get("role") for m in cluster.consul.agent.members() if m["Status"] == 1}
    assert members == {"fleet-node1": "consul", "fleet-node2": "node", "fleet-node3": "node"}, members
    _, entries = cluster.consul.health.service(cluster.consul_service)
    running = cluster.node_of()
    assert sorted(e["Node"]["Node"] for e in entries) == sorted(running.values())
    assert all(e["Node"]["Node"] == running[e["Service"]["Meta"]["task_id"]] for e in entries), entries
    want = expected_answer()
    for i in range(1, len(NODES) + 1):
        r = HTTP.post(f"http://127.0.0.1:3{i}080/predict", json={"inputs": SAMPLE}, timeout=10)
        assert r.status_code == 200, (i, r.text)
        assert r.json()["classes"] == want["classes"]
        assert torch.allclose(torch.tensor(r.json()["probabilities"]), want["probabilities"], atol=1e-5)
    print(f"\nfleet deploy on {len(NODES)} nodes converged in {p.seconds:.1f}s; replicas on {sorted(nodes)}")


def test_status_json_agrees_with_docker_stack_ps_and_consul(cluster):
    p = cluster.fleet("status", "--json")
    assert p.returncode == 0, p.stderr
    doc = json.loads(p.stdout)
    ps = cluster.docker("stack", "ps", NAME, "--no-trunc", "--filter", "desired-state=running",
                        "--format", "{{.ID}} {{.Node}}").split("\n")
    listed = dict(line.split() for line in ps if line.strip())
    shown = {t["id"]: t["node"] for s in doc["services"] for t in s["tasks"] if t["desired_state"] == "running"}
    assert shown == listed  # the same tasks on the same nodes
    assert {n["hostname"] for n in doc["nodes"]} == set(NODES) and not any(n["flag"] for n in doc["nodes"])
    inference = next(s for s in doc["services"] if s["name"] == f"{NAME}_inference")
    consul_view = {i.task_id: i for i in cluster.catalog.instances(cluster.consul_service)}
    for t in inference["tasks"]:
        assert t["consul"]["status"] == consul_view[t["id"]].status == "passing"
        assert t["consul"]["version"] == "2" and t["digest"].startswith("sha256:")


def registry_digest(repo: str, tag: str) -> str:
    r = httpx.head(f"http://{REGISTRY}/v2/{repo}/manifests/{tag}", timeout=10,
                   headers={"Accept": "application/vnd.docker.distribution.manifest.v2+json"})
    r.raise_for_status()
    return r.headers["Docker-Content-Digest"]


def running_digests(cluster: Cluster) -> dict[str, set[str]]:
    """Node → the registry digests of the image bytes its inference containers run, as each node's own
    engine reports them (the container's image ID, then that image's RepoDigests)."""
    found = {}
    for node in NODES:
        for container in cluster.on(node, "ps", "-q", "--filter", f"label=com.docker.swarm.service.name={NAME}_inference").split():
            image_id = cluster.on(node, "inspect", "-f", "{{.Image}}", container).strip()
            listed = cluster.on(node, "image", "inspect", "-f", "{{range .RepoDigests}}{{println .}}{{end}}", image_id)
            found.setdefault(node, set()).update(line.partition("@")[2] for line in listed.split())
    return found


def test_a_tag_pushed_again_rolls_out_and_every_node_runs_its_digest(cluster):
    image = push("fleet/inference:1", "inference:next")  # a new tag: version 1's bytes
    p = cluster.fleet("deploy", "--image", f"inference={image}", "--json", "--timeout", "8m")
    assert p.returncode == 0, (p.stdout, p.stderr)
    first = registry_digest("fleet/inference", "next")
    assert all(first in d for d in running_digests(cluster).values()) and len(cluster.passing("1")) == REPLICAS
    push("fleet/inference:2", "inference:next")  # the same tag rebuilt: version 2's bytes
    second = registry_digest("fleet/inference", "next")
    assert second != first
    p = cluster.fleet("deploy", "--image", f"inference={image}", "--json", "--timeout", "8m")
    assert p.returncode == 0, (p.stdout, p.stderr)
    digests = running_digests(cluster)
    assert len(digests) >= 2 and all(second in d and first not in d for d in digests.values()), digests
    assert len(cluster.passing("2")) == REPLICAS
    history = json.loads(cluster.fleet("history", "--json").stdout)
    pinned = [r.get("pinned") or "" for r in history["revisions"][-2:]]  # oldest first
    assert pinned[0].endswith(f"@{first}") and pinned[1].endswith(f"@{second}"), pinned  # what rollback --to puts back
    print(f"\nrebuilt tag rolled out to {sorted(digests)} in {p.seconds:.1f}s")


def test_a_model_built_with_push_is_in_the_registry_and_a_worker_pulls_it(cluster, tmp_path):
    """`fleet build --push` (the way a user ships their model to a cluster): the registry holds the digest
    fleet printed, and a worker's own engine pulls that image with its labels; a registry nobody answers
    is an error naming the push and the fix, the image left built here."""
    package = write_package(tmp_path / "digits", "1")
    image = f"{REGISTRY}/fleet/digits-test:pushed"
    built = subprocess.run([sys.executable, "-m", "fleet.cli", "build", str(package), "--tag", image, "--push",
                            "--json"], capture_output=True, text=True, cwd=ROOT, timeout=600, env=local_env())
    try:
        assert built.returncode == 0, built.stderr
        digest = json.loads(built.stdout)["digest"]
        assert digest.startswith("sha256:") and digest == registry_digest("fleet/digits-test", "pushed")
        worker = NODES[-1]
        cluster.on(worker, "pull", "-q", image)
        labels = json.loads(cluster.on(worker, "image", "inspect", "-f", "{{json .Config.Labels}}", image))
        assert labels["fleet.model"] == "digits-cnn" and labels["fleet.model-version"] == "1", labels
        assert cluster.on(worker, "image", "inspect", "-f", "{{index .RepoDigests 0}}", image).strip().endswith(digest)

        nowhere = "127.0.0.1:9/fleet/digits-test:nowhere"  # the discard port: no registry answers there
        p = subprocess.run([sys.executable, "-m", "fleet.cli", "build", str(package), "--tag", nowhere, "--push",
                            "--json"], capture_output=True, text=True, cwd=ROOT, timeout=600, env=local_env())
        error = json.loads(p.stdout)["error"]
        assert p.returncode == 1 and f"docker push {nowhere} failed" in error and "registry is reachable" in error, p
    finally:
        cluster.on(NODES[-1], "image", "rm", "-f", image)
        subprocess.run(["docker", "image", "rm", "-f", image, "127.0.0.1:9/fleet/digits-test:nowhere"],
                       capture_output=True, env=local_env())


@contextmanager
def worker_under_load(cluster: Cluster, max_seconds: float):
    """A worker running a replica, and a load loop through node 1's gateway (bounded), already sending."""
    wait_until(lambda: cluster.whole("2"), 120, "the service to be whole")
    victim = next(n for n in cluster.node_of().values() if n != "fleet-node1")
    with LoadLoop("http://127.0.0.1:31080/predict", max_requests=int(max_seconds * 50), max_seconds=max_seconds) as load:
        wait_until(lambda: load.total >= 20, 30, "the load loop to start")
        yield victim, load


def test_draining_a_worker_under_load_fails_no_request(cluster):
    with worker_under_load(cluster, max_seconds=150) as (victim, load):
        started = time.monotonic()
        cluster.docker("node", "update", "--availability", "drain", victim)
        try:
            wait_until(lambda: cluster.whole("2", avoid=victim), 120, f"the replicas to leave {victim}")
            moved = time.monotonic() - started
            status = json.loads(cluster.fleet("status", "--json").stdout)
            assert {n["hostname"]: n["flag"] for n in status["nodes"]}[victim] == "drained"
            mark = load.total
            wait_until(lambda: load.total >= mark + 20, 30, "requests after the move")
        finally:
            cluster.docker("node", "update", "--availability", "active", victim)
    print(f"\ndrain of {victim}: replicas moved and passing in {moved:.1f}s; {load.total} requests, "
          f"failed {len(load.failures)}")
    assert load.total > 40 and load.failures == [], load.failures[:5]


def test_a_worker_killed_under_load_is_replaced(cluster):
    with worker_under_load(cluster, max_seconds=180) as (victim, load):
        killed = time.time()
        subprocess.run(["docker", "kill", victim], check=True, capture_output=True, env=local_env())
        try:
            wait_until(lambda: cluster.whole("2", avoid=victim), 150, f"the service to be whole without {victim}")
            whole = time.time() - killed
        finally:
            subprocess.run(["docker", "start", victim], check=True, capture_output=True, env=local_env())
    failed = [t - killed for t, status, _ in load.served if status != 200]
    print(f"\n{victim} killed: whole again (3 replicas passing on live nodes) after {whole:.1f}s (goal 30 s); "
          f"{load.total} requests, {len(failed)} failed ({dict(load.statuses)}), sent at "
          f"{', '.join(f'{t:.1f}' for t in failed) or '-'} s after the kill")
    assert whole < 120
    # Only requests in flight on the dead node, or sent before the gateway noticed, may fail: it takes a
    # server out after two failed checks a second apart, and retries a failed connection elsewhere.
    assert all(t < 3 for t in failed), failed
    wait_until(lambda: any(n["hostname"] == victim and n["state"] == "ready" for n in cluster.swarm.nodes()), 90,
               f"{victim} to rejoin")


def bogus_certificates(directory: Path) -> None:
    """A CA, client certificate and key that the cluster's manager never saw."""
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=nobody",
                    "-keyout", str(directory / "key.pem"), "-out", str(directory / "cert.pem")],
                   check=True, capture_output=True)
    (directory / "ca.pem").write_bytes((directory / "cert.pem").read_bytes())


@pytest.mark.parametrize("case", ["unreachable DOCKER_HOST", "wrong TLS certificates"])
def test_bad_engine_settings_exit_3_and_change_nothing(cluster, case):
    before = cluster.spec_versions()
    with tempfile.TemporaryDirectory() as tmp:
        if case == "wrong TLS certificates":
            bogus_certificates(Path(tmp))
            extra = {"DOCKER_CERT_PATH": tmp}
        else:
            extra = {"DOCKER_HOST": "tcp://127.0.0.1:1"}
        for args in (["deploy"], ["status"], ["rollout", "--canary", "--image", "fleet/inference:1"]):
            p = cluster.fleet(*args, "--json", timeout=120, **extra)
            assert p.returncode == 3, (args, p.stdout, p.stderr)
            assert "Docker engine" in json.loads(p.stdout)["error"]
    assert cluster.spec_versions() == before
