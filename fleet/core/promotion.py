"""How a promotion updates the stable service: a pure policy over its update_config.

By the time fleet promotes, the canary has run the new image under real traffic through every step, so
the rolling update need not prove it again replica by replica. With `order: start-first` (new tasks
start before old ones stop, so capacity never drops) every replica is updated at once, with no delay
between batches and Swarm's monitor window cut to PROMOTION_MONITOR_S: Swarm's `failure_action:
rollback` stays the net for a task that fails to start or turns unhealthy. With `order: stop-first`
(e.g. GPUs that cannot hold two copies of the model) the stack's own parallelism and delay are kept,
since updating everything at once would stop every replica together.

Where replicas reserve GPUs (generic resources), a new task starts only on a free one: `batch` is how many
the cluster can start at once (fleet/core/capacity.py). start-first then updates that many at a time, and
with none free the promotion goes stop-first, one replica at a time, since a start-first one would wait
forever on a new task Swarm cannot place ("no suitable node", moby#44378).

These settings stay in the service's spec until the next `fleet deploy` puts the stack file's back.
"""
PROMOTION_MONITOR_S = 5


def promotion_flags(update_config: dict | None, replicas: int, batch: int | None = None) -> list[str]:
    """`docker service update` flags for a promotion of a service with this UpdateConfig; `batch`: how many
    new replicas the cluster's free generic resources can start at once (None: no limit). Pure."""
    cfg = update_config or {}
    if cfg.get("Order") != "start-first":
        return []
    monitor_s = min(PROMOTION_MONITOR_S, (cfg.get("Monitor") or 5_000_000_000) / 1e9)
    if batch == 0:  # no room for one more: stop one, start its successor, one replica at a time
        return ["--update-order", "stop-first", "--update-parallelism", "1", "--update-delay", "0s",
                "--update-monitor", f"{monitor_s:g}s", "--update-failure-action", "rollback"]
    parallelism = max(1, replicas) if batch is None else min(max(1, replicas), batch)
    return ["--update-parallelism", str(parallelism), "--update-delay", "0s",
            "--update-monitor", f"{monitor_s:g}s", "--update-failure-action", "rollback"]
