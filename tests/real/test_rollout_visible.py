"""A rollout people can see and wire in, on the real Swarm, Consul, Prometheus and images: the live view
(`fleet status --watch`) from another process, webhooks and gates served by receivers on 127.0.0.1, the
report opened in real headless Chromium, and fleet's own series in the stack's Prometheus.
Stable runs fleet/inference:1; the canary is fleet/inference:2, promoted or refused."""
import json
import re
import socket
import struct
import subprocess
import sys
import threading
import time
import zlib
from contextlib import contextmanager

import httpx
import pytest

from fleet import report
from fleet.adapters import browser
from fleet.adapters.prometheus import credentials
from fleet.core.records import Revision
from tests.kit.cli import fleet
from tests.kit.helpers import REPORT_DATA, REPORT_RECORD, LoadLoop, Receiver, serving, trickle, wait_until
from tests.kit.stacks import PROMETHEUS_CA, ROOT, StackUnderTest, own_stack

NAME = "fleettest-visible"
STABLE, GOOD = "fleet/inference:1", "fleet/inference:2"
FLUSH_WAIT = 15  # fleet/adapters/hooks.py: the end of a rollout waits at most this for its webhooks


@pytest.fixture(scope="module")
def vstack(swarm):
    with own_stack(swarm, NAME, 27600, 27180) as s:
        p = fleet(s, "deploy", "--stack", NAME, env={"FLEET_IMAGE": STABLE})
        assert p.returncode == 0, p.stderr
        yield s


@pytest.fixture
def receivers():
    made = []

    def make(*answers):
        made.append(Receiver(list(answers) or [(200, "ok", 0)]))
        return made[-1]
    yield make
    for r in made:
        r.close()


def image(s: StackUnderTest) -> str:
    return s.swarm.service(s.service("inference")).attrs["Spec"]["TaskTemplate"]["ContainerSpec"]["Image"].split("@")[0]


def on_stable(s: StackUnderTest) -> None:
    if image(s) != STABLE:
        assert fleet(s, "rollback", "--stack", NAME, "--json").returncode == 0
    assert image(s) == STABLE


def rollout(s: StackUnderTest, *args: str, timeout: float = 400):
    started = time.time()
    p = fleet(s, "rollout", "--canary", "--image", GOOD, "--stack", NAME, "--json", *args, timeout=timeout)
    p.ended = time.time()
    p.started = started
    return p, json.loads(p.stdout) if p.stdout.strip() else {}


def history(s: StackUnderTest) -> list[dict]:
    return json.loads(fleet(s, "history", "--stack", NAME, "--json").stdout)["revisions"]


def posted(receiver: Receiver) -> list[tuple]:
    return [(e["kind"], e["phase"], e["share"]) for _, e in receiver.got]


def prom(s: StackUnderTest, promql: str, **range_args) -> list:
    path = "query_range" if range_args else "query"
    r = httpx.get(f"{s.prometheus}/api/v1/{path}", params={"query": promql, **range_args}, timeout=10,
                  auth=credentials(), verify=str(PROMETHEUS_CA)).json()
    assert r["status"] == "success", r
    return r["data"]["result"]


def when(load: LoadLoop, started: float, doc: dict) -> dict:
    """When the failed requests were sent and the rollout's events, in seconds since it started: what a
    failure's message needs to be placed in the rollout."""
    return {"failed at": [round(t - started, 2) for t, status, _ in load.served if status != 200],
            "timeline": [(round(e["at"] - started, 2), e["event"], e["detail"][:60]) for e in doc.get("timeline", [])]}


def drawn_lines(html_file, tmp_path) -> tuple[str, list[str]]:
    """The page as real headless Chromium draws it with no network: its DOM and the plotted lines (paths
    of more than one point)."""
    dom = subprocess.run(["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--no-proxy-server",
                          f"--user-data-dir={tmp_path / 'chromium'}", "--virtual-time-budget=10000", "--dump-dom",
                          html_file.as_uri()], capture_output=True, text=True, timeout=120).stdout
    return dom, [d for d in re.findall(r'<path class="js-line" d="M([^"]+)"', dom) if re.search("[LHV]", d)]


