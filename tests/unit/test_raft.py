"""The control plane's judgement (fleet/core/raft.py) on what Consul answers: one Raft cluster of three, a
split (issue 44: three servers each of a cluster of its own), stale data, no leader."""
from fleet.core.raft import control_plane


def member(name: str, addr: str, role: str = "consul", status: int = 1) -> dict:
    return {"Name": name, "Addr": addr, "Status": status, "Tags": {"role": role, "port": "8300"}}


def server(node: str, addr: str, leader: bool = False, voter: bool = True) -> dict:
    return {"Node": node, "Address": f"{addr}:8300", "Leader": leader, "Voter": voter, "ID": node}


POOL = [member("n1", "10.0.2.3"), member("n2", "10.0.2.4"), member("n3", "10.0.2.5"),
        member("w1", "10.0.2.9", role="node")]  # a client agent is no server


def test_one_raft_cluster_of_three_has_a_leader_three_voters_and_nothing_to_say():
    raft = {"Servers": [server("n1", "10.0.2.3", leader=True), server("n2", "10.0.2.4"), server("n3", "10.0.2.5")]}
    plane = control_plane(raft, POOL)
    assert (plane["leader"], plane["voters"], plane["warnings"]) == ("n1", 3, [])
    assert [s["node"] for s in plane["servers"] if s["alive"]] == ["n1", "n2", "n3"]


def test_a_server_that_elected_itself_alone_sees_the_others_alive_outside_its_cluster():
    plane = control_plane({"Servers": [server("n2", "10.0.2.4", leader=True)]}, POOL)
    assert plane["leader"] == "n2" and plane["voters"] == 1
    assert [w.split(" is alive")[0] for w in plane["warnings"]] == ["server n1 (10.0.2.3:8300)",
                                                                     "server n3 (10.0.2.5:8300)"]
    assert "split brain" in plane["warnings"][0]


def test_a_raft_member_at_an_address_no_live_server_has_is_stale_and_with_no_leader_nothing_is_written():
    raft = {"Servers": [server("n1", "10.0.2.3"), server("old", "10.0.7.5")]}  # an earlier overlay's address
    plane = control_plane(raft, [member("n1", "10.0.2.3")])
    assert plane["leader"] is None
    assert plane["warnings"][0].startswith("no Raft leader")
    assert plane["warnings"][1].startswith("Raft counts old at 10.0.7.5:8300, where no live server answers")
    assert "2 voters: an even count" in plane["warnings"][2]


def test_a_failed_member_is_not_alive_and_a_non_voter_is_not_counted():
    raft = {"Servers": [server("n1", "10.0.2.3", leader=True), server("n2", "10.0.2.4", voter=False)]}
    plane = control_plane(raft, [member("n1", "10.0.2.3"), member("n2", "10.0.2.4", status=4)])
    assert plane["voters"] == 1 and [s["alive"] for s in plane["servers"]] == [True, False]
    assert plane["warnings"] == ["Raft counts n2 at 10.0.2.4:8300, where no live server answers: a server lost, or "
                                 "stale data naming an address from an earlier deploy"]
