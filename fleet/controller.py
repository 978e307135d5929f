"""The rollout use cases: `fleet rollout --canary` (and `--resume`), promote, abort, rollback, history.

The evidence comes from fleet/evidence.py, the decisions from the pure `rollout.step`, and the executor
(fleet/executor.py) saves each decision's state before carrying out its actions through the intent-named
`Cluster` (fleet/cluster.py). Everything lives in Consul KV under a fenced per-service lock, so a killed
controller's rollout can be found and brought to a safe end, and a paused one cannot act after another
took over. Adapter errors end in the safe path (`_abandon`).
"""
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import requests
from docker.errors import APIError, DockerException

from . import report
from .adapters import browser, hooks, remote_write
from .adapters.consul import ConsulUnavailable
from .adapters.endpoints import fixed
from .adapters.prometheus import Prometheus, ProviderError
from .adapters.store import LockLost
from .adapters.swarm import EngineUnavailable
from .connect import Target
from .core import gates, policy, view
from .core.control import ControlRequest
from .core.convergence import State
from .core.events import ControlRequested, Event, GoldenChecked, MetricsSample
from .core.records import IN_PROGRESS, Revision, RolloutState, build_of, plan_to_dict, restored
from .core.rollout import TERMINAL, Action, Phase, Plan, Rollout, resumed, start, step
from .errors import BadInput, FleetError, OperationFailed, Unreachable
from .evidence import Evidence, stable_verdicts
from .executor import Executor, run_loop
from .stream import EventStream

TICK = 0.25  # seconds between clock ticks when no evidence arrives
VERSION_LABEL = "fleet.model-version"  # the image label the canary's replicas report as their version
RESUME_LOCK_WAIT = 60.0  # a dead holder's lock lapses within 2 x TTL, then its lock-delay


@dataclass
class Result:
    revision: int
    phase: Phase
    reason: str
    image: str
    seconds: float
    timeline: list[dict] = field(default_factory=list)
    notify_failures: list[str] = field(default_factory=list)


# rollout ------------------------------------------------------------------------------------------
def rollout(t: Target, image: str, plan: Plan, on_progress: Callable[[Rollout], None] = lambda r: None) -> Result:
    plan = prepare(t, image, plan)
    lock(t, "rollout --canary --image " + image)
    try:
        return run_canary(t, image, plan, on_progress)
    finally:
        t.store.release()


def prepare(t: Target, image: str, plan: Plan, container: dict | None = None) -> Plan:
    """What a canary needs, checked before anything changes (exit 2 or 3): an image with a model version
    (returned in the plan), the gateway and Prometheus to judge it through, and the golden set."""
    if t.cluster.stable_runs(image, container):
        raise BadInput(f"{t.stable_name} already runs {image}: nothing to roll out")
    try:
        labels = t.swarm.image_labels(image)  # this engine's copy, else the registry's manifest and config
    except LookupError as e:
        raise BadInput(str(e)) from None
    if not labels.get(VERSION_LABEL):
        raise BadInput(f"image {image} has no {VERSION_LABEL} label: its replicas could never report a version "
                       f"and the canary would never be ready; build it with `--label {VERSION_LABEL}=<version>` "
                       "(as scripts/images.sh does) or `LABEL` in its Dockerfile")
    t.gateway_endpoints(), t.prometheus_endpoints()  # the evidence comes through them: fail before changing anything
    if plan.golden and not Path(plan.golden).is_file():
        raise BadInput(f"--golden {plan.golden}: no such file; give a JSON file with inputs and labels")
    shortfall = t.cluster.canary_shortfall(plan.canary_replicas)
    if shortfall:
        raise BadInput(shortfall)
    return replace(plan, version=labels[VERSION_LABEL])


