"""`fleet rollout --canary` and its companions on the real Swarm, Consul, gateway and images, with a
bounded load loop through the gateway. Stable runs fleet/inference:1; canaries are :2 or test images."""
import json
import signal
import subprocess
import sys
import time
import uuid

import pytest

from tests.kit.cli import deploy_stable, fleet, fleet_background, running_rollout
from tests.kit.helpers import BadFlood, LoadLoop, wait_until
from tests.kit.private_registry import PrivateRegistry
from tests.kit.stacks import (ROOT, StackUnderTest, canary_gone, converged, own_stack, running_ids,
                              stable_spec)

NAME = "fleettest-rollout"
STABLE, GOOD = "fleet/inference:1", "fleet/inference:2"


@pytest.fixture(scope="module")
def rstack(swarm):
    with own_stack(swarm, NAME, 19500, 19080) as s:
        p = fleet(s, "deploy", "--stack", NAME, env={"FLEET_IMAGE": STABLE})
        assert p.returncode == 0, p.stderr
        yield s


@pytest.fixture(autouse=True)
def starts_on_stable(request):
    """Each test that uses the stack starts with STABLE as its stable, whatever an earlier test left: one that
    failed after its promotion left GOOD, and every later test then found 'nothing to roll out'."""
    if "rstack" in request.fixturenames:
        s = request.getfixturevalue("rstack")
        if stable_spec(s)[0] != STABLE:
            deploy_stable(s, STABLE)
    yield


def split_within(step: float, n: int) -> float:
    """How far a measured share (percent of n responses) may be from its step: 5 points, or 3.5 standard
    deviations of n draws at the step's weight where n is too few for 5 (CI's measured 34.3 % at 25 % was 12
    of 35 responses on a starved host: 1.3 deviations, no fault of the split's)."""
    p = step / 100
    return max(5.0, 350 * (p * (1 - p) / n) ** 0.5) if n else 0.0


def settled_spec(s: StackUnderTest) -> tuple[str, int]:
    """The stable's spec once no update or rollback of it is in flight (each step of one changes its
    version): what a test compares against after the rollout it runs."""
    def settled():
        stable = s.swarm.describe(s.service("inference"))
        return stable.update_state not in ("updating", "rollback_started") and stable_spec(s)
    return wait_until(settled, 120, "the stable service's last update to settle")


def rollout(s: StackUnderTest, image: str, *args: str, timeout: float = 400):
    p = fleet(s, "rollout", "--canary", "--image", image, "--stack", NAME, "--json", *args, timeout=timeout)
    return p, json.loads(p.stdout) if p.stdout.strip() else {}


@pytest.mark.parametrize("args,problem", [
    (["--service", "nope"], "no service 'nope'"),
    (["--image", "fleet/inference:404"], "does not exist"),
    (["--steps", "50,25"], "steps must rise"),
    (["--steps", "0,50"], "within 1..100"),
    (["--step-duration", "soon"], "not a duration"),
    (["--progress-deadline", "5 minutes"], "not a duration"),
])
def test_bad_input_exits_2_and_changes_nothing(rstack, args, problem):
    before = settled_spec(rstack)
    argv = ["rollout", "--canary", "--image", GOOD, "--stack", NAME, "--json"]
    p = fleet(rstack, *argv, *args)
    assert p.returncode == 2, p.stderr
    assert problem in json.loads(p.stdout)["error"]
    assert stable_spec(rstack) == before and canary_gone(rstack)


def background_rollout(s: StackUnderTest, *args: str) -> subprocess.Popen:
    env = s.env()
    return subprocess.Popen([sys.executable, "-m", "fleet.cli", "rollout", "--canary", "--image", GOOD, "--stack",
                             NAME, "--json", *args], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True)


def phase(s: StackUnderTest) -> str | None:
    _, item = s.consul().kv.get(f"fleet/rollouts/{NAME}/inference/state")
    return json.loads(item["Value"])["rollout"]["phase"] if item and item.get("Value") else None


