"""The rollout use cases: `fleet rollout --canary` (and `--resume`), promote, abort, rollback, history.

The loop here merges the evidence (fleet/events.py), asks the pure `rollout.step` what to do and
carries out its actions through the adapters. State is saved in Consul KV after every change, under a
per-service lock, so a killed controller's rollout can be found and finished or reverted.
"""
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace

import httpx
from docker.errors import APIError, ImageNotFound

from . import deploy as deploy_use_case
from .adapters import replicas
from .adapters.consul import Catalog, ConsulUnavailable, client as consul_client
from .adapters.store import Store, set_weight
from .adapters.swarm import EngineUnavailable, Swarm
from .analysis import Stats, Thresholds
from .convergence import State
from .errors import BadInput, OperationFailed, Unreachable
from .events import (ConsulView, ContainerEvent, ControlRequested, Event, EventStream, GoldenChecked,
                     MetricsSample, PromotionObserved)
from .rollout import (TERMINAL, Action, CheckGolden, CutCanary, Finish, Phase, Plan, PromoteStable, RevertStable,
                      Rollout, SetShare, resumed, start, step)
from .traffic import weights_for

TICK = 0.25  # seconds between clock ticks when no evidence arrives
SCRAPE_EVERY = 1.0


@dataclass
class Target:
    """The stack's service a rollout works on, and the adapters that reach it."""
    stack: str
    service: str
    swarm: Swarm
    catalog: Catalog
    store: Store

    @property
    def stable_name(self) -> str:
        return f"{self.stack}_{self.service}"

    @property
    def canary_name(self) -> str:
        return f"{self.stable_name}-canary"

    def stable(self):
        return self.swarm.service(self.stable_name)

    @property
    def consul_name(self) -> str:
        env = self.stable().attrs["Spec"]["TaskTemplate"]["ContainerSpec"].get("Env", [])
        return dict(e.split("=", 1) for e in env if "=" in e).get("FLEET_SERVICE_NAME", self.service)


def connect(stack: str, service: str, consul_addr: str | None) -> Target:
    """Reach Docker and Consul (exit 3 if not) and find the service (exit 2 if unknown)."""
    try:
        swarm = Swarm()
        swarm.check()
    except EngineUnavailable as e:
        raise Unreachable(str(e)) from None
    c = consul_client(consul_addr)
    catalog = Catalog(c)
    try:
        catalog.instances("consul")
    except ConsulUnavailable as e:
        raise Unreachable(f"{e}; nothing was changed") from None
    target = Target(stack, service, swarm, catalog, Store(c, stack, service))
    if target.stable() is None:
        names = sorted(s.name.removeprefix(f"{stack}_") for s in swarm.stack_services(stack))
        raise BadInput(f"no service {service!r} in stack {stack!r} (services: {names or 'none, no such stack'}); "
                       "use --service and --stack")
    return target


@dataclass
class Result:
    revision: int
    phase: Phase
    reason: str
    image: str
    seconds: float
    timeline: list[dict] = field(default_factory=list)


# rollout ------------------------------------------------------------------------------------------
def rollout(t: Target, image: str, plan: Plan, on_progress: Callable[[Rollout], None] = lambda r: None) -> Result:
    stable = t.stable()
    current = _image(stable)
    try:
        labels = t.swarm.client.images.get(image).labels or {}
    except (ImageNotFound, APIError):
        raise BadInput(f"image {image} does not exist on this engine: build or pull it first") from None
    if image == current:
        raise BadInput(f"{t.stable_name} already runs {image}: nothing to roll out")
    plan = replace(plan, version=labels.get("fleet.model-version", ""))
    _lock(t, "rollout --canary --image " + image)
    try:
        if t.store.load():
            raise BadInput(f"an unfinished rollout of {t.stable_name} is recorded in Consul: finish it with "
                           "`fleet rollout --resume` or revert it with `fleet abort`")
        if t.swarm.service(t.canary_name):
            raise BadInput(f"a canary service {t.canary_name} exists without a recorded rollout: "
                           f"remove it with `docker service rm {t.canary_name}`")
        history = t.store.history()
        if not history:
            t.store.record({"revision": 1, "image": current, "outcome": "deployed", "reason": "running before "
                            "fleet's first rollout", "started_at": None, "ended_at": time.time()})
            history = t.store.history()
        revision = history[-1]["revision"] + 1
        now = time.time()
        doc = {"revision": revision, "image": image, "previous_image": current, "canary": t.canary_name,
               "stable_spec_version": stable.attrs["Version"]["Index"], "plan": _plan_doc(plan),
               "rollout": start(now).to_dict(), "timeline": []}
        t.store.record({"revision": revision, "image": image, "previous_image": current, "outcome": "in_progress",
                        "reason": "", "started_at": now, "ended_at": None})
        t.store.save(doc)
        try:
            doc["canary_id"] = t.swarm.create_canary(stable, t.canary_name, image, plan.canary_replicas)
            t.store.save(doc)
        except APIError as e:
            _finish(t, doc, Rollout.from_dict(doc["rollout"]), Phase.ROLLED_BACK, f"cannot create the canary: {e}")
            raise OperationFailed(f"cannot create the canary service: {e.explanation or e}") from None
        return _drive(t, doc, Rollout.from_dict(doc["rollout"]), plan, [], on_progress)
    finally:
        t.store.release()


