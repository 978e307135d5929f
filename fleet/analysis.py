"""Is the canary as good as the stable replicas, judged on their metrics? A pure judgement.

`judge` compares the canary's request counters (since it got traffic) with the stable replicas' over
the same time. Too few requests, or no baseline, is UNKNOWN, never PASS: no promotion on unknown.
"""
from dataclasses import dataclass
from enum import Enum


class Outcome(str, Enum):
    PASS = "pass"
    FAIL = "fail"
    UNKNOWN = "unknown"


@dataclass(frozen=True)
class Stats:
    """/predict requests served, how many answered 5xx, and their summed latency in seconds."""
    requests: int = 0
    errors: int = 0
    latency_sum: float = 0.0

    @property
    def error_rate(self) -> float:
        return self.errors / self.requests if self.requests else 0.0

    @property
    def mean_latency(self) -> float:
        return self.latency_sum / self.requests if self.requests else 0.0

    def __add__(self, other: "Stats") -> "Stats":
        return Stats(self.requests + other.requests, self.errors + other.errors, self.latency_sum + other.latency_sum)

    def __sub__(self, other: "Stats") -> "Stats":
        return Stats(self.requests - other.requests, self.errors - other.errors, self.latency_sum - other.latency_sum)


@dataclass(frozen=True)
class Thresholds:
    max_error_rate: float = 0.01
    max_latency_ratio: float = 1.5
    min_requests: int = 20  # fewer canary (or stable) requests than this is no evidence
    latency_floor: float = 0.005  # seconds: below this, latencies count as equal (timer noise)


@dataclass(frozen=True)
class Judgement:
    outcome: Outcome
    reason: str


def judge(canary: Stats | None, stable: Stats | None, t: Thresholds) -> Judgement:
    """Pure: the canary's error rate against the threshold, its mean latency against the stable's."""
    if canary is None:
        return Judgement(Outcome.UNKNOWN, "no metrics from the canary")
    if canary.requests < t.min_requests:
        return Judgement(Outcome.UNKNOWN, f"only {canary.requests} canary requests so far (need {t.min_requests})")
    if canary.error_rate > t.max_error_rate:
        return Judgement(Outcome.FAIL, f"canary error rate {canary.error_rate:.1%} ({canary.errors}/{canary.requests}) "
                                       f"over the limit of {t.max_error_rate:.1%}")
    if stable is None or stable.requests < t.min_requests:
        return Judgement(Outcome.UNKNOWN, f"no latency baseline: {stable.requests if stable else 0} stable requests "
                                          f"(need {t.min_requests})")
    ratio = max(canary.mean_latency, t.latency_floor) / max(stable.mean_latency, t.latency_floor)
    if ratio > t.max_latency_ratio:
        return Judgement(Outcome.FAIL, f"canary latency {canary.mean_latency * 1000:.1f} ms is {ratio:.2f}x the "
                                       f"stable's {stable.mean_latency * 1000:.1f} ms (limit {t.max_latency_ratio}x)")
    return Judgement(Outcome.PASS, f"error rate {canary.error_rate:.1%} over {canary.requests} requests, "
                                   f"latency {ratio:.2f}x stable")
