"""The evidence a rollout is judged on, as one Event union of frozen values (fleet/stream.py merges the
sources that produce them into one stream)."""
from dataclasses import dataclass

from .analysis import Stats
from .tasks import Instance


@dataclass(frozen=True)
class Tick:
    """Time passes (deadlines, step ends)."""


@dataclass(frozen=True)
class ContainerEvent:
    """A Docker event of one of the canary's containers: die, oom, unhealthy, healthy, start, or check_failed
    (one run of its health check failed, `detail` the check's output: while Docker's start period runs, no
    failure turns it unhealthy)."""
    kind: str
    container: str
    detail: str = ""


@dataclass(frozen=True)
class TaskFailed:
    """Swarm's task states fail the canary (fleet/core/taskstates.py): a task failed, was rejected, is on a
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
    """A gate's answer (fleet/core/gates.py): approved True, refused False, None: no answer yet (detail says why)."""
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
