"""The evidence sources of one controller run, merged into one EventStream (fleet/stream.py).

The canary's task states from Swarm (every node's, read from the manager), Docker's container events
for the canary (the manager's own node: detail), Consul's health of the service (blocking queries, only
this canary's instances), the control key (`fleet promote`/`fleet abort`, each applied once), the
metrics window from Prometheus and the synthetic load are supervised: a source that fails or ends (dockerd or Consul or Prometheus restarting) is reported
as SourceFailed (missing evidence) and started again with backoff; Docker's events are replayed from
the last one seen, so a die during the gap is not lost. The golden gate, the synthetic load (when
traffic is thin) and the promotion watch are started by the executor's actions (this class is its
`Hooks`). The golden gate and the synthetic load go through the gateway's role routes
(fleet/adapters/gateway.py).
"""
import math
import threading
import time
from typing import Protocol

from .adapters import hooks
from .adapters.consul import Catalog
from .adapters.endpoints import Endpoints
from .adapters.gateway import Gateway, GatewayError, ReplicaError
from .adapters.prometheus import Prometheus, role_window
from .adapters.store import Store
from .adapters.swarm import Swarm
from .cluster import SwarmCluster
from .core import gates
from .core.analysis import Outcome, judge_golden, judge_golden_outputs
from .core.control import to_apply
from .core.convergence import State
from .core.events import (ConsulView, ContainerEvent, ControlRequested, GateAnswered, GoldenChecked, MetricsSample,
                          PromotionObserved, SourceUp, TaskFailed)
from .core.records import RolloutState
from .core.rollout import Plan
from .core.taskstates import task_failure
from .stream import EventStream
from .watch import observe

TASKS_EVERY = 0.5  # seconds between reads of the canary's task states from Swarm
SCRAPE_EVERY = 0.25  # seconds between metric windows (the stack's Prometheus scrapes as often)
GOLDEN_WAIT = 30.0  # seconds the golden gate waits for the canary's and the stable's routes to answer
WINDOW = 30.0  # seconds of evidence judged (or the step duration, when shorter)
SYNTHETIC_ROWS = 8  # golden rows per synthetic request
SYNTHETIC_MAX_RPS = 20  # synthetic requests a second, per route, at most
SYNTHETIC_MAX = 20_000  # synthetic requests per route in one rollout, at most


class Reach(Protocol):
    """What the evidence sources of one rollout read through, and nothing more (fleet/connect.py's `Target`
    is one; a test gives a smaller fake for the sources it starts). The sources ask Swarm for the canary's
    tasks, nodes, container events, health and logs, and the stable's convergence (fleet/watch.py)."""

    @property
    def stack(self) -> str: ...

    @property
    def service(self) -> str: ...

    @property
    def consul_name(self) -> str: ...

    @property
    def swarm(self) -> Swarm: ...

    @property
    def catalog(self) -> Catalog: ...

    @property
    def store(self) -> Store: ...

    @property
    def stable_name(self) -> str: ...

    @property
    def canary_name(self) -> str: ...

    @property
    def cluster(self) -> SwarmCluster: ...

    def gateway_endpoints(self) -> Endpoints: ...

    def prometheus_endpoints(self) -> Endpoints: ...


