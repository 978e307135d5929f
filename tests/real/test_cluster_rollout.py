"""`fleet rollout --canary` on the real 3-node Swarm (tests/kit/cluster.py), fleet on the host over TLS.

The stable service runs 2 replicas on the two workers (a placement constraint in a stack file of the
test's, merged over docker-stack.yml), so its canaries land on workers too: the manager, whose engine
fleet talks to, never runs or pulls them. Clients go through the manager's gateway (and a worker's where
none is killed), bounded in count and time; what they see is counted from the first request.
"""
import io
import json
import signal
import subprocess
import tarfile
import time
import uuid
from contextlib import contextmanager

import httpx
import pytest

from tests.kit.helpers import wait_until
from tests.kit.cluster import (NAME, NODES, REGISTRY, REGISTRY_VOLUME, Cluster, canary_gone, clients, failed,
                               local_env, push, remove_stack, rollout, stable_spec)
from tests.kit.private_registry import PrivateRegistry

REPLICAS = "2"
WORKERS_ONLY = """version: "3.8"
services:
  inference:
    deploy:
      placement:
        constraints: [node.role == worker]
"""


@pytest.fixture(scope="module")
def rc(cluster_session, tmp_path_factory):
    c: Cluster = cluster_session
    remove_stack(c)
    override = tmp_path_factory.mktemp("stack") / "workers-only.yml"
    override.write_text(WORKERS_ONLY)
    c.stack_files = ["-c", "docker-stack.yml", "-c", str(override)]
    p = c.fleet("deploy", *c.stack_files, "--json", "--timeout", "8m", FLEET_REPLICAS=REPLICAS)
    assert p.returncode == 0, (p.stdout, p.stderr)
    c.images = {name: push(f"fleet/inference-test:{name}", f"inference-test:{name}") for name in ("crash", "flaky")}
    c.images["worse"] = push("fleet/inference:1", "inference:1")
    yield c
    remove_stack(c)


def tiny_tar() -> bytes:
    """A root file system of one file, for images that need only to exist (and their labels)."""
    tar = io.BytesIO()
    with tarfile.open(fileobj=tar, mode="w") as t:
        info = tarfile.TarInfo("hello")
        info.size = 2
        t.addfile(info, io.BytesIO(b"hi"))
    return tar.getvalue()


def workers_whole(c: Cluster) -> bool:
    """The stable's replicas running on the workers and passing in Consul, and no canary left."""
    running = {t.id: t.node for t in c.tasks()}
    passing = [i for i in c.catalog.instances(c.consul_service) if i.status == "passing" and i.task_id in running]
    return len(running) == int(REPLICAS) and "fleet-node1" not in running.values() \
        and len(passing) == int(REPLICAS) and canary_gone(c)


@contextmanager
def deaths(service_name: str, nodes=("fleet-node2", "fleet-node3")):
    """The `die` events of the service's containers, read from each worker's own engine while the block
    runs: yields a list that holds, afterwards, the epoch seconds of each death."""
    watchers = [subprocess.Popen(["docker", "exec", node, "docker", "events", "--filter", "type=container",
                                  "--filter", "event=die", "--filter", f"label=com.docker.swarm.service.name={service_name}",
                                  "--format", "{{.TimeNano}}"], stdout=subprocess.PIPE, text=True, env=local_env())
                for node in nodes]
    found: list[float] = []
    try:
        yield found
    finally:
        for w in watchers:
            w.terminate()
            out, _ = w.communicate(timeout=10)
            found.extend(int(line) / 1e9 for line in out.split())
        found.sort()