def test_concurrent_rollout_refused_and_killed_rollout_resumed(rstack):
    before = settled_spec(rstack)
    first = background_rollout(rstack, "--steps", "10", "--step-duration", "10m")
    try:
        wait_until(lambda: phase(rstack) == "stepping", 120, "the first rollout to step", while_running=first)
        p, doc = rollout(rstack, GOOD, timeout=60)
        assert p.returncode == 2, p.stderr
        assert f"pid {first.pid}" in doc["error"]
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait(10)
    assert rstack.swarm.service(rstack.service("inference-canary")) is not None  # orphaned, still there
    orphan = wait_until(lambda: [r for r in json.loads(fleet(rstack, "status", "--stack", NAME, "--json").stdout)
                                 ["rollouts"] if r["orphaned"]], 60, "fleet status to report the orphaned rollout")
    assert orphan[0]["image"] == GOOD and orphan[0]["phase"] == "stepping"
    p = fleet(rstack, "rollout", "--resume", "--stack", NAME, "--json", timeout=120)
    assert p.returncode == 1, p.stderr  # reverted: the watch was lost, so nothing is promoted
    doc = json.loads(p.stdout)
    assert doc["outcome"] == "aborted" and "controller stopped" in doc["reason"]
    assert stable_spec(rstack) == before and canary_gone(rstack)


@pytest.mark.parametrize("image,reason", [
    ("fleet/inference-test:crash", "exit code 3"),
    # the phase its health check reports, read from its first failed check: not Docker's unhealthy, 40 s later
    ("fleet/inference-test:corrupt", 'a canary replica failed (its health check): {"phase":"failed"'),
])
def test_bad_canary_rolled_back_with_no_failed_requests(rstack, image, reason):
    before = settled_spec(rstack)
    with LoadLoop(f"{rstack.gateway}/predict", max_requests=20_000, max_seconds=240) as load:
        p, doc = rollout(rstack, image, "--progress-deadline", "90s")
    assert p.returncode == 1, p.stderr
    assert doc["outcome"] == "rolled_back" and reason in doc["reason"], doc
    assert stable_spec(rstack) == before, "the stable service must be left exactly as it was"
    assert canary_gone(rstack)
    assert load.total > 10 and load.failures == [], load.failures[:5]


def test_canary_answering_5xx_rolled_back_on_its_metrics(rstack):
    before = settled_spec(rstack)
    with LoadLoop(f"{rstack.gateway}/predict", max_requests=20_000, max_seconds=240) as load:
        p, doc = rollout(rstack, "fleet/inference-test:flaky", "--steps", "50", "--step-duration", "60s")
    assert p.returncode == 1, p.stderr
    assert doc["outcome"] == "rolled_back" and "error rate" in doc["reason"], doc
    assert stable_spec(rstack) == before and canary_gone(rstack)
    cut = next(e["at"] for e in doc["timeline"] if e["event"] == "cut")
    late = [t for t, status, _ in load.served if status == 500 and t > cut + 1.0]
    print(f"\n5xx canary: {len(load.failures)} of {load.total} client requests failed before the decision; "
          f"{len(late)} more than 1 s after the cut")
    assert late == [], "no request may reach the canary 1 s after it was cut"
    assert load.failures == [], load.failures[:5]  # the gateway retried the canary's 5xx on a stable replica


@pytest.mark.parametrize("image,reason", [
    ("fleet/inference-test:nan", "error rate"),  # NaN out: the model's 500, retried on the stable
    ("fleet/inference-test:shift", "prediction mix total variation 0.50"),  # benign for SAMPLE's malignant
])
def test_canary_wrong_only_on_users_traffic_rolled_back_with_no_failed_requests(rstack, tmp_path, image, reason):
    """Both images are v2, wrong for rows whose first measurement is 17 or more (tests/images/nan). On a golden
    set without such rows they are as good as v2, so the gate passes them; on users' traffic (SAMPLE's
    second row) one answers NaN, the other another class: judged on the replicas' own counts."""
    golden = json.loads((ROOT / "build/models/v2/golden.json").read_text())
    keep = [i for i, row in enumerate(golden["inputs"]) if row[0] < 17.0]
    (tmp_path / "golden.json").write_text(json.dumps({"inputs": [golden["inputs"][i] for i in keep],
                                                      "labels": [golden["labels"][i] for i in keep]}))
    before = settled_spec(rstack)
    with LoadLoop(f"{rstack.gateway}/predict", max_requests=20_000, max_seconds=240) as load:
        p, doc = rollout(rstack, image, "--steps", "50", "--step-duration", "60s", "--golden",
                         str(tmp_path / "golden.json"))
    assert p.returncode == 1, p.stderr
    assert any(e["event"] == "phase" and "golden gate passed" in e["detail"] for e in doc["timeline"]), doc["timeline"]
    assert doc["outcome"] == "rolled_back" and reason in doc["reason"], doc
    assert stable_spec(rstack) == before and canary_gone(rstack)
    assert load.total > 10 and load.failures == [], load.failures[:5]


