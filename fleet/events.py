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
class ConsulView:
    """The service's instances in Consul after a blocking query returned."""
    instances: tuple[Instance, ...]


@dataclass(frozen=True)
class MetricsSample:
    """/predict counters since traffic started, summed per role; None where no replica answered."""
    canary: Stats | None
    stable: Stats | None


@dataclass(frozen=True)
class GoldenChecked:
    passed: bool
    detail: str


@dataclass(frozen=True)
class ControlRequested:
    """`fleet promote` or `fleet abort` (from another process, through Consul KV), or an interrupt."""
    action: str  # promote | abort


@dataclass(frozen=True)
class PromotionObserved:
    """The stable service's rolling update to the new image: converged, progressing or failed."""
    state: str
    reason: str


@dataclass(frozen=True)
class SourceFailed:
    """An evidence source stopped answering (Docker or Consul unreachable)."""
    source: str
    detail: str


Event = Tick | ContainerEvent | ConsulView | MetricsSample | GoldenChecked | ControlRequested | \
    PromotionObserved | SourceFailed


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

    def follow(self, name: str, source: Callable[[], Iterable[Event]]) -> None:
        """Run `source` in a daemon thread, putting each event it yields, until the stream stops."""
        def run():
            try:
                for event in source():
                    if self.stopped.is_set():
                        return
                    self.put(event)
            except Exception as e:  # reported as evidence: a silent source must not look healthy
                if not self.stopped.is_set():
                    self.put(SourceFailed(name, str(e)))
        threading.Thread(target=run, name=f"events-{name}", daemon=True).start()

    def stop(self) -> None:
        self.stopped.set()
