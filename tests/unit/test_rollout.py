"""Truth tables for the pure rollout core: state + event + injected clock -> state + actions."""
from dataclasses import replace

import pytest

from fleet.core.analysis import Outcome, Stats, Thresholds, judge
from fleet.core.events import (ConsulView, ContainerEvent, ControlRequested, GateAnswered, GoldenChecked, MetricsSample,
                          PromotionObserved, SourceFailed, SourceUp, Tick)
from fleet.core.tasks import Instance
from fleet.core.rollout import (AskGate, CheckGolden, CutCanary, Finish, Phase, Plan, PromoteStable, Reason, RevertStable, Rollout,
                           SetShare, StableObserved, parse_steps, resumed, start, step)
from fleet.core.traffic import share_of, weights_for

T0 = 1_000.0
PLAN = Plan(steps=(10, 50), step_duration=30, progress_deadline=60, canary_replicas=1, version="2")
GOOD = MetricsSample(Stats(100, 0, 1.0), Stats(900, 0, 9.0))


def canary(status="passing", version="2", output=""):
    return Instance(id="inference-c1", name="inference", address="10.0.0.9", port=8000, version=version,
                    role="canary", task_id="c1", status=status, output=output)


def stepping(step_index=0, since=T0, judged_at=None, judgement=None) -> Rollout:
    r = replace(start(T0), phase=Phase.STEPPING, ready=True, step=step_index, share=PLAN.steps[step_index],
                phase_since=since)
    return replace(r, judged_at=judged_at, judgement=judgement)


def passed_at(at):
    return judge(GOOD.canary, GOOD.stable, PLAN.thresholds), at


