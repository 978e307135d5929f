"""The stack file is the truth: the rollout policy's parser and lint, and the pure deploy plan (what a
deploy does to each service) as a truth table."""
import pytest

from fleet.core import changes, policy
from fleet.core.changes import How
from fleet.core.records import Revision
from fleet.stackfile import Severity, lint

V1, V2, V3 = "fleet/inference:1", "fleet/inference:2", "fleet/inference:3"
GOVERNED = {"fleet.rollout.strategy": "canary"}


# the policy ----------------------------------------------------------------------------------------
def test_no_rollout_label_is_no_policy():
    assert policy.parse({"fleet.component": "inference"}) == (None, [])
    assert not policy.governs({"fleet.component": "inference"})


def test_every_setting_is_read():
    chosen, errors = policy.parse({
        "fleet.rollout.strategy": "canary", "fleet.rollout.steps": "5,50", "fleet.rollout.step-duration": "1m",
        "fleet.rollout.max-error-rate": "0.02", "fleet.rollout.max-latency-ratio": "2",
        "fleet.rollout.max-divergence": "0.3", "fleet.rollout.golden-tolerance": "0.05", "fleet.rollout.progress-deadline": "90s",
        "fleet.rollout.auto-promote": "false", "fleet.rollout.canary-replicas": "2"})
    assert errors == []
    p = chosen.plan
    assert (p.steps, p.step_duration, p.progress_deadline, p.auto_promote, p.canary_replicas, p.golden_tolerance) \
        == ((5, 50), 60.0, 90.0, False, 2, 0.05)
    assert (p.thresholds.max_error_rate, p.thresholds.max_latency_ratio, p.thresholds.max_divergence) == (0.02, 2.0, 0.3)
    assert policy.governs({"fleet.rollout.steps": "10"})  # canary is the strategy a policy defaults to


@pytest.mark.parametrize("label,value,says", [
    ("fleet.rollout.strategy", "blue-green", "neither canary nor rolling"),
    ("fleet.rollout.steps", "50,10", "steps must rise"),
    ("fleet.rollout.step-duration", "soon", "fleet.rollout.step-duration: 30s"),
    ("fleet.rollout.max-error-rate", "5", "within 0..1"),
    ("fleet.rollout.max-latency-ratio", "0", "above 0"),
    ("fleet.rollout.max-divergence", "1.5", "within 0..1"),
    ("fleet.rollout.auto-promote", "yes", "true or false"),
    ("fleet.rollout.canary-replicas", "0", "at least 1"),
    ("fleet.rollout.speed", "fast", "the known ones are"),
], ids=lambda v: str(v))
def test_bad_settings_name_the_label_and_the_fix(label, value, says):
    chosen, errors = policy.parse({label: value})
    assert [e[0] for e in errors] == [label] and says in errors[0][1], errors
    assert not policy.governs({label: value})


def test_cli_flags_go_over_the_policy():
    labels = {**policy.labels({"steps": "10,20", "auto-promote": False}), "fleet.rollout.step-duration": "1m"}
    chosen, errors = policy.parse({**labels, **policy.labels({"steps": "50"})})
    assert errors == [] and chosen.plan.steps == (50,) and chosen.plan.step_duration == 60.0
    assert chosen.plan.auto_promote is False


def service(labels: dict | None = None, env: dict | None = None, mode: str = "replicated") -> dict:
    return {"services": {"inference": {
        "image": V2, "environment": {"CONSUL_HTTP_ADDR": "https://consul:8501", **(env or {})},
        "healthcheck": {"test": ["CMD", "true"], "interval": "2s", "retries": 3, "start_period": "20s"},
        "deploy": {"mode": mode, "labels": labels or {}, **({"replicas": 2} if mode == "replicated" else {}),
                   "update_config": {"order": "start-first", "failure_action": "rollback", "monitor": "30s"}}}}}


def test_lint_names_bad_policy_labels_as_errors():
    found = {(f.severity, f.key) for f in lint(service({"fleet.rollout.steps": "0"}))}
    assert (Severity.ERROR, "deploy.labels.fleet.rollout.steps") in found


def test_lint_refuses_a_canary_policy_fleet_could_not_judge():
    no_consul = service(GOVERNED)
    del no_consul["services"]["inference"]["environment"]["CONSUL_HTTP_ADDR"]
    assert any(f.severity is Severity.ERROR and "register in Consul" in f.message for f in lint(no_consul))
    assert any(f.severity is Severity.ERROR and "global" in f.message for f in lint(service(GOVERNED, mode="global")))
    assert not [f for f in lint(service(GOVERNED)) if f.key.startswith("deploy.labels")]