def resume(t: Target, first: Event | None = None, on_progress: Callable[[Rollout], None] = lambda r: None,
           lock_wait: float = 30.0) -> Result:
    """Take over an orphaned rollout (its controller's lock has lapsed) and bring it to a safe end.
    With `first` (a promote or abort request) that request decides; otherwise see `rollout.resumed`."""
    _lock(t, "rollout --resume", wait=lock_wait)
    try:
        doc = t.store.load()
        if not doc:
            raise BadInput(f"no unfinished rollout of {t.stable_name} to resume")
        plan = _plan_from(doc["plan"])
        r, now = Rollout.from_dict(doc["rollout"]), time.time()
        if first is not None:
            r, actions = step(r, first, now, plan)
        else:
            r, actions = resumed(r, now)
        return _drive(t, doc, r, plan, actions, on_progress)
    finally:
        t.store.release()


def request(t: Target, action: str, timeout: float = 600.0) -> Result:
    """`fleet promote` / `fleet abort`: ask the running controller (through KV), or act on an orphan."""
    doc = t.store.load()
    if not doc:
        raise BadInput(f"no rollout of {t.stable_name} in progress; `fleet history` lists past ones")
    if t.store.holder() is None:
        return resume(t, ControlRequested(action), lock_wait=0)
    t.store.request(action)
    deadline = time.monotonic() + timeout
    index = None
    while time.monotonic() < deadline:  # the controller records the outcome in the revision's history
        record = next((h for h in t.store.history() if h["revision"] == doc["revision"]), {})
        if record.get("outcome") not in (None, "in_progress"):
            return Result(doc["revision"], Phase(record["outcome"]), record.get("reason", ""), doc["image"],
                          (record.get("ended_at") or 0) - (record.get("started_at") or 0))
        index, _ = t.store.control(index, wait="2s")
    raise OperationFailed(f"the controller did not act on `{action}` within {timeout:g}s")


# the loop -----------------------------------------------------------------------------------------
def _drive(t: Target, doc: dict, r: Rollout, plan: Plan, actions: list[Action],
           on_progress: Callable[[Rollout], None]) -> Result:
    stream = EventStream()
    run = Run(t, doc, stream)
    previous = {}
    if threading.current_thread() is threading.main_thread():  # Ctrl-C or SIGTERM: abort, safely
        for sig in (signal.SIGINT, signal.SIGTERM):
            previous[sig] = signal.signal(sig, lambda *_: stream.put(ControlRequested("abort")))
    try:
        run.start_sources()
        run.save(r)
        for a in actions:
            run.execute(a, r, plan)
        while r.phase not in TERMINAL:
            event = stream.next(TICK)
            received = time.time()
            new, actions = step(r, event, received, plan)
            if new.failure and not r.failure:  # the first failing signal, for the reaction time
                run.note("signal", f"{type(event).__name__}: {new.reason}", at=received)
            for a in actions:
                run.execute(a, new, plan)
            if new != r:
                run.save(new, event)
                on_progress(new)
            r = new
    finally:
        stream.stop()
        run.close()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    _finish(t, doc, r, r.phase, r.reason)
    result = Result(doc["revision"], r.phase, r.reason, doc["image"], time.time() - r.started_at, doc["timeline"])
    if r.phase is not Phase.PROMOTED:
        raise OperationFailed(f"rollout of {doc['image']} {r.phase.value.replace('_', ' ')}: {r.reason}",
                              result=result)
    return result