def test_good_canary_promoted_with_measured_split_then_rollback_to_any_revision(rstack):
    """Judged beside a flood of malformed requests from another client, which must sway nothing: one
    header byte made every replica answer 500, and the gateway counted them against the canary."""
    steps = (25, 50)
    with LoadLoop(f"{rstack.gateway}/predict", max_requests=30_000, max_seconds=300) as load, \
            BadFlood(rstack.gateway_port, max_requests=6000, max_seconds=300) as flood:
        p, doc = rollout(rstack, GOOD, "--steps", ",".join(map(str, steps)), "--step-duration", "15s")
    print(f"\nbad requests during the rollout: {dict(flood.statuses)}")
    assert p.returncode == 0, (p.stderr[-2000:], dict(flood.statuses))
    assert doc["outcome"] == "promoted"
    assert sum(flood.statuses.values()) > 100 and all(isinstance(k, int) and 400 <= k < 500 for k in flood.statuses), \
        dict(flood.statuses)
    assert stable_spec(rstack)[0] == GOOD and canary_gone(rstack)
    assert wait_until(lambda: converged(rstack, version="2"), 60, "Consul to show only version 2")
    assert load.failures == [], load.failures[:5]
    shares = [e for e in doc["timeline"] if e["event"] == "share"]
    first_from_canary = min(t for t, _, version in load.served if version == "2")
    assert first_from_canary >= shares[0]["at"], "no client may reach the canary before its first step"
    ends = [e["at"] for e in shares[1:]] + [next(e["at"] for e in doc["timeline"] if e["event"] == "promote")]
    for step, start, end in zip(steps, [e["at"] for e in shares], ends):
        measured, n = load.share("2", start + 2.0, end), len(load.answered(start + 2.0, end))  # resolved within 1 s
        bound = split_within(step, n)
        print(f"\nstep {step}%: measured {measured:.1f}% of {n} responses from the canary (bound {bound:.1f})")
        assert n >= 30, f"step {step}%: only {n} responses measured"
        assert abs(measured - step) <= bound, f"step {step}%: measured {measured:.1f}% of {n} responses"

    history = json.loads(fleet(rstack, "history", "--stack", NAME, "--json").stdout)["revisions"]
    first = history[0]
    assert first["image"] == STABLE and history[-1]["image"] == GOOD and history[-1]["current"]
    p = fleet(rstack, "rollback", "--to", str(first["revision"]), "--stack", NAME, "--json")
    assert p.returncode == 0, p.stderr
    assert stable_spec(rstack)[0] == STABLE
    version = stable_spec(rstack)[1]
    p = fleet(rstack, "rollback", "--to", str(first["revision"]), "--stack", NAME, "--json")
    assert p.returncode == 0 and "nothing to do" in json.loads(p.stdout)["reason"]
    assert stable_spec(rstack)[1] == version, "rolling back to the running revision is a no-op"


