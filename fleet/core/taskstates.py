"""Judging a canary from Swarm's task states, on every node: the manager knows each task's state
wherever it runs (a worker's container events never reach the manager's engine).

This is a purely computational module with no side-effects: it never calls Docker or the clock.
"""
from collections.abc import Iterable, Mapping

from .tasks import Task

FAILED_STATES = {"failed", "rejected", "orphaned", "remove"}  # Swarm gave up on the task, or it is lost
PENDING_BOUND = 15.0  # seconds a task may wait for a node (Swarm's "pending") before the canary fails
UP_NODE = "ready"


def task_failure(tasks: Iterable[Task], pending_for: Mapping[str, float], node_states: Mapping[str, str],
                 pending_bound: float = PENDING_BOUND) -> str | None:
    """Why the canary's tasks fail it, in Swarm's own words, or None while none does.

    - a task failed, was rejected (e.g. "No such image" on its node) or completed (a server that exits
      has failed, whatever its exit code): Swarm's error and the exit code;
    - a task that should run sits on a node that is not ready (down, unknown): the node;
    - a task has waited for a node past `pending_bound` (`pending_for`: seconds seen pending): Swarm's
      reason ("no suitable node ...")."""
    for t in sorted(tasks, key=lambda t: t.created_at or 0):
        where = f"canary task {t.id[:12]}" + (f" on {t.node}" if t.node else "")
        if t.state in FAILED_STATES or (t.state == "complete" and t.desired_state == "running"):
            code = f" (exit code {t.exit_code})" if t.exit_code is not None and t.state in ("failed", "complete") else ""
            return f"{where} {t.state}: {t.error or t.message or 'no reason given'}{code}"
        if t.state == "shutdown" and t.desired_state == "running":
            return f"{where} was shut down: {t.error or t.message or 'no reason given'}"
        if t.desired_state == "running" and t.node and node_states.get(t.node, UP_NODE) != UP_NODE:
            return f"{where}: its node {t.node} is {node_states[t.node]}"
        if t.state == "pending" and pending_for.get(t.id, 0.0) > pending_bound:
            return (f"{where} pending for {pending_for[t.id]:.0f}s: {t.error or t.message or 'no node takes it'}"
                    " (Swarm found no node for it: resources, constraints or a drained cluster)")
    return None