# the plan ------------------------------------------------------------------------------------------
def want(image=V2, replicas=2, env=None, labels=None, command=None, memory=None, digest=None) -> dict:
    svc = {"image": image, "environment": env or {"A": "1"}, "command": command,
           "deploy": {"replicas": replicas, "labels": {**GOVERNED, **(labels or {})},
                      **({"resources": {"limits": {"memory": memory}}} if memory else {})}}
    return changes.desired(svc, digest)


def spec(image=V2, replicas=2, env=None, labels=None, args=None, memory=None) -> dict:
    return {"Labels": {**GOVERNED, **(labels or {}), "com.docker.stack.namespace": "s", "com.docker.stack.image": V1},
            "Mode": {"Replicated": {"Replicas": replicas}},
            "TaskTemplate": {"ContainerSpec": {"Image": image, "Env": [f"{k}={v}" for k, v in (env or {"A": "1"}).items()],
                                               **({"Args": args} if args else {})},
                             "Resources": {"Limits": {"MemoryBytes": memory}} if memory else {}}}


def have(**kw) -> dict:
    return changes.live(spec(**kw))


PROMOTED_V2 = [Revision(1, V1, "deployed"), Revision(2, V2, "promoted")]

TABLE = [
    # id, file (want), running (have or None), history, replace_promoted, how, keys
    ("same-is-unchanged", want(), have(), [], False, How.NONE, []),
    ("new-service-is-created", want(), None, [], False, How.CREATE, []),
    ("replicas-only-is-an-update", want(replicas=3), have(), [], False, How.UPDATE, ["replicas"]),
    ("label-only-is-an-update", want(labels={"team": "ml"}), have(), [], False, How.UPDATE, ["labels.team"]),
    ("image-of-governed-is-a-canary", want(image=V3), have(), [], False, How.CANARY, ["image"]),
    ("env-of-governed-is-a-canary", want(env={"A": "2"}), have(), [], False, How.CANARY, ["environment.A"]),
    ("added-env-is-a-canary", want(env={"A": "1", "B": "x"}), have(), [], False, How.CANARY, ["environment.B"]),
    ("command-is-a-canary", want(command=["serve", "--fast"]), have(), [], False, How.CANARY, ["command"]),
    ("memory-is-a-canary", want(memory="1073741824"), have(memory=2147483648), [], False, How.CANARY,
     ["resources.limits.memory"]),
    ("memory-units-are-bytes", want(memory="2G"), have(memory=2147483648), [], False, How.NONE, []),
    ("rebuilt-tag-is-a-canary", want(digest="sha256:new"), have(image=V2 + "@sha256:old"), [], False, How.CANARY,
     ["digest"]),
    ("same-digest-is-unchanged", want(digest="sha256:old"), have(image=V2 + "@sha256:old"), [], False, How.NONE, []),
    ("unknown-digest-is-not-a-change", want(), have(image=V2 + "@sha256:old"), [], False, How.NONE, []),
    ("image-and-replicas-canary-with-both", want(image=V3, replicas=3), have(), [], False, How.CANARY,
     ["image", "replicas"]),
    ("ungoverned-image-is-rolling", want(image=V3, labels={"fleet.rollout.strategy": "rolling"}),
     have(labels={"fleet.rollout.strategy": "rolling"}), [], False, How.ROLLING, ["image"]),
    ("old-image-over-a-promotion-is-refused", want(image=V1, replicas=3), have(), PROMOTED_V2, False, How.REFUSE,
     ["image", "replicas"]),
    ("refused-even-if-ungoverned", want(image=V1, labels={"fleet.rollout.strategy": "rolling"}),
     have(labels={"fleet.rollout.strategy": "rolling"}), PROMOTED_V2, False, How.REFUSE, ["image"]),
    ("replace-promoted-makes-it-a-canary", want(image=V1), have(), PROMOTED_V2, True, How.CANARY, ["image"]),
    ("promoted-image-in-the-file-is-fine", want(replicas=3), have(), PROMOTED_V2, False, How.UPDATE, ["replicas"]),
    ("an-image-new-to-history-is-a-release", want(image=V3), have(), PROMOTED_V2, False, How.CANARY, ["image"]),
    ("deployed-not-promoted-is-no-revert", want(image=V1), have(),
     [Revision(1, V1, "deployed"), Revision(2, V2, "deployed")], False,
     How.CANARY, ["image"]),
    ("a-rolled-back-image-is-no-revert", want(image=V3), have(),
     PROMOTED_V2 + [Revision(3, V3, "rolled_back")], False, How.CANARY, ["image"]),
]