CASES = [
    # (id, rollout, event, now, phase after, actions (types), reason contains)
    ("starting-ready-in-consul-runs-golden", start(T0), ConsulView((canary(),)), T0 + 5, Phase.VERIFYING,
     [CheckGolden], ""),
    ("starting-old-version-is-not-ready", start(T0), ConsulView((canary(version="1"),)), T0 + 5, Phase.STARTING, [], ""),
    ("starting-critical-is-not-ready-yet", start(T0), ConsulView((canary("critical"),)), T0 + 5, Phase.STARTING, [], ""),
    ("starting-past-deadline-fails", start(T0), Tick(), T0 + 61, Phase.ROLLED_BACK, [CutCanary, Finish],
     "progress deadline"),
    ("starting-within-deadline-waits", start(T0), Tick(), T0 + 59, Phase.STARTING, [], ""),
    ("task-died-fails-at-once", start(T0), ContainerEvent("die", "abc", "exit code 3"), T0 + 1, Phase.ROLLED_BACK,
     [CutCanary, Finish], "exit code 3"),
    ("oom-fails", stepping(), ContainerEvent("oom", "abc"), T0 + 1, Phase.ROLLED_BACK, [CutCanary, Finish], "oom"),
    ("unhealthy-fails", start(T0), ContainerEvent("unhealthy", "abc", '{"phase":"failed"}'), T0 + 1,
     Phase.ROLLED_BACK, [CutCanary, Finish], "phase"),
    ("healthy-event-changes-nothing", start(T0), ContainerEvent("healthy", "abc"), T0 + 1, Phase.STARTING, [], ""),
    # one failed health check in Docker's start period: a replica whose model failed fails the canary at once
    ("check-failed-on-a-failed-model-fails-at-once", start(T0),
     ContainerEvent("check_failed", "abc", '{"phase":"failed","reason":"model file is corrupt","version":null}'),
     T0 + 1, Phase.ROLLED_BACK, [CutCanary, Finish], "a canary replica failed (its health check)"),
    ("check-failed-while-loading-waits", start(T0), ContainerEvent("check_failed", "abc", '{"phase":"loading"}'),
     T0 + 1, Phase.STARTING, [], ""),
    ("check-failed-with-no-answer-waits", start(T0),
     ContainerEvent("check_failed", "abc", "no answer from http://127.0.0.1:8001/ready: [Errno 111] Connection refused"),
     T0 + 1, Phase.STARTING, [], ""),
    ("check-failed-draining-after-ready-waits", stepping(), ContainerEvent("check_failed", "abc", '{"phase":"draining"}'),
     T0 + 1, Phase.STEPPING, [], ""),
    ("golden-pass-starts-first-step", replace(start(T0), phase=Phase.VERIFYING, ready=True), GoldenChecked(True, "ok"),
     T0 + 6, Phase.STEPPING, [SetShare], ""),
    ("golden-fail-rolls-back", replace(start(T0), phase=Phase.VERIFYING, ready=True),
     GoldenChecked(False, "accuracy 0.25"), T0 + 6, Phase.ROLLED_BACK, [CutCanary, Finish], "accuracy 0.25"),
    ("consul-critical-after-ready-fails", stepping(), ConsulView((canary("critical", output="503 draining"),)), T0 + 2,
     Phase.ROLLED_BACK, [CutCanary, Finish], "critical"),
    ("canary-gone-from-consul-fails", stepping(), ConsulView(()), T0 + 2, Phase.ROLLED_BACK, [CutCanary, Finish],
     "0/1"),
    ("degraded-canary-fails-saying-so", stepping(),
     ConsulView((canary("warning", output="GPU memory free 100 MiB is under the watermark 512 MiB"),)), T0 + 2,
     Phase.ROLLED_BACK, [CutCanary, Finish], "canary inference-c1 is degraded (a warning in Consul): GPU memory free"),
    ("bad-error-rate-fails-mid-step", stepping(), MetricsSample(Stats(100, 30, 1.0), Stats(900, 0, 9.0)), T0 + 3,
     Phase.ROLLED_BACK, [CutCanary, Finish], "error rate 30.0%"),
    ("slow-canary-fails", stepping(), MetricsSample(Stats(100, 0, 5.0), Stats(900, 0, 9.0)), T0 + 3,
     Phase.ROLLED_BACK, [CutCanary, Finish], "latency"),
    ("few-requests-is-unknown-not-fail", stepping(), MetricsSample(Stats(5, 5, 0.1), Stats(900, 0, 9.0)), T0 + 3,
     Phase.STEPPING, [], ""),
    ("step-end-with-fresh-pass-advances", stepping(judgement=passed_at(T0 + 29)[0], judged_at=T0 + 29), Tick(), T0 + 30,
     Phase.STEPPING, [SetShare], ""),
    ("step-end-without-evidence-waits", stepping(), Tick(), T0 + 31, Phase.STEPPING, [], ""),
    ("stale-pass-is-no-evidence", stepping(judgement=passed_at(T0)[0], judged_at=T0 + 10), Tick(), T0 + 31,
     Phase.STEPPING, [], ""),
    ("no-evidence-past-deadline-fails", stepping(), Tick(), T0 + 30 + 61, Phase.ROLLED_BACK, [CutCanary, Finish],
     "no passing evidence"),
    ("unknown-evidence-never-promotes", stepping(1, judgement=judge(Stats(3, 0, 0), None, Thresholds()),
                                                 judged_at=T0 + 29), Tick(), T0 + 30, Phase.STEPPING, [], ""),
    ("last-step-passed-promotes", stepping(1, judgement=passed_at(T0)[0], judged_at=T0 + 29), Tick(), T0 + 30,
     Phase.PROMOTING, [PromoteStable], ""),
    ("source-failure-is-not-success", stepping(), SourceFailed("consul", "refused"), T0 + 3, Phase.STEPPING, [], ""),
    ("missing-source-holds-the-step", replace(stepping(judgement=passed_at(T0)[0], judged_at=T0 + 29),
                                              missing=("docker",), missing_since=T0 + 20), Tick(), T0 + 30,
     Phase.STEPPING, [], ""),
    ("missing-source-past-deadline-fails", replace(stepping(), missing=("consul",), missing_since=T0 + 1,
                                                   last_seen="consul: refused"), Tick(), T0 + 62,
     Phase.ROLLED_BACK, [CutCanary, Finish], "evidence missing"),
    ("missing-source-defers-a-promote-request", replace(stepping(), missing=("docker",), missing_since=T0 + 1),
     ControlRequested("promote"), T0 + 3, Phase.STEPPING, [], "waiting for complete evidence"),
    ("paused-past-its-timeout-rolls-back", replace(stepping(1), phase=Phase.PAUSED), Tick(), T0 + 3601,
     Phase.ROLLED_BACK, [CutCanary, Finish], "pause timeout"),
    ("paused-within-its-timeout-waits", replace(stepping(1), phase=Phase.PAUSED), Tick(), T0 + 3599,
     Phase.PAUSED, [], ""),
    ("abort-reverts", stepping(), ControlRequested("abort"), T0 + 3, Phase.ABORTED, [CutCanary, Finish], "aborted"),
    ("promote-request-skips-steps", stepping(), ControlRequested("promote"), T0 + 3, Phase.PROMOTING, [PromoteStable],
     ""),
    ("promotion-converged", replace(stepping(), phase=Phase.PROMOTING), PromotionObserved("converged", "ok"), T0 + 40,
     Phase.PROMOTED, [CutCanary, Finish], ""),
    ("promotion-failed-reverts-stable", replace(stepping(), phase=Phase.PROMOTING),
     PromotionObserved("failed", "task exited 3"), T0 + 40, Phase.ROLLED_BACK, [RevertStable, CutCanary, Finish],
     "task exited 3"),
    ("canary-death-during-promotion-is-ignored", replace(stepping(), phase=Phase.PROMOTING),
     ContainerEvent("die", "abc"), T0 + 40, Phase.PROMOTING, [], ""),
    ("abort-during-promotion-reverts-stable", replace(stepping(), phase=Phase.PROMOTING), ControlRequested("abort"),
     T0 + 40, Phase.ABORTED, [RevertStable, CutCanary, Finish], ""),
    ("terminal-ignores-everything", replace(stepping(), phase=Phase.ROLLED_BACK), ContainerEvent("die", "abc"), T0 + 9,
     Phase.ROLLED_BACK, [], ""),
]


