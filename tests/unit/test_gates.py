"""Gates and webhooks: how an answer reads (pure), and the adapter against a real HTTP receiver on
127.0.0.1 and real commands: approve, refuse, not yet, a dead or slow receiver, retries, order."""
import json
import sys
import time

import pytest

from fleet.core import gates, policy, view
from fleet.adapters import hooks
from fleet.core.analysis import Judgement, Outcome, Stats
from fleet.core.events import MetricsSample
from fleet.core.records import Revision, RolloutState
from fleet.core.rollout import Phase, Plan, Rollout
from tests.kit.helpers import Quiet, Receiver, serving, trickle


def a_state(revision, image="fleet/inference:3", previous="fleet/inference:2", plan=Plan(),
            rollout=Rollout(Phase.STARTING, 0, 0), **kw) -> RolloutState:
    return RolloutState(revision, image, previous, plan, rollout, **kw)


@pytest.mark.parametrize("status,approved", [(200, True), (204, True), (403, False), (409, False), (404, False),
                                             (408, None), (425, None), (429, None), (500, None), (503, None)])
def test_an_http_answer_reads_as_approve_refuse_or_not_yet(status, approved):
    answer = gates.answer_of(status, "  no: change freeze  ")
    assert answer.approved is approved
    assert answer.detail == f"{status}: no: change freeze"


def test_the_event_names_the_rollout():
    e = gates.event(a_state(7, "fleet/inference:3", "fleet/inference:2", cause="fleet rollout"), {"phase": "stepping", "share": 25, "step": 1, "reason": "ok"},
                    "fleet", "inference", "phase", {"history": "fleet history"}, at=1700000000.5)
    assert {k: e[k] for k in ("kind", "stack", "service", "revision", "phase", "share", "reason")} == {
        "kind": "phase", "stack": "fleet", "service": "inference", "revision": 7, "phase": "stepping", "share": 25,
        "reason": "ok"}
    assert e["links"] == {"history": "fleet history"} and e["at"] == 1700000000.5


@pytest.mark.parametrize("label,value,says", [
    ("webhooks", "ftp://x", "not a list of http(s) URLs"),
    ("webhooks", "http://a,/bin/true", "not a list of http(s) URLs"),
    ("confirm-promotion", "  ", "empty"),
    ("pre-rollout", "sh -c 'unclosed", "neither a URL"),
    ("gate-deadline", "soon", "not a duration"),
])
def test_bad_gate_and_webhook_labels_name_the_fix(label, value, says):
    _, errors = policy.parse({policy.PREFIX + label: value})
    assert len(errors) == 1 and errors[0][0] == policy.PREFIX + label and says in errors[0][1], errors
    assert "write e.g." in errors[0][1]


def test_gate_and_webhook_labels_fill_the_plan():
    p, errors = policy.parse({"fleet.rollout.webhooks": "http://127.0.0.1:1/a, https://b.example/c",
                              "fleet.rollout.pre-rollout": "/usr/local/bin/load-test --quick",
                              "fleet.rollout.confirm-promotion": "http://127.0.0.1:1/approve",
                              "fleet.rollout.gate-deadline": "2m"})
    assert errors == []
    assert p.plan.webhooks == ("http://127.0.0.1:1/a", "https://b.example/c")
    assert p.plan.pre_rollout == "/usr/local/bin/load-test --quick"
    assert p.plan.confirm_promotion == "http://127.0.0.1:1/approve" and p.plan.gate_deadline == 120


def test_a_command_gate_read_from_a_running_service_is_named_for_refusal():
    labels = {"fleet.rollout.pre-rollout": "/usr/local/bin/load-test", "fleet.rollout.confirm-promotion":
              "https://ci.example/approve", "fleet.rollout.steps": "10,50"}
    assert policy.commands_in(labels) == ["fleet.rollout.pre-rollout"]
    assert policy.commands_in({}) == [] and policy.commands_in(None) == []


# the adapter, against a real receiver --------------------------------------------------------------
@pytest.fixture
def receiver():
    made = []

    def make(*answers):
        made.append(Receiver(answers or [(200, "ok", 0)]))
        return made[-1]
    yield make
    for r in made:
        r.close()