def run_canary(t: Target, image: str, plan: Plan, on_progress: Callable[[Rollout], None] = lambda r: None,
               container: dict | None = None, cause: str = "fleet rollout") -> Result:
    """A canary of `image` (and, from `fleet deploy`, the file's container settings), run to its end by
    the caller that holds the rollout lock; `plan` comes from `prepare`."""
    if t.store.load():
        raise BadInput(f"an unfinished rollout of {t.stable_name} is recorded in Consul: finish it with "
                       "`fleet rollout --resume` or revert it with `fleet abort`")
    if t.swarm.describe(t.canary_name):
        raise BadInput(f"a canary service {t.canary_name} exists without a recorded rollout: "
                       f"remove it with `docker service rm {t.canary_name}`")
    current = t.stable().image_name
    history = t.store.history()
    if not history:
        t.store.record(Revision(1, current, "deployed", "running before fleet's first rollout", ended_at=time.time()))
        history = t.store.history()
    now = time.time()
    state = RolloutState(history[-1].revision + 1, image, current, plan, start(now), cause, container=container)
    if plan.pre_rollout:
        _pre_rollout_gate(t, state, plan)
    x = Executor(t.cluster, t.store, state)
    try:
        x.begin(plan.canary_replicas, now)
    except APIError as e:
        r = replace(state.rollout, phase=Phase.ROLLED_BACK, reason=f"cannot create the canary: {e.explanation or e}")
        x.finish(r, _bounded(30))
        raise OperationFailed(f"cannot create the canary service: {e.explanation or e}") from None
    return _drive(t, state, state.rollout, plan, [], on_progress)


def _pre_rollout_gate(t: Target, state: RolloutState, plan: Plan) -> None:
    """Ask the pre-rollout gate before anything changes; a refusal (or silence past the gate deadline) is
    recorded as a rolled-back revision and raised (exit 1), with nothing changed."""
    started, links = time.time(), _links(t)
    payload = gates.event(state, {"phase": "pre-rollout", "share": 0}, t.stack, t.service, "pre-rollout", links,
                          at=time.time())
    answer = hooks.wait_for(plan.pre_rollout, payload, time.monotonic() + plan.gate_deadline,
                            env_names=plan.gate_env)
    if answer.approved:
        state.note(time.time(), "gate", f"pre-rollout gate approved: {answer.detail}")
        return
    reason = (f"the pre-rollout gate refused: {answer.detail}" if answer.approved is False else
              f"the pre-rollout gate gave no answer within its deadline ({plan.gate_deadline:g}s): {answer.detail}")
    record = replace(state.started(started), outcome=Phase.ROLLED_BACK.value, reason=reason, ended_at=time.time(),
                     plan=plan_to_dict(plan), timeline=[{"at": time.time(), "event": "gate", "detail": reason}])
    t.store.record(record)
    out = hooks.Webhooks(plan.webhooks)
    out.post(gates.event(state, {"phase": record.outcome, "share": 0, "reason": reason}, t.stack, t.service, "end",
                         links, at=time.time()))
    out.close()
    raise OperationFailed(f"rollout of {state.image} not started: {reason}; nothing was changed",
                          result=Result(state.revision, Phase.ROLLED_BACK, reason, state.image,
                                        time.time() - started, record.timeline, out.failures))


def _links(t: Target) -> dict:
    """Where a webhook's reader finds more: the commands that show this rollout, and Prometheus."""
    links = {"history": f"fleet history --stack {t.stack} --service {t.service}",
             "status": f"fleet status --stack {t.stack} --watch"}
    try:
        links["prometheus"] = t.prometheus_endpoints().urls()[0]
    except (FleetError, IndexError, DockerException, requests.RequestException):
        pass
    return links


def resume(t: Target, first: Event | None = None, on_progress: Callable[[Rollout], None] = lambda r: None,
           lock_wait: float = RESUME_LOCK_WAIT, urls: tuple[str, ...] = ()) -> Result:
    """Take over an orphaned rollout (its controller's lock has lapsed) and bring it to a safe end,
    decided from what Swarm shows now. With `first` (a promote or abort request) that request decides
    too: abort reverts; promote judges the canary afresh and promotes only on fresh passing evidence.
    The gate and webhook URLs the record kept redacted are found again among `urls` (the operator's) and
    the service's policy; those that are not are dropped, and said (records.restored)."""
    lock(t, "rollout --resume", wait=lock_wait)
    try:
        state = t.store.load()
        if not state:
            raise BadInput(f"no unfinished rollout of {t.stable_name} to resume")
        state.plan, notes = restored(state.plan, urls + _policy_urls(t))
        for note in notes:
            state.note(time.time(), "resume", note)
        x = Executor(t.cluster, t.store, state)
        r, actions = actions_on_resume(x, state.rollout, first)
        return _drive(t, state, r, state.plan, actions, on_progress)
    finally:
        t.store.release()


def _policy_urls(t: Target) -> tuple[str, ...]:
    """The gate and webhook URLs of the stable service's rollout policy (its labels), if it has one."""
    stable = t.stable()
    chosen, _ = policy.parse(stable.labels if stable else None)
    if chosen is None:
        return ()
    return (*chosen.plan.webhooks, chosen.plan.pre_rollout, chosen.plan.confirm_promotion)