def test_1_an_image_only_in_the_registry_is_rolled_out_and_promoted_on_a_worker(rc):
    """And the build the canary ran is the build shipped: the same tag pushed again with another build (the
    test image that answers 5xx) while the canary runs is named, and never runs in the stable (a promotion
    to the tag, resolved again, shipped it, which no canary had judged)."""
    wait_until(lambda: workers_whole(rc), 180, "the stable's replicas on the workers")
    image = push("fleet/inference:2", f"inference:release-{uuid.uuid4().hex[:8]}")
    judged = registry_digest(image)
    assert not rc.on("fleet-node1", "images", "-q", image).strip(), "the manager must not have the image"
    with clients(1, 2) as loads:
        started = time.monotonic()
        proc = rc.fleet_background("rollout", "--canary", "--image", image, "--json", "--steps", "50",
                                   "--step-duration", "15s")
        try:
            wait_until(lambda: rc.swarm.service(f"{NAME}_inference-canary") is not None, 120, "the canary service")
            other = push("fleet/inference-test:flaky", image.split("/", 1)[1].removeprefix("fleet/"))  # build B
            unjudged = registry_digest(image)
            assert other == image and unjudged != judged
            out, err = proc.communicate(timeout=400)
        finally:
            if proc.poll() is None:
                proc.kill()
    doc = json.loads(out) if out.strip() else {}
    assert proc.returncode == 0, (out, err[-2000:])
    svc = rc.swarm.service(f"{NAME}_inference")
    running = svc.attrs["Spec"]["TaskTemplate"]["ContainerSpec"]["Image"]
    assert doc["outcome"] == "promoted" and running == f"{image}@{judged}", (running, judged)
    ran = {t.digest for t in rc.swarm.tasks(f"{NAME}_inference", desired_state=None)}  # every task, any state
    assert judged in ran and unjudged not in ran, "build B never runs in the stable"
    record = next(h for h in json.loads(rc.fleet("history", "--json").stdout)["revisions"]
                  if h["revision"] == doc["revision"])
    assert record["pinned"] == f"{image}@{judged}", record
    assert any(e["event"] == "tag" and f"the canary judged {judged}; {judged} shipped" in e["detail"]
               for e in record["timeline"]), record["timeline"]
    assert not rc.on("fleet-node1", "images", "-q", image).strip(), "fleet must not need the image on the manager"
    total = sum(load.total for load in loads)
    print(f"\nregistry-only image promoted in {time.monotonic() - started:.1f}s, its tag pushed again meanwhile; "
          f"{total} client requests, {len(failed(loads))} failed")
    assert total > 100 and failed(loads) == [], failed(loads)[:5]
    wait_until(lambda: workers_whole(rc), 120, "the promoted replicas to be whole")


def registry_digest(image: str) -> str:
    """What the cluster's registry names by `image` now (sha256:...), from its own v2 API."""
    name, _, tag = image.removeprefix(f"{REGISTRY}/").rpartition(":")
    r = httpx.head(f"http://{REGISTRY}/v2/{name}/manifests/{tag}", timeout=30, headers={"Accept": ", ".join((
        "application/vnd.docker.distribution.manifest.v2+json", "application/vnd.oci.image.manifest.v1+json",
        "application/vnd.docker.distribution.manifest.list.v2+json", "application/vnd.oci.image.index.v1+json"))})
    assert r.status_code == 200 and r.headers.get("Docker-Content-Digest"), (image, r.status_code)
    return r.headers["Docker-Content-Digest"]


def test_1b_an_image_without_the_version_label_is_refused_before_anything_changes(rc, tmp_path):
    before = stable_spec(rc)
    image = f"{REGISTRY}/fleet/unlabelled:{uuid.uuid4().hex[:8]}"
    subprocess.run(["docker", "import", "-", image], input=tiny_tar(), check=True, capture_output=True,
                   env=local_env())
    subprocess.run(["docker", "push", "-q", image], check=True, capture_output=True, env=local_env(), timeout=120)
    p, doc = rollout(rc, image, timeout=120)
    assert p.returncode == 2, (p.stdout, p.stderr)
    assert "fleet.model-version" in doc["error"] and "--label" in doc["error"], doc
    assert stable_spec(rc) == before and canary_gone(rc)


