"""Is the canary as good as the stable replicas, judged on their metrics? A pure judgement.

`judge` compares the canary's request counters over a recent window with the stable replicas' over the
same window: error rate beyond the stable's against a limit, latency at p50 and p99 against the stable's, users' requests
against users' (or fleet's synthetic ones against fleet's). Too few requests,
or no baseline, is UNKNOWN, never PASS: no promotion on unknown.
"""
import math
from dataclasses import dataclass
from enum import Enum

# The replicas' route labels that are predictions, on either API (/predict, the Open Inference Protocol's
# .../infer), as a PromQL label matcher: what every figure of a role's requests counts.
PREDICTIONS = 'route=~"/predict|/v2/infer"'
# Only what Prometheus scraped itself from the replicas and the gateway (its jobs, stacks/prometheus) is
# evidence: never a series that arrived by remote write (fleet's own fleet_rollout_* series included).
SCRAPED = 'job="inference"'
GATEWAY_SCRAPED = 'job="gateway"'


class Outcome(str, Enum):
    PASS = "pass"
    FAIL = "fail"
    UNKNOWN = "unknown"


Buckets = tuple[tuple[float, float], ...]  # Prometheus's `le` buckets: (upper bound, cumulative count), +Inf last
ORIGINS = ("organic", "synthetic")  # who sent a request: users, or fleet itself (thin traffic, the golden gate)


@dataclass(frozen=True)
class Stats:
    """/predict requests served, how many answered 5xx, their summed latency in seconds, the latency
    histogram of all of them, and the part of that histogram fleet's own synthetic requests made."""
    requests: int = 0
    errors: int = 0
    latency_sum: float = 0.0
    buckets: Buckets = ()
    replicas: int = 0  # the replicas these requests came from (0: unknown)
    synthetic_buckets: Buckets = ()
    classes: tuple[tuple[str, float], ...] = ()  # users' predictions by predicted class (rows, not requests)
    unserved: int = 0  # requests of the window that failed for their clients: on every server the gateway tried

    @property
    def per_replica(self) -> float:
        return self.requests / self.replicas if self.replicas else 0.0

    @property
    def error_rate(self) -> float:
        return self.errors / self.requests if self.requests else 0.0

    @property
    def mean_latency(self) -> float:
        return self.latency_sum / self.requests if self.requests else 0.0

    def histogram(self, origin: str | None = None) -> Buckets:
        """The latency histogram of one origin's requests ("organic" or "synthetic"), or of all (None)."""
        if origin == "synthetic":
            return self.synthetic_buckets
        if origin == "organic":
            synthetic = dict(self.synthetic_buckets)
            return tuple((bound, max(0.0, n - synthetic.get(bound, 0.0))) for bound, n in self.buckets)
        return self.buckets

    def count(self, origin: str | None = None) -> float:
        """How many requests of `origin` the histogram holds; all the requests served with None."""
        if origin is None:
            return self.requests
        buckets = self.histogram(origin)
        return buckets[-1][1] if buckets else 0.0

    def quantile(self, q: float, origin: str | None = None) -> float:
        """The latency below which `q` of the requests (of `origin`) fell, interpolated in its bucket (as
        Prometheus's histogram_quantile); the mean of all when there is no histogram."""
        lower, upper, share = self._bucket(q, origin)
        return lower + (upper - lower) * share if upper != float("inf") else lower  # open bucket: its lower bound

    def slower_than(self, seconds: float, origin: str | None = None) -> float:
        """How many requests (of `origin`) took longer than `seconds`, interpolated in its bucket as the
        quantiles are (none in the open bucket's range: the histogram cannot say)."""
        buckets = self.histogram(origin)
        lower, below = 0.0, 0.0
        for bound, count in buckets:
            if bound >= seconds:
                if bound == float("inf"):
                    return buckets[-1][1] - below if seconds <= lower else 0.0
                share = (seconds - lower) / (bound - lower) if bound > lower else 1.0
                return buckets[-1][1] - (below + (count - below) * share)
            lower, below = bound, count
        return 0.0

    def bucket(self, q: float, origin: str | None = None) -> tuple[float, float]:
        """The bounds of the histogram bucket the `q` quantile falls in: all that the histogram knows of it
        (the mean twice when there is no histogram)."""
        lower, upper, _ = self._bucket(q, origin)
        return lower, upper

    def _bucket(self, q: float, origin: str | None) -> tuple[float, float, float]:
        buckets = self.histogram(origin)
        if not buckets or not buckets[-1][1]:
            return self.mean_latency, self.mean_latency, 0.0
        rank, lower, below = q * buckets[-1][1], 0.0, 0.0
        for bound, count in buckets:
            if count >= rank:
                return lower, bound, (rank - below) / (count - below) if count > below else 1.0
            lower, below = bound, count
        return lower, lower, 0.0