def request(t: Target, action: str, timeout: float = 600.0) -> Result:
    """`fleet promote` / `fleet abort`: ask the running controller (through KV), or act on an orphan."""
    state = t.store.load()
    if not state:
        raise BadInput(f"no rollout of {t.stable_name} in progress; `fleet history` lists past ones")
    if t.store.holder() is None:
        return resume(t, ControlRequested(action))
    t.store.request(ControlRequest.new(action, state.revision))  # for this rollout only, applied once
    deadline = time.monotonic() + timeout
    index = None
    while time.monotonic() < deadline:  # the controller records the outcome in the revision's history
        record = t.store.revision(state.revision)
        if record is not None and record.outcome != IN_PROGRESS:
            return Result(state.revision, Phase(record.outcome), record.reason, state.image,
                          (record.ended_at or 0) - (record.started_at or 0))
        index, _, _ = t.store.control(index, wait="2s")
    raise OperationFailed(f"the controller did not act on `{action}` within {timeout:g}s")


def hold(t: Target, action: str, timeout: float = 30.0) -> RolloutState | None:
    """`fleet pause` / `fleet resume`: ask the running controller to hold its stepping canary at its share, or
    to go on; returns the rollout's state once the controller did, or once it moved on (None: it ended)."""
    state = t.store.load()
    if not state:
        raise BadInput(f"no rollout of {t.stable_name} in progress; `fleet history` lists past ones")
    if t.store.holder() is None:
        raise BadInput(f"the rollout of {t.stable_name} has no controller (its fleet process is gone): bring it to "
                       "a safe end with `fleet rollout --resume`, or `fleet abort` it")
    r = state.rollout
    if action == "pause" and r.paused:
        return state  # already held: pausing again changes nothing
    if action == "pause" and r.phase is not Phase.STEPPING:
        raise BadInput(f"the rollout of {t.stable_name} is {r.phase.value}: only a canary in its steps can be "
                       "paused (`fleet abort` reverts it, `fleet promote` promotes it)")
    if action == "resume" and not r.paused:
        raise BadInput(f"the rollout of {t.stable_name} is not paused ({r.phase.value} at {r.share}%): nothing "
                       "to resume")
    t.store.request(ControlRequest.new(action, state.revision))  # for this rollout only, applied once
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        now = t.store.load()
        if now is None or now.revision != state.revision or now.rollout.phase is not Phase.STEPPING:
            return now  # it ended or moved on meanwhile: the caller says what it shows
        if (now.rollout.paused) == (action == "pause"):
            return now
        time.sleep(0.25)
    raise OperationFailed(f"the controller did not act on `{action}` within {timeout:g}s")


