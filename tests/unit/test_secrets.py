"""Secrets kept out of what fleet writes (fleet/core/secrets.py), and records that travel between versions:
the pure part, the records' JSON, and the webhook adapter against a real receiver on 127.0.0.1."""
import json

import pytest

from fleet.adapters import hooks
from fleet.core.analysis import Thresholds
from fleet.core.records import Revision, RolloutState, plan_from_dict, plan_to_dict, restored
from fleet.core.rollout import Phase, Plan, Rollout
from fleet.core.secrets import redact, redact_text, restore
from tests.kit.helpers import Receiver

SECRETS = ("hunter2", "t0k3n", "k3y", "s1g", "alice")


@pytest.mark.parametrize("url,written", [
    ("http://alice:hunter2@gate.example/approve", "http://REDACTED@gate.example/approve"),
    ("https://hooks.example/h?token=t0k3n&channel=ops", "https://hooks.example/h?token=REDACTED&channel=ops"),
    ("https://gate.example:8443/g?api_key=k3y", "https://gate.example:8443/g?api_key=REDACTED"),
    ("https://blob.example/x?sv=1&SIG=s1g", "https://blob.example/x?sv=1&SIG=REDACTED"),
    ("https://h.example/p?X-Auth-Token=t0k3n", "https://h.example/p?X-Auth-Token=REDACTED"),
    ("https://h.example/p#access_token=t0k3n", "https://h.example/p#REDACTED"),
    ("http://[::1]:9/x?password=hunter2", "http://[::1]:9/x?password=REDACTED"),
    ("http://h.example:notaport/x?token=t0k3n", "http://REDACTED"),
    ("https://plain.example/hook?channel=ops", "https://plain.example/hook?channel=ops"),
    # a chat webhook's path is its credential (issue 40: slack:, teams:, discord: URLs)
    ("slack:https://hooks.slack.com/services/T0/B0/t0k3n", "slack:https://hooks.slack.com/REDACTED"),
    ("https://hooks.slack.com/services/T0/B0/t0k3n", "https://hooks.slack.com/REDACTED"),
    ("https://discord.com/api/webhooks/1/t0k3n", "https://discord.com/REDACTED"),
    ("teams:https://t.example:443/workflows/w/invoke?sv=1&sig=s1g", "teams:https://t.example:443/REDACTED?sv=1&sig=REDACTED"),
    ("/usr/local/bin/gate --quick", "/usr/local/bin/gate --quick"),
    ("", ""),
])
def test_a_url_is_written_with_its_user_info_and_secret_values_masked(url, written):
    assert redact(url) == written
    assert redact(written) == written, "redacting twice changes nothing"
    assert restore(written, [url]) == url


def test_urls_inside_a_text_are_redacted_and_the_rest_kept():
    text = "webhook https://u:hunter2@h.example/x?token=t0k3n failed: 'Client error for url http://g/a?sig=s1g'"
    assert redact_text(text) == ("webhook https://REDACTED@h.example/x?token=REDACTED failed: "
                                 "'Client error for url http://g/a?sig=REDACTED'")


SECRET_PLAN = Plan(webhooks=("https://hooks.example/h?token=t0k3n", "https://plain.example/hook"),
                   pre_rollout="http://alice:hunter2@gate.example/pre",
                   confirm_promotion="https://gate.example/approve?api_key=k3y", gate_env=("CI_BUILD",))


def test_the_plan_is_written_redacted_and_read_back_whole_from_the_urls_given_again():
    written = json.dumps(plan_to_dict(SECRET_PLAN))
    assert not any(s in written for s in SECRETS), written
    back = plan_from_dict(json.loads(written))
    assert back.gate_env == ("CI_BUILD",) and back.webhooks[1] == "https://plain.example/hook"
    plan, notes = restored(back, (*SECRET_PLAN.webhooks, SECRET_PLAN.pre_rollout, SECRET_PLAN.confirm_promotion))
    assert plan == SECRET_PLAN and notes == []


def test_a_resumed_plan_drops_what_it_cannot_restore_and_leaves_the_promotion_to_a_person():
    back = plan_from_dict(json.loads(json.dumps(plan_to_dict(SECRET_PLAN))))
    plan, notes = restored(back, ())
    assert plan.webhooks == ("https://plain.example/hook",) and plan.pre_rollout == ""
    assert plan.confirm_promotion == "" and plan.auto_promote is False
    assert len(notes) == 2 and "--webhook" in notes[0] and "fleet promote" in notes[1]
    assert not any(s in " ".join(notes) for s in SECRETS)


NEWER = {"revision": 9, "image": "fleet/inference:9", "outcome": "promoted", "reason": "all steps passed",
         "digest": "sha256:abc", "signed_by": {"key": "k"},  # fields of a newer fleet
         "plan": {**plan_to_dict(Plan()), "strategy": "blue-green",
                  "thresholds": {**plan_to_dict(Plan())["thresholds"], "max_p99_ratio": 2.0}}}


def test_a_record_written_by_a_newer_fleet_is_read_and_its_unknown_fields_kept():
    r = Revision.from_dict(NEWER)
    assert r.revision == 9 and r.outcome == "promoted"
    again = r.to_dict()
    assert again["digest"] == "sha256:abc" and again["signed_by"] == {"key": "k"}, "kept, and written back"
    state = {"revision": 9, "image": "fleet/inference:9", "previous_image": "fleet/inference:8",
             "plan": NEWER["plan"], "shadow": {"agreement": 0.99},
             "rollout": {**Rollout(Phase.STEPPING, 1.0, 1.0, share=25).to_dict(), "mirror_share": 5}}
    s = RolloutState.from_dict(state)
    assert s.rollout.phase is Phase.STEPPING and s.rollout.share == 25
    assert s.plan.thresholds == Thresholds() and s.to_dict()["shadow"] == {"agreement": 0.99}
    written = RolloutState.from_dict(json.loads(json.dumps(s.to_dict()))).to_dict()  # read and written again
    assert written["plan"]["strategy"] == "blue-green" and written["plan"]["thresholds"]["max_p99_ratio"] == 2.0
    assert written["rollout"]["mirror_share"] == 5 and written["shadow"] == {"agreement": 0.99}, "nested fields kept"


def test_a_webhook_body_never_carries_a_secret_url(tmp_path):
    r = Receiver([(200, "ok", 0)])
    try:
        out = hooks.Webhooks([r.url + "?token=t0k3n"])
        out.post({"kind": "end", "phase": "rolled_back",
                  "reason": "the pre-rollout gate refused: no answer from http://alice:hunter2@gate.example/pre"})
        out.close()
    finally:
        r.close()
    assert len(r.got) == 1 and out.failures == []
    body = json.dumps(r.got[0][1])
    assert "gate.example/pre" in body and not any(s in body for s in SECRETS), body