@dataclass(frozen=True)
class Thresholds:
    max_error_rate: float = 0.01  # the canary's 5xx share beyond what the stable's errors explain (errors_beyond)
    error_chance: float = 0.01  # errors over that limit fail the canary only when less likely than this by chance
    error_ceiling: float = 0.5  # the canary's 5xx share that fails it whatever the stable's
    max_latency_ratio: float = 1.5
    max_load_allowance: float = 2.0  # the latency limit grows with the canary's extra load per replica, up to this
    min_requests: int = 20  # fewer canary (or stable) requests than this is no evidence
    latency_floor: float = 0.005  # seconds: below this, median latencies count as equal (timer noise)
    tail_floor: float = 0.05  # seconds: below this, p99 latencies count as equal (scheduling noise)
    min_tail_requests: int = 200  # fewer requests (either role) than this: the p99 is noise, p50 only
    tail_chance: float = 0.001  # a slower p99 fails only when its slow requests are less likely than this by chance
    min_latency_window: float = 5.0  # seconds of evidence before latency is judged (at most the step duration)
    max_divergence: float = 0.2  # total variation between the roles' predicted-class mixes on users' traffic
    min_predictions: int = 100  # fewer users' predictions (either role) than this: the mix is not judged


@dataclass(frozen=True)
class Judgement:
    outcome: Outcome
    reason: str


def judge(canary: Stats | None, stable: Stats | None, t: Thresholds, synthetic: int = 0,
          window: float | None = None) -> Judgement:
    """Pure: the canary's error rate against the threshold, its latency against the stable's.
    `synthetic`: how many of the canary's requests fleet sent itself (thin traffic), for the report.
    `window`: the seconds the evidence covers; latency is judged (and a pass given) only on a window of
    at least `min_latency_window` (a fresh share's first second is too few, and mostly fleet's own)."""
    if canary is None:
        return Judgement(Outcome.UNKNOWN, "no metrics from the canary")
    if canary.requests < t.min_requests:
        return Judgement(Outcome.UNKNOWN, f"only {canary.requests} canary requests so far (need {t.min_requests})")
    errors = judge_errors(canary, stable, t)  # an UNKNOWN (within chance) still lets the mix or latency fail it
    if errors is not None and errors.outcome is Outcome.FAIL:
        return errors
    if stable is None or stable.requests < t.min_requests:
        return Judgement(Outcome.UNKNOWN, f"no latency baseline: {stable.requests if stable else 0} stable requests "
                                          f"(need {t.min_requests})")
    mix = judge_mix(canary.classes, stable.classes, t)
    if mix.outcome is Outcome.FAIL:
        return mix
    if window is not None and window < t.min_latency_window:
        return Judgement(Outcome.UNKNOWN, f"latency not judged yet: {window:.1f}s of evidence at this share "
                                          f"(need {t.min_latency_window:g}s)")
    # Like with like: fleet's synthetic requests (golden rows, several a request) are not shaped like the
    # users', and at a small share they are most of the canary's requests but few of the stable's. So the
    # quantiles compare the users' requests of both roles when both have enough, else fleet's own.
    origin = _like_for_like(canary, stable, t.min_requests)
    if origin == "":
        return Judgement(Outcome.UNKNOWN, "latency not judged yet: fewer than "
                                          f"{t.min_requests} requests of one origin in both roles (" + ", ".join(
                                              f"{o} {canary.count(o):.0f} canary, {stable.count(o):.0f} stable"
                                              for o in ORIGINS) + ")")
    # Normalised for load: a canary replica carrying k times a stable replica's requests (one canary at a
    # 50 % share beside two stable replicas: k = 2) may be up to k times slower, k at most max_load_allowance.
    load = canary.per_replica / stable.per_replica if canary.per_replica and stable.per_replica else 1.0
    limit = t.max_latency_ratio * min(max(1.0, load), t.max_load_allowance)
    ratios = []
    quantiles = [("p50", 0.5, t.latency_floor)]
    if min(canary.count(origin), stable.count(origin)) >= t.min_tail_requests:
        quantiles.append(("p99", 0.99, t.tail_floor))
    of = f" ({origin} requests)" if origin else ""
    for name, q, floor in quantiles:
        c, s = canary.quantile(q, origin), stable.quantile(q, origin)
        ratio = max(c, floor) / max(s, floor)
        # Where in its bucket a quantile falls is the interpolation's guess, so the histogram shows a canary
        # slower only with a whole bucket between the two: in one bucket, two replicas of one image measured
        # 11.9 and 17.9 ms p50 on a busy host; in adjacent ones, a good canary 14.8 ms against 9.3 ms (CI, its
        # requests just over 10 ms, the stable's just under). With the service's buckets (1-1.5-2-3-5-7 per
        # decade) a bucket between them proves a ratio of 1.33 or more.
        if ratio > limit and canary.bucket(q, origin)[0] > stable.bucket(q, origin)[1]:
            slow = _slow_tail(canary, stable, limit * max(s, floor), origin, t.tail_chance) if name == "p99" else None
            if slow is None or slow[0] < t.tail_chance:
                return Judgement(Outcome.FAIL, f"canary {name} latency {c * 1000:.1f} ms is {ratio:.2f}x the stable's "
                                               f"{s * 1000:.1f} ms{of} (limit {limit:.2g}x{_load(load)})"
                                               + (f": {slow[1]}" if slow else ""))
            ratios.append(f"{name} {ratio:.2f}x (within chance: {slow[1]})")
            continue
        ratios.append(f"{name} {ratio:.2f}x" + (" (within a histogram bucket of the stable's)" if ratio > limit else ""))
    if errors is not None:
        return errors
    made = f" ({min(synthetic, canary.requests)} synthetic)" if synthetic else ""
    return Judgement(Outcome.PASS, f"error rate {canary.error_rate:.1%} over {canary.requests} requests{made}, "
                                   f"latency {', '.join(ratios)} stable{of}{_load(load)}; {mix.reason}")