# the loop -----------------------------------------------------------------------------------------
def _drive(t: Target, state: RolloutState, r: Rollout, plan: Plan, actions: list[Action],
           on_progress: Callable[[Rollout], None]) -> Result:
    """Run the rollout to its end. Any error ends in the safe path (see `_abandon`); a lost lock ends it
    without touching anything (another fleet owns the rollout now)."""
    stream = EventStream()
    evidence = Evidence(t, state, stream, plan)
    x = Executor(t.cluster, t.store, state, evidence)
    links = _links(t)
    hook_failures: list[str] = []
    out = hooks.Webhooks(plan.webhooks, on_failure=hook_failures.append)
    try:
        metrics = remote_write.Pusher(t.prometheus_endpoints())
    except FleetError:  # no Prometheus found now: its series are reported missing, the rollout goes on
        metrics = remote_write.Pusher(fixed(""))
    posted = {"at": None}

    def progress(new: Rollout) -> None:
        """Each phase or share the rollout enters, to the webhooks (its end is posted once it is recorded)
        and to fleet's own series in Prometheus."""
        while hook_failures:
            x.note("webhook", hook_failures.pop(0))
        at = (new.phase, new.share, new.paused)
        if new.phase not in TERMINAL and posted["at"] != at:
            posted["at"] = at
            out.post(gates.event(state, new.to_dict(), t.stack, t.service, "phase", links, at=time.time()))
            metrics.push(view.series(t.stack, t.service, replace(state, rollout=new)))
        on_progress(new)

    saved = {"at": 0.0}

    def next_event() -> Event:
        """The next event; the latest evidence and the golden gate's answer kept in the state for watchers."""
        e = stream.next(TICK)
        if isinstance(e, GoldenChecked):
            state.golden = {"passed": e.passed, "detail": e.detail}
        elif isinstance(e, MetricsSample):
            state.evidence = {**view.figures(e), "at": time.time()}
            if time.monotonic() - saved["at"] >= view.EVIDENCE_EVERY:
                saved["at"] = time.monotonic()
                try:  # for watchers only: never waits out a Consul restart (the next state write does)
                    t.store.save(state, patient=False)
                except ConsulUnavailable:
                    saved["at"] += 10  # and not again for a while: the loop must not wait on an absent Consul
                metrics.push(view.series(t.stack, t.service, state))  # the series stay current while it runs
        return e

    previous = {}
    if threading.current_thread() is threading.main_thread():  # Ctrl-C, SIGTERM, SIGHUP: abort, safely
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            previous[sig] = signal.signal(sig, lambda *_: stream.put(ControlRequested("abort")))
    try:
        evidence.start()
        progress(r)
        r = run_loop(x, r, plan, actions, next_event, on_progress=progress, check=t.store.check)
        stream.stop()
        x.finish(r, _bounded(60))
    except LockLost as e:
        raise OperationFailed(f"{e}; `fleet status` shows who holds the rollout now") from None
    except (ConsulUnavailable, EngineUnavailable) as e:
        _abandon(x, state.rollout, e)
    except FleetError:
        raise
    except Exception as e:
        _abandon(x, state.rollout, e)
    except SystemExit as e:  # Rich ends the process when fleet's output is closed (`fleet rollout | head`)
        try:
            _abandon(x, state.rollout, OSError(f"fleet's output was closed (exit {e.code})"))
        except FleetError:
            pass  # reverted, or what is left is in the record; the process ends as it was going to
        raise
    finally:
        stream.stop()
        evidence.close()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        final = state.rollout if r.phase not in TERMINAL else r
        out.post(gates.event(state, final.to_dict(), t.stack, t.service, "end", links, at=time.time()))
        if final.phase in TERMINAL:
            try:
                metrics.push(view.series(t.stack, t.service, replace(state, rollout=final), t.store.history()))
            except ConsulUnavailable:
                pass
        out.close()
        metrics.close()
    result = replace(_result(state, r), notify_failures=out.failures + metrics.failures)
    if r.phase is not Phase.PROMOTED:
        raise OperationFailed(f"rollout of {state.image} {r.phase.value.replace('_', ' ')}: {r.reason}",
                              result=result)
    return result


def actions_on_resume(x: Executor, r: Rollout, first: Event | None = None) -> tuple[Rollout, list[Action]]:
    """Decide an orphan's fate from what Swarm shows now (level-triggered), and a request if any."""
    now = time.time()
    if isinstance(first, ControlRequested) and first.action == "abort":
        return step(r, first, now, Plan())
    return resumed(r, now, x.observe_stable(),
                   promote=isinstance(first, ControlRequested) and first.action == "promote")


def _abandon(x: Executor, r: Rollout, error: Exception) -> None:
    """The safe path after an adapter error: share 0, canary removed, stable untouched, outcome recorded,
    each step attempted even when an earlier one failed; whatever is left is named. A promotion under
    way is left to Swarm (its failure_action is the net) and to `fleet rollout --resume`."""
    unreachable = isinstance(error, (ConsulUnavailable, EngineUnavailable, requests.RequestException,
                                     DockerException, OSError))
    why = f"{type(error).__name__}: {error}"
    left = []
    if r.phase is Phase.PROMOTING:
        left.append("the stable service's update (Swarm finishes or rolls it back); run `fleet rollout --resume`")
    else:
        r = replace(r, phase=Phase.ROLLED_BACK, share=0, reason=f"stopped on an error: {why}"[:500],
                    failure=r.failure)
        for what, act in (("canary traffic", lambda: x.cluster.take_canary_out(why)),
                          ("canary service", x.cluster.remove_canary),
                          ("traffic weights", lambda: x.cluster.set_weights(None, None)),
                          ("rollout state", lambda: x.finish(r, _bounded(30)))):
            try:
                act()
            except Exception as e:
                left.append(f"{what} ({type(e).__name__}: {e})")
    detail = f"the rollout stopped on an error ({why})" + (
        f"; left in place: {'; '.join(left)}" if left else "; canary removed, traffic and stable as before")
    raise (Unreachable if unreachable else OperationFailed)(detail, result=_result(x.state, r))


def _result(state: RolloutState, r: Rollout) -> Result:
    """What a rollout got to, for the CLI (and --json)."""
    return Result(state.revision, r.phase, r.reason, state.image, time.time() - r.started_at, state.timeline)