class Evidence:
    def __init__(self, t: Reach, state: RolloutState, stream: EventStream, plan: Plan):
        self.t, self.state, self.stream, self.plan = t, state, stream, plan
        self._gateway: Gateway | None = None
        self.last_sample: MetricsSample | None = None
        self.synthetic_sent = 0  # synthetic requests sent through each route
        self.consul_name = t.consul_name
        self.traffic_since: float | None = None  # monotonic time of the canary's first share: judged from then
        self.synthetic_log: list[tuple[float, int]] = []  # (monotonic time, synthetic_sent) over the window
        self._tasks: dict[str, tuple[float, int]] = {}  # service -> (monotonic time read, running tasks)
        self.docker_events = None
        self.last_docker_event: float | None = None
        self.canary_tasks: set[str] = set()  # this canary's Swarm task IDs: only their instances count

    def start(self) -> None:
        s, t = self.stream, self.t
        self.last_docker_event = time.time() - 1
        s.follow("docker", self._docker_events, restart=True)
        s.follow("tasks", self._tasks_source, restart=True)
        s.follow("consul", lambda: (ConsulView(self._ours(i)) for i in t.catalog.watch(self.consul_name, s.stopped)),
                 restart=True)
        s.follow("control", self._control, restart=True)
        s.follow("metrics", self._metrics, restart=True)

    def close(self) -> None:
        if self.docker_events is not None:
            self.docker_events.close()
        if self._gateway is not None:
            self._gateway.close()

    # hooks the executor calls ---------------------------------------------------------------------
    def golden(self) -> None:
        self.stream.follow("golden", self._golden)

    def gate(self, name: str) -> None:
        self.stream.follow("gate", lambda: self._gate(name))

    def traffic_started(self) -> None:
        if self.traffic_since is None:
            self.traffic_since = time.monotonic()
            self.stream.follow("synthetic", self._synthetic, restart=True)

    def promotion(self, since: float) -> None:
        self.stream.follow("promotion", lambda: self._promotion(since), restart=True)

    # sources ------------------------------------------------------------------------------------
    def _docker_events(self):
        since = self.last_docker_event  # a restarted stream replays what happened in the gap
        self.docker_events = self.t.swarm.container_events(self.state.canary_id or "none", since)
        yield SourceUp("docker")
        for e in self.docker_events:
            self.last_docker_event = max(self.last_docker_event, e.get("time", 0) - 1)
            action, cid = e.get("Action", ""), e.get("Actor", {}).get("ID", "")
            attrs = e.get("Actor", {}).get("Attributes", {})
            if action == "die":
                health = self.t.swarm.container_health(cid)[1]
                last_log = (self.t.swarm.logs(cid, lines=1) or "").strip()
                why = self.t.swarm.why_stopped(cid)
                yield ContainerEvent("die", cid, f"exit code {attrs.get('exitCode')}" + (f" ({why})" if why else "")
                                     + (f"; last health check: {health[:200]}" if health else "")
                                     + (f"; last log line: {last_log[:200]}" if last_log else ""))
            elif action == "oom":
                yield ContainerEvent("oom", cid, "out of memory")
            elif action == "exec_die" and attrs.get("exitCode", "0") != "0":  # a health check, Docker's own exec
                yield ContainerEvent("check_failed", cid, self.t.swarm.container_health(cid)[1])
            elif action.startswith("health_status"):
                status = action.partition(":")[2].strip()
                detail = self.t.swarm.container_health(cid)[1] if status == "unhealthy" else ""
                yield ContainerEvent(status, cid, detail)

    def _tasks_source(self):
        """The canary's tasks as the manager sees them on every node, every TASKS_EVERY: a task that failed,
        was rejected, lost its node or waits for one too long fails the canary (fleet/core/taskstates.py)."""
        pending_since: dict[str, float] = {}
        reported = False
        yield SourceUp("tasks")
        while not self.stream.stopped.wait(TASKS_EVERY):
            tasks = self._read_tasks()
            now = time.monotonic()
            pending_since = {task.id: pending_since.get(task.id, now) for task in tasks if task.state == "pending"}
            nodes = {task.node for task in tasks if task.desired_state == "running"}
            states = {n["hostname"]: n["state"] for n in self.t.swarm.nodes() if n["hostname"] in nodes} if nodes else {}
            why = task_failure(tasks, {i: now - at for i, at in pending_since.items()}, states)
            if why and not reported:
                reported = True
                yield TaskFailed(why)

    def _read_tasks(self):
        tasks = self.t.swarm.tasks(self.state.canary_id or "none", desired_state=None)
        self.canary_tasks = {task.id for task in tasks}
        return tasks

    def _ours(self, instances) -> tuple:
        """The service's instances less canary instances of other canaries (an earlier rollout's, still
        registered while critical): a canary instance counts only when its task is this canary's."""
        if any(i.role == "canary" and i.task_id not in self.canary_tasks for i in instances):
            self._read_tasks()  # a new task of this canary's, or another canary's: ask Swarm
        return tuple(i for i in instances if i.role != "canary" or i.task_id in self.canary_tasks)

    def _control(self):
        """`fleet promote`/`fleet abort` requests, each applied once (fleet/core/control.py): for this rollout,
        made while this controller holds the lock; the ids applied are kept in the rollout's state."""
        applied = self.state.control_applied
        index = None
        first = True
        while not self.stream.stopped.is_set():
            index, request, written = self.t.store.control(index, wait="1s" if first else "5s")
            if first:
                yield SourceUp("control")
                first = False
            request = to_apply(request, written, self.state.revision, self.t.store.lock_index, applied)
            if request is not None:
                applied.append(request.id)
                yield ControlRequested(request.action)

    def _metrics(self):
        """Every SCRAPE_EVERY, both roles' /predict window from Prometheus (fleet/adapters/prometheus.py). A
        Prometheus that does not answer (ProviderError) ends this source: SourceFailed, missing evidence,
        until it answers again."""
        prom = Prometheus(self.t.prometheus_endpoints())
        try:
            yield SourceUp("metrics")
            while not self.stream.stopped.wait(SCRAPE_EVERY):
                if self.traffic_since is None:
                    continue
                # the window never reaches back before this canary's first share: the gateway's counters
                # for canary servers would also hold an earlier canary's
                window = min(WINDOW, self.plan.step_duration, time.monotonic() - self.traffic_since)
                canary, stable = (role_window(prom, name, role, window, self._running(name), self.plan.evidence_max_age)
                                  for name, role in ((self.t.canary_name, "canary"), (self.t.stable_name, "stable")))
                now = time.monotonic()
                self.synthetic_log = [(at, n) for at, n in self.synthetic_log if at >= now - window]
                sent = self.synthetic_sent - (self.synthetic_log[0][1] if self.synthetic_log else self.synthetic_sent)
                self.synthetic_log.append((now, self.synthetic_sent))
                self.last_sample = MetricsSample(canary, stable, synthetic=sent, window=window)
                yield self.last_sample
        finally:
            prom.close()

    def _running(self, service_name: str) -> int:
        """How many tasks of the service run, from Swarm, read at most once a second."""
        at, n = self._tasks.get(service_name, (0.0, 0))
        if time.monotonic() - at > 1.0:
            at, n = time.monotonic(), len(self.t.swarm.tasks(service_name))
            self._tasks[service_name] = (at, n)
        return n

    def _golden(self):
        """The golden gate: the golden set through the canary's route and the stable's, at the gateway
        (where the canary has no share yet). A replica answering an error fails the canary; a route
        not answering is retried until GOLDEN_WAIT, then the gate fails for want of evidence."""
        plan, deadline, why = self.plan, time.monotonic() + GOLDEN_WAIT, ""
        while not self.stream.stopped.is_set():
            try:
                gw = self.gateway()
                canary_info = gw.info("canary")
                if canary_info is None or str(canary_info.get("version")) != plan.version or gw.info("stable") is None:
                    raise GatewayError(f"the canary route answers {canary_info and canary_info.get('version')!r}, "
                                       f"waiting for version {plan.version!r} and a stable replica")
                golden = gw.golden_set(plan.golden or None)
                if golden.labels is None:  # a model of tensor outputs: the canary's against the stable's
                    j = judge_golden_outputs(gw.outputs("canary", golden), gw.outputs("stable", golden),
                                             golden.tolerance, golden.source)
                else:
                    canary, stable = gw.accuracy("canary", golden), gw.accuracy("stable", golden)
                    j = judge_golden(canary, stable, golden.manifest_accuracy, plan.golden_tolerance,
                                     len(golden.labels), golden.source)
                yield GoldenChecked(j.outcome is Outcome.PASS, j.reason)
                return
            except ReplicaError as e:
                if e.role == "canary":
                    yield GoldenChecked(False, str(e))
                    return
                why = str(e)
            except GatewayError as e:
                why = str(e)
            if time.monotonic() > deadline:
                yield GoldenChecked(False, f"the golden gate could not run within {GOLDEN_WAIT:g}s: {why}")
                return
            self.stream.stopped.wait(0.5)

    def _gate(self, name: str):
        """Ask the confirm-promotion gate every ASK_EVERY seconds and pass on each answer, the first yes or
        no ending it; the rollout's deadline for it is the pure core's (Plan.gate_deadline)."""
        payload = gates.event(self.state, self.state.rollout.to_dict(), self.t.stack, self.t.service, name,
                              at=time.time())
        for answer in hooks.answers(self.plan.confirm_promotion, payload, self.stream.stopped,
                                    env_names=self.plan.gate_env):
            yield GateAnswered(name, answer.approved, answer.detail)

    def gateway(self) -> Gateway:
        if self._gateway is None:
            self._gateway = Gateway(self.t.gateway_endpoints())
        return self._gateway

    def _synthetic(self):
        """Evidence when traffic is thin: while the canary's window holds fewer requests than three times
        the judgement's minimum (organic and synthetic together), send golden inputs through the canary's
        and the stable's routes, SYNTHETIC_ROWS rows a request, at most SYNTHETIC_MAX_RPS a second a route,
        and at most SYNTHETIC_MAX in all. Each sample says how many of the window's were synthetic."""
        window = min(WINDOW, self.plan.step_duration)
        need = 3 * self.plan.thresholds.min_requests / window  # requests a second
        golden = None
        yield SourceUp("synthetic")
        while not self.stream.stopped.wait(1.0) and self.synthetic_sent < SYNTHETIC_MAX:
            sample = self.last_sample
            if sample is None or sample.canary is None or sample.canary.requests >= need * window:
                continue
            try:
                golden = golden or self.gateway().golden_set(self.plan.golden or None)
                for _ in range(min(math.ceil(need - sample.canary.requests / window), SYNTHETIC_MAX_RPS)):
                    i = (self.synthetic_sent * SYNTHETIC_ROWS) % max(1, golden.size - SYNTHETIC_ROWS)
                    for role in ("canary", "stable"):
                        self.gateway().predict(role, golden.rows(i, i + SYNTHETIC_ROWS))
                    self.synthetic_sent += 1
            except GatewayError:
                continue  # shows as too few requests in the judgement: no evidence, never a pass

    def _promotion(self, since: float):
        for verdict in stable_verdicts(self.t, since, self.stream.stopped):
            canary = self.state.canary_image or self.state.image
            differs = self.t.cluster.stable_differs(canary, self.state.container)
            if differs and not self.t.cluster.stable_rolled_back_since(since):  # not ours, and not Swarm's rollback
                yield PromotionObserved("superseded", f"the stable service's spec was changed during the promotion "
                                        f"and is not the canary's ({differs}): a `docker stack deploy` or `docker "
                                        "service update` by hand?")
                return
            yield PromotionObserved(verdict.state.value, verdict.reason)
            if verdict.state is not State.PROGRESSING:
                return


def stable_verdicts(t: Reach, since: float, stopped: threading.Event, every: float = 1.0):
    """The stable service's convergence since `since` (fleet deploy's judgement), once every second."""
    while True:
        verdict = observe(t.swarm, t.catalog, t.stack, since, only={t.stable_name}).get(t.stable_name)
        if verdict is not None:
            yield verdict
        if stopped.wait(every):
            return