def test_1c_a_private_image_is_rolled_out_on_the_workers_with_the_login_fleet_forwards(rc, tmp_path):
    """A registry that wants a login (htpasswd over TLS, its CA in each node's certs.d), reached by every node
    under one name: no login and a wrong one exit 2 with nothing changed; with the login from a credential
    helper on fleet's machine alone (no node has a login), the canary on a worker pulls it, is judged and
    promoted, the workers pull it for the promotion, and the manager never pulls it. Then `fleet deploy` of
    another new private image (`docker stack deploy --with-registry-auth`) converges on the workers. Rolled
    back after to the public image the module's other tests start from."""
    wait_until(lambda: workers_whole(rc), 180, "the stable's replicas on the workers")
    public = next(h["revision"] for h in json.loads(rc.fleet("history", "--json").stdout)["revisions"] if h["current"])
    # the private registry serves the cluster registry's storage behind its login: a push there of a repository
    # the cluster's holds sends no layer (a fresh one took 43 s of this test to send the image's 1 GB again)
    private = PrivateRegistry(tmp_path, port=31601).start(network="fleet-nodes", storage=REGISTRY_VOLUME)
    try:
        private.reach_from(NODES)
        image = private.push("fleet/inference:2", f"fleet/inference:private-{uuid.uuid4().hex[:8]}")
        before = stable_spec(rc)
        argv = ["rollout", "--canary", "--image", image, "--json", "--steps", "50", "--step-duration", "15s"]
        for env, says in ((private.config(None), "fleet has none"), (private.config("wrong"), "refused the login")):
            p = rc.fleet(*argv, timeout=120, **env)
            assert p.returncode == 2 and says in p.stdout and f"docker login {private.host}" in p.stdout, \
                (p.stdout, p.stderr[-1000:])
            assert stable_spec(rc) == before and canary_gone(rc)
        with clients(1, 2) as loads:
            started = time.monotonic()
            p = rc.fleet(*argv, timeout=400, **private.helped())
        doc = json.loads(p.stdout) if p.stdout.strip() else {}
        assert p.returncode == 0 and doc["outcome"] == "promoted", (p.stdout[-1500:], p.stderr[-2000:])
        assert stable_spec(rc)[0] == image and canary_gone(rc)
        assert not rc.on("fleet-node1", "images", "-q", image).strip(), "the manager must never pull it"
        total = sum(load.total for load in loads)
        print(f"\nprivate image promoted on the workers in {time.monotonic() - started:.1f}s; {total} client "
              f"requests, {len(failed(loads))} failed")
        assert total > 100 and failed(loads) == [], failed(loads)[:5]
        wait_until(lambda: workers_whole(rc), 120, "the promoted replicas to be whole")
        deployed = private.push("fleet/inference:2", f"fleet/inference:deploy-{uuid.uuid4().hex[:8]}")
        p = rc.fleet("deploy", *rc.stack_files, "--image", f"inference={deployed}", "--replace-promoted", "--json",
                     "--timeout", "5m", timeout=400, FLEET_REPLICAS=REPLICAS, **private.helped())
        assert p.returncode == 0, (p.stdout[-1500:], p.stderr[-2000:])
        assert stable_spec(rc)[0] == deployed and not rc.on("fleet-node1", "images", "-q", deployed).strip()
        wait_until(lambda: workers_whole(rc), 120, "the deployed replicas to be whole")
        p = rc.fleet("rollback", "--to", str(public), "--json", timeout=300, **private.helped())
        assert p.returncode == 0, p.stderr[-1500:]
        wait_until(lambda: workers_whole(rc), 120, "the stable whole again")
    finally:
        private.leave(NODES)
        private.stop()


def test_2_a_canary_crashing_on_a_worker_is_rolled_back_within_10s_naming_its_exit_code(rc):
    wait_until(lambda: workers_whole(rc), 180, "the stable whole")
    before = stable_spec(rc)
    with clients(1, 2) as loads:
        with deaths(f"{NAME}_inference-canary") as died:
            p, doc = rollout(rc, rc.images["crash"], "--progress-deadline", "3m")
    assert p.returncode == 1, (p.stdout, p.stderr[-2000:])
    crashed = died[0] if died else None
    assert doc["outcome"] == "rolled_back" and "exit code 3" in doc["reason"], doc
    assert "fleet-node1" not in doc["reason"] and "on fleet-node" in doc["reason"], doc  # a worker's task
    cut_at = next(e["at"] for e in doc["timeline"] if e["event"] == "cut")
    print(f"\ncrashing canary on a worker: cut {cut_at - crashed:.2f}s after the worker's engine saw it die; "
          f"reason: {doc['reason']}")
    assert crashed is not None and cut_at - crashed < 10, doc["timeline"]
    assert stable_spec(rc) == before and canary_gone(rc)
    assert failed(loads) == [], failed(loads)[:5]


def test_2b_a_canary_whose_image_the_workers_cannot_pull_is_rolled_back_within_30s_naming_it(rc):
    """Built on the manager and never pushed: fleet reads its labels there, the workers cannot pull it."""
    before = stable_spec(rc)
    image = f"{REGISTRY}/fleet/inference:never-pushed-{uuid.uuid4().hex[:8]}"
    subprocess.run(["docker", "exec", "-i", "fleet-node1", "docker", "import", "-c", "LABEL fleet.model-version=9",
                    "-c", 'CMD ["/hello"]', "-", image], input=tiny_tar(), check=True, capture_output=True,
                   env=local_env())
    started = time.monotonic()
    p, doc = rollout(rc, image, "--progress-deadline", "3m")
    took = time.monotonic() - started
    print(f"\nunpullable canary: rolled back in {took:.1f}s: {doc.get('reason')}")
    assert p.returncode == 1, (p.stdout, p.stderr)
    assert doc["outcome"] == "rolled_back" and image.split("/", 1)[1].split(":")[0] in doc["reason"], doc
    assert took < 30 + 15  # 30 s to the verdict, plus fleet's own start and the canary's removal
    assert stable_spec(rc) == before and canary_gone(rc)