def _bounded(seconds: float) -> Callable[[], bool]:
    deadline = time.monotonic() + seconds

    def wait() -> bool:
        time.sleep(0.5)
        return time.monotonic() < deadline
    return wait


# rollback and history -----------------------------------------------------------------------------
def history(t: Target) -> tuple[list[Revision], int | None]:
    """The service's revisions, and the one its stable service runs now (None when none matches)."""
    current = t.stable().image_name
    records = t.store.history()
    live = [h for h in records if h.stable and h.image == current]
    return records, live[-1].revision if live else None


def write_report(t: Target, record: Revision, path: Path) -> dict:
    """A revision's report (fleet/report.py) from its history record and the stack's Prometheus; returns
    how many points each role's series has."""
    prom = Prometheus(t.prometheus_endpoints())
    try:
        data = report.collect(prom, record, t.stable_name, t.canary_name)
    except ProviderError as e:
        raise Unreachable(f"{e}; the report's series come from the stack's Prometheus (or give --prometheus)") from None
    finally:
        prom.close()
    browser.write(path, report.page(record, data, t.stack, t.service))
    return {role: {name: len(points) for name, points in series.items()} for role, series in data.items()}


def rollback(t: Target, to: int | None, timeout: float = 600.0) -> Result:
    """Return the stable service to a past revision's image through Swarm's rolling update. A revision
    already running is a no-op (no revert loop)."""
    lock(t, f"rollback --to {to}")
    try:
        if t.store.load():
            raise BadInput(f"a rollout of {t.stable_name} is in progress: `fleet abort` it first")
        records, current_rev = history(t)
        good = [h for h in records if h.stable]
        current = next((h for h in records if h.revision == current_rev), None)
        if to is None:
            earlier = [h for h in good if current and h.revision < current.revision and h.image != current.image]
            if not earlier:
                raise BadInput("no earlier revision to roll back to; `fleet history` lists them")
            target = earlier[-1]
        else:
            target = next((h for h in records if h.revision == to), None)
            if target is None:
                raise BadInput(f"no revision {to}; `fleet history` lists revisions {[h.revision for h in records]}")
            if not target.stable:
                raise BadInput(f"revision {to} ({target.image}) was {target.outcome}, never stable: choose a "
                               "deployed or promoted one")
        started = time.time()
        # the build that revision ran, by its digest (or the engine's image ID) where the history has it: its
        # tag may name another now; by its tag where that still names it on this engine
        ran = target.pinned if target.pinned and build_of(target.pinned) else target.image
        if ran.startswith("sha256:") and t.swarm.engine_image(target.image) == ran:
            ran = target.image
        stable = t.stable()
        if stable.image_name == target.image and ran == target.image or build_of(ran) and stable.image == ran:
            return Result(target.revision, Phase.PROMOTED, f"already on revision {target.revision} "
                          f"({ran}): nothing to do", target.image, 0.0)
        t.swarm.update_image(t.stable_name, ran)
        deadline = time.monotonic() + timeout
        for v in stable_verdicts(t, started - 1, threading.Event()):
            if v.state is State.CONVERGED:
                break
            if v.state is State.FAILED or time.monotonic() > deadline:
                raise OperationFailed(f"rollback to revision {target.revision} failed: {v.reason}; Swarm's "
                                      "failure_action restores the previous spec")
        revision = records[-1].revision + 1
        reason = f"rollback to revision {target.revision}"
        t.store.record(Revision(revision, target.image, "deployed", reason, started_at=started, ended_at=time.time(),
                                pinned=ran))
        return Result(revision, Phase.PROMOTED, reason, target.image, time.time() - started)
    finally:
        t.store.release()


# helpers ------------------------------------------------------------------------------------------
def lock(t: Target, command: str, wait: float = 0.0) -> None:
    deadline = time.monotonic() + wait
    while (holder := t.store.acquire(command)) is not None:
        if time.monotonic() >= deadline:
            raise BadInput(f"another fleet holds the rollout lock of {t.stable_name}: {holder_text(holder)}; wait "
                           "for it to finish, or `fleet abort` it")
        time.sleep(1.0)


def holder_text(holder: dict) -> str:
    """Who holds a rollout lock: "`fleet COMMAND` (pid P on HOST, since HH:MM:SS)"."""
    since = time.strftime("%H:%M:%S", time.localtime(holder.get("since", 0)))
    return f"`fleet {holder.get('command')}` (pid {holder.get('pid')} on {holder.get('host')}, since {since})"
