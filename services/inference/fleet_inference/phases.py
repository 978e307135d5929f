"""What a replica's health means: lifecycle phases and the pure rules that turn them into answers.

Alive is not ready. /health (liveness) is 200 while the process works, loading included, and 500
once the model failed. /ready (readiness) is 200 when ready, 429 when degraded (Consul reads 429 as
a warning) and 503 otherwise. Degraded is derived, never stored: a ready replica short of GPU memory
or with its request queue over the bound.
"""
from dataclasses import dataclass
from enum import Enum


class Phase(str, Enum):
    LOADING = "loading"
    WARMING = "warming"
    READY = "ready"
    DEGRADED = "degraded"
    FAILED = "failed"
    DRAINING = "draining"


@dataclass(frozen=True)
class GpuMemory:
    free_bytes: int
    total_bytes: int

    @property
    def used_pct(self) -> float:
        return 100.0 * (self.total_bytes - self.free_bytes) / self.total_bytes if self.total_bytes else 0.0


@dataclass(frozen=True)
class Limits:
    max_queue: int
    gpu_min_free_bytes: int
    gpu_max_used_pct: float


@dataclass(frozen=True)
class Readiness:
    phase: Phase
    reason: str
    status_code: int


def readiness(phase: Phase, reason: str, queue_depth: int, gpu: GpuMemory | None, limits: Limits) -> Readiness:
    """The readiness answer for a lifecycle phase and the current load. Pure: no I/O, no clock."""
    if phase is not Phase.READY:
        return Readiness(phase, reason, 503)
    if gpu is not None and gpu.free_bytes < limits.gpu_min_free_bytes:
        return Readiness(Phase.DEGRADED, f"GPU memory free {gpu.free_bytes >> 20} MiB is under the "
                         f"watermark {limits.gpu_min_free_bytes >> 20} MiB", 429)
    if gpu is not None and gpu.used_pct > limits.gpu_max_used_pct:
        return Readiness(Phase.DEGRADED, f"GPU memory {gpu.used_pct:.1f}% used is over "
                         f"{limits.gpu_max_used_pct:.0f}%", 429)
    if queue_depth > limits.max_queue:
        return Readiness(Phase.DEGRADED, f"request queue {queue_depth} rows is over its bound {limits.max_queue}", 429)
    return Readiness(Phase.READY, reason, 200)


def liveness_status(phase: Phase) -> int:
    """200 while the process works (loading included); 500 once the model failed."""
    return 500 if phase is Phase.FAILED else 200