@pytest.mark.parametrize("case", ["5xx", "worse model"])
def test_3_a_bad_canary_on_a_worker_fails_no_client_request(rc, case):
    wait_until(lambda: workers_whole(rc), 180, "the stable whole")
    before = stable_spec(rc)
    if case == "5xx":
        args = ("--steps", "50", "--step-duration", "60s")
        image = rc.images["flaky"]
    else:
        args = ()
        image = rc.images["worse"]
    with clients(1, 2) as loads:
        p, doc = rollout(rc, image, *args)
    assert p.returncode == 1, (p.stdout, p.stderr)
    assert doc["outcome"] == "rolled_back", doc
    assert ("error rate" in doc["reason"]) if case == "5xx" else ("golden" in doc["reason"]), doc
    served_by_canary = sum(1 for load in loads for _, status, version in load.served if version == "1")
    total = sum(load.total for load in loads)
    print(f"\n{case} canary on a worker: {total} client requests, {len(failed(loads))} failed, "
          f"{served_by_canary} answered by model v1; {doc['reason'][:160]}")
    assert failed(loads) == [], failed(loads)[:5]  # the gateway retried the canary's 5xx on the stable
    assert served_by_canary == 0
    assert stable_spec(rc) == before and canary_gone(rc)


def canary_node(c: Cluster) -> str | None:
    tasks = [t for t in c.swarm.tasks(f"{NAME}_inference-canary") if t.state == "running"]
    return tasks[0].node if tasks else None


def phase(c: Cluster) -> str | None:
    _, item = c.consul.kv.get(f"fleet/rollouts/{NAME}/inference/state")
    return json.loads(item["Value"])["rollout"]["phase"] if item and item.get("Value") else None


def test_4_the_canary_node_killed_mid_step_is_rolled_back_within_15s(rc):
    wait_until(lambda: workers_whole(rc), 180, "the stable whole")
    before = stable_spec(rc)
    running = rc.fleet_background("rollout", "--canary", "--image", rc.images["worse"], "--json", "--steps", "50",
                                  "--step-duration", "10m", "--golden-tolerance", "1")
    victim = None
    try:
        with clients(1, seconds=300) as loads:
            wait_until(lambda: phase(rc) == "stepping", 240, "the canary to get its share", while_running=running)
            victim = wait_until(lambda: canary_node(rc), 60, "the canary's running task", while_running=running)
            assert victim != "fleet-node1", victim
            killed = time.time()
            subprocess.run(["docker", "kill", victim], check=True, capture_output=True, env=local_env())
            out, err = running.communicate(timeout=120)
            ended = time.time()
        doc = json.loads(out)
    finally:
        running.kill()
        if victim:
            subprocess.run(["docker", "start", victim], capture_output=True, env=local_env())
    cut = next(e["at"] for e in doc["timeline"] if e["event"] == "cut")
    late = [t - killed for load in loads for t, status, _ in load.served if status != 200 and t > killed + 5]
    print(f"\ncanary's node {victim} killed: cut {cut - killed:.1f}s after the kill ({doc['reason'][:160]}); "
          f"{sum(load.total for load in loads)} requests, {len(failed(loads))} failed, {len(late)} sent 5 s after")
    assert running.returncode == 1 and doc["outcome"] == "rolled_back", (doc, err[-2000:])
    assert cut - killed < 15, doc["timeline"]
    assert late == [], late
    assert stable_spec(rc)[1] == before[1], "the stable is untouched"
    assert ended - killed < 120
    wait_until(lambda: any(n["hostname"] == victim and n["state"] == "ready" for n in rc.swarm.nodes()), 120,
               f"{victim} to rejoin")


