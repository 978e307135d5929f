"""Consul's control plane as `fleet status` shows it: its servers, the Raft leader and voters, and what is
wrong with them. Pure: it judges what one server answered (the Raft configuration it holds) beside the
gossip pool's members, which every agent sees whole.

A server alive in the gossip pool but missing from the Raft configuration is in another Raft cluster or in
none (servers that each bootstrapped alone: a split brain, issue 44), or has not joined yet; a Raft member
that no live server answers for is a lost server, or stale data naming an address from an earlier overlay.
"""
from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class Server:
    node: str
    address: str  # host:port of its Raft (server RPC) port
    voter: bool
    leader: bool
    alive: bool  # a live member of the gossip pool at that address


def control_plane(raft: dict, members: list[dict]) -> dict:
    """{"servers", "leader", "voters", "warnings"} from the Raft configuration (`/v1/operator/raft/configuration`)
    and the gossip pool's members (`/v1/agent/members`)."""
    alive = {f"{m['Addr']}:{(m.get('Tags') or {}).get('port', '8300')}": m["Name"] for m in members
             if (m.get("Tags") or {}).get("role") == "consul" and m.get("Status") == 1}
    servers = [Server(s["Node"], s["Address"], bool(s.get("Voter")), bool(s.get("Leader")), s["Address"] in alive)
               for s in raft.get("Servers") or []]
    leaders = [s.node for s in servers if s.leader]
    warnings = []
    if not leaders:
        warnings.append("no Raft leader: Consul takes no write (rollout locks, history) until one is elected")
    listed = {s.address for s in servers}
    for address, node in sorted(alive.items()):
        if address not in listed:
            warnings.append(f"server {node} ({address}) is alive but not in this Raft cluster: it runs a cluster of "
                            "its own (servers that each bootstrapped alone: a split brain; fleet deploy sets "
                            "-bootstrap-expect from the managers) or has not joined yet")
    for s in servers:
        if not s.alive:
            warnings.append(f"Raft counts {s.node} at {s.address}, where no live server answers: a server lost, or "
                            "stale data naming an address from an earlier deploy")
    voters = sum(s.voter for s in servers)
    if voters > 1 and voters % 2 == 0:
        warnings.append(f"{voters} voters: an even count keeps quorum through no more losses than {voters - 1}")
    return {"servers": [asdict(s) for s in servers], "leader": leaders[0] if leaders else None,
            "voters": voters, "warnings": warnings}