def test_abort_from_another_shell_reverts_the_running_rollout(rstack):
    before = settled_spec(rstack)
    with running_rollout(rstack, GOOD, "--steps", "10", "--step-duration", "10m",
                         stderr=subprocess.DEVNULL) as running:
        wait_until(lambda: phase(rstack) == "stepping", 120, "the rollout to step", while_running=running)
        p = fleet(rstack, "abort", "--stack", NAME, "--json", timeout=120)
        assert p.returncode == 0, p.stderr
        assert json.loads(p.stdout)["outcome"] == "aborted"
        out, _ = running.communicate(timeout=120)
        assert running.returncode == 1 and json.loads(out)["outcome"] == "aborted"
    assert stable_spec(rstack) == before and canary_gone(rstack)


def rollout_state(s: StackUnderTest) -> dict:
    _, item = s.consul().kv.get(f"fleet/rollouts/{NAME}/inference/state")
    return json.loads(item["Value"])["rollout"] if item and item.get("Value") else {}


def waiting(s: StackUnderTest, *args: str) -> subprocess.Popen:
    """`fleet status --wait --json ARGS` started now: a CI job waiting on the rollout in progress, or the next."""
    return fleet_background(s, "status", "--stack", NAME, "--wait", "--json", *args)


def lines_of(p: subprocess.Popen) -> list[dict]:
    out, err = p.communicate(timeout=120)
    return [json.loads(line) for line in out.splitlines() if line.strip()] or [{"stderr": err}]


def test_no_auto_promote_waits_for_fleet_promote_and_a_pause_holds_the_step_until_resume(rstack):
    """`fleet pause` at 20 % holds the canary past its 10 s step (25 s, share and phase read every second),
    `fleet resume` goes on, the last step passed waits for `fleet promote`; `fleet status --wait`, started
    before the rollout, follows it and exits 0 on the promotion; before any rollout it ends at its timeout."""
    p = fleet(rstack, "status", "--stack", NAME, "--wait", "--timeout", "2s")
    assert p.returncode == 124 and "none started" in p.stderr, (p.returncode, p.stderr)
    wait = waiting(rstack, "--timeout", "5m")
    # a 10 s step: a 5 s window of Prometheus counters held 18 to 20 canary requests and paused after 78 s
    with running_rollout(rstack, GOOD, "--steps", "20", "--step-duration", "10s", "--no-auto-promote",
                         stderr=subprocess.DEVNULL) as running:
        with LoadLoop(f"{rstack.gateway}/predict", max_requests=30_000, max_seconds=300) as load:
            wait_until(lambda: rollout_state(rstack).get("share") == 20, 180, "the canary's first step",
                       while_running=running)
            p = fleet(rstack, "pause", "--stack", NAME, "--json")
            assert p.returncode == 0 and json.loads(p.stdout)["paused"] is True, (p.stdout, p.stderr)
            held_until = time.monotonic() + 25  # 2.5 steps
            while time.monotonic() < held_until:
                r = rollout_state(rstack)
                assert (r["phase"], r["share"], r["held_since"] is not None) == ("stepping", 20, True), r
                time.sleep(1)
            status = json.loads(fleet(rstack, "status", "--stack", NAME, "--json").stdout)
            assert status["rollouts"][0]["paused"] is True, status["rollouts"]
            p = fleet(rstack, "resume", "--stack", NAME, "--json")
            assert p.returncode == 0 and json.loads(p.stdout)["paused"] is False, (p.stdout, p.stderr)
            assert fleet(rstack, "resume", "--stack", NAME).returncode == 2  # not paused: nothing to resume
            wait_until(lambda: phase(rstack) == "paused", 180, "the rollout to wait for promote after its last step",
                       while_running=running)
            assert fleet(rstack, "pause", "--stack", NAME).returncode == 2  # only a canary in its steps
            assert stable_spec(rstack)[0] == STABLE  # nothing promoted without the word
            p = fleet(rstack, "promote", "--stack", NAME, "--json", timeout=300)
            assert p.returncode == 0, p.stderr
            assert json.loads(p.stdout)["outcome"] == "promoted"
        out, _ = running.communicate(timeout=120)
        assert running.returncode == 0 and json.loads(out)["outcome"] == "promoted"
    seen = lines_of(wait)
    assert wait.returncode == 0 and seen[-1]["ended"] and seen[-1]["phase"] == "promoted", seen[-3:]
    assert any(v.get("paused_since") for v in seen) and seen[0]["image"] == GOOD, seen
    assert stable_spec(rstack)[0] == GOOD and canary_gone(rstack)
    assert load.failures == [], load.failures[:5]
    timeline = json.loads(out)["timeline"]
    held = [e["at"] for e in timeline if e["event"] in ("pause", "resume")]
    assert len(held) == 2 and held[1] - held[0] >= 25, timeline
    assert fleet(rstack, "rollback", "--stack", NAME, "--json").returncode == 0
    assert stable_spec(rstack)[0] == STABLE