def test_a_gate_that_approves_after_a_delay_is_asked_until_it_does(receiver, monkeypatch):
    monkeypatch.setattr(hooks, "ASK_EVERY", 0.1)
    r = receiver((503, "not yet", 0), (503, "not yet", 0), (200, "ship it", 0))
    pending = []
    answer = hooks.wait_for(r.url, {"kind": "confirm-promotion"}, time.monotonic() + 10, on_pending=pending.append)
    assert answer == gates.Answer(True, "200: ship it")
    assert len(r.got) == 3 and [p.detail for p in pending] == ["503: not yet"] * 2


def test_a_gate_that_refuses_is_quoted(receiver):
    r = receiver((403, "change freeze until Monday", 0))
    assert hooks.wait_for(r.url, {}, time.monotonic() + 10) == gates.Answer(False, "403: change freeze until Monday")


def test_a_gate_that_never_answers_is_no_answer_at_its_deadline(monkeypatch):
    monkeypatch.setattr(hooks, "ASK_EVERY", 0.1)
    started = time.monotonic()
    answer = hooks.wait_for("http://127.0.0.1:9/closed", {}, started + 1.0)
    assert answer.approved is None and "no answer from" in answer.detail
    assert time.monotonic() - started < 3


def test_a_command_gate_gets_the_event_and_answers_by_its_exit_code():
    script = "import json,sys; e=json.load(sys.stdin); print('share', e['share']); sys.exit(0 if e['share'] < 50 else 3)"
    assert hooks.ask(f"{sys.executable} -c \"{script}\"", {"share": 25}) == gates.Answer(True, "exit 0: share 25")
    assert hooks.ask(f"{sys.executable} -c \"{script}\"", {"share": 50}) == gates.Answer(False, "exit 3: share 50")
    slow = hooks.ask(f"{sys.executable} -c 'import time; time.sleep(5)'", {}, timeout=0.5)
    assert slow.approved is None and "still running" in slow.detail
    assert hooks.ask("/no/such/gate", {}).approved is False


def test_webhooks_deliver_every_event_in_order_despite_a_dead_and_a_slow_receiver(receiver, monkeypatch):
    monkeypatch.setattr(hooks, "HOOK_TIMEOUT", 0.5)
    good, slow = receiver(), receiver((200, "ok", 2.0))
    failures = []
    out = hooks.Webhooks([good.url, "http://127.0.0.1:9/dead", slow.url], on_failure=failures.append)
    started = time.monotonic()
    for phase in ("starting", "verifying", "stepping"):
        out.post({"kind": "phase", "phase": phase})
    posting = time.monotonic() - started
    out.close(wait=8)
    assert posting < 0.1, "posting never waits on a receiver"
    assert [e["phase"] for _, e in good.got] == ["starting", "verifying", "stepping"]
    assert any("http://127.0.0.1:9/dead" in f and "3 tries" in f for f in failures), failures
    assert any(slow.url in f for f in failures), "a receiver slower than the timeout is reported"
    assert time.monotonic() - started < 10, "the end waits a bounded time"


def test_a_receiver_that_fails_once_gets_the_event_on_a_retry(receiver):
    r = receiver((500, "oops", 0), (200, "ok", 0))
    out = hooks.Webhooks([r.url])
    out.post({"kind": "end", "phase": "promoted"})
    out.close()
    assert len(r.got) == 2 and out.failures == [] and out.delivered == [(r.url, "end promoted")]


# the live view -------------------------------------------------------------------------------------
def test_the_view_shows_the_step_share_golden_and_each_roles_figures():
    buckets = ((0.01, 50.0), (0.05, 95.0), (float("inf"), 100.0))
    sample = MetricsSample(Stats(100, 1, 2.0, buckets, 1, ((0.01, 20.0), (0.05, 30.0), (float("inf"), 30.0))),
                           Stats(300, 0, 6.0, buckets, 2), synthetic=30, window=12.34)
    doc = a_state(4, "fleet/inference:3", "fleet/inference:2", Plan(steps=(10, 25, 50)),
                  Rollout(Phase.STEPPING, 0, 0, step=1, share=25, reason="10% passed",
                          judgement=Judgement(Outcome.PASS, "error rate 1.0%")),
                  golden={"passed": True, "detail": "accuracy 0.97 vs 0.97"}, evidence=view.figures(sample))
    v = view.rollout_view("inference", doc)
    assert (v["phase"], v["step"], v["share"], v["verdict"]) == ("stepping", 1, 25, "pass")
    assert v["evidence"]["canary"] == {"requests": 100, "synthetic": 30, "error_rate": 0.01, "p50_ms": 10.0,
                                       "p99_ms": 50.0, "replicas": 1}
    assert v["evidence"]["window_s"] == 12.3
    text = "\n".join(view.lines(v))
    assert "step 2/3" in text and "share 25%" in text and "golden: passed" in text and "30 synthetic" in text
    assert not view.changed(v, {**v, "at": 1}) and view.changed(v, {**v, "share": 50})