class Run:
    """One controller run: its evidence sources and the executor of the pure core's actions."""

    def __init__(self, t: Target, doc: dict, stream: EventStream):
        self.t, self.doc, self.stream = t, doc, stream
        self.consul_name = t.consul_name
        self.http = httpx.Client()
        self.baseline: dict[str, Stats] | None = None  # per container, set when traffic starts
        self.docker_events = None

    def start_sources(self) -> None:
        s, t = self.stream, self.t
        since = time.time() - 1
        s.follow("docker", lambda: self._docker_events(since))
        s.follow("consul", lambda: (ConsulView(tuple(i)) for i in t.catalog.watch(self.consul_name, s.stopped)))
        s.follow("control", self._control)
        s.follow("metrics", self._metrics)

    def close(self) -> None:
        if self.docker_events is not None:
            self.docker_events.close()
        self.http.close()

    # sources ------------------------------------------------------------------------------------
    def _docker_events(self, since: float):
        self.docker_events = self.t.swarm.container_events(self.doc.get("canary_id", "none"), since)
        for e in self.docker_events:
            action, cid = e.get("Action", ""), e.get("Actor", {}).get("ID", "")
            attrs = e.get("Actor", {}).get("Attributes", {})
            if action == "die":
                health = self.t.swarm.container_health(cid)[1]
                last_log = (self.t.swarm.logs(cid, lines=1) or "").strip()
                yield ContainerEvent("die", cid, f"exit code {attrs.get('exitCode')}"
                                     + (f"; last health check: {health[:200]}" if health else "")
                                     + (f"; last log line: {last_log[:200]}" if last_log else ""))
            elif action == "oom":
                yield ContainerEvent("oom", cid, "out of memory")
            elif action.startswith("health_status"):
                status = action.partition(":")[2].strip()
                detail = self.t.swarm.container_health(cid)[1] if status == "unhealthy" else ""
                yield ContainerEvent(status, cid, detail)

    def _control(self):
        index, action = self.t.store.control(None, wait="1s")
        if action in ("promote", "abort"):
            yield ControlRequested(action)
        while not self.stream.stopped.is_set():
            index, action = self.t.store.control(index, wait="5s")
            if action in ("promote", "abort"):
                yield ControlRequested(action)

    def _metrics(self):
        while not self.stream.stopped.wait(SCRAPE_EVERY):
            if self.baseline is None:
                continue
            addresses = replicas.gwbridge_addresses(self.t.swarm.client)
            yield MetricsSample(*(self._stats(name, addresses) for name in (self.t.canary_name, self.t.stable_name)))

    def _replicas(self, service_name: str, addresses: dict[str, str]) -> list[tuple[str, str | None]]:
        """(container ID, docker_gwbridge address or None) of each of the service's running tasks."""
        return [(task.container_id, addresses.get(task.container_id)) for task in self.t.swarm.tasks(service_name)]

    def _stats(self, service_name: str, addresses: dict[str, str],
               baseline: dict[str, Stats] | None = None) -> Stats | None:
        """The role's /predict counters since traffic started, or None when no replica answered.
        With `baseline`, each container's counters now are recorded in it instead."""
        total, seen = Stats(), False
        for container, address in self._replicas(service_name, addresses):
            stats = replicas.scrape(self.http, address) if address else None
            if stats is None:
                continue
            if baseline is not None:
                baseline[container] = stats
            else:
                total, seen = total + (stats - self.baseline.get(container, Stats())), True
        return total if seen else None

    def _golden(self):
        addresses = replicas.gwbridge_addresses(self.t.swarm.client)
        results = [replicas.golden_check(address) if address
                   else (False, f"container {container[:12]} is not reachable from this node")
                   for container, address in self._replicas(self.t.canary_name, addresses)]
        passed = bool(results) and all(ok for ok, _ in results)
        yield GoldenChecked(passed, "; ".join(d for _, d in results) or "no canary replica running")

    def _promotion(self, since: float):
        for verdict in _stable_verdicts(self.t, since, self.stream.stopped):
            yield PromotionObserved(verdict.state.value, verdict.reason)
            if verdict.state is not State.PROGRESSING:
                return

    # actions ------------------------------------------------------------------------------------
    def execute(self, a: Action, r: Rollout, plan: Plan) -> None:
        t = self.t
        if isinstance(a, CheckGolden):
            self.stream.follow("golden", self._golden)
        elif isinstance(a, SetShare):
            stables = t.stable().attrs["Spec"]["Mode"]["Replicated"]["Replicas"]
            stable_w, canary_w = weights_for(a.percent, plan.canary_replicas, stables)
            set_weight(t.catalog.consul, self.consul_name, "stable", stable_w)
            set_weight(t.catalog.consul, self.consul_name, "canary", canary_w)
            if self.baseline is None:
                baseline: dict[str, Stats] = {}
                addresses = replicas.gwbridge_addresses(t.swarm.client)
                for name in (t.canary_name, t.stable_name):
                    self._stats(name, addresses, baseline)
                self.baseline = baseline
            self.note("share", f"{a.percent}% (weights stable {stable_w}, canary {canary_w})")
        elif isinstance(a, CutCanary):
            self.cut_canary(a.reason)
        elif isinstance(a, PromoteStable):
            if _image(t.stable()) != self.doc["image"]:
                t.swarm.update_image(t.stable_name, self.doc["image"])
            self.note("promote", f"updating {t.stable_name} to {self.doc['image']}")
            since = self.doc.setdefault("promotion_started", time.time() - 1)
            self.stream.follow("promotion", lambda: self._promotion(since))
        elif isinstance(a, RevertStable):
            state = (t.stable().attrs.get("UpdateStatus") or {}).get("State", "")
            if _image(t.stable()) == self.doc["image"] and not state.startswith("rollback"):
                t.swarm.rollback(t.stable_name)
            self.note("revert", f"{t.stable_name} rolled back to its previous spec")
        elif isinstance(a, Finish):
            self.note("finish", a.phase.value)

    def cut_canary(self, reason: str) -> None:
        """Share 0 first (Consul maintenance takes the canary out of DNS, so out of the gateway), then the
        canary's weight to the least (for instances another agent holds) and the service removed."""
        t = self.t
        for i in t.catalog.instances(self.consul_name):
            if i.role == "canary":
                try:
                    t.catalog.maintenance(i.id, f"fleet: {reason}"[:200])
                except Exception:  # registered through another agent: the service's removal drains it
                    pass
        self.note("cut", reason)
        set_weight(t.catalog.consul, self.consul_name, "canary", 1)
        t.swarm.remove(t.canary_name)

    def note(self, what: str, detail: str, at: float | None = None) -> None:
        self.doc["timeline"].append({"at": at or time.time(), "event": what, "detail": detail})

    def save(self, r: Rollout, event: Event | None = None) -> None:
        before = self.doc.get("rollout") or {}
        self.doc["rollout"] = r.to_dict()
        if event is not None and (before.get("phase"), before.get("share")) != (r.phase.value, r.share):
            self.note("phase", f"{r.phase.value} at {r.share}% after {type(event).__name__}: {r.reason}"
                      if r.reason else f"{r.phase.value} at {r.share}%")
        self.t.store.save(self.doc)