@pytest.mark.parametrize("r,event,now,phase,actions,reason", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_step(r, event, now, phase, actions, reason):
    new, done = step(r, event, now, PLAN)
    assert new.phase is phase
    assert [type(a) for a in done] == actions
    assert reason in new.reason
    if phase in (Phase.ROLLED_BACK, Phase.ABORTED):
        assert new.share == 0 and new.failure is not None or not done


def test_no_auto_promote_pauses_then_promotes_on_request():
    plan = replace(PLAN, auto_promote=False)
    r, actions = step(stepping(1, judgement=passed_at(T0)[0], judged_at=T0 + 29), Tick(), T0 + 30, plan)
    assert r.phase is Phase.PAUSED and actions == []
    r, actions = step(r, ControlRequested("promote"), T0 + 99, plan)
    assert r.phase is Phase.PROMOTING and actions == [PromoteStable()]


def test_a_canary_degraded_from_the_start_is_named_when_its_deadline_passes():
    """A canary short of GPU memory never passes: the deadline's message says it is degraded and why, not
    only that none passed."""
    r, _ = step(start(T0), ConsulView((canary("warning", output="GPU memory 97.0% used is over 95%"),)), T0 + 5, PLAN)
    assert r.phase is Phase.STARTING
    r, actions = step(r, Tick(), T0 + 61, PLAN)
    assert r.phase is Phase.ROLLED_BACK and Finish(Phase.ROLLED_BACK) in actions
    assert "0/1 canary replicas passing in Consul; canary inference-c1 is degraded: GPU memory 97.0% used" in r.reason


def test_steps_follow_the_plan_through_to_promotion():
    r, shares = start(T0), []
    r, _ = step(r, ConsulView((canary(),)), T0 + 1, PLAN)
    r, acts = step(r, GoldenChecked(True, "ok"), T0 + 2, PLAN)
    shares += [a.percent for a in acts]
    now = T0 + 2
    while r.phase is Phase.STEPPING:
        now += 5
        r, acts = step(r, GOOD, now, PLAN)
        r, acts = step(r, Tick(), now, PLAN)
        shares += [a.percent for a in acts if isinstance(a, SetShare)]
    assert shares == [10, 50] and r.phase is Phase.PROMOTING


NOT_ISSUED, ISSUED, ROLLED_BACK = (StableObserved(False, False), StableObserved(True, False),
                                   StableObserved(False, True))


@pytest.mark.parametrize("phase,stable,promote,after,actions,failure", [
    (Phase.STEPPING, NOT_ISSUED, False, Phase.ABORTED, [CutCanary, Finish], Reason.CONTROLLER_LOST),
    (Phase.STARTING, NOT_ISSUED, False, Phase.ABORTED, [CutCanary, Finish], Reason.CONTROLLER_LOST),
    (Phase.PROMOTING, NOT_ISSUED, False, Phase.PROMOTING, [PromoteStable], None),  # intent saved, update not sent
    (Phase.PROMOTING, ISSUED, False, Phase.PROMOTING, [PromoteStable], None),
    (Phase.STEPPING, ISSUED, False, Phase.PROMOTING, [PromoteStable], None),  # Swarm shows the promotion began
    (Phase.PROMOTING, ROLLED_BACK, False, Phase.ROLLED_BACK, [CutCanary, Finish], Reason.PROMOTION_FAILED),
    (Phase.STEPPING, NOT_ISSUED, True, Phase.STEPPING, [SetShare], None),  # orphan promote: fresh evidence first
    (Phase.STARTING, NOT_ISSUED, True, Phase.ABORTED, [CutCanary, Finish], Reason.CONTROLLER_LOST),
], ids=["stepping-reverted", "starting-reverted", "promoting-not-issued-is-issued", "promoting-issued-is-watched",
        "stepping-but-swarm-promoting-is-watched", "promotion-swarm-rolled-back-is-failed",
        "orphan-promote-judges-afresh", "orphan-promote-before-steps-reverts"])
def test_resumed_decides_from_what_swarm_shows(phase, stable, promote, after, actions, failure):
    r, done = resumed(replace(stepping(), phase=phase), T0 + 500, stable, promote)
    assert r.phase is after and [type(a) for a in done] == actions
    assert r.failure is failure


def test_orphan_promote_waits_for_fresh_passing_evidence():
    r, _ = resumed(replace(stepping(), judgement=passed_at(T0)[0], judged_at=T0 + 10), T0 + 500, NOT_ISSUED,
                   promote=True)
    assert r.judgement is None and r.promote_requested
    r, acts = step(r, Tick(), T0 + 501, PLAN)
    assert r.phase is Phase.STEPPING and acts == []  # the old judgement does not count
    r, acts = step(r, GOOD, T0 + 502, PLAN)
    assert r.phase is Phase.PROMOTING and acts == [PromoteStable()]


def test_a_source_back_restarts_the_step_clock():
    r = stepping(judgement=passed_at(T0)[0], judged_at=T0 + 25)
    r, _ = step(r, SourceFailed("docker", "stream ended"), T0 + 26, PLAN)
    r, _ = step(r, SourceUp("docker"), T0 + 28, PLAN)
    assert r.missing == () and r.phase_since == T0 + 28 and r.judgement is None
    r, acts = step(r, GOOD, T0 + 40, PLAN)
    r, acts = step(r, Tick(), T0 + 41, PLAN)
    assert acts == []  # not a whole step of complete evidence yet
    r, acts = step(r, GOOD, T0 + 58, PLAN)
    r, acts = step(r, Tick(), T0 + 58.5, PLAN)
    assert [type(a) for a in acts] == [SetShare]


def test_state_round_trips_through_json_dict():
    r = stepping(judgement=passed_at(T0)[0], judged_at=T0 + 1)
    assert Rollout.from_dict(r.to_dict()) == r


@pytest.mark.parametrize("text,ok", [("10,25,50", (10, 25, 50)), ("100", (100,)), ("0,10", None), ("10,10", None),
                                     ("50,25", None), ("10,101", None), ("ten", None), ("", None)])
def test_parse_steps(text, ok):
    if ok:
        assert parse_steps(text) == ok
    else:
        with pytest.raises(ValueError):
            parse_steps(text)


@pytest.mark.parametrize("share,canaries,stables", [(10, 1, 2), (25, 1, 2), (50, 1, 2), (75, 1, 2), (90, 1, 2),
                                                    (5, 1, 3), (50, 2, 2), (33, 1, 1)])
def test_weights_give_the_share_within_a_point(share, canaries, stables):
    stable, canary_w = weights_for(share, canaries, stables)
    assert 1 <= stable <= 255 and 1 <= canary_w <= 255
    assert abs(share_of(canary_w, stable, canaries, stables) - share) < 1.0


@pytest.mark.parametrize("canary_stats,stable_stats,outcome", [
    (None, Stats(100, 0, 1), Outcome.UNKNOWN),
    (Stats(10, 0, 0.1), Stats(100, 0, 1), Outcome.UNKNOWN),
    (Stats(100, 5, 1.0), Stats(100, 0, 1), Outcome.FAIL),
    (Stats(100, 2, 1.0), Stats(100, 0, 1), Outcome.UNKNOWN),  # over 1 %, within chance: not yet told
    (Stats(100, 0, 1.0), None, Outcome.UNKNOWN),
    (Stats(100, 0, 1.0), Stats(100, 0, 1.0), Outcome.PASS),
    (Stats(100, 0, 0.2), Stats(100, 0, 0.1), Outcome.PASS),  # 2 ms vs 1 ms: both under the 5 ms floor
    (Stats(100, 0, 2.0), Stats(100, 0, 1.0), Outcome.FAIL),
])
def test_judge(canary_stats, stable_stats, outcome):
    assert judge(canary_stats, stable_stats, Thresholds()).outcome is outcome


# the confirm-promotion gate (fleet/core/gates.py asks it; the core decides) --------------------------------
GATED = replace(PLAN, confirm_promotion="http://127.0.0.1:9/approve", gate_deadline=120)


def confirming(since=T0 + 30) -> Rollout:
    return replace(stepping(1, judgement=passed_at(T0)[0], judged_at=T0 + 29), phase=Phase.CONFIRMING,
                   phase_since=since)


GATE_CASES = [
    ("last-step-passed-asks-the-gate", stepping(1, judgement=passed_at(T0)[0], judged_at=T0 + 29), Tick(), T0 + 30,
     Phase.CONFIRMING, [AskGate], "asking the confirm-promotion gate"),
    ("approved-promotes", confirming(), GateAnswered("confirm-promotion", True, "200: ship it"), T0 + 40,
     Phase.PROMOTING, [PromoteStable], "approved: 200: ship it"),
    ("refused-rolls-back-quoting-it", confirming(), GateAnswered("confirm-promotion", False, "403: freeze"), T0 + 40,
     Phase.ROLLED_BACK, [CutCanary, Finish], "refused: 403: freeze"),
    ("no-answer-yet-waits", confirming(), GateAnswered("confirm-promotion", None, "503: not yet"), T0 + 40,
     Phase.CONFIRMING, [], ""),
    ("silent-past-its-deadline-rolls-back", replace(confirming(), last_seen="503: not yet"), Tick(), T0 + 30 + 121,
     Phase.ROLLED_BACK, [CutCanary, Finish], "no answer within its deadline (120s): 503: not yet"),
    ("within-its-deadline-waits", confirming(), Tick(), T0 + 30 + 119, Phase.CONFIRMING, [], ""),
    ("bad-metrics-while-confirming-roll-back", confirming(), MetricsSample(Stats(100, 30, 1.0), Stats(900, 0, 9.0)),
     T0 + 40, Phase.ROLLED_BACK, [CutCanary, Finish], "error rate"),
    ("canary-death-while-confirming-rolls-back", confirming(), ContainerEvent("die", "abc", "exit code 3"), T0 + 40,
     Phase.ROLLED_BACK, [CutCanary, Finish], "exit code 3"),
    ("a-person-promotes-over-the-gate", confirming(), ControlRequested("promote"), T0 + 40, Phase.PROMOTING,
     [PromoteStable], "on request"),
    ("abort-while-confirming", confirming(), ControlRequested("abort"), T0 + 40, Phase.ABORTED, [CutCanary, Finish],
     "aborted"),
    ("an-answer-outside-confirming-is-ignored", stepping(), GateAnswered("confirm-promotion", True, "200"), T0 + 5,
     Phase.STEPPING, [], ""),
]


@pytest.mark.parametrize("r,event,now,phase,actions,reason", [c[1:] for c in GATE_CASES],
                         ids=[c[0] for c in GATE_CASES])
def test_the_confirm_promotion_gate(r, event, now, phase, actions, reason):
    new, done = step(r, event, now, GATED)
    assert new.phase is phase, new
    assert [type(a) for a in done] == actions
    assert reason in new.reason


def test_without_auto_promote_the_gate_is_not_asked_a_person_promotes():
    plan = replace(GATED, auto_promote=False)
    r, actions = step(stepping(1, judgement=passed_at(T0)[0], judged_at=T0 + 29), Tick(), T0 + 30, plan)
    assert r.phase is Phase.PAUSED and actions == []


def test_an_orphan_confirming_is_reverted_on_resume():
    r, actions = resumed(confirming(), T0 + 50, StableObserved(on_new_image=False, rolled_back=False))
    assert r.phase is Phase.ABORTED and [type(a) for a in actions] == [CutCanary, Finish]


def test_a_paused_canary_holds_its_share_past_its_step_then_resumes_with_the_time_it_had_left():
    """`fleet pause` 10 s into a 30 s step holds the step however long (evidence keeps coming, passing);
    `fleet resume` after 500 s goes on with the 20 s the step had left: not at once, not a whole step anew."""
    good = passed_at(T0)[0]
    r, actions = step(stepping(0, judgement=good, judged_at=T0 + 9), ControlRequested("pause"), T0 + 10, PLAN)
    assert r.held_since == T0 + 10 and actions == [] and "paused at 10%" in r.reason
    for t in (T0 + 31, T0 + 200, T0 + 509):
        r, _ = step(r, MetricsSample(GOOD.canary, GOOD.stable), t - 0.5, PLAN)
        r, actions = step(r, Tick(), t, PLAN)
        assert (r.phase, r.share, actions) == (Phase.STEPPING, 10, []), t  # held: no step advances
    r, actions = step(r, ControlRequested("pause"), T0 + 509, PLAN)  # pausing again changes nothing
    assert r.held_since == T0 + 10 and actions == []
    r, actions = step(r, ControlRequested("resume"), T0 + 510, PLAN)
    assert r.held_since is None and r.phase_since == T0 + 500 and actions == [] and "500s held" in r.reason
    r, _ = step(r, MetricsSample(GOOD.canary, GOOD.stable), T0 + 529, PLAN)
    assert step(r, Tick(), T0 + 529, PLAN)[1] == []  # 19 s of the 20 left
    r, actions = step(r, Tick(), T0 + 530, PLAN)
    assert (r.phase, r.share, actions) == (Phase.STEPPING, 50, [SetShare(50)])


def test_a_paused_canary_still_rolls_back_on_failing_evidence_and_a_forgotten_pause_ends_in_a_rollback():
    r, _ = step(stepping(1), ControlRequested("pause"), T0 + 1, PLAN)
    bad, actions = step(r, MetricsSample(Stats(100, 30, 1.0), Stats(900, 0, 9.0)), T0 + 2, PLAN)
    assert bad.phase is Phase.ROLLED_BACK and bad.failure is Reason.METRICS and CutCanary in map(type, actions)
    gone, actions = step(r, ContainerEvent("die", "abc", "exit code 3"), T0 + 2, PLAN)
    assert gone.phase is Phase.ROLLED_BACK and gone.failure is Reason.TASK_FAILED
    plan = replace(PLAN, pause_timeout=600)
    assert step(r, Tick(), T0 + 601, plan)[0].held_since == T0 + 1
    late, actions = step(r, Tick(), T0 + 602, plan)
    assert late.phase is Phase.ROLLED_BACK and late.failure is Reason.PAUSE_TIMEOUT and Finish(Phase.ROLLED_BACK) in actions
    assert "nobody resumed the canary paused at 50% within the pause timeout (600s)" in late.reason


@pytest.mark.parametrize("r", [start(T0), replace(start(T0), phase=Phase.VERIFYING, ready=True),
                               replace(stepping(1), phase=Phase.PAUSED), replace(stepping(1), phase=Phase.PROMOTING)])
def test_only_a_stepping_canary_is_paused_and_resume_without_a_pause_changes_nothing(r):
    for action in ("pause", "resume"):
        after, actions = step(r, ControlRequested(action), T0 + 3, PLAN)
        assert (after, actions) == (r, [])
    assert step(stepping(0), ControlRequested("resume"), T0 + 3, PLAN) == (stepping(0), [])


def test_promote_and_abort_act_on_a_paused_canary():
    r, _ = step(stepping(1, judgement=passed_at(T0)[0], judged_at=T0), ControlRequested("pause"), T0 + 1, PLAN)
    promoted, actions = step(r, ControlRequested("promote"), T0 + 2, PLAN)
    assert promoted.phase is Phase.PROMOTING and promoted.held_since is None and actions == [PromoteStable()]
    aborted, actions = step(r, ControlRequested("abort"), T0 + 2, PLAN)
    assert aborted.phase is Phase.ABORTED and aborted.share == 0


def test_evidence_back_during_a_pause_gives_the_step_a_whole_duration_after_resume():
    r, _ = step(stepping(0), ControlRequested("pause"), T0 + 10, PLAN)
    r, _ = step(r, SourceFailed("metrics", "down"), T0 + 20, PLAN)
    r, _ = step(r, SourceUp("metrics"), T0 + 40, PLAN)
    r, _ = step(r, ControlRequested("resume"), T0 + 100, PLAN)
    assert r.phase_since == T0 + 100  # the gap's evidence is lost: the step starts anew at resume


@pytest.mark.parametrize("output,phase", [
    ('{"phase":"failed","reason":"model file is corrupt","version":null}\n', "failed"),
    ('HTTP GET http://10.0.2.17:8001/ready: 503 Service Unavailable Output: {"phase":"loading"}', "loading"),
    ("no answer from http://127.0.0.1:8001/ready: timed out", None),
    ('{"phase": 3}', None),
    ('{"phase":"failed"', None),  # cut short: no answer to read
    ("", None),
])
def test_the_phase_a_health_checks_output_reports(output, phase):
    from fleet.core.rollout import reported_phase
    assert reported_phase(output) == phase
