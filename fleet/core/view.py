"""What people see of a rollout while it runs: the figures of the latest evidence, and the live view that
`fleet status --watch` shows from any shell (read from the rollout's state in Consul). Pure.

The controller keeps the latest metrics window in the rollout's state (`evidence`, saved at most every
EVIDENCE_EVERY seconds) and the golden gate's answer (`golden`), so a watcher sees what was judged, not
a figure of its own.
"""
from .records import Revision, RolloutState
from .rollout import TERMINAL, Phase

EVIDENCE_EVERY = 2.0  # seconds between saves of the latest evidence into the rollout's state


def figures(sample) -> dict:
    """A MetricsSample as plain figures per role: requests in the window, how many were fleet's own
    (synthetic), the 5xx share, p50 and p99 in milliseconds; None for a role with no evidence."""
    def role(stats, synthetic=None):
        if stats is None:
            return None
        return {"requests": stats.requests, "synthetic": int(stats.count("synthetic") if synthetic is None else synthetic),
                "error_rate": round(stats.error_rate, 4), "p50_ms": round(1000 * stats.quantile(0.5), 1),
                "p99_ms": round(1000 * stats.quantile(0.99), 1), "replicas": stats.replicas}
    return {"window_s": None if sample.window is None else round(sample.window, 1),
            "canary": role(sample.canary, sample.synthetic), "stable": role(sample.stable)}


def rollout_view(service: str, state: RolloutState, orphaned: bool = False) -> dict:
    """One rollout in progress, from its state, as the live view shows it."""
    r, judgement = state.rollout, state.rollout.judgement
    return {"service": service, "revision": state.revision, "image": state.image,
            "previous_image": state.previous_image, "cause": state.cause,
            "phase": r.phase.value, "step": r.step, "steps": list(state.plan.steps), "share": r.share,
            "reason": r.reason, "verdict": judgement.outcome.value if judgement else None,
            "verdict_reason": judgement.reason if judgement else None,
            "missing": list(r.missing), "golden": state.golden, "evidence": state.evidence, "orphaned": orphaned,
            "paused_since": r.held_since}


def ended_view(service: str, record: Revision | None) -> dict:
    """A rollout that just ended, from its history record (None: the record could not be read)."""
    if record is None:
        return {"service": service, "revision": None, "image": None, "previous_image": None, "cause": None,
                "phase": None, "share": 0, "reason": "", "ended": True}
    return {"service": service, "revision": record.revision, "image": record.image,
            "previous_image": record.previous_image, "cause": record.cause,
            "phase": record.outcome, "share": 100 if record.outcome == "promoted" else 0,
            "reason": record.reason, "ended": True}


def ended_since(history: dict[int, Revision], before: set[int]) -> Revision | None:
    """The first rollout (by revision) recorded ended in `history` (revision -> record) that had not ended
    when `before` was read: what `fleet status --wait` waited for. Deploys and rollbacks are not rollouts."""
    ended = [h for n, h in sorted(history.items()) if n not in before and h.outcome in ENDED]
    return ended[0] if ended else None


def exit_code(outcome: str) -> int:
    """`fleet status --wait`'s exit code for a rollout's outcome, as `fleet rollout` would have exited."""
    return 0 if outcome == Phase.PROMOTED.value else 1


def changed(a: dict | None, b: dict) -> bool:
    """Whether the view changed in what a person reads (not only in when it was read)."""
    return a is None or {k: v for k, v in a.items() if k != "at"} != {k: v for k, v in b.items() if k != "at"}


def lines(view: dict) -> list[str]:
    """The view as lines of text (a terminal renders them in place)."""
    steps, step = view.get("steps"), view.get("step")
    where = f"step {step + 1}/{len(steps)}" if steps and step is not None and step >= 0 else ""
    out = [f"{view['service']} revision {view.get('revision')}: {view.get('previous_image')} -> {view.get('image')}",
           f"  {view.get('phase')}{' (orphaned: no controller)' if view.get('orphaned') else ''}"
           f"{' (paused: `fleet resume` goes on)' if view.get('paused_since') else ''}"
           f"  share {view.get('share')}%  {where}  steps {steps or ''}".rstrip()]
    if view.get("reason"):
        out.append(f"  {view['reason'][:200]}")
    golden = view.get("golden")
    if golden:
        out.append(f"  golden: {'passed' if golden.get('passed') else 'failed'}: {golden.get('detail', '')[:160]}")
    evidence = view.get("evidence") or {}
    for role in ("canary", "stable"):
        f = evidence.get(role)
        if f:
            out.append(f"  {role:6}  {f['requests']:6d} req ({f['synthetic']} synthetic)  errors "
                       f"{100 * f['error_rate']:.2f}%  p50 {f['p50_ms']:.1f} ms  p99 {f['p99_ms']:.1f} ms"
                       f"  over {evidence.get('window_s')}s")
    if view.get("verdict"):
        out.append(f"  verdict so far: {view['verdict']}: {(view.get('verdict_reason') or '')[:160]}")
    if view.get("missing"):
        out.append(f"  evidence missing: {', '.join(view['missing'])}")
    return out


PHASES = tuple(p.value for p in Phase)
ENDED = tuple(p.value for p in Phase if p in TERMINAL)
VERDICTS = {"pass": 1, "unknown": 0, "fail": -1}


def series(stack: str, service: str, state: RolloutState,
           history: list[Revision] | None = None) -> list[tuple[str, dict, float]]:
    """fleet's own series of a rollout, as [(name, labels, value)] for the stack's Prometheus: its share,
    its phase (1 on the current one, 0 on the others), whether one is in progress, the verdict so far;
    with `history` (at its end) the count of rollouts per outcome and when this one ended."""
    r = state.rollout
    who = {"stack": stack, "service": service}
    rev = {**who, "revision": str(state.revision)}
    phase = r.phase.value
    out = [("fleet_rollout_share", rev, float(r.share)),
           ("fleet_rollout_in_progress", who, 0.0 if phase in ENDED else 1.0)]
    out += [("fleet_rollout_phase", {**rev, "phase": p}, 1.0 if p == phase else 0.0) for p in PHASES]
    judgement = r.judgement.outcome.value if r.judgement else None
    if judgement in VERDICTS:
        out.append(("fleet_rollout_verdict", rev, float(VERDICTS[judgement])))
    if history is not None:
        out += [("fleet_rollouts_total", {**who, "outcome": o}, float(sum(h.outcome == o for h in history)))
                for o in ENDED]
        ended = next((h.ended_at for h in history if h.revision == state.revision), None)
        if phase in ENDED and ended:
            out.append(("fleet_rollout_ended_timestamp_seconds", {**who, "outcome": phase}, ended))
    return out