# fleet's own series ---------------------------------------------------------------------------------
def test_the_series_name_the_phase_share_verdict_and_the_outcomes():
    doc = a_state(9, rollout=Rollout(Phase.STEPPING, 0, 0, share=25, judgement=Judgement(Outcome.PASS, "")))
    s = {(name, tuple(sorted(labels.items()))): v for name, labels, v in view.series("fleet", "inference", doc)}
    rev = (("revision", "9"), ("service", "inference"), ("stack", "fleet"))
    assert s[("fleet_rollout_share", rev)] == 25 and s[("fleet_rollout_verdict", rev)] == 1
    assert s[("fleet_rollout_phase", tuple(sorted(dict(rev, phase="stepping").items())))] == 1
    assert sum(v for (name, _), v in s.items() if name == "fleet_rollout_phase") == 1
    assert s[("fleet_rollout_in_progress", (("service", "inference"), ("stack", "fleet")))] == 1
    history = [Revision(8, "fleet/inference:2", "promoted"), Revision(9, "fleet/inference:3", "rolled_back", ended_at=123.0)]
    ended = view.series("fleet", "inference", a_state(9, rollout=Rollout(Phase.ROLLED_BACK, 0, 0, share=0)), history)
    totals = {labels["outcome"]: v for name, labels, v in ended if name == "fleet_rollouts_total"}
    assert totals == {"promoted": 1, "rolled_back": 1, "aborted": 0, "superseded": 0}
    assert ("fleet_rollout_ended_timestamp_seconds", {"stack": "fleet", "service": "inference",
                                                      "outcome": "rolled_back"}, 123.0) in ended


def test_remote_write_encodes_a_sorted_write_request_snappy_compressed():
    import snappy
    from fleet.adapters.remote_write import WriteRequest, encode
    body = encode([("fleet_rollout_share", {"stack": "s", "revision": "3"}, 25.0)], at=1700000000.5)
    request = WriteRequest()
    request.ParseFromString(snappy.uncompress(body))
    (ts,) = request.timeseries
    assert [(label.name, label.value) for label in ts.labels] == [("__name__", "fleet_rollout_share"),
                                                                  ("revision", "3"), ("stack", "s")]
    assert [(x.value, x.timestamp) for x in ts.samples] == [(25.0, 1700000000500)]


# every wait has a total deadline ------------------------------------------------------------------
Trickle = trickle(0.3, 200)  # a byte every 0.3 s for at most 60 s


class Redirect(Quiet):
    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.reply(307, b"", Location=self.path)


@pytest.fixture
def silent_gate():
    """A port that accepts connections and never answers a byte."""
    import socket
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(16)
    yield f"http://127.0.0.1:{s.getsockname()[1]}/gate"
    s.close()


@pytest.mark.parametrize("kind", ["trickle", "silent", "redirect"])
def test_a_gate_deadline_holds_to_a_second_whatever_the_gate_does(kind, silent_gate, monkeypatch):
    """A trickling gate kept `fleet rollout` waiting past 200 s with --gate-deadline 20s: the HTTP timeout
    was per read. Now each ask has a total deadline, and so has the wait."""
    monkeypatch.setattr(hooks, "ASK_EVERY", 0.2)
    handler = {"trickle": Trickle, "redirect": Redirect}.get(kind)
    with (serving(handler) if handler else _no_server()) as port:
        url = f"http://127.0.0.1:{port}/gate" if handler else silent_gate
        started = time.monotonic()
        answer = hooks.wait_for(url, {"kind": "pre-rollout"}, started + 3.0)
        took = time.monotonic() - started
    assert answer.approved is None, answer
    assert took < 3.0 + 1.0, f"the gate held the wait {took:.1f}s past a 3 s deadline"