def _finish(t: Target, doc: dict, r: Rollout, phase: Phase, reason: str) -> None:
    """Wait (bounded) for the canary to be gone, put traffic weights back, record the outcome."""
    deadline = time.monotonic() + 60
    consul_name = t.consul_name
    t.swarm.remove(doc["canary"])
    while time.monotonic() < deadline and (
            t.swarm.containers_left(doc["canary"]) or any(i.role == "canary" for i in t.catalog.instances(consul_name))):
        time.sleep(0.5)
    for role in ("stable", "canary"):
        set_weight(t.catalog.consul, consul_name, role, None)
    record = next((h for h in t.store.history() if h["revision"] == doc["revision"]), {})
    t.store.record({**record, "revision": doc["revision"], "image": doc["image"], "outcome": phase.value,
                    "reason": reason, "ended_at": time.time()})
    t.store.clear()


# rollback and history -----------------------------------------------------------------------------
def history(t: Target) -> list[dict]:
    current = _image(t.stable())
    records = t.store.history()
    live = [h for h in records if h["outcome"] in ("deployed", "promoted") and h["image"] == current]
    current_rev = live[-1]["revision"] if live else None
    return [{**h, "current": h["revision"] == current_rev} for h in records]


def rollback(t: Target, to: int | None, timeout: float = 600.0) -> Result:
    """Return the stable service to a past revision's image through Swarm's rolling update. A revision
    already running is a no-op (no revert loop)."""
    _lock(t, f"rollback --to {to}")
    try:
        if t.store.load():
            raise BadInput(f"a rollout of {t.stable_name} is in progress: `fleet abort` it first")
        records = history(t)
        good = [h for h in records if h["outcome"] in ("deployed", "promoted")]
        current = next((h for h in records if h["current"]), None)
        if to is None:
            earlier = [h for h in good if current and h["revision"] < current["revision"] and h["image"] != current["image"]]
            if not earlier:
                raise BadInput("no earlier revision to roll back to; `fleet history` lists them")
            target = earlier[-1]
        else:
            target = next((h for h in records if h["revision"] == to), None)
            if target is None:
                raise BadInput(f"no revision {to}; `fleet history` lists revisions {[h['revision'] for h in records]}")
            if target["outcome"] not in ("deployed", "promoted"):
                raise BadInput(f"revision {to} ({target['image']}) was {target['outcome']}, never stable: choose a "
                               "deployed or promoted one")
        started = time.time()
        if _image(t.stable()) == target["image"]:
            return Result(target["revision"], Phase.PROMOTED, f"already on revision {target['revision']} "
                          f"({target['image']}): nothing to do", target["image"], 0.0)
        t.swarm.update_image(t.stable_name, target["image"])
        deadline = time.monotonic() + timeout
        for v in _stable_verdicts(t, started - 1, threading.Event()):
            if v.state is State.CONVERGED:
                break
            if v.state is State.FAILED or time.monotonic() > deadline:
                raise OperationFailed(f"rollback to revision {target['revision']} failed: {v.reason}; Swarm's "
                                      "failure_action restores the previous spec")
        revision = records[-1]["revision"] + 1
        reason = f"rollback to revision {target['revision']}"
        t.store.record({"revision": revision, "image": target["image"], "outcome": "deployed", "reason": reason,
                        "started_at": started, "ended_at": time.time()})
        return Result(revision, Phase.PROMOTED, reason, target["image"], time.time() - started)
    finally:
        t.store.release()