def test_5_the_node_whose_gateway_fleet_uses_killed_mid_rollout_still_reaches_a_verdict(rc):
    """fleet prefers workers' gateways; the stable (and so the canary) is moved off that node first, so
    only the gateway fleet talks to is lost."""
    gateway = rc.swarm.published_urls(f"{NAME}_gateway", 8081)[0]
    address = gateway.split("//")[1].split(":")[0]
    victim = next(n["hostname"] for n in rc.swarm.nodes() if n["address"] == address)
    assert victim != "fleet-node1"
    rc.docker("service", "update", "--detach", "--constraint-add", f"node.hostname!={victim}", f"{NAME}_inference")
    wait_until(lambda: workers_whole(rc) and victim not in {t.node for t in rc.tasks()}, 240,
               f"the stable's replicas off {victim}")
    # No client load: the canary's evidence is fleet's own synthetic requests, sent through the gateway, so
    # the steps pass only if fleet moves to another node's gateway.
    running = rc.fleet_background("rollout", "--canary", "--image", rc.images["worse"], "--json", "--steps", "30,60",
                                  "--step-duration", "20s", "--golden-tolerance", "1", "--progress-deadline", "60s",
                                  "--max-latency-ratio", "4")  # about the gateway's loss, not latency
    try:
        wait_until(lambda: phase(rc) == "stepping", 240, "the rollout to step", while_running=running)
        subprocess.run(["docker", "kill", victim], check=True, capture_output=True, env=local_env())
        out, err = running.communicate(timeout=300)
        doc = json.loads(out)
    finally:
        running.kill()
        subprocess.run(["docker", "start", victim], capture_output=True, env=local_env())
    print(f"\n{victim}'s gateway lost mid-rollout: {doc.get('outcome')} ({doc.get('reason', '')[:200]})")
    assert doc["outcome"] == "promoted", (doc, err[-2000:])
    assert "synthetic" in doc["reason"] or "fleet's own" in doc["reason"] or "requests" in doc["reason"], doc
    wait_until(lambda: any(n["hostname"] == victim and n["state"] == "ready" for n in rc.swarm.nodes()), 120,
               f"{victim} to rejoin")


def weights(c: Cluster) -> list:
    return c.consul.kv.get(f"fleet/traffic/{c.consul_service}/", recurse=True)[1] or []


def test_6_a_controller_killed_at_50_percent_leaves_the_canary_no_share_within_the_lock_ttl(rc):
    from fleet.adapters.store import SESSION_TTL
    wait_until(lambda: workers_whole(rc), 240, "the stable whole")
    stable_version = {i.version for i in rc.catalog.instances(rc.consul_service)}
    canary_image = rc.images["worse"] if "1" not in stable_version else push("fleet/inference:2", "inference:back")
    canary_version = "1" if "1" not in stable_version else "2"
    running = rc.fleet_background("rollout", "--canary", "--image", canary_image, "--json", "--steps", "50",
                                  "--step-duration", "10m", "--golden-tolerance", "1")
    try:
        with clients(1, 2, seconds=200) as loads:
            wait_until(lambda: phase(rc) == "stepping", 240, "the canary to get 50%", while_running=running)
            wait_until(lambda: sum(v == canary_version for load in loads for _, _, v in load.served) > 20, 30,
                       "clients to reach the canary")
            running.send_signal(signal.SIGKILL)
            killed = time.time()
            running.wait(10)
            # Consul ends a dead holder's session within twice its TTL, and deletes the weights it held
            wait_until(lambda: not weights(rc), 2 * SESSION_TTL + 5, "Consul to delete the dead controller's weights")
            gone = time.time()
            wait_until(lambda: sum(1 for load in loads for t, _, _ in load.served if t > gone + 2) > 100, 60,
                       "requests after the weights went")
    finally:
        running.kill()
    after = [v for load in loads for t, status, v in load.served if t > gone + 2]
    last_canary = max(t for load in loads for t, _, v in load.served if v == canary_version)
    print(f"\ncontroller killed at 50%: weights gone {gone - killed:.1f}s after the kill (TTL {SESSION_TTL}s), the "
          f"canary's last client answer {last_canary - killed:.1f}s after it; {len(after)} requests since, "
          f"{after.count(canary_version)} from the canary")
    assert after.count(canary_version) == 0
    assert last_canary - killed <= 2 * SESSION_TTL + 5  # Consul ends a session within 2 x TTL, then ~1 s to the gateway
    assert failed(loads) == [], failed(loads)[:5]
    # the orphan is then brought to a safe end as before
    p = rc.fleet("rollout", "--resume", "--json", timeout=200)
    assert json.loads(p.stdout)["outcome"] == "aborted", p.stdout
    assert canary_gone(rc)