def test_a_paused_canary_that_goes_bad_is_rolled_back_and_status_wait_exits_1(rstack):
    """The late image answers 30 % errors from 25 s after its first request: paused at its first share, it is
    still judged and rolled back while held, and `fleet status --wait` beside it exits 1 naming the outcome."""
    before = settled_spec(rstack)
    with running_rollout(rstack, "fleet/inference-test:late", "--steps", "20,50", "--step-duration", "60s",
                         stderr=subprocess.DEVNULL) as running:
        wait = waiting(rstack, "--timeout", "4m")
        with LoadLoop(f"{rstack.gateway}/predict", max_requests=30_000, max_seconds=240) as load:
            wait_until(lambda: rollout_state(rstack).get("share") == 20, 180, "the canary's first step",
                       while_running=running)
            assert fleet(rstack, "pause", "--stack", NAME).returncode == 0
            out, _ = running.communicate(timeout=200)
    doc = json.loads(out)
    assert running.returncode == 1 and doc["outcome"] == "rolled_back" and "error rate" in doc["reason"], doc
    events = [e["event"] for e in doc["timeline"]]
    assert "pause" in events and "resume" not in events and events.index("pause") < events.index("signal"), events
    assert len([e for e in doc["timeline"] if e["event"] == "share"]) == 1, doc["timeline"]  # held at 20 %
    seen = lines_of(wait)
    assert wait.returncode == 1 and seen[-1]["phase"] == "rolled_back", seen[-3:]
    print(f"\npaused late canary: {doc['reason']} ({len(load.failures)} of {load.total} client requests failed)")
    assert stable_spec(rstack) == before and canary_gone(rstack)


def test_a_rollout_whose_output_is_closed_is_reverted_not_left_orphaned(rstack):
    """`fleet rollout ... 2>&1 | head -3`: its output closes while the canary starts; Rich ends the process
    (SystemExit), and fleet reverts first: canary removed, the revision recorded rolled back, nothing orphaned."""
    before = settled_spec(rstack)
    command = (f"{sys.executable} -m fleet.cli rollout --canary --image {GOOD} --stack {NAME} --steps 50 "
               "--step-duration 60s 2>&1 | head -3")
    p = subprocess.run(["bash", "-c", command], cwd=ROOT, env=rstack.env(), capture_output=True, text=True, timeout=300)
    assert len(p.stdout.splitlines()) == 3, p.stdout
    wait_until(lambda: phase(rstack) is None, 60, "the rollout's state to be cleared")
    last = json.loads(fleet(rstack, "history", "--stack", NAME, "--json").stdout)["revisions"][-1]
    assert last["image"] == GOOD and last["outcome"] == "rolled_back" and "output was closed" in last["reason"], last
    assert stable_spec(rstack) == before and canary_gone(rstack)


@pytest.fixture
def private(tmp_path):
    registry = PrivateRegistry(tmp_path).start()
    try:
        yield registry
    finally:
        registry.stop()