class _no_server:
    def __enter__(self):
        return None

    def __exit__(self, *exc):
        return False


def test_a_command_gate_that_leaves_a_child_holding_its_output_is_ended_at_its_timeout():
    """subprocess.run's timeout kills the gate, then waits for its output to close: a child it started
    held it open for as long as the child lived."""
    script = "import subprocess, sys, time; subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(30)']); time.sleep(30)"
    started = time.monotonic()
    answer = hooks.ask(f"{sys.executable} -c \"{script}\"", {}, timeout=1.0)
    assert answer.approved is None and "still running after 1s" in answer.detail
    assert time.monotonic() - started < 3


def test_a_command_gate_gets_path_home_the_event_and_only_the_variables_named(monkeypatch):
    monkeypatch.setenv("CONSUL_HTTP_TOKEN", "s3cr3t-consul")
    monkeypatch.setenv("DOCKER_HOST", "tcp://10.0.0.1:2376")
    monkeypatch.setenv("CI_BUILD", "1234")
    script = "import os, json; print(json.dumps(sorted(os.environ)))"
    answer = hooks.ask(f"{sys.executable} -c \"{script}\"", {"share": 5}, env_names=("CI_BUILD",))
    names = set(json.loads(answer.detail.split(": ", 1)[1]))
    assert {"FLEET_EVENT", "CI_BUILD", "PATH"} <= names
    assert "CONSUL_HTTP_TOKEN" not in names and "DOCKER_HOST" not in names
    assert names <= {"FLEET_EVENT", "CI_BUILD", "PATH", "HOME", "LC_CTYPE"}, names  # LC_CTYPE: Python's own
    p, errors = policy.parse({"fleet.rollout.gate-env": "CI_BUILD, BUILD_URL"})
    assert errors == [] and p.plan.gate_env == ("CI_BUILD", "BUILD_URL")
    _, errors = policy.parse({"fleet.rollout.gate-env": "CI BUILD;rm"})
    assert errors and "environment variable names" in errors[0][1]


def test_a_webhook_that_trickles_is_cut_off_and_reported(monkeypatch):
    monkeypatch.setattr(hooks, "HOOK_TIMEOUT", 0.5)
    monkeypatch.setattr(hooks, "HOOK_ATTEMPTS", 2)
    failures = []
    with serving(Trickle) as port:
        out = hooks.Webhooks([f"http://127.0.0.1:{port}/hook?token=abc"], on_failure=failures.append)
        started = time.monotonic()
        out.post({"kind": "phase", "phase": "starting"})
        out.close(wait=10)
    assert time.monotonic() - started < 4, "two tries of at most 0.5 s each, and the retry's wait"
    assert len(failures) == 1 and "token=REDACTED" in failures[0] and "abc" not in failures[0], failures


# notifications people read (issue 40) ---------------------------------------------------------------
EVENT = gates.event(a_state(7, "fleet/inference:3"), {"phase": "rolled_back", "share": 25,
                                                      "reason": "canary 5xx 4.0% beyond the stable's"},
                    "fleet", "inference", "end", {"history": "fleet history --stack fleet --service inference",
                                                  "prometheus": "http://10.0.0.5:9090"}, at=1700000000.0)
LINE = "fleet end: fleet/inference fleet/inference:3 (revision 7) rolled_back at 25%: canary 5xx 4.0% beyond the stable's"


def test_a_chat_webhook_is_written_with_its_service_before_the_url_and_checked_as_one():
    assert gates.webhook_of("slack:https://hooks.slack.com/services/T/B/x") == ("slack", "https://hooks.slack.com/services/T/B/x")
    assert gates.webhook_of("https://chat.example/hook") == (None, "https://chat.example/hook")
    assert gates.webhook_of("irc:https://x") == (None, "irc:https://x") and not gates.is_webhook("irc:https://x")
    p, errors = policy.parse({"fleet.rollout.webhooks": "teams:https://t.example/w?sig=s, discord:http://127.0.0.1:1/d"})
    assert errors == [] and p.plan.webhooks == ("teams:https://t.example/w?sig=s", "discord:http://127.0.0.1:1/d")
    _, errors = policy.parse({"fleet.rollout.webhooks": "slack:hooks.slack.com/services/T/B/x"})  # no scheme
    assert len(errors) == 1 and "slack:, teams: or discord:" in errors[0][1], errors