# helpers ------------------------------------------------------------------------------------------
def _stable_verdicts(t: Target, since: float, stopped: threading.Event, every: float = 1.0):
    """The stable service's convergence since `since` (fleet deploy's judgement), once every second."""
    while True:
        verdict = deploy_use_case.observe(t.swarm, t.catalog, t.stack, since, only={t.stable_name}).get(t.stable_name)
        if verdict is not None:
            yield verdict
        if stopped.wait(every):
            return


def _lock(t: Target, command: str, wait: float = 0.0) -> None:
    deadline = time.monotonic() + wait
    while (holder := t.store.acquire(command)) is not None:
        if time.monotonic() >= deadline:
            since = time.strftime("%H:%M:%S", time.localtime(holder.get("since", 0)))
            raise BadInput(f"another fleet holds the rollout lock of {t.stable_name}: `fleet {holder.get('command')}` "
                           f"(pid {holder.get('pid')} on {holder.get('host')}, since {since}); wait for it to "
                           "finish, or `fleet abort` it")
        time.sleep(1.0)


def _image(service) -> str:
    return service.attrs["Spec"]["TaskTemplate"]["ContainerSpec"]["Image"].split("@")[0]


def _plan_doc(plan: Plan) -> dict:
    return {**asdict(plan), "steps": list(plan.steps)}


def _plan_from(d: dict) -> Plan:
    return Plan(**{**d, "steps": tuple(d["steps"]), "thresholds": Thresholds(**d["thresholds"])})