def test_a_private_image_is_rolled_out_with_dockers_login_and_refused_without_it(rstack, private):
    """An image in a registry that wants a login (htpasswd, TLS with its own CA in certs.d), on no engine by
    its name: without a login, or with a wrong one, `fleet rollout` exits 2 naming `docker login` and changes
    nothing; with the login from a credential helper, fleet reads its labels, Swarm pulls it with the login
    fleet forwards, and it is promoted; `fleet rollback` returns to the public stable."""
    image = private.push(GOOD, "team/inference:2")
    before = settled_spec(rstack)
    argv = ["rollout", "--canary", "--image", image, "--stack", NAME, "--json", "--steps", "50", "--step-duration", "10s"]
    for env, says in ((private.config(None), "wants a login to read team/inference (401) and fleet has none"),
                      (private.config("wrong"), "refused the login of ci for team/inference")):
        p = fleet(rstack, *argv, env=env)
        error = json.loads(p.stdout)["error"]
        assert p.returncode == 2 and says in error and f"`docker login {private.host}" in error, (p.stdout, p.stderr)
        assert private.config(None)["DOCKER_CONFIG"] not in error and "fleet-private-s3cret" not in p.stdout + p.stderr
        assert stable_spec(rstack) == before and canary_gone(rstack)
    p = fleet(rstack, "deploy", "--stack", NAME, "--image", f"inference={image}", env=private.config(None))
    assert p.returncode == 2 and f"`docker login {private.host}`" in p.stderr and "nothing was deployed" in p.stderr, \
        p.stderr[-1500:]
    assert stable_spec(rstack) == before
    with LoadLoop(f"{rstack.gateway}/predict", max_requests=30_000, max_seconds=300) as load:
        p = fleet(rstack, *argv, env=private.helped(), timeout=400)
    doc = json.loads(p.stdout)
    assert p.returncode == 0 and doc["outcome"] == "promoted", (doc, p.stderr[-2000:])
    assert stable_spec(rstack)[0] == image and canary_gone(rstack)
    assert load.failures == [], load.failures[:5]
    assert fleet(rstack, "rollback", "--stack", NAME, "--json", env=private.helped()).returncode == 0
    assert stable_spec(rstack)[0] == STABLE


def test_an_engine_only_tag_moved_during_the_canary_ships_the_judged_build_by_its_id(rstack):
    """An image only on this engine (no registry): its tag is looked up again on every task's start, so the
    canary runs the tag's image ID, resolved once; the tag moved to another build meanwhile (`docker tag`,
    as a rebuild does) is named, the judged build ships by its ID, and the other never runs in the stable;
    `fleet rollback --to` puts the judged build back by its ID too."""
    client = rstack.swarm.client
    tag = f"fleet/inference:moved-{uuid.uuid4().hex[:8]}"
    judged, other = client.images.get(GOOD).id, client.images.get("fleet/inference-test:flaky").id
    client.images.get(GOOD).tag(tag)
    try:
        with LoadLoop(f"{rstack.gateway}/predict", max_requests=30_000, max_seconds=300) as load:
            proc = fleet_background(rstack, "rollout", "--canary", "--image", tag, "--stack", NAME, "--json",
                                    "--steps", "50", "--step-duration", "10s")
            try:
                canary = wait_until(lambda: rstack.swarm.service(rstack.service("inference-canary")), 120,
                                    "the canary service")
                client.images.get("fleet/inference-test:flaky").tag(tag)  # build B under the same tag
                out, err = proc.communicate(timeout=400)
            finally:
                if proc.poll() is None:
                    proc.kill()
        assert canary.attrs["Spec"]["TaskTemplate"]["ContainerSpec"]["Image"] == judged
        doc = json.loads(out) if out.strip() else {}
        assert proc.returncode == 0 and doc["outcome"] == "promoted", (out, err[-2000:])
        assert stable_spec(rstack)[0] == judged and canary_gone(rstack)
        ran = {c.image.id for c in client.containers.list(
            all=True, filters={"label": f"com.docker.swarm.service.name={rstack.service('inference')}"})}
        assert judged in ran and other not in ran, "build B never runs in the stable"
        assert load.failures == [], load.failures[:5]
        history = json.loads(fleet(rstack, "history", "--stack", NAME, "--json").stdout)["revisions"]
        record = next(h for h in history if h["revision"] == doc["revision"])
        assert record["image"] == tag and record["pinned"] == judged, record
        assert any(e["event"] == "tag" and f"tag {tag} now points to {other}; the canary judged {judged}; {judged} "
                   "shipped" in e["detail"] for e in record["timeline"]), record["timeline"]
        assert fleet(rstack, "status", "--stack", NAME, "--json").returncode == 0
        deploy_stable(rstack, STABLE)  # from a stable on an ID to the file's tag
        p = fleet(rstack, "rollback", "--to", str(doc["revision"]), "--stack", NAME, "--json")
        assert p.returncode == 0 and stable_spec(rstack)[0] == judged, p.stderr  # by its ID: the tag names B
    finally:
        client.images.remove(tag)  # the next test starts on STABLE again (starts_on_stable)


