"""Several endpoints of one cluster (Consul's agents, a Swarm's managers' engines), behind one client that
threads share: where a call goes next when the one it used does not answer."""


def after(bases: list[str], used: str, failed: list[str]) -> list[str]:
    """The bases left to try after `used`, starting from the one after it, without those in `failed`."""
    at = bases.index(used) if used in bases else -1
    return [b for b in bases[at + 1:] + bases[:at + 1] if b not in failed]


def moved_on(current: str, used: str, failed: list[str], left: list[str]) -> str:
    """Where the shared client goes once `used` failed: the first of `left`, unless another thread already moved
    it to a base this call has not seen fail (never back to one it has)."""
    return left[0] if current == used or current in failed else current
