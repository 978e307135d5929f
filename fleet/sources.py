"""The evidence sources of one controller run, merged into one EventStream (fleet/events.py).

Docker's container events for the canary, Consul's health of the service (blocking queries), the
control key (`fleet promote`/`fleet abort`), and each replica's /metrics are supervised: a source that
fails or ends (dockerd restarting, Consul restarting) is reported as SourceFailed (missing evidence)
and started again with backoff; Docker's events are replayed from the last one seen, so a die during
the gap is not lost. The golden check and the promotion watch are started by the executor's actions
(this class is its `Hooks`).
"""
import threading
import time

import httpx

from . import deploy as deploy_use_case
from .adapters import replicas
from .analysis import Stats
from .convergence import State
from .events import (ConsulView, ContainerEvent, ControlRequested, EventStream, GoldenChecked, MetricsSample,
                     PromotionObserved, SourceUp)

SCRAPE_EVERY = 1.0


class Evidence:
    def __init__(self, t, doc: dict, stream: EventStream):
        self.t, self.doc, self.stream = t, doc, stream
        self.consul_name = t.consul_name
        self.http = httpx.Client()
        self.baseline: dict[str, Stats] | None = None  # per container, set when traffic starts
        self.docker_events = None
        self.last_docker_event: float | None = None

    def start(self) -> None:
        s, t = self.stream, self.t
        self.last_docker_event = time.time() - 1
        s.follow("docker", self._docker_events, restart=True)
        s.follow("consul", lambda: (ConsulView(tuple(i)) for i in t.catalog.watch(self.consul_name, s.stopped)),
                 restart=True)
        s.follow("control", self._control, restart=True)
        s.follow("metrics", self._metrics, restart=True)

    def close(self) -> None:
        if self.docker_events is not None:
            self.docker_events.close()
        self.http.close()

    # hooks the executor calls ---------------------------------------------------------------------
    def golden(self) -> None:
        self.stream.follow("golden", self._golden)

    def traffic_started(self) -> None:
        if self.baseline is None:
            baseline: dict[str, Stats] = {}
            addresses = replicas.gwbridge_addresses(self.t.swarm.client)
            for name in (self.t.canary_name, self.t.stable_name):
                self._stats(name, addresses, baseline)
            self.baseline = baseline

    def promotion(self, since: float) -> None:
        self.stream.follow("promotion", lambda: self._promotion(since), restart=True)

    # sources ------------------------------------------------------------------------------------
    def _docker_events(self):
        since = self.last_docker_event  # a restarted stream replays what happened in the gap
        self.docker_events = self.t.swarm.container_events(self.doc.get("canary_id", "none"), since)
        yield SourceUp("docker")
        for e in self.docker_events:
            self.last_docker_event = max(self.last_docker_event, e.get("time", 0) - 1)
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
        yield SourceUp("control")
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
        for verdict in stable_verdicts(self.t, since, self.stream.stopped):
            yield PromotionObserved(verdict.state.value, verdict.reason)
            if verdict.state is not State.PROGRESSING:
                return


def stable_verdicts(t, since: float, stopped: threading.Event, every: float = 1.0):
    """The stable service's convergence since `since` (fleet deploy's judgement), once every second."""
    while True:
        verdict = deploy_use_case.observe(t.swarm, t.catalog, t.stack, since, only={t.stable_name}).get(t.stable_name)
        if verdict is not None:
            yield verdict
        if stopped.wait(every):
            return
