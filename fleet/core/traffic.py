"""Turning a canary share into Consul weights the gateway honours. Pure.

Replicas register with Consul weight Passing = w x 256 (w in 1..255, from the KV key fleet writes per
role); HAProxy maps an SRV weight to weight // 256 + 1, so a replica of weight w gets w + 1 shares of
the round robin. The canary's share is C(wc + 1) / (C(wc + 1) + S(ws + 1)).
"""
MAX_WEIGHT = 255
DEFAULT_WEIGHT = 100  # the service's FLEET_WEIGHT default


def share_of(canary_weight: int, stable_weight: int, canaries: int, stables: int) -> float:
    c, s = canaries * (canary_weight + 1), stables * (stable_weight + 1)
    return 100.0 * c / (c + s) if c + s else 0.0


def weights_for(share: int, canaries: int, stables: int) -> tuple[int, int]:
    """(stable weight, canary weight) whose round-robin split is closest to `share` percent."""
    if stables == 0 or share >= 100:
        return 1, MAX_WEIGHT
    best = (DEFAULT_WEIGHT, 1)
    best_error = abs(share_of(1, DEFAULT_WEIGHT, canaries, stables) - share)
    for stable in (DEFAULT_WEIGHT, MAX_WEIGHT, 50, 10, 1):  # prefer the stable's usual weight
        for canary in range(1, MAX_WEIGHT + 1):
            error = abs(share_of(canary, stable, canaries, stables) - share)
            if error < best_error - 1e-9:
                best, best_error = (stable, canary), error
    return best