ATTEMPTS = 4  # how often the gateway tries a request that fails (stacks/gateway/haproxy.cfg: retries 3, redispatch)


def errors_beyond(canary: Stats, stable: Stats | None, t: Thresholds) -> tuple[float, str]:
    """The canary's error rate that the stable's errors on the same window do not explain, and how they
    were counted. Pure. Traffic that fails on every model (inputs that make any model answer NaN) is no
    fault of the canary's, and the canary may fail as often as the stable on the rest.
    Each request that failed for its client failed on the ATTEMPTS servers the gateway tried (its retries),
    stable and canary alike. Those tries are counted first against the stable's errors, and what is left of
    them is the canary's: at a small share they are most of a good canary's errors (bench/judgement_bench.py
    at 25 %: 174 of its 428 requests, where 4 x 153 failed requests less the stable's 435 errors made 177; a
    stable replica had 219, as many as were allowed before, which hid a canary failing 30 %). The stable's
    errors beyond those tries, on its other requests, are its own rate, which the canary may have on its
    other requests: without such traffic, the stable's error rate as it always was. Not the stable's whole
    rate under such traffic: its retried tries made it 26 to 33 % where users saw 7 % fail, which hid a canary
    failing 30 % of the requests the stable served. Errors that the gateway's retries hid from clients are
    never explained away. With no stable baseline (fewer than `min_requests`), every error counts.
    A stable failing requests of its own under such traffic explains fewer of the canary's: strict, never
    lenient (the split between its own errors and its tries cannot be told from counts)."""
    if stable is None or stable.requests < t.min_requests:
        return canary.error_rate, "no stable baseline"
    tries = ATTEMPTS * stable.unserved
    on_stable = min(stable.errors, tries)
    on_canary = min(canary.errors, tries - on_stable)
    rest = stable.requests - on_stable
    own = (stable.errors - on_stable) / rest if rest > 0 else 0.0
    expected = on_canary + own * (canary.requests - on_canary)
    how = f"the stable's {own:.1%}" + (f" on the rest; {stable.unserved} requests failed for their clients on every "
                                       f"server tried, {ATTEMPTS} tries each: {on_stable} on stable replicas, so "
                                       f"{on_canary} on the canary's" if tries else "")
    return max(0.0, canary.error_rate - (expected / canary.requests if canary.requests else 0.0)), how