def test_a_tag_rebuilt_on_the_engine_is_a_new_build_for_fleet_deploy(rstack):
    """`docker build -t T` again under a stable that runs T: the spec still names T, so `docker stack deploy`
    and Swarm see no change, and the replicas run the earlier build. `fleet deploy` sees the tag name another
    image than the replicas run: through the canary (the policy's strategy) it judges the new build by its
    ID and ships it by its ID; with Swarm's rolling update (the test stacks' strategy) it deploys it by its
    ID; a deploy after either has nothing to do, and the history records the build."""
    client = rstack.swarm.client
    tag = f"fleet/inference:rebuilt-{uuid.uuid4().hex[:8]}"
    old, new = client.images.get(STABLE).id, client.images.get(GOOD).id
    client.images.get(STABLE).tag(tag)
    running = lambda: {c.attrs["Image"] for c in client.containers.list(  # noqa: E731
        filters={"label": f"com.docker.swarm.service.name={rstack.service('inference')}"})}
    canary = {"FLEET_IMAGE": tag, "FLEET_ROLLOUT_STRATEGY": "canary", "FLEET_ROLLOUT_STEPS": "50",
              "FLEET_ROLLOUT_STEP_DURATION": "10s"}
    try:
        # the start: the stable on the tag (Swarm's rolling update; a canary of a tag that names its judged build
        # ships by that name in every good canary test of this module)
        p = fleet(rstack, "deploy", "--stack", NAME, "--json", env={"FLEET_IMAGE": tag}, timeout=400)
        assert p.returncode == 0 and stable_spec(rstack)[0] == tag, p.stderr[-2000:]
        wait_until(lambda: running() == {old}, 120, "the stable's replicas on the tag")
        revisions = len(json.loads(fleet(rstack, "history", "--stack", NAME, "--json").stdout)["revisions"])
        for build, env, outcome in ((new, canary, "promoted"), (old, {"FLEET_IMAGE": tag}, "deployed")):
            client.images.get(build).tag(tag)  # rebuilt
            with LoadLoop(f"{rstack.gateway}/predict", max_requests=30_000, max_seconds=300) as load:
                p = fleet(rstack, "deploy", "--stack", NAME, "--json", env=env, timeout=400)
            assert p.returncode == 0, (p.stdout[-2000:], p.stderr[-2000:])
            # judged: shipped by its ID; Swarm's rolling update: the file's name (a change of name, from the ID)
            assert stable_spec(rstack)[0] == (build if outcome == "promoted" else tag), stable_spec(rstack)
            assert canary_gone(rstack)
            wait_until(lambda: running() == {build}, 120, "the stable's replicas on the rebuilt build")
            assert load.failures == [], load.failures[:5]
            history = json.loads(fleet(rstack, "history", "--stack", NAME, "--json").stdout)["revisions"]
            assert history[-1]["image"] == tag and history[-1]["pinned"] == build, history[-1]
            assert history[-1]["outcome"] == outcome and len(history) == revisions + 1, history[-1]
            spec, tasks = stable_spec(rstack)[0], running_ids(rstack)
            p = fleet(rstack, "deploy", "--stack", NAME, "--json", env=env)
            assert p.returncode == 0 and stable_spec(rstack)[0] == spec, p.stderr[-2000:]
            assert running_ids(rstack) == tasks, "nothing to deploy: not a task restarted"
            again = json.loads(fleet(rstack, "history", "--stack", NAME, "--json").stdout)["revisions"]
            assert len(again) == len(history), "nothing to deploy: no canary, no revision"
            revisions = len(history)
    finally:
        client.images.remove(tag)  # the next test starts on STABLE again (starts_on_stable)