@pytest.mark.parametrize("file,running,history,replace_promoted,how,keys", [t[1:] for t in TABLE],
                         ids=[t[0] for t in TABLE])
def test_plan(file, running, history, replace_promoted, how, keys):
    p = changes.plan({"inference": file}, {"inference": running} if running else {}, {"inference": history},
                     replace_promoted)
    got = p.of("inference")
    assert got.how is how and got.keys() == keys, got
    assert p.changed == (how is not How.NONE)


def test_a_service_the_file_dropped_is_removed():
    p = changes.plan({}, {"old": have()})
    assert p.of("old").how is How.REMOVE and p.changed


def test_refusal_names_both_images_the_revision_and_the_ways_forward():
    note = changes.plan({"inference": want(image=V1)}, {"inference": have()}, {"inference": PROMOTED_V2}).refused[0].note
    assert V1 in note and V2 in note and "revision 2" in note and "--replace-promoted" in note


def test_held_containers_keep_what_runs_and_take_the_rest():
    svc = {"image": V3, "environment": {"A": "2"}, "command": ["x"],
           "deploy": {"replicas": 3, "resources": {"limits": {"memory": "1G"}, "reservations": {"generic_resources": []}}}}
    pinned = changes.pin_container(svc, spec(image=V2 + "@sha256:old", env={"A": "1"}, memory=2147483648))
    assert changes.desired(pinned) == {**changes.live(spec(image=V2 + "@sha256:old", env={"A": "1"},
                                                           memory=2147483648)),
                                       "replicas": 3, "labels": {}}
    assert pinned["deploy"]["resources"]["reservations"] == {"generic_resources": []}  # the rest is the file's


def test_promotion_flags_bring_the_stable_to_the_canarys_settings():
    running = have(env={"A": "1", "OLD": "x"}, memory=2147483648)
    target = changes.settings(want(env={"A": "2", "NEW": "y"}, command=["serve"], memory="1073741824"))
    flags = changes.update_flags(running, target)
    assert flags == ["--env-rm", "OLD", "--env-add", "A=2", "--env-add", "NEW=y", "--args", "serve",
                     "--limit-memory", "1073741824"]
    template = spec(env={"A": "1", "OLD": "x"}, memory=2147483648)["TaskTemplate"]
    changes.apply_settings(template, target)
    assert changes.runs(changes.live({**spec(), "TaskTemplate": template}), V2, target)
    assert not changes.runs(running, V2, target) and changes.runs(running, V2, None)
    assert not changes.runs(have(image=V2 + "@sha256:a"), V2 + "@sha256:b", None)


# the deploy/rollout race ---------------------------------------------------------------------------
def test_a_rollout_promoted_between_a_deploys_read_and_its_locks_is_never_reverted(monkeypatch):
    """`fleet deploy` planned before it took the rollout locks: a rollout that promoted v2 in that window
    was silently undone by the deploy of the file's v1. The hook is the moment the locks are taken."""
    from fleet import deploy as d

    world = {"image": V1, "history": [Revision(1, V1, "deployed")], "deployed": []}

    class Swarm:
        def stack_deploy(self, files, stack):
            world["deployed"].append(stack)

    def read(files, stack, images, consul_addr, swarm, replace_promoted):
        plan = changes.plan({"inference": want(image=V1, labels={"fleet.rollout.strategy": "rolling"})},
                            {"inference": have(image=world["image"], labels={"fleet.rollout.strategy": "rolling"})},
                            {"inference": list(world["history"])})
        return d._Situation(Swarm(), stack, {"services": {}}, [], {}, {}, {}, None, None, plan)

    def lock(s):  # meanwhile, a rollout of v2 was promoted, and released its lock
        world["image"], world["history"] = V2, world["history"] + [Revision(2, V2, "promoted")]
        return {}

    monkeypatch.setattr(d, "_read", read)
    monkeypatch.setattr(d, "_lock", lock)
    with pytest.raises(d.BadInput, match="would undo a promotion"):
        d.deploy([], "s", {}, 10, None)
    assert world["deployed"] == [] and world["image"] == V2