def judge_errors(canary: Stats, stable: Stats | None, t: Thresholds) -> Judgement | None:
    """Pure: FAIL when the canary's 5xx share is over `error_ceiling`, or over the stable's (errors_beyond) by
    more than `max_error_rate` beyond chance; UNKNOWN when over it within chance; None when neither.
    A share is an estimate: 168 errors of 466 requests is 36 % give or take 2, so where traffic that fails on
    every model makes a third of both roles' requests fail, a good canary measured 1.8 points over the
    stable's and rolled back (bench/judgement_bench.py).
    The canary fails only when that many errors would come less often than `error_chance` from a canary
    whose true share is the stable's plus the limit (binomial); a canary of 3 errors in 20 with none explained
    still fails at once. Over the limit but within chance is UNKNOWN: no rollback on noise, and no promotion
    either until more requests tell (or the progress deadline ends it)."""
    figures = f"canary error rate {canary.error_rate:.1%} ({canary.errors}/{canary.requests})"
    if canary.error_rate > t.error_ceiling:
        return Judgement(Outcome.FAIL, f"{figures} over the ceiling of {t.error_ceiling:.0%}")
    beyond, how = errors_beyond(canary, stable, t)
    if beyond > t.max_error_rate:
        limit = canary.error_rate - beyond + t.max_error_rate
        chance = binomial_tail(round(canary.errors), round(canary.requests), limit)
        over = f"{figures}, {beyond:.1%} beyond the stable's errors ({how}): over the limit of {t.max_error_rate:.1%}"
        if chance < t.error_chance:
            return Judgement(Outcome.FAIL, f"{over} (chance {chance:.2g})")
        return Judgement(Outcome.UNKNOWN, f"{over}, within chance ({chance:.2g}, limit {t.error_chance:g}): waiting "
                                          "for more requests")
    return None


def binomial_tail(k: int, n: int, p: float) -> float:
    """Pure: the chance of k or more errors in n requests that each fail with chance p."""
    if k <= 0:
        return 1.0
    if p <= 0.0 or k > n:
        return 0.0
    if p >= 1.0:
        return 1.0
    log_p, log_q = math.log(p), math.log1p(-p)
    total = 0.0
    for x in range(k, n + 1):
        term = math.exp(_log_comb(n, x) + x * log_p + (n - x) * log_q)
        total += term
        if x > n * p and term < total * 1e-12:  # past the mode the terms only shrink
            break
    return min(1.0, total)


def total_variation(a: dict[str, float], b: dict[str, float]) -> float:
    """Half the summed absolute differences of two distributions' shares: 0 the same mix, 1 disjoint. Pure."""
    na, nb = sum(a.values()), sum(b.values())
    return 0.5 * sum(abs(a.get(k, 0.0) / na - b.get(k, 0.0) / nb) for k in set(a) | set(b)) if na and nb else 0.0


def judge_mix(canary: tuple[tuple[str, float], ...], stable: tuple[tuple[str, float], ...],
              t: Thresholds) -> Judgement:
    """Pure: does the canary predict the same mix of classes as the stable on the same window of users'
    traffic? A model as accurate on the golden set can still answer real traffic differently. FAIL over
    `max_divergence` (total variation); UNKNOWN, which holds nothing back, below `min_predictions`."""
    c, s = dict(canary), dict(stable)
    nc, ns = sum(c.values()), sum(s.values())
    if min(nc, ns) < t.min_predictions:
        return Judgement(Outcome.UNKNOWN, f"prediction mix not judged ({nc:.0f} canary, {ns:.0f} stable users' "
                                          f"predictions; need {t.min_predictions})")
    tv = total_variation(c, s)
    shares = ", ".join(f"class {k}: {c.get(k, 0) / nc:.0%} vs {s.get(k, 0) / ns:.0%}"
                       for k in sorted(set(c) | set(s), key=lambda k: -abs(c.get(k, 0) / nc - s.get(k, 0) / ns))[:3])
    figures = f"prediction mix total variation {tv:.2f} over {nc:.0f} canary and {ns:.0f} stable users' predictions"
    if tv > t.max_divergence:
        return Judgement(Outcome.FAIL, f"{figures}, over the limit of {t.max_divergence:g} ({shares})")
    return Judgement(Outcome.PASS, f"{figures} (limit {t.max_divergence:g})")


def _slow_tail(canary: Stats, stable: Stats, seconds: float, origin: str | None,
               limit: float) -> tuple[float, str]:
    """How likely the canary's share of requests slower than `seconds` is by chance, were a slow request as
    likely on either role (the stable's on the same window), and those figures in words. A p99 rests on its
    few slowest requests: on a busy host a stall of a few hundred ms hits two or three requests of a window,
    on whichever role, and made the p99 of a good canary five times the stable's."""
    n, ns = round(canary.count(origin)), round(stable.count(origin))
    k, m = (min(total, max(0, round(r.slower_than(seconds, origin)))) for r, total in ((canary, n), (stable, ns)))
    chance = excess_chance(k, n, m, ns)
    return chance, (f"{k} of {n} canary requests slower than {seconds * 1000:.0f} ms against {m} of {ns} stable "
                    f"ones (chance {chance:.2g}, limit {limit:g})")


