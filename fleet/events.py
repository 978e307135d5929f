"""The evidence a rollout is judged on, as one Event union, and the stream that merges its sources.

Sources (Docker's event stream, Consul blocking queries, metric scrapes, the control key, timers) run
in threads and put their events on one queue; the rollout loop takes them in arrival order.
"""
import queue
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from .analysis import Stats
from .model import Instance


@dataclass(frozen=True)
class Tick:
    """Time passes (deadlines, step ends)."""


@dataclass(frozen=True)
class ContainerEvent:
    """A Docker event of one of the canary's containers: die, oom, unhealthy, healthy, start."""
    kind: str
    container: str
    detail: str = ""


@dataclass(frozen=True)
class TaskFailed:
    """Swarm's task states fail the canary (fleet/taskstates.py): a task failed, was rejected, is on a
    lost node or waits for one too long, on whichever node it runs."""
    detail: str


@dataclass(frozen=True)
class ConsulView:
    """The service's instances in Consul after a blocking query returned."""
    instances: tuple[Instance, ...]


@dataclass(frozen=True)
class MetricsSample:
    """Each role's /predict requests over the recent window (Prometheus); None where the evidence is
    missing, stale or partial (a replica not scraped)."""
    canary: Stats | None
    stable: Stats | None
    synthetic: int = 0  # of the canary's requests, how many fleet sent (thin traffic)
    window: float | None = None  # seconds the window covers (None: long enough for every judgement)


@dataclass(frozen=True)
class GoldenChecked:
    passed: bool
    detail: str


@dataclass(frozen=True)
class GateAnswered:
    """A gate's answer (fleet/gates.py): approved True, refused False, None: no answer yet (detail says why)."""
    gate: str
    approved: bool | None
    detail: str


@dataclass(frozen=True)
class ControlRequested:
    """`fleet promote` or `fleet abort` (from another process, through Consul KV), or an interrupt."""
    action: str  # promote | abort


@dataclass(frozen=True)
class PromotionObserved:
    """The stable service's rolling update to the new image: converged, progressing, failed, or superseded
    (converged on a spec that is not the canary's)."""
    state: str
    reason: str


@dataclass(frozen=True)
class SourceFailed:
    """An evidence source stopped answering (Docker or Consul unreachable)."""
    source: str
    detail: str


@dataclass(frozen=True)
class SourceUp:
    """An evidence source is connected (again): after a SourceFailed, its evidence flows once more."""
    source: str


Event = Tick | ContainerEvent | TaskFailed | ConsulView | MetricsSample | GoldenChecked | GateAnswered | \
    ControlRequested | PromotionObserved | SourceFailed | SourceUp


@dataclass
class EventStream:
    """One queue fed by source threads. `next(timeout)` returns an event, or Tick when none came."""
    _queue: queue.Queue = field(default_factory=queue.Queue)
    stopped: threading.Event = field(default_factory=threading.Event)

    def put(self, event: Event) -> None:
        self._queue.put(event)

    def next(self, timeout: float) -> Event:
        try:
            return self._queue.get(timeout=timeout)
        except queue.Empty:
            return Tick()

    def follow(self, name: str, source: Callable[[], Iterable[Event]], restart: bool = False,
               backoff: float = 0.5, max_backoff: float = 5.0) -> None:
        """Run `source` in a daemon thread, putting each event it yields, until the stream stops.
        A source that raises is reported (SourceFailed: missing evidence, never a pass); with `restart`
        it is supervised: started again after a backoff that doubles up to `max_backoff` (an ended
        source, like Docker's event stream when dockerd restarts, too), and SourceUp is put before its
        first event after a failure."""
        def run():
            wait, failed = backoff, False
            while not self.stopped.is_set():
                try:
                    for event in source():
                        if self.stopped.is_set():
                            return
                        if failed:
                            self.put(SourceUp(name))
                            failed, wait = False, backoff
                        self.put(event)
                    if not restart or self.stopped.is_set():
                        return
                    detail = "the source ended"
                except Exception as e:  # reported as evidence: a silent source must not look healthy
                    detail = str(e) or type(e).__name__
                if self.stopped.is_set():
                    return
                if not failed:
                    self.put(SourceFailed(name, detail))
                    failed = True
                if not restart:
                    return
                self.stopped.wait(wait)
                wait = min(max_backoff, wait * 2)
        threading.Thread(target=run, name=f"events-{name}", daemon=True).start()

    def stop(self) -> None:
        self.stopped.set()