def test_each_chat_gets_one_line_in_its_own_incoming_webhook_format():
    assert gates.chat_line(EVENT) == LINE
    slack = gates.chat_payload("slack", EVENT)
    assert slack == {"text": LINE + " · history: `fleet history --stack fleet --service inference`"
                             " · <http://10.0.0.5:9090|prometheus>"}
    discord = gates.chat_payload("discord", EVENT)
    assert discord == {"content": LINE + " · history: `fleet history --stack fleet --service inference`"
                                         " · prometheus: <http://10.0.0.5:9090>"}
    assert len(gates.chat_payload("discord", {**EVENT, "reason": "x" * 5000})["content"]) == 2000  # Discord's limit
    (attachment,) = gates.chat_payload("teams", EVENT)["attachments"]
    card = attachment["content"]
    assert attachment["contentType"] == "application/vnd.microsoft.card.adaptive" and card["type"] == "AdaptiveCard"
    assert card["body"][0] == {"type": "TextBlock", "text": LINE, "wrap": True}
    assert card["actions"] == [{"type": "Action.OpenUrl", "title": "prometheus", "url": "http://10.0.0.5:9090"}]
    with pytest.raises(ValueError):
        gates.chat_payload("irc", EVENT)


def test_chat_webhooks_post_their_format_to_the_url_after_the_prefix_and_a_dead_one_is_only_reported(receiver):
    slack, teams, discord, plain = receiver(), receiver(), receiver(), receiver()
    failures = []
    out = hooks.Webhooks([f"slack:{slack.url}", f"teams:{teams.url}", f"discord:{discord.url}", plain.url,
                          "slack:http://127.0.0.1:9/services/T/B/secret"], on_failure=failures.append)
    out.post(EVENT)
    out.close(wait=10)
    assert [e for _, e in slack.got] == [gates.chat_payload("slack", EVENT)]
    assert [e for _, e in teams.got] == [gates.chat_payload("teams", EVENT)]
    assert [e for _, e in discord.got] == [gates.chat_payload("discord", EVENT)]
    assert [e for _, e in plain.got] == [EVENT]  # a plain URL keeps fleet's JSON
    assert len(failures) == 1 and "slack:http://127.0.0.1:9/REDACTED failed" in failures[0], failures
    assert "secret" not in failures[0]  # a chat webhook's path is its credential


def test_a_paused_rollout_is_said_in_its_event_chat_line_and_live_view():
    held = Rollout(Phase.STEPPING, 0, 0, step=1, share=25, reason="paused at 25% on request", held_since=5.0)
    event = gates.event(a_state(7), held.to_dict(), "fleet", "inference", "phase", at=6.0)
    assert event["paused"] is True and gates.event(a_state(7), {"phase": "stepping"}, "s", "i", "phase",
                                                   at=6.0)["paused"] is False
    assert "stepping (paused) at 25%: paused at 25% on request" in gates.chat_line(event)
    v = view.rollout_view("inference", a_state(7, rollout=held))
    assert v["paused_since"] == 5.0 and "(paused: `fleet resume` goes on)" in "\n".join(view.lines(v))
    assert view.changed(v, {**v, "paused_since": None})


def record(revision, outcome):
    return Revision(revision, f"fleet/inference:{revision}", outcome, "", started_at=1.0, ended_at=2.0)


def test_status_wait_takes_the_first_rollout_ended_since_it_began_and_exits_as_the_rollout_would():
    before = {1, 2}  # ended when the wait began
    history = {1: record(1, "deployed"), 2: record(2, "promoted"), 3: record(3, "in_progress")}
    assert view.ended_since(history, before) is None  # 3 is still going
    history[3] = record(3, "rolled_back")
    history[4] = record(4, "deployed")  # a deploy or a rollback after it is no rollout
    assert view.ended_since(history, before).revision == 3
    assert view.ended_since({**history, 3: record(3, "in_progress")}, before) is None
    assert view.ended_since({1: record(1, "deployed"), 5: record(5, "aborted"), 6: record(6, "promoted")},
                            set()).revision == 5
    assert [view.exit_code(o) for o in ("promoted", "rolled_back", "aborted", "superseded")] == [0, 1, 1, 1]