def test_a_promoted_rollout_is_watched_posted_gated_reported_and_in_prometheus(vstack, receivers, tmp_path):
    on_stable(vstack)
    hook = receivers()
    chat = receivers()  # a Slack incoming webhook (issue 40): the same events, in Slack's format
    slow = receivers((200, "ok", 7.0))  # slower than a webhook's timeout: each post fails after its tries
    approvals = 3
    gate = receivers(*[(503, "waiting for alice", 0)] * approvals, (200, "approved by alice", 0))
    # URLs that carry secrets, as real ones do: none of them may be written anywhere (issue 39)
    hook_url = f"{hook.url}?token={SECRETS[0]}&channel=ops"
    gate_url = gate.url.replace("http://", f"http://alice:{SECRETS[1]}@") + f"?api_key={SECRETS[2]}"
    watch = subprocess.Popen([sys.executable, "-m", "fleet.cli", "status", "--watch", "--json", "--stack", NAME],
                             cwd=ROOT, env=vstack.env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    views = []
    reader = threading.Thread(target=lambda: views.extend(json.loads(line) for line in watch.stdout), daemon=True)
    reader.start()
    try:
        with LoadLoop(f"{vstack.gateway}/predict", max_requests=30_000, max_seconds=300) as load:
            # the same image on both sides: this test is about what people see, and the latency judgement
            # has its own tests (test_canary_evidence.py); here, on 2 busy cores beside a watcher, webhook
            # receivers and a gate, a fresh canary's p50 has measured 1.5x the stable's (stop 28's CI, and again after)
            p, doc = rollout(vstack, "--steps", "25,50", "--step-duration", "12s", "--webhook", hook_url,
                             "--webhook", "http://127.0.0.1:9/down?sig=s1g-down", "--webhook", slow.url,
                             "--webhook", f"slack:{chat.url}",
                             "--confirm-promotion", gate_url, "--gate-deadline", "2m", "--max-latency-ratio", "3")
        wait_until(lambda: any(v.get("ended") for view in views for v in view["rollouts"]), 30, "the live view to show the end")
    finally:
        watch.kill()
    views = [view for i, view in enumerate(views) if i <= next(
        i for i, view in enumerate(views) if any(v.get("ended") for v in view["rollouts"]))]
    steps = [(round(e["at"] - p.started, 1), e["event"], e["detail"][:160]) for e in doc.get("timeline", [])
             if e["event"] != "webhook"]
    assert p.returncode == 0 and doc["outcome"] == "promoted", (doc.get("reason"), steps, p.stderr[-1000:])
    assert load.failures == [], (load.failures[:3], when(load, p.started, doc))
    timeline = doc["timeline"]
    print(f"\npromoted in {p.ended - p.started:.1f}s; {len(views)} live views; webhooks {posted(hook)}; "
          f"notify failures {len(doc['notify_failures'])}")

    # the gate: asked until it approved, and the promotion came after its yes
    assert len(gate.got) == approvals + 1 and all(e["kind"] == "confirm-promotion" for _, e in gate.got)
    approved_at = gate.got[-1][0] - time.monotonic() + time.time()
    promote = next(e for e in timeline if e["event"] == "promote")
    assert promote["at"] >= approved_at - 1 and "approved: 200: approved by alice" in doc["reason"] + str(timeline)

    # the live view: the shares it showed, in order, are the timeline's
    shown = [v for view in views for v in view["rollouts"] if not v.get("ended")]
    stepping = [v["share"] for v in shown if v["phase"] == "stepping"]
    shares = [int(e["detail"].split("%")[0]) for e in timeline if e["event"] == "share"]
    assert [s for i, s in enumerate(stepping) if i == 0 or s != stepping[i - 1]] == shares == [25, 50]
    phases = [v["phase"] for v in shown]
    assert phases.index("stepping") < phases.index("confirming") < phases.index("promoting"), phases
    assert any((v.get("evidence") or {}).get("canary", {}) and v["evidence"]["canary"]["requests"] > 0 for v in shown)
    assert any(v.get("golden") and v["golden"]["passed"] for v in shown)
    assert views[-1]["rollouts"][0]["phase"] == "promoted"
    seen_lag = [next(view["at"] for view in views for v in view["rollouts"]
                     if v["phase"] == "stepping" and v["share"] == int(e["detail"].split("%")[0])) - e["at"]
                for e in timeline if e["event"] == "share"]
    offset = time.time() - time.monotonic()
    posted_lag = [next(at + offset for at, body in hook.got if body["phase"] == "stepping" and
                       body["share"] == int(e["detail"].split("%")[0])) - e["at"]
                  for e in timeline if e["event"] == "share"]
    print(f"each share seen by the live view {', '.join(f'{x:.2f}' for x in seen_lag)} s and posted to the webhook "
          f"{', '.join(f'{x:.2f}' for x in posted_lag)} s after the controller set it")
    assert max(seen_lag + posted_lag) < 10

    # webhooks: every phase once, in order, the end last; the dead and the slow receiver reported, and the
    # command ended within the bound after the outcome was recorded
    got = posted(hook)
    assert len(got) == len(set(got)), got
    assert got[0] == ("phase", "starting", 0) and got[-1][:2] == ("end", "promoted")
    assert [s for kind, ph, s in got if ph == "stepping"] == [25, 50]
    assert [ph for _, ph, _ in got].index("confirming") < [ph for _, ph, _ in got].index("promoting")
    assert any("127.0.0.1:9/down" in f for f in doc["notify_failures"]), doc["notify_failures"]
    # the Slack receiver: one line for each of those events, in Slack's shape, naming the phase
    lines = [body["text"] for _, body in chat.got]
    assert [set(body) for _, body in chat.got] == [{"text"}] * len(got), chat.got
    assert [line.split(": ", 1)[0] for line in lines] == [f"fleet {kind}" for kind, _, _ in got], lines
    assert all(f") {ph}" in line for line, (_, ph, _) in zip(lines, got)), lines
    assert f"{NAME}/inference {GOOD}" in lines[-1], lines[-1]
    record = next(h for h in history(vstack) if h["revision"] == doc["revision"])
    print(f"the command ended {p.ended - record['ended_at']:.1f}s after the outcome was recorded (a dead and a "
          f"slow webhook receiver; the bound is {FLUSH_WAIT}s for webhooks)")
    assert p.ended - record["ended_at"] <= FLUSH_WAIT + 15

    # fleet's own series in Prometheus match the history
    records = history(vstack)

    def series_match():
        totals = {r["metric"]["outcome"]: float(r["value"][1])
                  for r in prom(vstack, f'fleet_rollouts_total{{stack="{NAME}",service="inference"}}')}
        return totals and all(totals.get(o, 0) == sum(h["outcome"] == o for h in records)
                              for o in ("promoted", "rolled_back", "aborted"))
    wait_until(series_match, 30, "fleet_rollouts_total to match the history")
    phase_now = prom(vstack, f'fleet_rollout_phase{{stack="{NAME}",revision="{doc["revision"]}"}} == 1')
    assert [r["metric"]["phase"] for r in phase_now] == ["promoted"]

    # the report: opened by Chromium with no network, every plot drawn, figures equal to the history's
    # and to Prometheus's own answers
    page = tmp_path / "promoted.html"
    r = fleet(vstack, "history", str(doc["revision"]), "--report", str(page), "--stack", NAME, "--json")
    assert r.returncode == 0, r.stderr
    dom, lines = drawn_lines(page, tmp_path)
    assert len(lines) >= 1 + 2 * 4, len(lines)  # share, and each role's requests, error rate, p50, p99
    assert 'id="outcome">promoted<' in dom
    data = json.loads(re.search(r'id="fleet-report-data">(.*?)</script>', page.read_text(), re.S).group(1))
    assert {k: data["record"][k] for k in ("revision", "outcome", "reason", "timeline")} == \
        {k: record[k] for k in ("revision", "outcome", "reason", "timeline")}
    start, end, step = report.window(Revision.from_dict(record))
    theirs = prom(vstack, report.query("requests", vstack.service("inference-canary")), start=f"{start:.3f}",
                  end=f"{end:.3f}", step=f"{step:g}")
    ours = data["series"]["canary"]["requests"]
    assert ours and [[float(t), float(v)] for t, v in theirs[0]["values"]] == ours
    png = tmp_path / "promoted.png"
    assert fleet(vstack, "history", str(doc["revision"]), "--report", str(png), "--stack", NAME).returncode == 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 20_000

    # no secret of the URLs given is written anywhere: stdout (--json), stderr, the live view, history, the
    # rollout's keys in Consul KV, the webhook bodies, the report
    kv = vstack.consul().kv.get(f"fleet/rollouts/{NAME}", recurse=True)[1] or []
    written = {"stdout": p.stdout, "stderr": p.stderr, "live view": json.dumps(views),
               "history": fleet(vstack, "history", "--stack", NAME, "--json").stdout,
               "consul kv": json.dumps([(i["Key"], (i["Value"] or b"").decode()) for i in kv]),
               "webhook bodies": json.dumps([body for _, body in hook.got + gate.got]), "report": page.read_text()}
    assert "fleet/rollouts" in written["consul kv"] and "token=REDACTED" in written["history"]
    leaks = {where: [x for x in SECRETS + ("s1g-down",) if x in text] for where, text in written.items()}
    assert not any(leaks.values()), leaks


SECRETS = ("t0k3n-hook", "hunter2-gate", "k3y-gate")


Trickle = trickle(3.0, 30)  # a byte every 3 s, for at most 90 s


@pytest.mark.parametrize("kind", ["trickling", "silent"])
def test_a_pre_rollout_gate_that_trickles_or_never_answers_ends_the_rollout_at_its_deadline(vstack, kind):
    """A gate that sent its headers and then a byte every 3 s held `fleet rollout --gate-deadline 20s` past
    200 s, and the rollout lock with it."""
    on_stable(vstack)
    version = vstack.swarm.service(vstack.service("inference")).attrs["Version"]["Index"]
    with serving(Trickle) if kind == "trickling" else silent_port() as port:
        p, doc = rollout(vstack, "--pre-rollout", f"http://127.0.0.1:{port}/gate", "--gate-deadline", "20s",
                         timeout=120)
    took = p.ended - p.started
    print(f"\n{kind} gate: fleet rollout exited {p.returncode} after {took:.1f}s (deadline 20s)")
    assert p.returncode == 1 and doc["outcome"] == "rolled_back", (doc, p.stderr[-2000:])
    assert "no answer within its deadline (20s)" in doc["reason"], doc["reason"]
    assert took < 25 + 5, f"{took:.1f}s: the deadline is 20s, the command's own start and end about 5s"
    assert vstack.swarm.service(vstack.service("inference-canary")) is None
    assert vstack.swarm.service(vstack.service("inference")).attrs["Version"]["Index"] == version
    holder = vstack.consul().kv.get(f"fleet/rollouts/{NAME}/inference/lock")[1]
    assert holder is None or not holder.get("Session"), f"the rollout lock is still held: {holder}"


@contextmanager
def silent_port():
    """A port that accepts connections and never answers."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(16)
        yield s.getsockname()[1]


def test_a_confirm_promotion_gate_that_refuses_rolls_back_quoting_it(vstack, receivers, tmp_path):
    on_stable(vstack)
    hook, gate = receivers(), receivers((403, "change freeze until Monday", 0))
    p, doc = rollout(vstack, "--steps", "50", "--step-duration", "8s", "--webhook", hook.url,
                     "--confirm-promotion", gate.url)
    assert p.returncode == 1 and doc["outcome"] == "rolled_back", (doc, p.stderr[-2000:])
    assert "confirm-promotion gate refused: 403: change freeze until Monday" in doc["reason"]
    assert image(vstack) == STABLE and len(gate.got) == 1
    got = posted(hook)
    assert got[-1] == ("end", "rolled_back", 0) and ("phase", "confirming", 50) in got and len(got) == len(set(got))
    page = tmp_path / "refused.html"
    assert fleet(vstack, "history", str(doc["revision"]), "--report", str(page), "--stack", NAME).returncode == 0
    dom, lines = drawn_lines(page, tmp_path)
    assert 'id="outcome">rolled_back<' in dom and "change freeze until Monday" in dom and len(lines) >= 5


def test_a_gate_that_never_answers_rolls_back_at_its_deadline(vstack):
    on_stable(vstack)
    p, doc = rollout(vstack, "--steps", "50", "--step-duration", "8s", "--confirm-promotion",
                     "http://127.0.0.1:9/nobody", "--gate-deadline", "10s")
    assert p.returncode == 1 and doc["outcome"] == "rolled_back", (doc, p.stderr[-2000:])
    assert "no answer within its deadline (10s)" in doc["reason"] and "127.0.0.1:9" in doc["reason"]
    asked = next(e["at"] for e in doc["timeline"] if e["event"] == "gate")
    cut = next(e["at"] for e in doc["timeline"] if e["event"] == "cut")
    assert 9.9 <= cut - asked <= 14, cut - asked  # "gate" is noted just after the deadline's clock starts
    assert image(vstack) == STABLE


def test_a_pre_rollout_gate_that_refuses_changes_nothing(vstack):
    on_stable(vstack)
    version = vstack.swarm.service(vstack.service("inference")).attrs["Version"]["Index"]
    p, doc = rollout(vstack, "--pre-rollout", f"{sys.executable} -c \"print('load test failed: p99 2.3s'); exit(4)\"")
    assert p.returncode == 1 and doc["outcome"] == "rolled_back", (doc, p.stderr[-2000:])
    assert "pre-rollout gate refused: exit 4: load test failed: p99 2.3s" in doc["reason"]
    assert vstack.swarm.service(vstack.service("inference-canary")) is None
    assert vstack.swarm.service(vstack.service("inference")).attrs["Version"]["Index"] == version
    assert history(vstack)[-1]["outcome"] == "rolled_back" and "pre-rollout" in history(vstack)[-1]["reason"]


def test_a_command_gate_in_the_running_services_labels_is_never_run(vstack, tmp_path):
    on_stable(vstack)
    marker = tmp_path / "ran"
    label = f"fleet.rollout.pre-rollout=touch {marker}"
    subprocess.run(["docker", "service", "update", "--detach", "--label-add", label, vstack.service("inference")],
                   check=True, capture_output=True)
    try:
        version = vstack.swarm.service(vstack.service("inference")).attrs["Version"]["Index"]
        p, doc = rollout(vstack)
        assert p.returncode == 2 and "runs no command read from a running service" in doc["error"], doc
        assert not marker.exists() and vstack.swarm.service(vstack.service("inference-canary")) is None
        assert vstack.swarm.service(vstack.service("inference")).attrs["Version"]["Index"] == version
    finally:
        subprocess.run(["docker", "service", "update", "--detach", "--label-rm", "fleet.rollout.pre-rollout",
                        vstack.service("inference")], check=True, capture_output=True)


# the page alone, in Chromium (no stack needed) ------------------------------------------------------
def test_chromium_draws_every_plot_with_no_network(tmp_path):
    page = tmp_path / "r.html"
    browser.write(page, report.page(REPORT_RECORD, REPORT_DATA, "fleet", "inference"))
    dom, drawn = drawn_lines(page, tmp_path)
    # share + per role (requests, synthetic, error rate, p50, p99) + the latency limits
    assert len(drawn) >= 1 + 2 * 5 + 2, drawn
    assert 'id="outcome">promoted<' in dom


def test_the_png_is_the_page_as_chromium_draws_it(tmp_path):
    png = tmp_path / "r.png"
    browser.write(png, report.page(REPORT_RECORD, REPORT_DATA, "fleet", "inference"))
    width, height, pixels = _decode(png.read_bytes())
    assert (width, height) == (1200, 1900)
    assert len(set(pixels)) > 20, "more than a blank page: plotted lines in several colours"


def _decode(data: bytes) -> tuple[int, int, list]:
    """Width, height and the RGB(A) rows' distinct byte triples of a PNG (no library needed to read one)."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat, width, height = 8, b"", 0, 0
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        chunk = data[pos + 8:pos + 8 + length]
        if kind == b"IHDR":
            width, height = struct.unpack(">II", chunk[:8])
        elif kind == b"IDAT":
            idat += chunk
        pos += 12 + length
    raw = zlib.decompress(idat)
    return width, height, [raw[i:i + 3] for i in range(0, len(raw), 997)]
