"""The stream that merges a rollout's evidence sources (fleet/core/events.py holds the events).

Sources (Docker's event stream, Consul blocking queries, metric scrapes, the control key, timers) run
in threads and put their events on one queue; the rollout loop takes them in arrival order.
"""
import queue
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from .core.events import Event, SourceFailed, SourceUp, Tick


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