def excess_chance(k: int, n: int, m: int, ns: int) -> float:
    """Pure: one-sided Fisher's exact test. Of n canary and ns stable requests, k and m were slow: the chance
    that k or more of the k + m slow ones fall among the canary's n, were each request equally likely slow."""
    total, slow = n + ns, k + m
    if not n or not slow:
        return 1.0
    whole = _log_comb(total, n)
    return min(1.0, sum(math.exp(_log_comb(slow, x) + _log_comb(total - slow, n - x) - whole)
                        for x in range(max(k, n - (total - slow)), min(slow, n) + 1)))


def _log_comb(a: int, b: int) -> float:
    """The logarithm of a choose b (both tests' terms, in logs: the counts run to thousands)."""
    return math.lgamma(a + 1) - math.lgamma(b + 1) - math.lgamma(a - b + 1)


def _like_for_like(canary: Stats, stable: Stats, least: int) -> str | None:
    """The origin whose requests both roles have at least `least` of, users' first; None when either has
    no histogram (the means of all are compared); "" when no origin has enough in both."""
    if not canary.buckets or not stable.buckets:
        return None
    return next((o for o in ORIGINS if min(canary.count(o), stable.count(o)) >= least), "")


def _load(k: float) -> str:
    return f", at {k:.1f}x the stable's load per replica" if k > 1.05 else ""


GOLDEN_TOLERANCE = 0.01  # accuracy points the canary may fall below the stable's (--golden-tolerance)
MANIFEST_TOLERANCE = 0.01  # and below its own manifest's figure on its shipped golden set
GOLDEN_MIN_ROWS = 10  # a golden set of fewer rows is no evidence: the gate fails for want of it


def _too_small(rows: int, source: str) -> Judgement | None:
    if rows >= GOLDEN_MIN_ROWS:
        return None
    return Judgement(Outcome.FAIL, f"the golden set ({source}) has {rows} rows, fewer than the {GOLDEN_MIN_ROWS} "
                                   "the gate needs to say anything: no evidence; ship or give (--golden) a larger one")


def judge_golden(canary: float, stable: float, manifest: float | None, tolerance: float = GOLDEN_TOLERANCE,
                 rows: int = 0, source: str = "") -> Judgement:
    """Pure: the golden gate. The canary fails when its accuracy on the golden set is below the stable's
    by more than `tolerance`, and always when below its own manifest's figure (when it has one)."""
    if (small := _too_small(rows, source)) is not None:
        return small
    figures = (f"canary accuracy {canary:.4f}, stable {stable:.4f} on {rows} golden rows ({source})"
               + (f"; manifest says {manifest:.4f}" if manifest is not None else ""))
    if canary < stable - tolerance:
        return Judgement(Outcome.FAIL, f"{figures}: the canary is worse than the stable by "
                                       f"{stable - canary:.4f} (tolerance {tolerance:g})")
    if manifest is not None and canary < manifest - MANIFEST_TOLERANCE:
        return Judgement(Outcome.FAIL, f"{figures}: below its own manifest by {manifest - canary:.4f}")
    return Judgement(Outcome.PASS, figures)


def judge_golden_outputs(canary: list, stable: list, tolerance: float, source: str = "") -> Judgement:
    """Pure: the golden gate for a model of plain tensor outputs. The canary fails when any of its outputs
    on the golden rows is further than `tolerance` (absolute) from the stable's."""
    if (small := _too_small(len(stable), source)) is not None:
        return small
    if len(canary) != len(stable) or any(len(_flat(c)) != len(_flat(s)) for c, s in zip(canary, stable)):
        return Judgement(Outcome.FAIL, f"the canary's outputs on the golden rows ({source}) are not shaped like "
                                       "the stable's")
    gaps = [max((abs(a - b) for a, b in zip(_flat(c), _flat(s))), default=0.0) for c, s in zip(canary, stable)]
    worst, beyond = max(gaps, default=0.0), sum(g > tolerance for g in gaps)
    figures = (f"canary outputs differ from the stable's by at most {worst:.3g} on {len(gaps)} golden rows "
               f"({source}); tolerance {tolerance:g}")
    if beyond:
        return Judgement(Outcome.FAIL, f"{figures}: {beyond} row(s) beyond it")
    return Judgement(Outcome.PASS, figures)


def _flat(v) -> list:
    return [x for item in v for x in _flat(item)] if isinstance(v, list) else [v]
